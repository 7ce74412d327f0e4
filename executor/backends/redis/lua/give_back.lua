-- A stopping worker gives back a unit it claimed but never started: queued again under
-- the same attempt number, as if never claimed (no attempt is spent, none is lost).
-- KEYS: meta status remaining out rec att claims events times end items lanes leases todo
-- ARGV: unit, attempt, lane, at
-- Returns {1, tokens to send} when queued again, {2} when the run's stop catches it (the
-- caller records it cancelled), {0} when the claim is not this attempt's any more.
local unit, attempt, lane, at = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local claim = redis.call('HGET', KEYS[7], unit)
if redis.call('HGET', KEYS[2], unit) ~= 'running' or not claim then return {0} end
if string.match(claim, '^(%d+)|') ~= attempt then return {0} end
if not spared(unit) then return {2} end
redis.call('ZREM', KEYS[13], unit .. '|' .. lane)
redis.call('HDEL', KEYS[6], unit .. ':' .. attempt)
if attempt == '1' then redis.call('HDEL', KEYS[9], unit .. ':s') end -- it never started
redis.call('HSET', KEYS[2], unit, 'queued')
redis.call('HSET', KEYS[7], unit .. ':next', attempt)
redis.call('HDEL', KEYS[7], unit)
enqueue_unit(unit, lane, KEYS[TODO + 1], 0, '')
if not parent_of(unit) then
  redis.call('XADD', KEYS[8], '*', 'step', unit, 'status', 'requeued', 'attempt', attempt,
    'at', at, 'error', 'its worker is stopping')
end
return {1, (tokens(lane, KEYS[TODO + 1], 1))}
