#!lua flags=allow-oom
-- close-grant.lua: move a live grant's expiry to now, with its status and audit event (jit-broker).
-- Prepended with lib.lua (the store keeps the flags line above first).
--
-- allow-oom: ending access must work when Redis is at maxmemory (issuance is refused then). The
-- closing rewrites the record in place and frees its live-index entry first; its audit event
-- follows, and if that write fails the grant stays closed and the reply says so (the store logs it).
--
-- Ending (by its holder), revoking (RFC 7009, operators) and voiding (a create whose reply
-- never came) all come here. Voiding also bars a grant that does not exist yet: its create may
-- still be in flight, and the marker makes it write nothing when it arrives.
--
-- KEYS[1] grant record   KEYS[2] live zset   KEYS[3] audit stream   KEYS[4] void marker
-- ARGV[1] now (ms)   ARGV[2] workload id   ARGV[3] status ('ended' | 'revoked')
-- ARGV[4] marker TTL (ms; 0: do not mark a missing grant)   ARGV[5] audit horizon (ms; '0': no trim)
-- ARGV[6] retention (ms)   ARGV[7] presented jti ('': not checked)
-- ARGV[8] grant id   ARGV[9] who closes it (recorded as the grant's closed_by)
-- ARGV[10] n1 = number of the closing event's field/value strings
-- ARGV[11] retry window (ms; 0: none): the token the latest renewal superseded, presented within
--          this long of that renewal, is its holder whose renewal answer was lost (renew-grant.lua),
--          not a second holder: it closes the grant as the latest token would
-- ARGV[12 .. 11+n1] the closing event   ARGV[12+n1 ..] grant.replay_detected fields (with its reason)
--
-- Returns {'closed', record} | {'inactive', record} | {'replay', record} | {'marked'} | {'unknown'}
-- | {'unreadable'} (a record is there but does not decode: nothing is changed or written);
-- 'closed' and 'replay' carry a third element, the error, when the audit event was not written.
-- A presented jti that is not the grant's latest token means two holders, as in
-- renew-grant.lua: the grant is revoked with a grant.replay_detected event instead.
-- Voiding also closes an active grant whose lifetime already ran out (keeping its own end), so
-- the record says its token was never delivered; ending and revoking need a live grant.

local now = tonumber(ARGV[1])
if redis.call('EXISTS', KEYS[1]) == 0 then
  if tonumber(ARGV[4]) > 0 then
    redis.call('SET', KEYS[4], '1', 'PX', ARGV[4])
    return {'marked'}
  end
  return {'unknown'}
end
local g = grant_read(KEYS[1])
if g == nil then
  return {'unreadable'}
end
if g.workload ~= ARGV[2] then
  return {'unknown'}
end
local voiding = tonumber(ARGV[4]) > 0
if g.status ~= 'active' or g.expires_at == nil or (g.expires_at <= now and not voiding) then
  return {'inactive', g.raw}
end
local n1 = tonumber(ARGV[10])
local keep = math.max(0, g.expires_at - now) + tonumber(ARGV[6])
local outcome = 'closed'
local status = ARGV[3]
local event = slice(12, 11 + n1)
local closed_by = ARGV[9]
local window = tonumber(ARGV[11])
local retried = window > 0 and g.prev_jti ~= '' and g.prev_jti == ARGV[7] and now - tonumber(g.token_iat) <= window
if ARGV[7] ~= '' and g.token_jti ~= ARGV[7] and not retried then
  outcome = 'replay'
  status = 'revoked'
  event = slice(12 + n1, #ARGV)
  closed_by = 'replay_detected'
  event[#event + 1] = 'generation'
  event[#event + 1] = tostring(g.generation)
end
g.status = status
g.expires_at = math.min(g.expires_at, now)
g.closed_by = closed_by
local record = grant_write(KEYS[1], g)
redis.call('ZREM', KEYS[2], ARGV[8])
local lost = audit_or_error(KEYS[3], ARGV[5], keep, event)
if lost then return {outcome, record, lost} end
return {outcome, record}
