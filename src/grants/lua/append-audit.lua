-- append-audit.lua: append one audit event to a workload's stream (jit-broker).
--
-- KEYS[1] audit stream <prefix>{w:tag}:audit
-- ARGV[1] retention (ms)   ARGV[2] MAXLEN (approximate)   ARGV[3..] field/value pairs
--
-- The stream lives at least `retention` after its latest event (the TTL is never shortened).
-- Returns the entry id.

local retention = tonumber(ARGV[1])
local fields = {}
for i = 3, #ARGV do
  fields[#fields + 1] = ARGV[i]
end
local id = redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[2], '*', unpack(fields))
local cur = redis.call('PTTL', KEYS[1])
if cur < 0 or cur < retention then
  redis.call('PEXPIRE', KEYS[1], ARGV[1])
end
return id
