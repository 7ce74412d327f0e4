-- Sweeper: a running step whose lease expired (its worker died) is queued again.
-- KEYS: meta status remaining out rec att claims events times end
-- ARGV: step, at
-- Returns {1, next attempt} to re-send, {2, lost attempt} when the run is stopping (the
-- caller records the step cancelled), {3} when the step is terminal (its completer may
-- have died before deciding its dependents: the caller repairs), or {0} when the lease
-- is alive or the step is queued again.
local step = ARGV[1]
local st = redis.call('HGET', KEYS[2], step)
if st == 'succeeded' or st == 'failed' or st == 'skipped' or st == 'upstream_failed'
    or st == 'cancelled' then
  return {3}
end
if st ~= 'running' then return {0} end
local claim = redis.call('HGET', KEYS[7], step)
if not claim then return {0} end
local a, e = string.match(claim, '^(%d+)|[^|]*|(%d+)$')
local now = now_ms()
if tonumber(e) > now then return {0} end
local attempt = tonumber(a)
mark_lost(KEYS[6], step .. ':' .. attempt, ARGV[2])
local stop = redis.call('HGET', KEYS[1], 'stop')
if stop and stop ~= '' then return {2, attempt} end
redis.call('HSET', KEYS[2], step, 'queued')
redis.call('HSET', KEYS[7], step .. ':next', attempt + 1)
redis.call('HDEL', KEYS[7], step)
redis.call('XADD', KEYS[8], '*', 'step', step, 'status', 'requeued', 'attempt', attempt,
  'at', ARGV[2], 'error', 'worker lost')
return {1, attempt + 1}
