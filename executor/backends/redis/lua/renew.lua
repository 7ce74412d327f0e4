-- Extend the lease of a running attempt; tell the holder whether its run's stop
-- catches it.
-- KEYS: meta status remaining out rec att claims events times end items lanes leases
-- ARGV: unit, attempt, lease ms, lane
-- Returns {held (1/0), stop reason or '' (also '' for a unit the stop spares)}.
local unit = ARGV[1]
local stop = spared(unit) and '' or run_stop()
local claim = redis.call('HGET', KEYS[7], unit)
if not claim or redis.call('HGET', KEYS[2], unit) ~= 'running' then return {0, stop} end
local a, token = string.match(claim, '^(%d+)|([^|]*)|')
if a ~= ARGV[2] then return {0, stop} end
local expiry = now_ms() + tonumber(ARGV[3])
redis.call('HSET', KEYS[7], unit, a .. '|' .. token .. '|' .. expiry)
redis.call('ZADD', KEYS[13], 'XX', expiry, unit .. '|' .. ARGV[4])
return {1, stop}
