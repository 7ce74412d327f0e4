-- Record a step's terminal status once, and release its dependents.
-- KEYS: meta status remaining out rec att claims events times end
-- ARGV: step, status, output JSON or '', record JSON, at, worker, attempt number or '',
--       attempt JSON or '', error text, dependents...
-- Returns {1, unfinished steps, stop reason, dependents that became ready...},
-- or {0} when the step was already terminal (a duplicate: nothing changes). A ready
-- dependent comes as `id|x` when some of its dependencies did not succeed (counted in
-- the `remaining` hash as `id|x`), else as its id: the coordinator then knows every
-- dependency succeeded without reading their statuses.
local step = ARGV[1]
local st = redis.call('HGET', KEYS[2], step)
if not st then return {-1} end
if st ~= 'pending' and st ~= 'queued' and st ~= 'running' then return {0} end
if ARGV[7] ~= '' and st == 'running' then
  -- An attempt whose lease expired and was taken over must not record over the attempt
  -- that now holds the claim (the tool ran twice; the record keeps one result).
  local claim = redis.call('HGET', KEYS[7], step) or ''
  if string.match(claim, '^(%d+)|') ~= ARGV[7] then return {0} end
end
redis.call('HSET', KEYS[2], step, ARGV[2])
if ARGV[3] ~= '' then redis.call('HSET', KEYS[4], step, ARGV[3]) end
redis.call('HSET', KEYS[5], step, ARGV[4])
if ARGV[7] ~= '' and ARGV[8] ~= '' then
  redis.call('HSET', KEYS[6], step .. ':' .. ARGV[7], ARGV[8])
end
redis.call('HDEL', KEYS[7], step)
redis.call('XADD', KEYS[8], '*', 'step', step, 'status', ARGV[2], 'attempt', ARGV[7],
  'worker', ARGV[6], 'at', ARGV[5], 'error', ARGV[9])
local unfinished = redis.call('HINCRBY', KEYS[1], 'unfinished', -1)
local stop = redis.call('HGET', KEYS[1], 'stop') or ''
local reply = {1, unfinished, stop}
if stop == '' then
  local failed = ARGV[2] ~= 'succeeded'
  for i = 10, #ARGV do
    local dep = ARGV[i]
    if failed then redis.call('HINCRBY', KEYS[3], dep .. '|x', 1) end
    if redis.call('HINCRBY', KEYS[3], dep, -1) == 0 and
        redis.call('HGET', KEYS[2], dep) == 'pending' then
      if redis.call('HEXISTS', KEYS[3], dep .. '|x') == 1 then dep = dep .. '|x' end
      reply[#reply + 1] = dep
    end
  end
end
return reply
