-- Stop a run (fail-fast, cancel, timeout): what has not started is cancelled at once;
-- running steps are returned so that their workers are told.
-- KEYS: meta status remaining out rec att claims events times end
-- ARGV: reason, at
-- Returns {1, unfinished, running steps...}, or {0} if the run was already stopping/done.
local st = redis.call('HGET', KEYS[1], 'status')
if st ~= 'running' and st ~= 'pending' then return {0} end
local stop = redis.call('HGET', KEYS[1], 'stop')
if stop and stop ~= '' then return {0} end
redis.call('HSET', KEYS[1], 'stop', ARGV[1])
local all = redis.call('HGETALL', KEYS[2])
local running = {}
for i = 1, #all, 2 do
  local step, s = all[i], all[i + 1]
  if s == 'pending' or s == 'queued' then
    redis.call('HSET', KEYS[2], step, 'cancelled')
    redis.call('XADD', KEYS[8], '*', 'step', step, 'status', 'cancelled', 'at', ARGV[2])
    redis.call('HINCRBY', KEYS[1], 'unfinished', -1)
  elseif s == 'running' then
    running[#running + 1] = step
  end
end
local reply = {1, tonumber(redis.call('HGET', KEYS[1], 'unfinished'))}
for _, step in ipairs(running) do reply[#reply + 1] = step end
return reply
