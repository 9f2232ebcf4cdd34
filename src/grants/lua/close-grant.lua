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
-- ARGV[6] retention (ms)   ARGV[7] presented jti ('': not checked)
-- ARGV[8] n1 = number of the closing event's field/value strings
-- ARGV[9 .. 8+n1] the closing event   ARGV[9+n1 ..] grant.replay_detected fields (with its reason)
--
-- Returns {'closed', hash} | {'inactive', hash} | {'replay', hash} | {'marked'} | {'unknown'}.
-- A presented jti that is not the grant's latest token means two holders, as in
-- renew-grant.lua: the grant is revoked with a grant.replay_detected event instead.
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
local n1 = tonumber(ARGV[8])
local keep = math.max(0, expires_at - now) + tonumber(ARGV[6])
local outcome = 'closed'
local status = ARGV[3]
local event = slice(9, 8 + n1)
if ARGV[7] ~= '' and redis.call('HGET', KEYS[1], 'token_jti') ~= ARGV[7] then
  outcome = 'replay'
  status = 'revoked'
  event = slice(9 + n1, #ARGV)
  event[#event + 1] = 'generation'
  event[#event + 1] = redis.call('HGET', KEYS[1], 'generation')
end
audit(KEYS[3], ARGV[5], keep, event)
redis.call('HSET', KEYS[1], 'status', status, 'expires_at', num(math.min(expires_at, now)))
redis.call('ZREM', KEYS[2], h[4])
return {outcome, redis.call('HGETALL', KEYS[1])}
