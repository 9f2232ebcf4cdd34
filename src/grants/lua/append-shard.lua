#!lua
-- append-shard.lua: append a batch of copied audit events to one shard stream of the global
-- audit log (grants/audit-log.ts), then trim it by age and, for denials, by count (jit-broker).
--
-- KEYS[1] the shard stream <prefix>{ga:N}:audit (lifecycle) or <prefix>{ga:N}:denials
-- ARGV[1] trim before (ms: older entries are trimmed, approximately; 0: no trim by age)
-- ARGV[2] keep at most this many entries (exactly; 0: no cap). Denials are capped like the
--         streams they copy, so sources that each stay within their own budget cannot grow it.
-- ARGV[3] number of events; then for each event: its number of field/value strings, then those strings
--
-- One script per shard and batch: the copies of many requests cost Redis one call, not one each.
-- Returns the number of entries added.

local n = tonumber(ARGV[3])
local i = 4
for _ = 1, n do
  local count = tonumber(ARGV[i])
  local fields = {}
  for j = 1, count do
    fields[j] = ARGV[i + j]
  end
  redis.call('XADD', KEYS[1], '*', unpack(fields))
  i = i + count + 1
end
if tonumber(ARGV[1]) > 0 then
  redis.call('XTRIM', KEYS[1], 'MINID', '~', ARGV[1])
end
if tonumber(ARGV[2]) > 0 then
  redis.call('XTRIM', KEYS[1], 'MAXLEN', ARGV[2])
end
return n
