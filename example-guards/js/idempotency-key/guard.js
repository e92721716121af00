// idempotency-key: refuses a repeated submission. A request on the guard's routes must carry an
// `Idempotency-Key` header (the IETF httpapi draft's name); a key the same client already
// used within the window is refused with 409, so a double-clicked "pay" button or a client
// retrying a POST that did go through does not charge twice. When the upstream answers the
// first submission with a server error, the key is released so that a retry can pass.
//
// Configuration (JSON, the `config` table of the guard in vigil.toml):
//
//     {
//       "header": "idempotency-key",   // the header field holding the key
//       "required": true,              // a request without the field is refused (428)
//       "window_secs": 3600,           // how long a used key is remembered, 1 to 604800
//       "max_length": 255,             // longest key accepted, 1 to 1024
//       "release_on_5xx": true         // a 5xx answer to a submission forgets its key
//     }
//
// Keys are remembered per client (the proxy's identity key) in the host's key/value state,
// never in guest memory: an instance serves many clients and may be replaced at any time.

import { get, set, log, readsHeaders } from 'vigil:guard/state@0.1.0';

const FIELDS = ['header', 'required', 'window_secs', 'max_length', 'release_on_5xx'];
const HEADER_NAME = /^[!#$%&'*+.^_`|~0-9a-z-]{1,256}$/;
const MAX_WINDOW_SECS = 7 * 24 * 3600;
const decoder = new TextDecoder('utf-8', { fatal: true });

// The checked configuration; set by `init`, which runs on every fresh instance.
let policy = null;

/** A whole number from `min` to `max`, or `fallback` when absent; the error names the field. */
function integer(raw, field, min, max, fallback) {
  const value = raw[field];
  if (value === undefined) return fallback;
  if (!Number.isInteger(value) || value < min || value > max) {
    throw `${field}: must be an integer from ${min} to ${max}, not ${JSON.stringify(value)}`;
  }
  return value;
}

/** `true` or `false`, or `fallback` when absent; the error names the field. */
function boolean(raw, field, fallback) {
  const value = raw[field];
  if (value === undefined) return fallback;
  if (typeof value !== 'boolean') {
    throw `${field}: must be true or false, not ${JSON.stringify(value)}`;
  }
  return value;
}

/** Parses and checks the configuration; a thrown string refuses the guard at load. */
export function init(config) {
  let raw;
  try {
    raw = JSON.parse(config || '{}');
  } catch (e) {
    throw `config: not valid JSON: ${e.message}`;
  }
  if (raw === null || typeof raw !== 'object' || Array.isArray(raw)) {
    throw 'config: must be an object';
  }
  for (const key of Object.keys(raw)) {
    if (!FIELDS.includes(key)) {
      throw `unknown field \`${key}\`, expected one of ${FIELDS.join(', ')}`;
    }
  }
  const header = raw.header === undefined ? 'idempotency-key' : raw.header;
  if (typeof header !== 'string' || !HEADER_NAME.test(header.toLowerCase())) {
    throw `header: must be a header field name, not ${JSON.stringify(header)}`;
  }
  policy = {
    header: header.toLowerCase(),
    required: boolean(raw, 'required', true),
    windowMs: integer(raw, 'window_secs', 1, MAX_WINDOW_SECS, 3600) * 1000,
    maxLength: integer(raw, 'max_length', 1, 1024, 255),
    releaseOn5xx: boolean(raw, 'release_on_5xx', true),
  };
  // Only the key's field is copied into the guard, not every header of every request.
  readsHeaders([policy.header]);
}

/**
 * The request's key: `{ key }`, `{ missing: true }`, or `{ invalid: reason }`. The draft makes
 * the value a structured-field string (`"abc"`); a bare token is accepted too.
 */
function keyOf(req) {
  const field = req.headers.find((h) => h.name === policy.header);
  if (field === undefined) return { missing: true };
  let text;
  try {
    text = decoder.decode(field.value);
  } catch {
    return { invalid: 'is not UTF-8' };
  }
  if (text.length >= 2 && text.startsWith('"') && text.endsWith('"')) {
    text = text.slice(1, -1);
  }
  if (text.length === 0 || text.length > policy.maxLength) {
    return { invalid: `must be 1 to ${policy.maxLength} characters long` };
  }
  if (!/^[\x21-\x7e]+$/.test(text)) {
    return { invalid: 'must be visible ASCII characters' };
  }
  return { key: text };
}

/** The state key of one client's use of one key. */
function stateKey(req, key) {
  return `${req.client.key}\n${key}`;
}

function deny(status, reason) {
  return { tag: 'deny', val: { status, reason } };
}

/** Refuses requests without a usable key, and keys this client used within the window. */
export function onRequest(req) {
  const found = keyOf(req);
  if (found.missing) {
    return policy.required ? deny(428, `${policy.header} header required`) : { tag: 'allow' };
  }
  if (found.invalid) {
    return deny(400, `${policy.header} ${found.invalid}`);
  }
  const slot = stateKey(req, found.key);
  const earlier = get(slot);
  if (earlier !== undefined) {
    const firstMs = Number(new TextDecoder().decode(earlier));
    const ago = Math.max(0, Math.round((Number(req.receivedMs) - firstMs) / 1000));
    log('info', `repeated ${policy.header} from ${req.client.key}`);
    return deny(409, `${policy.header} ${found.key} was already used ${ago} s ago`);
  }
  set(slot, new TextEncoder().encode(String(req.receivedMs)), BigInt(policy.windowMs));
  return { tag: 'allow' };
}

/** Forgets the key of a submission the upstream failed, so that the client may retry it. */
export function onResponse(req, resp) {
  if (!policy.releaseOn5xx || resp.status < 500) return;
  const found = keyOf(req);
  if (found.key !== undefined) {
    set(stateKey(req, found.key), new Uint8Array(0), 0n);
  }
}
