-- Take concurrency slots of a tool (its max_concurrency, cluster-wide). The semaphore
-- belongs to the tool, not to a run, so this runs on its key alone, before the claims:
-- every script stays within one hash slot (Redis Cluster).
-- KEYS: the semaphore    ARGV: limit, lease ms, holders... (one per claim wanted)
-- Returns the holders that got a slot (as many as were free, in order).
-- Holders are scored by lease expiry: a crashed holder (or one that died between this
-- and its claim) drops out when its lease passes; it cannot leak a slot.
local now = now_ms()
local limit, lease = tonumber(ARGV[1]), tonumber(ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
local got = {}
for i = 3, #ARGV do
  if redis.call('ZSCORE', KEYS[1], ARGV[i]) or redis.call('ZCARD', KEYS[1]) < limit then
    redis.call('ZADD', KEYS[1], now + lease, ARGV[i])
    got[#got + 1] = ARGV[i]
  end
end
if #got > 0 then redis.call('PEXPIRE', KEYS[1], 2 * lease) end
return got
