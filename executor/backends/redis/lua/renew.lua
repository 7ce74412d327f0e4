-- Extend the lease of a running attempt; tell the holder whether its run is stopping.
-- KEYS: meta status remaining out rec att claims events times end
-- ARGV: step, attempt, lease ms
-- Returns {held (1/0), stop reason or ''}.
local step = ARGV[1]
local stop = redis.call('HGET', KEYS[1], 'stop') or ''
local claim = redis.call('HGET', KEYS[7], step)
if not claim or redis.call('HGET', KEYS[2], step) ~= 'running' then return {0, stop} end
local a, token = string.match(claim, '^(%d+)|([^|]*)|')
if a ~= ARGV[2] then return {0, stop} end
local now = now_ms()
redis.call('HSET', KEYS[7], step, a .. '|' .. token .. '|' .. (now + tonumber(ARGV[3])))
return {1, stop}
