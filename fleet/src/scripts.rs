//! The Lua scripts that make each primitive one atomic step on the Redis server. Every script
//! reads the server's clock (`TIME`), so replicas whose clocks differ still share one window
//! and one rate; every key a script writes gets a TTL.

use redis::Script;
use std::sync::LazyLock;

/// GCRA, as governor computes it in process: a key holds its theoretical arrival time (TAT) in
/// milliseconds. ARGV: emission interval (ms, float), burst, longest TTL (ms), tokens a replica
/// already let through on its own view (`state.redis_sync`; added unchecked, so the fleet's
/// TAT remembers every one), and 1 to try to take a token now or 0 only to report. Returns
/// `{wait, ahead}`: 0 when the token was taken (else the wait in milliseconds, at least 1),
/// and how far the TAT is ahead of the server's clock, in whole milliseconds rounded up.
pub(crate) static RATE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000
local interval = tonumber(ARGV[1])
local tau = interval * tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1])) or now
if tat < now then tat = now end
tat = tat + interval * tonumber(ARGV[4])
local wait = 0
if ARGV[5] == '1' then
  local next_tat = tat + interval
  if next_tat - now > tau then
    wait = math.max(1, math.ceil(next_tat - now - tau))
  else
    tat = next_tat
  end
end
if tat > now then
  local ttl = math.min(math.ceil(tat - now) + 1, tonumber(ARGV[3]))
  redis.call('SET', KEYS[1], string.format('%.3f', tat), 'PX', ttl)
end
return {wait, math.ceil(tat - now)}
",
    )
});

/// A sliding window of eight buckets, as the in-process counter keeps: a hash of bucket
/// number to sum, and `w` the window it was made for (another window starts afresh).
/// ARGV: delta, window (ms). Returns the window's total.
pub(crate) static COUNT: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local window = tonumber(ARGV[2])
local bucket_ms = math.max(1, math.floor(window / 8))
local bucket = math.floor(now / bucket_ms)
if redis.call('HGET', KEYS[1], 'w') ~= ARGV[2] then
  redis.call('DEL', KEYS[1])
  redis.call('HSET', KEYS[1], 'w', ARGV[2])
end
redis.call('HINCRBY', KEYS[1], string.format('%d', bucket), ARGV[1])
local total = 0
local fields = redis.call('HGETALL', KEYS[1])
for i = 1, #fields, 2 do
  if fields[i] ~= 'w' then
    if tonumber(fields[i]) <= bucket - 8 then
      redis.call('HDEL', KEYS[1], fields[i])
    else
      total = total + tonumber(fields[i + 1])
    end
  end
end
redis.call('PEXPIRE', KEYS[1], window + bucket_ms)
return total
",
    )
});

/// Distinct members within a window: a sorted set of member to last-seen time, trimmed to the
/// window and capped (the oldest goes first). ARGV: window (ms), cap, then the members seen
/// (one, or a replica's since its last sync). Returns the size.
pub(crate) static DISTINCT: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local window = tonumber(ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
for i = 3, #ARGV do
  redis.call('ZADD', KEYS[1], now, ARGV[i])
end
local n = redis.call('ZCARD', KEYS[1])
local cap = tonumber(ARGV[2])
if n > cap then
  redis.call('ZPOPMIN', KEYS[1], n - cap)
  n = cap
end
if n > 0 then redis.call('PEXPIRE', KEYS[1], window + 1) end
return n
",
    )
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
