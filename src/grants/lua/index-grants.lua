#!lua
-- index-grants.lua: add a batch of grants to one shard of the global newest-first index (jit-broker).
--
-- KEYS[1] one shard <prefix>{gi:N}:grants   member grant id, score created_at
-- ARGV[1] prune before (ms): entries created before it are removed (the latest now - retention
--         of the batch; 0: none)
-- ARGV[2] ttl (ms): how long the shard must live from now at least (the longest of the batch)
-- ARGV[3..] pairs of created_at, grant id
--
-- One key, so it runs on any Redis Cluster node: the global index is N fixed shards, each in its
-- own slot, written shortly after the grants' own atomic creates (which cannot touch another
-- slot), batched per shard with the audit shard copies (grants/shard-batches.ts). Entries older
-- than the retention are pruned here (and on read); the TTL is never shortened.

redis.call('ZADD', KEYS[1], unpack(ARGV, 3))
if tonumber(ARGV[1]) > 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', '(' .. ARGV[1])
end
local ttl = tonumber(ARGV[2])
if ttl < 1 then ttl = 1 end
local cur = redis.call('PTTL', KEYS[1])
if cur < 0 or cur < ttl then
  redis.call('PEXPIRE', KEYS[1], string.format('%.0f', ttl))
end
return (#ARGV - 2) / 2
