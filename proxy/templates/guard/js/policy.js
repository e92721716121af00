// The guard's policy, free of imports from the host, so that `node --test` can run it.

const FIELDS = ['per_minute', 'burst'];

/** Parses the guard's JSON configuration; a thrown string names the field. */
export function parseConfig(text) {
  let raw;
  try {
    raw = JSON.parse(text || '{}');
  } catch (e) {
    throw `config: not valid JSON: ${e.message}`;
  }
  if (raw === null || typeof raw !== 'object' || Array.isArray(raw)) {
    throw 'config: must be an object';
  }
  const unknown = Object.keys(raw).find((k) => !FIELDS.includes(k));
  if (unknown !== undefined) {
    throw `unknown field \`${unknown}\`, expected per_minute or burst`;
  }
  if (raw.per_minute === undefined) throw 'per_minute: required';
  const perMinute = raw.per_minute;
  if (typeof perMinute !== 'number' || !(perMinute > 0 && perMinute <= 1e6)) {
    throw 'per_minute: must be a number from 0 to 1000000';
  }
  const burst = raw.burst === undefined ? 5 : raw.burst;
  if (!Number.isInteger(burst) || burst < 1 || burst > 10000) {
    throw 'burst: must be an integer from 1 to 10000';
  }
  return { perMinute, burst };
}

/** The refusal for a client that must wait `waitMs` milliseconds. */
export function tooMany(limit, waitMs) {
  return {
    tag: 'deny',
    val: {
      status: 429,
      reason: `more than ${limit.perMinute} requests a minute`,
      retryAfterSecs: Math.ceil(waitMs / 1000),
    },
  };
}
