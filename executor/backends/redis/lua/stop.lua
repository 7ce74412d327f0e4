-- Stop a run (fail-fast, cancel, timeout): what has not started is cancelled at once
-- (but the steps a fail-fast stop spares), and the workers running the rest are told
-- (a message on the stop channel).
-- KEYS: meta status remaining out rec att claims events times end items lanes leases
-- ARGV: reason, at, max output bytes of a map
-- Returns {1, unfinished, survivors ready to be decided...}, or {0} if the run was
-- already stopping or done.
local st = redis.call('HGET', KEYS[1], 'status')
if st ~= 'running' and st ~= 'pending' then return {0} end
if run_stop() ~= '' then return {0} end
local ready = stop_run(ARGV[1], ARGV[2], tonumber(ARGV[3]))
local reply = {1, tonumber(redis.call('HGET', KEYS[1], 'unfinished'))}
for _, step in ipairs(ready) do reply[#reply + 1] = step end
return reply
