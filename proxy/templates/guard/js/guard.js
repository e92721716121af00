// {{name}}: a Vigil guard. It limits each client to `per_minute` requests (bursts of up to
// `burst`) with the host's rate limiter, and refuses the rest with 429 and `Retry-After`.
//
// The exports are the `guard` world of wit/guard.wit: `init` (a thrown string refuses the
// configuration), `onRequest` (returns `{ tag: 'allow' }` or `{ tag: 'deny', val: {...} }`)
// and `onResponse`. Imports come from 'vigil:guard/state@0.1.0'; a `result` import such as
// `rate` throws on `err`, with the error value in `e.payload`. u64 values are BigInts.

import { rate, readsHeaders } from 'vigil:guard/state@0.1.0';
import { parseConfig, tooMany } from './policy.js';

// An instance serves many requests of many clients: only the configuration lives here (`init`
// runs on every fresh instance), per-client data lives in the host's state.
let limit = null;

export function init(config) {
  limit = parseConfig(config);
  // Only the client's key is read: no header field needs copying into the guard.
  readsHeaders([]);
}

export function onRequest(req) {
  try {
    rate(req.client.key, limit.perMinute / 60, limit.burst);
    return { tag: 'allow' };
  } catch (e) {
    return tooMany(limit, e.payload);
  }
}

export function onResponse(_req, _resp) {}
