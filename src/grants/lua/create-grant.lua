#!lua
-- create-grant.lua: record one grant atomically (jit-broker). Prepended with lib.lua.
--
-- Every key below carries the same {w:<tag>} hash tag, so this runs on one node of a Redis
-- Cluster as well as on a standalone Redis. It touches only the keys passed in KEYS.
--
-- KEYS[1] grant record      <prefix>{w:tag}:grant:<id>  (a string: see lib.lua grant_read)
-- KEYS[2] live zset          <prefix>{w:tag}:live        member id, score expires_at
-- KEYS[3] all-grants zset    <prefix>{w:tag}:grants      member id, score created_at
-- KEYS[4] audit stream       <prefix>{w:tag}:audit       (lifecycle events)
-- KEYS[5] void marker        <prefix>{w:tag}:void:<id>   (set by close-grant.lua)
-- KEYS[6] rate bucket        <prefix>{w:tag}:rate
--
-- ARGV[1] now (ms)   ARGV[2] maxActive   ARGV[3] retention (ms)   ARGV[4] grant id
-- ARGV[5] created_at ARGV[6] expires_at  ARGV[7] audit horizon (ms: older events are trimmed)
-- ARGV[8] rate burst (0: unlimited)      ARGV[9] rate interval (ms per token)
-- ARGV[10] the grant record (codec.ts grantToRecord)
-- ARGV[11 .. #ARGV]          grant.issued audit field/value pairs
--
-- There is no index by task: a listing by task walks the workload's grants (bounded by
-- retention). A key per task cost about 1 KiB per grant (bench/ measures memory per grant).
--
-- Returns {'ok'} | {'dup'} | {'void'} | {'cap', live_count, earliest_live_expiry} | {'rate', wait_ms}.
--
-- A refusal writes nothing (the broker records the denial, within its audit budget). The audit
-- event is the first write: Redis refuses a script's first write when out of memory but not later
-- ones, so an event that cannot be written leaves no grant.
-- TTLs are set with relative PEXPIRE computed from the caller's `now`, so the broker's clock
-- and Redis's clock need not agree: a record lives (expires_at - now) + retention from the write.

local now = tonumber(ARGV[1])
local max_active = tonumber(ARGV[2])
local retention = tonumber(ARGV[3])
local id = ARGV[4]
local created_at = ARGV[5]
local expires_at = tonumber(ARGV[6])
local audit_horizon = ARGV[7]
local burst = tonumber(ARGV[8])
local interval = tonumber(ARGV[9])

-- A grant id is never reused: refuse before anything is written.
if redis.call('EXISTS', KEYS[1]) == 1 then
  return {'dup'}
end
-- Voided before it arrived (its caller already got a 503): write nothing.
if redis.call('EXISTS', KEYS[5]) == 1 then
  return {'void'}
end

-- Liveness is expires_at > now, so an entry scored exactly `now` is already dead. Counted
-- without writing: the first write must be the audit event (see above).
local live = redis.call('ZCOUNT', KEYS[2], '(' .. num(now), '+inf')
if live >= max_active then
  local first = redis.call('ZRANGEBYSCORE', KEYS[2], '(' .. num(now), '+inf', 'WITHSCORES', 'LIMIT', 0, 1)
  return {'cap', live, first[2] or ''}
end
-- Checked after the cap, so only a grant that is written spends a rate token.
local wait, bucket = bucket_take(KEYS[6], burst, interval, now)
if wait > 0 then
  return {'rate', wait}
end

local keep = (expires_at - now) + retention
audit(KEYS[4], audit_horizon, keep, slice(11, #ARGV))
bucket_store(bucket)
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', num(now))

redis.call('SET', KEYS[1], ARGV[10], 'PX', num(keep))

redis.call('ZADD', KEYS[2], ARGV[6], id)
extend(KEYS[2], expires_at - now)

local horizon = '(' .. num(now - retention)
redis.call('ZADD', KEYS[3], created_at, id)
redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', horizon)
extend(KEYS[3], keep)

return {'ok'}
