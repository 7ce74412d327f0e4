-- Extend a holder's lease in a tool semaphore, on the Redis clock like claim.lua.
-- KEYS: the semaphore    ARGV: holder, lease ms
-- Returns 1 if the holder still had its slot.
local now = now_ms()
local held = redis.call('ZADD', KEYS[1], 'XX', 'CH', now + tonumber(ARGV[2]), ARGV[1])
redis.call('PEXPIRE', KEYS[1], 2 * tonumber(ARGV[2]))
return held
