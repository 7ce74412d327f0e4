-- Move decided-to-run steps from pending to queued; only those are then sent.
-- KEYS: meta status remaining out rec att claims events times end
-- ARGV: queued_at, steps...
-- Returns the steps to send: those that moved, and those already queued for attempt 1 (a
-- retried call whose first reply was lost must still send; a duplicate message is
-- dropped by the claim).
-- A fan-out queues hundreds of steps at once: their states are read and written a
-- chunk at a time (a command each, not one per step), only the events go one by one.
local stop = redis.call('HGET', KEYS[1], 'stop')
if stop and stop ~= '' then return {} end
local at = ARGV[1]
local moved = {}
for first = 2, #ARGV, 1000 do
  local last = math.min(first + 999, #ARGV)
  local st = redis.call('HMGET', KEYS[2], unpack(ARGV, first, last))
  local queued, times, nexts, again = {}, {}, {}, {}
  for i = first, last do
    local step, s = ARGV[i], st[i - first + 1]
    if s == 'pending' then
      queued[#queued + 1] = step
      queued[#queued + 1] = 'queued'
      times[#times + 1] = step .. ':q'
      times[#times + 1] = at
      nexts[#nexts + 1] = step .. ':next'
      nexts[#nexts + 1] = 1
      moved[#moved + 1] = step
    elseif s == 'queued' then
      again[#again + 1] = step
    end
  end
  if #queued > 0 then
    redis.call('HSET', KEYS[2], unpack(queued))
    redis.call('HSET', KEYS[9], unpack(times))
    redis.call('HSET', KEYS[7], unpack(nexts))
    for i = 1, #queued, 2 do
      redis.call('XADD', KEYS[8], '*', 'step', queued[i], 'status', 'queued', 'at', at)
    end
  end
  for _, step in ipairs(again) do
    if redis.call('HGET', KEYS[7], step .. ':next') == '1' then moved[#moved + 1] = step end
  end
end
return moved
