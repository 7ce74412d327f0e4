-- Sweeper: a running unit whose lease expired (its worker died) is queued again.
-- KEYS: meta status remaining out rec att claims events times end items lanes leases todo
-- ARGV: unit, at, lane
-- Returns {1, next attempt, tokens to send}, {2, lost attempt} when the run's stop
-- catches it (the caller records it cancelled), {3} when the unit is terminal (its
-- completer may have died before deciding its dependents: the caller repairs), or {0}
-- when the lease is alive, the unit is queued already, or it is an expanded map.
local unit, at, lane = ARGV[1], ARGV[2], ARGV[3]
local member = unit .. '|' .. lane
local st = redis.call('HGET', KEYS[2], unit)
if TERMINAL[st] then
  redis.call('ZREM', KEYS[13], member)
  return {3}
end
local claim = redis.call('HGET', KEYS[7], unit)
if st ~= 'running' or not claim then
  redis.call('ZREM', KEYS[13], member) -- queued again already: no lease to watch
  return {0}
end
local a, e = string.match(claim, '^(%d+)|[^|]*|(%d+)$')
if tonumber(e) > now_ms() then
  redis.call('ZADD', KEYS[13], tonumber(e), member) -- renewed: watch its new expiry
  return {0}
end
redis.call('ZREM', KEYS[13], member)
local attempt = tonumber(a)
mark_lost(unit .. ':' .. attempt, at)
if not spared(unit) then return {2, attempt} end
redis.call('HSET', KEYS[2], unit, 'queued')
redis.call('HSET', KEYS[7], unit .. ':next', attempt + 1)
redis.call('HDEL', KEYS[7], unit)
enqueue_unit(unit, lane, KEYS[TODO + 1], 0, '')
if not parent_of(unit) then
  redis.call('XADD', KEYS[8], '*', 'step', unit, 'status', 'requeued', 'attempt', attempt,
    'at', at, 'error', 'worker lost')
end
return {1, attempt + 1, (tokens(lane, KEYS[TODO + 1], 1))}
