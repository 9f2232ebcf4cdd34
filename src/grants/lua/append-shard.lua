-- append-shard.lua: append a batch of copied audit events to one shard stream of the global
-- audit log (grants/audit-log.ts), then trim it by age (jit-broker).
--
-- KEYS[1] the shard stream <prefix>{ga:N}:audit
-- ARGV[1] trim before (ms: older entries are trimmed, approximately)
-- ARGV[2] number of events; then for each event: its number of field/value strings, then those strings
--
-- One script per shard and batch: the copies of many requests cost Redis one call, not one each.
-- Returns the number of entries added.

local n = tonumber(ARGV[2])
local i = 3
for _ = 1, n do
  local count = tonumber(ARGV[i])
  local fields = {}
  for j = 1, count do
    fields[j] = ARGV[i + j]
  end
  redis.call('XADD', KEYS[1], '*', unpack(fields))
  i = i + count + 1
end
redis.call('XTRIM', KEYS[1], 'MINID', '~', ARGV[1])
return n
