-- Settle attempts: record each terminal status once, or queue a retry; release the
-- dependents; stop the run at once on a fail-fast failure; claim ahead the dependents
-- the worker runs next. The units of a run that end together come in one call (a group
-- commit): one round trip, the run's keys sent once.
-- KEYS: meta status remaining out rec att claims events times end items lanes leases
--       todo...
-- ARGV: max output bytes of a map, how many due units to take after (0: none; the
--       slots the completions free, for more units of the run, see take.lua), the lane
--       to take them from (its todo set is KEYS[TODO + 1]; `take_lane` names it), claim
--       token prefix, lease ms (also how long a completed unit's lease stays, while its
--       worker coordinates),
--       started_at, worker, number of steps to pass over, those steps, number of
--       completions, then per completion:
--       unit, status, output JSON or '', record JSON (without its error), error JSON or
--       '', at, worker, attempt number or '', attempt JSON (without its error) or '',
--       retry delay ms or '' (the policy allows another attempt), index n of the todo
--       set for a retry (KEYS[TODO + n]), lane,
--       number of dependents (of its map, for an item), dependents...,
--       number of claims ahead, then per claim ahead: step, token, lease ms,
--       started_at, worker, lane (each claimed only if this completion made it ready
--       with every dependency succeeded).
-- Returns {{per completion: applied, unfinished, stop, {ready...}, {claims...}, map
-- status, retry, the status recorded}..., {units taken after}}: applied 1 (recorded), 2 (queued for a retry: `retry` is the lane's tokens
-- to send), 0 (terminal already, or not this attempt's: nothing changes) or -1
-- (unknown). A unit that ends after a stop that does not spare it is recorded cancelled,
-- whatever its attempt came to: the stop decided. A ready dependent comes as `id|x`
-- when some of its dependencies did not succeed. `map status` is set when an item's
-- completion ended its map (then `ready` are the map's dependents).
local max_bytes = tonumber(ARGV[1])
local n_take, take_lane, prefix = tonumber(ARGV[2]), ARGV[3], ARGV[4]
local take_c = {lease_ms = ARGV[5], started_at = ARGV[6], worker = ARGV[7], lane = take_lane,
  mode = 'queued'}
local coordinating = tonumber(ARGV[5])
local skip = {}
local first_arg = 9 + tonumber(ARGV[8])
for j = 9, first_arg - 1 do skip[ARGV[j]] = true end

local function settle(i, clean)
  local unit, status, output = ARGV[i], ARGV[i + 1], ARGV[i + 2]
  local rec, err_json, at, worker = ARGV[i + 3], ARGV[i + 4], ARGV[i + 5], ARGV[i + 6]
  local attempt, att, delay = ARGV[i + 7], ARGV[i + 8], ARGV[i + 9]
  local st = redis.call('HGET', KEYS[2], unit)
  if not st then return {-1, -1, '', {}, {}, '', 0, ''} end
  if TERMINAL[st] then return {0, -1, '', {}, {}, '', 0, st} end
  if attempt ~= '' and st == 'running' then
    -- An attempt whose lease expired and was taken over must not record over the
    -- attempt that now holds the claim (the tool ran twice; the record keeps one result).
    local claim = redis.call('HGET', KEYS[7], unit) or ''
    if string.match(claim, '^(%d+)|') ~= attempt then return {0, -1, '', {}, {}, '', 0, st} end
  end
  local err = err_json ~= '' and cjson.decode(err_json) or nil
  if not spared(unit) then
    status, output = 'cancelled', ''
    err = st == 'running' and stop_error(run_stop()) or nil
  elseif delay ~= '' and status == 'failed' and attempt ~= '' then
    local lane = ARGV[i + 11]
    local todo = KEYS[TODO + tonumber(ARGV[i + 10])]
    if att ~= '' then
      redis.call('HSET', KEYS[6], unit .. ':' .. attempt, with_error(att, err))
      local started = string.match(att, '"started_at": *"([^"]*)"')
      if attempt == '1' and started then
        -- The unit started when its first attempt did (as its worker timed it).
        redis.call('HSET', KEYS[9], unit .. ':s', started)
      end
    end
    redis.call('HSET', KEYS[2], unit, 'queued')
    redis.call('HSET', KEYS[7], unit .. ':next', tonumber(attempt) + 1)
    redis.call('HDEL', KEYS[7], unit)
    redis.call('ZREM', KEYS[13], unit .. '|' .. lane)
    enqueue_unit(unit, lane, todo, tonumber(delay), '')
    redis.call('HINCRBY', KEYS[1], 'tok:' .. lane, 1)
    if not parent_of(unit) then
      local text = err and (tostring(err['type']) .. ': ' .. tostring(err['message'])) or ''
      redis.call('XADD', KEYS[8], '*', 'step', unit, 'status', 'retrying', 'attempt', attempt,
        'worker', worker, 'at', at, 'error', text)
    end
    return {2, -1, run_stop(), {}, {}, '', 1, 'queued'}
  end
  if status ~= 'succeeded' then output = '' end
  att = att ~= '' and with_error(att, err) or ''
  write_terminal(unit, status, output, with_error(rec, err), attempt, att, at, worker, err)
  if attempt ~= '' then  -- its lease stays a while: until its worker has coordinated
    redis.call('ZADD', KEYS[13], 'XX', now_ms() + coordinating, unit .. '|' .. ARGV[i + 11])
  end
  local n_deps = tonumber(ARGV[i + 12])
  local first, last = i + 13, i + 12 + n_deps
  local parent = parent_of(unit)
  if parent then
    if redis.call('HINCRBY', KEYS[3], parent .. '|left', -1) ~= 0 or
        redis.call('HGET', KEYS[2], parent) ~= 'running' then
      return {1, -1, run_stop(), {}, {}, '', 0, status}
    end
    local map_status, ready = after_map(parent, at, max_bytes, first, last, clean)
    ready = fail_fast(map_status, at, max_bytes, ready)
    local unfinished = tonumber(redis.call('HGET', KEYS[1], 'unfinished'))
    return {1, unfinished, run_stop(), ready, {}, map_status, 0, status}
  end
  local unfinished = redis.call('HINCRBY', KEYS[1], 'unfinished', -1)
  local ready = release(status ~= 'succeeded', first, last, clean)
  if status == 'failed' then  -- a fail-fast stop may cancel more: count again
    ready = fail_fast(status, at, max_bytes, ready)
    unfinished = tonumber(redis.call('HGET', KEYS[1], 'unfinished'))
  end
  return {1, unfinished, run_stop(), ready, {}, '', 0, status}
end

local replies = {}
local i = first_arg + 1
for _ = 1, tonumber(ARGV[first_arg]) do
  local clean = {}
  local reply = settle(i, clean)
  i = i + 13 + tonumber(ARGV[i + 12])
  local claims = {}
  local n_ahead = tonumber(ARGV[i])
  for c = i + 1, i + 6 * n_ahead, 6 do
    if reply[1] == 1 and reply[3] == '' then
      claims[#claims + 1] = claim_unit({unit = ARGV[c], token = ARGV[c + 1],
        lease_ms = ARGV[c + 2], started_at = ARGV[c + 3], worker = ARGV[c + 4],
        lane = ARGV[c + 5], mode = 'ahead', clean = clean[ARGV[c]]})
    else
      claims[#claims + 1] = {'unready', ARGV[c], ''}
    end
  end
  i = i + 1 + 6 * n_ahead
  reply[5] = claims
  replies[#replies + 1] = reply
end
-- The slots these completions free take the run's next due units of the lane at once
-- (no token round trip); what they leave is for the tokens on their way.
local taken = {}
if n_take > 0 then
  local todo = KEYS[TODO + 1]
  local now = now_ms()
  local offset = 0
  while #taken < n_take do
    local batch = redis.call('ZRANGEBYSCORE', todo, '-inf', now, 'LIMIT', offset, 50)
    if #batch == 0 then break end
    for _, unit in ipairs(batch) do
      if #taken >= n_take then break end
      local parent = string.match(unit, '^(.+)%[%d+%]$')
      if redis.call('HGET', KEYS[2], unit) ~= 'queued' then
        redis.call('ZREM', todo, unit)
        offset = offset - 1
      elseif skip[parent and (parent .. '[]') or unit] then -- luacheck: ignore
        -- its tool has a concurrency limit: left for a token, whose taker takes slots
      else
        redis.call('ZREM', todo, unit)
        offset = offset - 1
        take_c.unit, take_c.token = unit, prefix .. '.' .. (#taken + 1)
        local r = claim_unit(take_c)
        if r[1] == 'ok' then taken[#taken + 1] = r end
      end
    end
    offset = offset + #batch
  end
end
replies[#replies + 1] = taken
return replies
