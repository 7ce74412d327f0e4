-- A claimed map step becomes its items: each item a unit of its own, queued in the
-- map's lane (or decided at once: skipped by a `when` on the item, failed), claimed,
-- leased, retried and recorded on its own; the map ends when its last item does.
-- KEYS: meta status remaining out rec att claims events times end items lanes leases todo
-- ARGV: step, attempt, at, lane (of the items), the lane the map step was claimed in,
--       units per token, max output bytes, the map's record
--       JSON so far, the traceparent of its attempt ('' if none), number of items, then per item: status ('' to queue it, else
--       its decided status) and its value JSON (queued) or record JSON (decided);
--       then how many items to claim for the caller, and for those: token prefix,
--       lease ms, worker; then the map's dependents (to release should it end here).
-- Returns {'ok', tokens to send, {claims...}, map status or '', {ready...}, unfinished}
-- or {'stale'|'stopped', detail}.
local step, attempt, at, lane, own_lane = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local k, max_bytes = tonumber(ARGV[6]), tonumber(ARGV[7])
local todo = KEYS[TODO + 1]
if redis.call('HGET', KEYS[2], step) ~= 'running' or
    string.match(redis.call('HGET', KEYS[7], step) or '', '^(%d+)|') ~= attempt then
  return {'stale', redis.call('HGET', KEYS[2], step) or ''}
end
if not spared(step) then return {'stopped', run_stop()} end
redis.call('HSET', KEYS[5], step, ARGV[8])
redis.call('HSET', KEYS[9], step .. ':t0', now_ms())
redis.call('HSET', KEYS[7], step, attempt .. '|map|' .. MAP_RUNNING)
redis.call('ZREM', KEYS[13], step .. '|' .. own_lane) -- its items have leases of their own
local trace = ARGV[9]
local n = tonumber(ARGV[10])
local left = 0
local i = 11
for index = 0, n - 1 do
  local unit = step .. '[' .. index .. ']'
  local decided, value = ARGV[i], ARGV[i + 1]
  if decided == '' then
    left = left + 1
    redis.call('HSET', KEYS[2], unit, 'queued')
    redis.call('HSET', KEYS[11], unit, value)
    redis.call('HSET', KEYS[7], unit .. ':next', 1)
    redis.call('HSET', KEYS[9], unit .. ':q', at)
    enqueue_unit(unit, lane, todo, 0, trace)
  else
    redis.call('HSET', KEYS[2], unit, decided)
    redis.call('HSET', KEYS[5], unit, value)
  end
  i = i + 2
end
redis.call('HSET', KEYS[3], step .. '|n', n, step .. '|left', left)
local n_ahead = tonumber(ARGV[i])
local prefix, lease_ms, worker = ARGV[i + 1], ARGV[i + 2], ARGV[i + 3]
local first_dep = i + 4
local claims = {}
if left == 0 then
  local clean = {}
  local status, ready = after_map(step, at, max_bytes, first_dep, #ARGV, clean)
  ready = fail_fast(status, at, max_bytes, ready)
  return {'ok', 0, claims, status, ready, tonumber(redis.call('HGET', KEYS[1], 'unfinished'))}
end
if n_ahead > 0 then
  local due = redis.call('ZRANGEBYSCORE', todo, '-inf', '+inf', 'LIMIT', 0, n_ahead * 2)
  for _, unit in ipairs(due) do
    if #claims >= n_ahead then break end
    if string.match(unit, '^(.+)%[%d+%]$') == step then
      redis.call('ZREM', todo, unit)
      local r = claim_unit({unit = unit, token = prefix .. '.' .. (#claims + 1),
        lease_ms = lease_ms, started_at = at, worker = worker, lane = lane, mode = 'queued'})
      if r[1] == 'ok' then claims[#claims + 1] = r end
    end
  end
end
local extra = tokens(lane, todo, k)
return {'ok', extra, claims, '', {}, -1}
