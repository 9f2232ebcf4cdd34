-- close-grant.lua: move a live grant's expiry to now, with its status and audit event (jit-broker).
-- Prepended with lib.lua.
--
-- Ending (by its holder), revoking (RFC 7009, operators) and voiding (a create whose reply
-- never came) all come here. Voiding also bars a grant that does not exist yet: its create may
-- still be in flight, and the marker makes it write nothing when it arrives.
--
-- KEYS[1] grant hash   KEYS[2] live zset   KEYS[3] audit stream   KEYS[4] void marker
-- ARGV[1] now (ms)   ARGV[2] workload id   ARGV[3] status ('ended' | 'revoked')
-- ARGV[4] marker TTL (ms; 0: do not mark a missing grant)   ARGV[5] audit MAXLEN (approximate)
-- ARGV[6] retention (ms)   ARGV[7 ..] audit event field/value pairs
--
-- Returns {'closed', hash} | {'inactive', hash} | {'marked'} | {'unknown'}.
-- Voiding also closes an active grant whose lifetime already ran out (keeping its own end), so
-- the record says its token was never delivered; ending and revoking need a live grant.

local now = tonumber(ARGV[1])
local h = redis.call('HMGET', KEYS[1], 'workload', 'status', 'expires_at', 'id')
if h[1] == false then
  if tonumber(ARGV[4]) > 0 then
    redis.call('SET', KEYS[4], '1', 'PX', ARGV[4])
    return {'marked'}
  end
  return {'unknown'}
end
if h[1] ~= ARGV[2] then
  return {'unknown'}
end
local expires_at = tonumber(h[3])
local voiding = tonumber(ARGV[4]) > 0
if h[2] ~= 'active' or expires_at == nil or (expires_at <= now and not voiding) then
  return {'inactive', redis.call('HGETALL', KEYS[1])}
end
audit(KEYS[3], ARGV[5], math.max(0, expires_at - now) + tonumber(ARGV[6]), slice(7, #ARGV))
redis.call('HSET', KEYS[1], 'status', ARGV[3], 'expires_at', num(math.min(expires_at, now)))
redis.call('ZREM', KEYS[2], h[4])
return {'closed', redis.call('HGETALL', KEYS[1])}
