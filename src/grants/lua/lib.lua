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
-- Takes one token and returns 0, or returns the ms until one is earned (and writes nothing).
-- A `now` older than the last take (brokers' clocks differ a little) earns nothing.
local function take_token(key, burst, interval, now)
  if burst <= 0 then return 0 end
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
    return math.max(1, math.ceil((1 - tokens) * interval))
  end
  tokens = tokens - 1
  redis.call('HSET', key, 'tokens', string.format('%.6f', tokens), 'at', num(at))
  -- Gone once it would be full again: an idle workload keeps nothing.
  redis.call('PEXPIRE', key, num(math.ceil((burst - tokens) * interval) + 1000))
  return 0
end

-- Appends one audit event (field/value list) to a stream that lives at least `ttl` ms.
local function audit(key, maxlen, ttl, fields)
  redis.call('XADD', key, 'MAXLEN', '~', maxlen, '*', unpack(fields))
  extend(key, ttl)
end
