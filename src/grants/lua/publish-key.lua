#!lua
-- publish-key.lua: publish the public half of a signing key (jit-broker).
--
-- KEYS[1] keys hash <prefix>keys   field kid -> JSON of the PublishedKey
-- ARGV[1] kid   ARGV[2] JSON   ARGV[3] ttl (ms): how long this key must stay published from now
--
-- The hash lives at least as long as its longest-lived key (the TTL is never shortened), so a
-- broker fleet that stops publishing leaves nothing behind for ever.

redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
local ttl = tonumber(ARGV[3])
if ttl < 1 then ttl = 1 end
local cur = redis.call('PTTL', KEYS[1])
if cur < 0 or cur < ttl then
  redis.call('PEXPIRE', KEYS[1], string.format('%.0f', ttl))
end
return 1
