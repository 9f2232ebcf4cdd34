-- renew-grant.lua: replace a live grant's latest token atomically (jit-broker). Prepended with lib.lua.
--
-- The grant's `token_jti` names its latest token and `generation` counts them. A renewal must
-- present the latest: presenting an older one means two holders of the grant (one renewed, the
-- other still holds the old token), so the grant is revoked at once (Teleport's lineage check).
--
-- KEYS[1] grant hash   KEYS[2] live zset   KEYS[3] audit stream   KEYS[4] rate bucket
-- ARGV[1] now (ms)   ARGV[2] workload id   ARGV[3] presented jti   ARGV[4] new jti
-- ARGV[5] new token exp (ms)   ARGV[6] retention (ms)   ARGV[7] audit MAXLEN (approximate)
-- ARGV[8] rate burst (0: unlimited)   ARGV[9] rate interval (ms per token)
-- ARGV[10] reason recorded when the rate refuses   ARGV[11] reason recorded on a replay
-- ARGV[12] n1 = number of grant.renewed audit field/value strings (generation is added here)
-- ARGV[13 .. 12+n1] grant.renewed fields   ARGV[13+n1 ..] grant.replay_detected fields
-- (grant.denied reuses the renewed fields with type and reason replaced)
--
-- Returns {'unknown'} | {'inactive', hash} | {'replay', hash} | {'rate', wait_ms} | {'renewed', hash}
-- where hash is the grant record after the script, as HGETALL returns it.

local now = tonumber(ARGV[1])
local retention = tonumber(ARGV[6])
local maxlen = ARGV[7]
local n1 = tonumber(ARGV[12])

local h = redis.call('HMGET', KEYS[1], 'workload', 'status', 'expires_at', 'token_jti', 'generation')
if h[1] ~= ARGV[2] then
  return {'unknown'}
end
local expires_at = tonumber(h[3])
if h[2] ~= 'active' or expires_at == nil or expires_at <= now then
  return {'inactive', redis.call('HGETALL', KEYS[1])}
end
local keep = (expires_at - now) + retention
local generation = tonumber(h[5]) or 1

if h[4] ~= ARGV[3] then
  local replay = slice(13 + n1, #ARGV)
  replay[#replay + 1] = 'reason'
  replay[#replay + 1] = ARGV[11]
  replay[#replay + 1] = 'generation'
  replay[#replay + 1] = tostring(generation)
  audit(KEYS[3], maxlen, keep, replay)
  redis.call('HSET', KEYS[1], 'status', 'revoked', 'expires_at', num(now))
  redis.call('ZREM', KEYS[2], redis.call('HGET', KEYS[1], 'id'))
  return {'replay', redis.call('HGETALL', KEYS[1])}
end

local wait, bucket = bucket_take(KEYS[4], tonumber(ARGV[8]), tonumber(ARGV[9]), now)
local fields = slice(13, 12 + n1)
if wait > 0 then
  fields[2] = 'grant.denied' -- fields[1] is 'type'
  fields[#fields + 1] = 'reason'
  fields[#fields + 1] = ARGV[10]
  audit(KEYS[3], maxlen, keep, fields)
  return {'rate', wait}
end

generation = generation + 1
fields[#fields + 1] = 'generation'
fields[#fields + 1] = tostring(generation)
audit(KEYS[3], maxlen, keep, fields)
bucket_store(bucket)
redis.call('HSET', KEYS[1], 'token_jti', ARGV[4], 'token_exp', ARGV[5], 'generation', tostring(generation))
return {'renewed', redis.call('HGETALL', KEYS[1])}
