#!lua
-- index-grant.lua: add a grant to its shard of the global newest-first index (jit-broker).
--
-- KEYS[1] one shard <prefix>{gi:N}:grants   member grant id, score created_at
-- ARGV[1] now (ms)   ARGV[2] retention (ms)   ARGV[3] grant id   ARGV[4] created_at
-- ARGV[5] ttl (ms): how long the shard must live from now at least
--
-- One key, so it runs on any Redis Cluster node: the global index is N fixed shards, each in its
-- own slot, written right after the grant's own atomic create (which cannot touch another slot).
-- Entries older than the retention are pruned here (and on read); the TTL is never shortened.

redis.call('ZADD', KEYS[1], ARGV[4], ARGV[3])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', '(' .. string.format('%.0f', tonumber(ARGV[1]) - tonumber(ARGV[2])))
local ttl = tonumber(ARGV[5])
if ttl < 1 then ttl = 1 end
local cur = redis.call('PTTL', KEYS[1])
if cur < 0 or cur < ttl then
  redis.call('PEXPIRE', KEYS[1], string.format('%.0f', ttl))
end
return 1
