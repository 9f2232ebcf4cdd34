-- lib.lua: helpers prepended to the grant scripts that use them (jit-broker). Redis scripts
-- cannot import one another, so the store concatenates this file in front of each at load.

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

-- ARGV[from .. to] as a table.
local function slice(from, to)
  local out = {}
  for i = from, to do
    out[#out + 1] = ARGV[i]
  end
  return out
end

-- Token bucket in a hash {tokens, at}: holds at most `burst`, earns one every `interval` ms.
-- Reads only: returns 0 and the bucket after taking one token, or the ms until one is earned.
-- The caller writes its audit event first, then `bucket_store`s: a failed event changes nothing.
-- A `now` older than the last take (brokers' clocks differ a little) earns nothing.
local function bucket_take(key, burst, interval, now)
  if burst <= 0 then return 0, nil end
  local h = redis.call('HMGET', key, 'tokens', 'at')
  local tokens = tonumber(h[1])
  local at = tonumber(h[2])
  if tokens == nil or at == nil then
    tokens = burst
    at = now
  end
  if now > at then
    tokens = math.min(burst, tokens + (now - at) / interval)
    at = now
  end
  if tokens < 1 then
    return math.max(1, math.ceil((1 - tokens) * interval)), nil
  end
  return 0, {key, tokens - 1, at, burst, interval}
end

-- Writes the bucket `bucket_take` returned (nil: no limit, nothing to write).
local function bucket_store(b)
  if b == nil then return end
  redis.call('HSET', b[1], 'tokens', string.format('%.6f', b[2]), 'at', num(b[3]))
  -- Gone once it would be full again: an idle workload keeps nothing.
  redis.call('PEXPIRE', b[1], num(math.ceil((b[4] - b[2]) * b[5]) + 1000))
end

-- Appends one lifecycle audit event (field/value list) to a stream that lives at least `ttl` ms,
-- and trims its events older than `horizon` ms ('0': none). Lifecycle streams are trimmed by age,
-- never by count, so no number of requests evicts an event within retention. Entry ids are
-- Redis's own clock, so the horizon is measured from the new entry's id.
local function audit(key, horizon, ttl, fields)
  local id = redis.call('XADD', key, '*', unpack(fields))
  local h = tonumber(horizon)
  if h > 0 then
    redis.call('XTRIM', key, 'MINID', '~', num(tonumber(string.match(id, '^%d+')) - h))
  end
  extend(key, ttl)
end

-- As `audit`, for a change that must stand even if its event cannot be written (a closing):
-- returns nil, or the error text of the write that failed.
local function audit_or_error(key, horizon, ttl, fields)
  local ok, err = pcall(audit, key, horizon, ttl, fields)
  if ok then return nil end
  if type(err) == 'table' then err = err.err end
  return tostring(err)
end

-- A grant record is one string of lines: status, expires_at, generation, token_jti, token_exp,
-- workload, then the fields that never change as a JSON array, which the scripts pass through,
-- then kid and closed_by ('' when none; records written before them end at the JSON line, and
-- are written back in the new shape), then, once the grant has been renewed, prev_jti (the token
-- the latest renewal superseded) and token_iat (ms: when the latest token was minted; a renewal
-- retried within the window gets the latest token again: renew-grant.lua), then token_digest (a
-- keyed digest of the latest token; the renewal lines are then written even when empty). See
-- codec.ts grantToRecord. Returns the record as a table; or nil, 'missing' when the key holds
-- none; or nil, 'unreadable' when it holds anything the broker would not decode (another type, a
-- field out of shape, JSON that cjson cannot parse): such a record is never trusted or changed,
-- and the callers say so rather than answer as if there were no grant (issue 11).
local RECORD = '^([^\n]*)\n([^\n]*)\n([^\n]*)\n([^\n]*)\n([^\n]*)\n([^\n]*)\n([^\n]*)$'
local RECORD_KID = '^([^\n]*)\n([^\n]*)\n([^\n]*)\n([^\n]*)\n([^\n]*)\n([^\n]*)\n([^\n]*)\n([^\n]*)\n([^\n]*)$'
local RECORD_PREV = '^([^\n]*)\n([^\n]*)\n([^\n]*)\n([^\n]*)\n([^\n]*)\n([^\n]*)\n([^\n]*)\n([^\n]*)\n([^\n]*)\n([^\n]*)\n([^\n]*)$'
local RECORD_DIGEST = '^([^\n]*)\n([^\n]*)\n([^\n]*)\n([^\n]*)\n([^\n]*)\n([^\n]*)\n([^\n]*)\n([^\n]*)\n([^\n]*)\n([^\n]*)\n([^\n]*)\n([^\n]*)$'
local STATUSES = {active = true, ended = true, revoked = true}
local function grant_read(key)
  local raw = redis.pcall('GET', key)
  if raw == false then return nil, 'missing' end
  if type(raw) ~= 'string' then return nil, 'unreadable' end
  local status, expires_at, generation, token_jti, token_exp, workload, fixed, kid, closed_by, prev_jti, token_iat, token_digest = string.match(raw, RECORD_DIGEST)
  if not status then
    status, expires_at, generation, token_jti, token_exp, workload, fixed, kid, closed_by, prev_jti, token_iat = string.match(raw, RECORD_PREV)
    token_digest = ''
  end
  if not status then
    status, expires_at, generation, token_jti, token_exp, workload, fixed, kid, closed_by = string.match(raw, RECORD_KID)
    prev_jti, token_iat = '', ''
    token_digest = ''
  end
  if not status then
    status, expires_at, generation, token_jti, token_exp, workload, fixed = string.match(raw, RECORD)
    kid, closed_by = '', ''
    token_digest = ''
  end
  if not status or not STATUSES[status] or token_jti == '' or workload == '' then return nil, 'unreadable' end
  for _, n in ipairs({expires_at, generation, token_exp}) do
    if not string.match(n, '^%d+$') or #n > 15 then return nil, 'unreadable' end
  end
  -- Both or neither, as codec.ts writes them.
  if (prev_jti == '') ~= (token_iat == '') then return nil, 'unreadable' end
  if token_iat ~= '' and (not string.match(token_iat, '^%d+$') or #token_iat > 15) then return nil, 'unreadable' end
  -- As codec.ts: 22 base64url characters, or none.
  if token_digest ~= '' and (#token_digest ~= 22 or not string.match(token_digest, '^[%w_-]+$')) then return nil, 'unreadable' end
  local ok, decoded = pcall(cjson.decode, fixed)
  if not ok or type(decoded) ~= 'table' or tonumber(generation) < 1 then return nil, 'unreadable' end
  return {
    status = status, expires_at = tonumber(expires_at), generation = tonumber(generation),
    token_jti = token_jti, token_exp = token_exp, workload = workload, fixed = fixed, raw = raw,
    kid = kid, closed_by = closed_by, prev_jti = prev_jti, token_iat = token_iat, token_digest = token_digest,
  }
end

-- The record as stored (what the scripts return to the broker).
local function grant_string(g)
  local lines = {g.status, num(g.expires_at), tostring(g.generation), g.token_jti, g.token_exp, g.workload, g.fixed, g.kid, g.closed_by}
  if g.prev_jti ~= '' or g.token_digest ~= '' then
    lines[#lines + 1] = g.prev_jti
    lines[#lines + 1] = g.token_iat
  end
  if g.token_digest ~= '' then
    lines[#lines + 1] = g.token_digest
  end
  return table.concat(lines, '\n')
end

-- Rewrites a record read by grant_read, keeping its TTL; returns the new string.
local function grant_write(key, g)
  local s = grant_string(g)
  redis.call('SET', key, s, 'KEEPTTL')
  return s
end
