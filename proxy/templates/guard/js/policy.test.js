import { test } from 'node:test';
import assert from 'node:assert/strict';
import { parseConfig, tooMany } from './policy.js';

test('the configuration is checked field by field', () => {
  assert.deepEqual(parseConfig('{"per_minute": 30}'), { perMinute: 30, burst: 5 });
  assert.equal(parseConfig('{"per_minute": 30, "burst": 2}').burst, 2);
  for (const [config, error] of [
    ['{}', 'per_minute: required'],
    ['{"per_minute": 0}', 'per_minute: must be'],
    ['{"per_minute": 1, "burst": 0}', 'burst: must be'],
    ['{"per_minute": 1, "brust": 2}', 'unknown field `brust`'],
    ['[]', 'config: must be an object'],
    ['{', 'config: not valid JSON'],
  ]) {
    assert.throws(() => parseConfig(config), (e) => e.startsWith(error), config);
  }
});

test('a refusal rounds the wait up to whole seconds', () => {
  const verdict = tooMany({ perMinute: 60, burst: 5 }, 1200);
  assert.equal(verdict.val.status, 429);
  assert.equal(verdict.val.retryAfterSecs, 2);
});
