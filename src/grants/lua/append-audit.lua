#!lua
-- append-audit.lua: append one audit event to a stream (jit-broker).
--
-- KEYS[1] the stream: a workload's lifecycle or denial stream, or an unmatched-denial partition
-- ARGV[1] retention (ms)   ARGV[2] 'count' or 'age': how the stream is trimmed
-- ARGV[3] the entries kept (count, approximate) or their age (ms, approximate)
-- ARGV[4..] field/value pairs
--
-- Denial streams are capped by count; lifecycle streams are trimmed by age only (lib.lua audit).
-- The stream lives at least `retention` after its latest event (the TTL is never shortened).
-- Returns the entry id.

local retention = tonumber(ARGV[1])
local fields = {}
for i = 4, #ARGV do
  fields[#fields + 1] = ARGV[i]
end
local id
if ARGV[2] == 'count' then
  id = redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[3], '*', unpack(fields))
else
  id = redis.call('XADD', KEYS[1], '*', unpack(fields))
  local ms = tonumber(string.match(id, '^%d+'))
  redis.call('XTRIM', KEYS[1], 'MINID', '~', string.format('%.0f', ms - tonumber(ARGV[3])))
end
local cur = redis.call('PTTL', KEYS[1])
if cur < 0 or cur < retention then
  redis.call('PEXPIRE', KEYS[1], ARGV[1])
end
return id
