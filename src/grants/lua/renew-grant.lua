#!lua
-- renew-grant.lua: replace a live grant's latest token atomically (jit-broker). Prepended with lib.lua.
--
-- The grant record's `token_jti` names its latest token and `generation` counts them. A renewal must
-- present the latest: presenting an older one means two holders of the grant (one renewed, the
-- other still holds the old token), so the grant is revoked at once (Teleport's lineage check).
-- One exception makes renewal safe to retry: the token the latest renewal superseded (prev_jti),
-- presented within ARGV[14] ms of that renewal (token_iat) by a broker that names the current
-- token (ARGV[4], ARGV[5]) as the one it re-signed, is a renewal whose answer was lost: answered
-- {'current', record}, nothing written (but the kid, when the broker re-signed with another key),
-- no rate token taken, no generation. The broker checked
-- evidence and binding as for any renewal.
--
-- KEYS[1] grant record   KEYS[2] live zset   KEYS[3] audit stream   KEYS[4] rate bucket
-- ARGV[1] now (ms)   ARGV[2] workload id   ARGV[3] presented jti
-- ARGV[4] new jti ('': only revoke on a replay, renew nothing; the store runs this under
--         allow-oom when Redis refused the renewal for memory, so a replay still revokes)
-- ARGV[5] new token exp (ms)   ARGV[6] retention (ms)   ARGV[7] audit horizon (ms: older events are trimmed)
-- ARGV[8] rate burst (0: unlimited)   ARGV[9] rate interval (ms per token)
-- ARGV[10] reason recorded on a replay   ARGV[11] grant id   ARGV[12] kid of the new token's key
-- ARGV[13] n1 = number of grant.renewed audit field/value strings (generation is added here)
-- ARGV[14] retry window (ms; 0: none)
-- ARGV[15] digest of the new token (codec.ts token_digest; '': none recorded). A retry keeps the
--          recorded one: it names the latest token's first bytes, and the re-signed copy then
--          renews by its signature.
-- ARGV[16 .. 15+n1] grant.renewed fields   ARGV[16+n1 ..] grant.replay_detected fields
-- A rate refusal writes nothing (the broker records the denial, within its audit budget).
--
-- Returns {'unknown'} | {'unreadable'} | {'inactive', record} | {'replay', record[, audit error]}
-- | {'rate', wait_ms} | {'renewed', record} | {'current', record} | {'not_replay'} (revoke-only mode) where record is the
-- grant record string after the script. 'unreadable': a record is there but does not decode;
-- nothing is changed or written. A replay revokes first and writes its event after, as close-grant.lua.

local now = tonumber(ARGV[1])
local retention = tonumber(ARGV[6])
local horizon = ARGV[7]
local n1 = tonumber(ARGV[13])
local window = tonumber(ARGV[14])

local g, why = grant_read(KEYS[1])
if g == nil then
  if why == 'missing' then return {'unknown'} end
  return {'unreadable'}
end
if g.workload ~= ARGV[2] then
  return {'unknown'}
end
if g.status ~= 'active' or g.expires_at == nil or g.expires_at <= now then
  return {'inactive', g.raw}
end
local keep = (g.expires_at - now) + retention

if g.token_jti ~= ARGV[3] and g.prev_jti ~= '' and g.prev_jti == ARGV[3] and window > 0
    and now - tonumber(g.token_iat) <= window
    and (ARGV[4] == '' or (ARGV[4] == g.token_jti and ARGV[5] == g.token_exp)) then
  if ARGV[4] == '' then return {'not_replay'} end
  -- Re-signed with another key (the broker rotated since): the record names the key of the token
  -- its holder now has, so a revocation by key finds the grant.
  if ARGV[12] ~= '' and ARGV[12] ~= g.kid then
    g.kid = ARGV[12]
    return {'current', grant_write(KEYS[1], g)}
  end
  return {'current', g.raw}
end
if g.token_jti ~= ARGV[3] then
  local replay = slice(16 + n1, #ARGV)
  replay[#replay + 1] = 'reason'
  replay[#replay + 1] = ARGV[10]
  replay[#replay + 1] = 'generation'
  replay[#replay + 1] = tostring(g.generation)
  g.status = 'revoked'
  g.expires_at = now
  g.closed_by = 'replay_detected'
  local record = grant_write(KEYS[1], g)
  redis.call('ZREM', KEYS[2], ARGV[11])
  local lost = audit_or_error(KEYS[3], horizon, keep, replay)
  if lost then return {'replay', record, lost} end
  return {'replay', record}
end
if ARGV[4] == '' then
  return {'not_replay'}
end

local wait, bucket = bucket_take(KEYS[4], tonumber(ARGV[8]), tonumber(ARGV[9]), now)
if wait > 0 then
  return {'rate', wait}
end
local fields = slice(16, 15 + n1)

g.generation = g.generation + 1
fields[#fields + 1] = 'generation'
fields[#fields + 1] = tostring(g.generation)
audit(KEYS[3], horizon, keep, fields)
bucket_store(bucket)
g.prev_jti = g.token_jti
g.token_iat = num(now)
g.token_jti = ARGV[4]
g.token_exp = ARGV[5]
if ARGV[12] ~= '' then g.kid = ARGV[12] end
g.token_digest = ARGV[15]
return {'renewed', grant_write(KEYS[1], g)}
