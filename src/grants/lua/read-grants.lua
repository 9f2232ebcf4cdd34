#!lua flags=allow-oom
-- read-grants.lua: read one workload's grant records named by an index, pruning as it goes (jit-broker).
-- Prepended with lib.lua.
-- allow-oom: it only reads and deletes (prunes), so operators still list grants when Redis is at maxmemory.
--
-- All keys carry the same {w:<tag>} hash tag; the script touches only the keys passed in KEYS.
--
-- KEYS[1] index zset (all-grants or live)   KEYS[2 .. n+1] the grant records of ARGV[4 .. n+3]
-- ARGV[1] workload id   ARGV[2] max: how many records to return at most
-- ARGV[3] '1' to prune ids whose records are gone, '0' to leave the index alone
-- ARGV[4 .. n+3] grant ids
--
-- Returns {id, record, id, record, ...}: up to `max` records of this workload, in the
-- order given; a record that is there but does not decode comes as '' (it counts nowhere). An id whose record is gone (it expired) is removed from the index, so reads prune
-- too, and counts nowhere towards `max`. A record of another workload (one whose tag is the same)
-- is skipped but left alone: the index is that workload's index as well. The live index is never
-- pruned here: it drives the active cap, and a record missing before its time (evicted under a
-- volatile-* maxmemory policy) must not free a slot; live entries leave by their own score.

local workload = ARGV[1]
local max = tonumber(ARGV[2])
local prune = ARGV[3] == '1'

local out = {}
local found = 0
local gone = {}
for i = 2, #KEYS do
  if found >= max then break end
  local id = ARGV[i + 2]
  if redis.call('EXISTS', KEYS[i]) == 0 then
    gone[#gone + 1] = id
  else
    local g = grant_read(KEYS[i])
    if g == nil then
      -- There but undecodable: named (with an empty record) so the broker logs it, never skipped silently.
      out[#out + 1] = id
      out[#out + 1] = ''
    elseif g.workload == workload then
      out[#out + 1] = id
      out[#out + 1] = g.raw
      found = found + 1
    end
  end
end
if prune and #gone > 0 then
  redis.call('ZREM', KEYS[1], unpack(gone))
end
return out
