-- Queue decided-to-run steps in their lanes' todo sets, and say how many token
-- messages to send for each lane (a token tells a worker that units wait there).
-- KEYS: meta status remaining out rec att claims events times end items lanes leases
--       todo...
-- ARGV: queued_at, traceparent of what queues them ('' if none), then per lane: lane,
--       units per token, number of steps, steps...
--       (KEYS[TODO + n] is the todo set of the n-th lane).
-- Returns, per lane, the number of tokens to send. Only pending steps move: a step
-- queued already (a retried call whose first reply was lost) keeps its place, and a
-- run that stopped queues nothing (but the steps its fail-fast stop spares).
local at, trace = ARGV[1], ARGV[2]
local replies = {}
local i, g = 3, 0
while i <= #ARGV do
  g = g + 1
  local lane, k, n = ARGV[i], tonumber(ARGV[i + 1]), tonumber(ARGV[i + 2])
  local todo = KEYS[TODO + g]
  for j = i + 3, i + 2 + n do
    local unit = ARGV[j]
    if redis.call('HGET', KEYS[2], unit) == 'pending' and spared(unit) then
      redis.call('HSET', KEYS[2], unit, 'queued')
      redis.call('HSET', KEYS[9], unit .. ':q', at)
      -- A rerun's step numbers on after its earlier attempts.
      redis.call('HSET', KEYS[7], unit .. ':next', 1 + attempt_base(unit))
      enqueue_unit(unit, lane, todo, 0, trace)
      redis.call('XADD', KEYS[8], '*', 'step', unit, 'status', 'queued', 'at', at)
    end
  end
  replies[#replies + 1] = (tokens(lane, todo, k))
  i = i + 3 + n
end
return replies
