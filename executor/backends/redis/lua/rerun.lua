-- Run a finished run again, in place: the steps named go back to pending (the others
-- keep their success), with their earlier attempts kept and numbered on from there.
-- KEYS: meta status remaining out rec att claims events times end items lanes leases
--       todo...
-- ARGV: at, then per step: step, dependencies it waits for, attempts made so far,
--       items of its map in the last pass (0: not a map)
-- Returns {1, id of the pass's first event}, or {0, status} if the run is not finished
-- (nothing is changed then).
local st = redis.call('HGET', KEYS[1], 'status')
if st == 'running' or st == 'pending' or not st then return {0, st or 'missing'} end
local at = ARGV[1]
local n = 0
-- Every field of a unit in the per-unit hashes (its attempts apart).
local function forget(unit)
  redis.call('HDEL', KEYS[4], unit)
  redis.call('HDEL', KEYS[5], unit)
  redis.call('HDEL', KEYS[7], unit, unit .. ':next', unit .. ':tp')
  redis.call('HDEL', KEYS[9], unit .. ':q', unit .. ':s', unit .. ':t0')
  redis.call('HDEL', KEYS[3], unit, unit .. '|x', unit .. '|n', unit .. '|left')
end
for i = 2, #ARGV, 4 do
  local step, waits, made, items = ARGV[i], tonumber(ARGV[i + 1]), ARGV[i + 2],
    tonumber(ARGV[i + 3])
  forget(step)
  redis.call('HSET', KEYS[2], step, 'pending')
  if waits > 0 then redis.call('HSET', KEYS[3], step, waits) end
  -- The first attempt of this pass is numbered after the earlier ones.
  if made ~= '0' then redis.call('HSET', KEYS[7], step .. ':base', made) end
  -- A map's items of the last pass go: the map expands afresh.
  for j = 0, items - 1 do
    local unit = step .. '[' .. j .. ']'
    forget(unit)
    redis.call('HDEL', KEYS[2], unit)
    redis.call('HDEL', KEYS[11], unit)
    local k = 1
    while redis.call('HDEL', KEYS[6], unit .. ':' .. k) == 1 do k = k + 1 end
  end
  n = n + 1
end
redis.call('HSET', KEYS[1], 'status', 'running', 'stop', '', 'unfinished', n)
redis.call('HDEL', KEYS[1], 'first_failed', 'n_failed', 'finished_at', 'output', 'error',
  'wall_time')
redis.call('HINCRBY', KEYS[1], 'passes', 1)
redis.call('DEL', KEYS[10]) -- waiting clients block on the end of this pass
for i = 1, #KEYS do redis.call('PERSIST', KEYS[i]) end
local first = redis.call('XADD', KEYS[8], '*', 'step', '', 'status', 'rerun', 'at', at)
redis.call('HSET', KEYS[1], 'pass_from', first)
return {1, first}
