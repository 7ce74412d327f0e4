-- After a failed attempt that the retry policy allows: back to queued for attempt + 1.
-- KEYS: meta status remaining out rec att claims events times end
-- ARGV: step, attempt, attempt JSON, at, worker, error text
-- Returns 1 when the step is queued again (the caller sends the delayed message), 0 when
-- it is not this attempt's to retry (terminal, taken over) or the run is stopping.
local step = ARGV[1]
if redis.call('HGET', KEYS[2], step) ~= 'running' then return 0 end
local claim = redis.call('HGET', KEYS[7], step) or ''
if string.match(claim, '^(%d+)|') ~= ARGV[2] then return 0 end
local stop = redis.call('HGET', KEYS[1], 'stop')
if stop and stop ~= '' then return 0 end
redis.call('HSET', KEYS[6], step .. ':' .. ARGV[2], ARGV[3])
local started = cjson.decode(ARGV[3])['started_at']
if ARGV[2] == '1' and type(started) == 'string' then
  -- The step started when its first attempt did (as the worker timed it after claiming).
  redis.call('HSET', KEYS[9], step .. ':s', started)
end
redis.call('HSET', KEYS[2], step, 'queued')
redis.call('HSET', KEYS[7], step .. ':next', tonumber(ARGV[2]) + 1)
redis.call('HDEL', KEYS[7], step)
redis.call('XADD', KEYS[8], '*', 'step', step, 'status', 'retrying', 'attempt', ARGV[2],
  'worker', ARGV[5], 'at', ARGV[4], 'error', ARGV[6])
return 1
