//! The Lua scripts that make each primitive one atomic step on the Redis server. Every script
//! reads the server's clock (`TIME`), so replicas whose clocks differ still share one window
//! and one rate; every key a script writes gets a TTL.

use redis::Script;
use std::sync::LazyLock;

/// The server's clock, read once per script: `now` in milliseconds with microseconds as the
/// fraction, `now_ms` in whole milliseconds.
const CLOCK: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000
local now_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
";

/// GCRA, as governor computes it in process: a key holds its theoretical arrival time (TAT) in
/// milliseconds. Arguments: emission interval (ms, float), burst, longest TTL (ms), tokens a
/// replica already let through on its own view (`state.redis_sync`; added unchecked, so the
/// fleet's TAT remembers every one), and whether to try to take a token now or only to
/// report. Returns the wait (0 when the token was taken, else in milliseconds, at least 1) and
/// how far the TAT is ahead of the server's clock, in whole milliseconds rounded up.
const RATE_FN: &str = r"
local function rate(key, interval, burst, max_ttl, taken, try)
  local tau = interval * burst
  local tat = tonumber(redis.call('GET', key)) or now
  if tat < now then tat = now end
  tat = tat + interval * taken
  local wait = 0
  if try then
    local next_tat = tat + interval
    if next_tat - now > tau then
      wait = math.max(1, math.ceil(next_tat - now - tau))
    else
      tat = next_tat
    end
  end
  if tat > now then
    local ttl = math.min(math.ceil(tat - now) + 1, max_ttl)
    redis.call('SET', key, string.format('%.3f', tat), 'PX', ttl)
  end
  return wait, math.ceil(tat - now)
end
";

/// A sliding window of eight buckets, as the in-process counter keeps: a hash of bucket
/// number to sum, and `w` the window it was made for (another window starts afresh).
/// Arguments: delta, window (ms, as given). Returns the window's total.
const COUNT_FN: &str = r"
local function count(key, delta, window_arg)
  local window = tonumber(window_arg)
  local bucket_ms = math.max(1, math.floor(window / 8))
  local bucket = math.floor(now_ms / bucket_ms)
  if redis.call('HGET', key, 'w') ~= window_arg then
    redis.call('DEL', key)
    redis.call('HSET', key, 'w', window_arg)
  end
  redis.call('HINCRBY', key, string.format('%d', bucket), delta)
  local total = 0
  local fields = redis.call('HGETALL', key)
  for i = 1, #fields, 2 do
    if fields[i] ~= 'w' then
      if tonumber(fields[i]) <= bucket - 8 then
        redis.call('HDEL', key, fields[i])
      else
        total = total + tonumber(fields[i + 1])
      end
    end
  end
  redis.call('PEXPIRE', key, window + bucket_ms)
  return total
end
";

/// Distinct members within a window: a sorted set of member to last-seen time, trimmed to the
/// window and capped (the oldest goes first). Arguments: window (ms), cap, and the members
/// seen, `ARGV[first..last]` (one, or a replica's since its last sync). Returns the size.
const DISTINCT_FN: &str = r"
local function distinct(key, window, cap, first, last)
  redis.call('ZREMRANGEBYSCORE', key, '-inf', now_ms - window)
  for i = first, last do
    redis.call('ZADD', key, now_ms, ARGV[i])
  end
  local n = redis.call('ZCARD', key)
  if n > cap then
    redis.call('ZPOPMIN', key, n - cap)
    n = cap
  end
  if n > 0 then redis.call('PEXPIRE', key, window + 1) end
  return n
end
";

fn script(parts: &[&str]) -> Script {
    Script::new(&parts.concat())
}

/// One limiter call ([`RATE_FN`]). KEYS: the limiter. ARGV: interval, burst, longest TTL,
/// tokens already taken, and `1` to take one now or `0` only to report. Returns `{wait, ahead}`.
pub(crate) static RATE: LazyLock<Script> = LazyLock::new(|| {
    script(&[
        CLOCK,
        RATE_FN,
        r"
local wait, ahead = rate(KEYS[1], tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]),
  tonumber(ARGV[4]), ARGV[5] == '1')
return {wait, ahead}
",
    ])
});

/// One counter call ([`COUNT_FN`]). KEYS: the counter. ARGV: delta, window (ms).
pub(crate) static COUNT: LazyLock<Script> =
    LazyLock::new(|| script(&[CLOCK, COUNT_FN, "return count(KEYS[1], ARGV[1], ARGV[2])\n"]));

/// One distinct-set call ([`DISTINCT_FN`]). KEYS: the set. ARGV: window (ms), cap, members.
pub(crate) static DISTINCT: LazyLock<Script> = LazyLock::new(|| {
    script(&[
        CLOCK,
        DISTINCT_FN,
        "return distinct(KEYS[1], tonumber(ARGV[1]), tonumber(ARGV[2]), 3, #ARGV)\n",
    ])
});

/// A slice of a sync round (`state.redis_sync`) on one server, in one script: every view's
/// key in KEYS, and in ARGV, per key in order, a kind and its arguments:
/// `r interval burst longest-ttl taken` (reports, takes nothing new), `c delta window`, or
/// `d window cap n member1 … memberN`. Returns one integer per key: the limiter's TAT ahead of
/// the clock, the counter's total, the set's size. A cluster cannot run it (its keys span
/// slots); there each view is its own call.
pub(crate) static SYNC: LazyLock<Script> = LazyLock::new(|| {
    script(&[
        CLOCK,
        RATE_FN,
        COUNT_FN,
        DISTINCT_FN,
        r"
local out = {}
local a = 1
for k = 1, #KEYS do
  local kind = ARGV[a]
  if kind == 'r' then
    local _, ahead = rate(KEYS[k], tonumber(ARGV[a + 1]), tonumber(ARGV[a + 2]),
      tonumber(ARGV[a + 3]), tonumber(ARGV[a + 4]), false)
    out[k] = ahead
    a = a + 5
  elseif kind == 'c' then
    out[k] = count(KEYS[k], ARGV[a + 1], ARGV[a + 2])
    a = a + 3
  else
    local n = tonumber(ARGV[a + 3])
    out[k] = distinct(KEYS[k], tonumber(ARGV[a + 1]), tonumber(ARGV[a + 2]), a + 4, a + 3 + n)
    a = a + 4 + n
  end
end
return out
",
    ])
});

/// Places a ban in the fleet's ban hash (field: client, value: `until\tby\treason`) and bumps
/// the version replicas poll. Past the cap, ended bans are dropped, then the soonest to end.
/// KEYS: hash, version. ARGV: client, value, cap, TTL (ms).
pub(crate) static PLACE_BAN: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
local cap = tonumber(ARGV[3])
if redis.call('HLEN', KEYS[1]) > cap then
  local t = redis.call('TIME')
  local now = tonumber(t[1]) * 1000
  local all = redis.call('HGETALL', KEYS[1])
  local left, soonest, soonest_until = 0, nil, nil
  for i = 1, #all, 2 do
    local ends = tonumber(string.match(all[i + 1], '^(%d+)')) or 0
    if ends <= now then
      redis.call('HDEL', KEYS[1], all[i])
    else
      left = left + 1
      if all[i] ~= ARGV[1] and (soonest_until == nil or ends < soonest_until) then
        soonest, soonest_until = all[i], ends
      end
    end
  end
  if left > cap and soonest then redis.call('HDEL', KEYS[1], soonest) end
end
redis.call('PEXPIRE', KEYS[1], ARGV[4])
redis.call('INCR', KEYS[2])
redis.call('PEXPIRE', KEYS[2], ARGV[4])
return 1
",
    )
});

/// Lifts a ban. KEYS: hash, version. ARGV: client, now (ms), TTL (ms). Returns 1 when a ban
/// in force was lifted.
pub(crate) static LIFT_BAN: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local v = redis.call('HGET', KEYS[1], ARGV[1])
if not v then return 0 end
redis.call('HDEL', KEYS[1], ARGV[1])
redis.call('INCR', KEYS[2])
redis.call('PEXPIRE', KEYS[2], ARGV[3])
local ends = tonumber(string.match(v, '^(%d+)')) or 0
if ends > tonumber(ARGV[2]) then return 1 end
return 0
",
    )
});
