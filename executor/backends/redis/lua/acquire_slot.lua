-- Take one of a tool's concurrency slots (its max_concurrency, cluster-wide). The
-- semaphore belongs to the tool, not to a run, so this runs on its key alone, before
-- the claim: every script stays within one hash slot (Redis Cluster).
-- KEYS: the semaphore    ARGV: holder (one per claim attempt), limit, lease ms
-- Returns 1 when the holder has a slot, 0 when every slot is taken.
-- Holders are scored by lease expiry: a crashed holder (or one that died between this
-- and its claim) drops out when its lease passes; it cannot leak a slot.
local now = now_ms()
local lease = tonumber(ARGV[3])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if not redis.call('ZSCORE', KEYS[1], ARGV[1]) and
    redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[2]) then
  return 0
end
redis.call('ZADD', KEYS[1], now + lease, ARGV[1])
redis.call('PEXPIRE', KEYS[1], 2 * lease)
return 1
