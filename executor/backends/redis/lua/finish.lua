-- Write a run's final status once, announce it, and give every key of the run its TTL.
-- KEYS: meta status remaining out rec att claims events times end items lanes leases
--       todo...
-- ARGV: status, finished_at, output JSON or '', error or '', wall time, ttl seconds (used
--       when the run has no `ttl` of its own in meta)
-- Returns 1, or 0 if the run was already finished.
local st = redis.call('HGET', KEYS[1], 'status')
if st ~= 'running' and st ~= 'pending' then return 0 end
redis.call('HSET', KEYS[1], 'status', ARGV[1], 'finished_at', ARGV[2], 'output', ARGV[3],
  'error', ARGV[4], 'wall_time', ARGV[5])
redis.call('XADD', KEYS[8], '*', 'step', '', 'status', ARGV[1], 'at', ARGV[2],
  'error', ARGV[4])
-- Waiting clients block on this one-entry stream, not on every event of the run.
redis.call('XADD', KEYS[10], '*', 'status', ARGV[1])
redis.call('DEL', KEYS[13]) -- nothing of it is left to re-queue or repair
local ttl = tonumber(redis.call('HGET', KEYS[1], 'ttl') or '') or tonumber(ARGV[6])
for i = 1, #KEYS do redis.call('EXPIRE', KEYS[i], ttl) end
return 1
