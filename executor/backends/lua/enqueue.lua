-- Move decided-to-run steps from pending to queued; only those are then sent.
-- KEYS: meta status remaining out rec att claims events times end
-- ARGV: queued_at, steps...
-- Returns the steps to send: those that moved, and those already queued for attempt 1 (a
-- retried call whose first reply was lost must still send; a duplicate message is
-- dropped by the claim).
local stop = redis.call('HGET', KEYS[1], 'stop')
if stop and stop ~= '' then return {} end
local moved = {}
for i = 2, #ARGV do
  local step = ARGV[i]
  local st = redis.call('HGET', KEYS[2], step)
  if st == 'pending' then
    redis.call('HSET', KEYS[2], step, 'queued')
    redis.call('HSET', KEYS[9], step .. ':q', ARGV[1])
    redis.call('HSET', KEYS[7], step .. ':next', 1)
    redis.call('XADD', KEYS[8], '*', 'step', step, 'status', 'queued', 'at', ARGV[1])
    moved[#moved + 1] = step
  elseif st == 'queued' and
      redis.call('HGET', KEYS[7], step .. ':next') == '1' then
    moved[#moved + 1] = step
  end
end
return moved
