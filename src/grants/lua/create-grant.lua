-- create-grant.lua: record one grant atomically (jit-broker).
--
-- Every key below carries the same {w:<tag>} hash tag, so this runs on one node of a Redis
-- Cluster as well as on a standalone Redis. It touches only the keys passed in KEYS.
--
-- KEYS[1] grant hash        <prefix>{w:tag}:grant:<id>
-- KEYS[2] live zset         <prefix>{w:tag}:live        member id, score expires_at
-- KEYS[3] all-grants zset   <prefix>{w:tag}:grants      member id, score created_at
-- KEYS[4] task zset         <prefix>{w:tag}:task:<task> member id, score created_at
-- KEYS[5] audit stream      <prefix>{w:tag}:audit
-- KEYS[6] void marker       <prefix>{w:tag}:void:<id>   (set by void-grant.lua)
--
-- ARGV[1] now (ms)   ARGV[2] maxActive   ARGV[3] retention (ms)   ARGV[4] grant id
-- ARGV[5] created_at ARGV[6] expires_at  ARGV[7] audit MAXLEN (approximate)
-- ARGV[8] n1 = number of grant hash field/value strings
-- ARGV[9] n2 = number of grant.issued audit field/value strings
-- ARGV[10 .. 9+n1]            grant hash field/value pairs
-- ARGV[10+n1 .. 9+n1+n2]      grant.issued audit field/value pairs
-- ARGV[10+n1+n2 .. #ARGV]     grant.denied audit field/value pairs (written only on refusal)
--
-- Returns {'ok'} | {'dup'} | {'void'} | {'cap', live_count, earliest_live_expiry}.
--
-- TTLs are set with relative PEXPIRE computed from the caller's `now`, so the broker's clock
-- and Redis's clock need not agree: a record lives (expires_at - now) + retention from the write.

local now = tonumber(ARGV[1])
local max_active = tonumber(ARGV[2])
local retention = tonumber(ARGV[3])
local id = ARGV[4]
local created_at = ARGV[5]
local expires_at = tonumber(ARGV[6])
local maxlen = ARGV[7]
local n1 = tonumber(ARGV[8])
local n2 = tonumber(ARGV[9])

local function num(n)
  return string.format('%.0f', n)
end

-- Sets the key's TTL to `ttl` ms unless it already lives at least that long (never shortens).
local function extend(key, ttl)
  if ttl < 1 then ttl = 1 end
  local cur = redis.call('PTTL', key)
  if cur < 0 or cur < ttl then
    redis.call('PEXPIRE', key, num(ttl))
  end
end

local function slice(from, to)
  local out = {}
  for i = from, to do
    out[#out + 1] = ARGV[i]
  end
  return out
end

-- A grant id is never reused: refuse before anything is written.
if redis.call('EXISTS', KEYS[1]) == 1 then
  return {'dup'}
end
-- Voided before it arrived (its caller already got a 503): write nothing.
if redis.call('EXISTS', KEYS[6]) == 1 then
  return {'void'}
end

-- Liveness is expires_at > now, so an entry scored exactly `now` is already dead.
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', num(now))
local live = redis.call('ZCARD', KEYS[2])
if live >= max_active then
  local denied = slice(10 + n1 + n2, #ARGV)
  redis.call('XADD', KEYS[5], 'MAXLEN', '~', maxlen, '*', unpack(denied))
  extend(KEYS[5], retention)
  local first = redis.call('ZRANGE', KEYS[2], 0, 0, 'WITHSCORES')
  return {'cap', live, first[2] or ''}
end

local keep = (expires_at - now) + retention

redis.call('HSET', KEYS[1], unpack(slice(10, 9 + n1)))
redis.call('PEXPIRE', KEYS[1], num(keep))

redis.call('ZADD', KEYS[2], ARGV[6], id)
extend(KEYS[2], expires_at - now)

local horizon = '(' .. num(now - retention)
redis.call('ZADD', KEYS[3], created_at, id)
redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', horizon)
extend(KEYS[3], keep)

redis.call('ZADD', KEYS[4], created_at, id)
redis.call('ZREMRANGEBYSCORE', KEYS[4], '-inf', horizon)
extend(KEYS[4], keep)

redis.call('XADD', KEYS[5], 'MAXLEN', '~', maxlen, '*', unpack(slice(10 + n1, 9 + n1 + n2)))
extend(KEYS[5], keep)

return {'ok'}
