-- void-grant.lua: end a grant whose token was never delivered (jit-broker).
--
-- When the create-grant write timed out or its connection dropped, the broker cannot know
-- whether Redis ran it; the caller got a 503 and no token. This makes the outcome definite:
-- a grant that exists and is active is ended now (status, expires_at, live index, audit event);
-- a grant that does not exist gets a void marker, so a create-grant arriving late writes nothing.
--
-- KEYS[1] grant hash   KEYS[2] live zset   KEYS[3] audit stream   KEYS[4] void marker
-- ARGV[1] now (ms)   ARGV[2] grant id   ARGV[3] marker TTL (ms)   ARGV[4] audit MAXLEN (approximate)
-- ARGV[5 ..] grant.ended audit field/value pairs
--
-- Returns 'ended' | 'marked' | 'noop' (exists, no longer active).

if redis.call('EXISTS', KEYS[1]) == 0 then
  redis.call('SET', KEYS[4], '1', 'PX', ARGV[3])
  return 'marked'
end
if redis.call('HGET', KEYS[1], 'status') ~= 'active' then
  return 'noop'
end
-- Never later than it was: a grant whose lifetime already ran out keeps its own end.
local ends = tonumber(redis.call('HGET', KEYS[1], 'expires_at'))
if ends == nil or ends > tonumber(ARGV[1]) then ends = ARGV[1] end
redis.call('HSET', KEYS[1], 'status', 'ended', 'expires_at', ends)
redis.call('ZREM', KEYS[2], ARGV[2])
local fields = {}
for i = 5, #ARGV do
  fields[#fields + 1] = ARGV[i]
end
redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[4], '*', unpack(fields))
return 'ended'
