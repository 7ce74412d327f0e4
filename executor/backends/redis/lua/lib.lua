-- Shared by every script: prepended to each when it is loaded (see store.py).
-- Every script takes the run's keys in the same order, then the todo sets it touches:
-- KEYS: meta status remaining out rec att claims events times end items lanes leases
--       [todo...] (the n-th todo set a script touches is KEYS[TODO + n])
--
-- A unit is a step (`s`) or an item of a map step (`s[3]`). A queued unit waits in its
-- lane's todo set (scored by when it is due, ms on the Redis clock); a worker takes it
-- from there when a token message for the lane reaches it. `claims` holds, per unit,
-- `attempt|token|lease expiry` while it runs, `unit:next` (its next attempt) while it
-- is queued; `meta` holds the run's counters (`unfinished`,
-- `tok:<lane>`: token messages on their way), its stop reason, and what the scripts need
-- of the flow (`n:<step>`: the steps whose outputs a step reads; `surv`: the steps a
-- fail-fast stop spares, with their dependencies; `ff`: fail_fast).

local MAP_RUNNING = 9000000000000000 -- the lease of an expanded map: its items have theirs
local TODO = 13
-- `leases` (KEYS[13]) scores each claimed unit (`unit|lane`) by when its lease expires;
-- a completed unit stays there, for a lease more, until its worker has coordinated what
-- it made ready (the worker then removes it): a sweeper that finds a lease expired
-- re-queues the unit, or repairs what a dead completer left undecided.

-- The Redis server's clock in milliseconds: leases and due times are judged by one clock
-- (read once per script: its calls happen at one instant for anyone else).
local now_cache
local function now_ms()
  if now_cache == nil then
    local t = redis.call('TIME')
    now_cache = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  end
  return now_cache
end

-- The run's stop reason ('' while it runs), and whether it is a rerun (earlier passes
-- made attempts: `unit:base` in claims), read once per script.
local stop_reason, passes
local function run_stop()
  if stop_reason == nil then
    local r = redis.call('HMGET', KEYS[1], 'stop', 'passes')
    stop_reason, passes = r[1] or '', r[2]
  end
  return stop_reason
end
local function reran()
  run_stop()
  return passes ~= nil
end

-- The attempts earlier passes of a rerun made of a unit (0 on a first pass: no read).
local function attempt_base(unit)
  if not reran() then return 0 end
  return tonumber(redis.call('HGET', KEYS[7], unit .. ':base') or '0')
end

local TERMINAL = {succeeded = true, failed = true, skipped = true, upstream_failed = true,
  cancelled = true}

-- `s[3]` -> 's', 3; a step -> nil.
local function parent_of(unit)
  local p, i = string.match(unit, '^(.+)%[(%d+)%]$')
  if p then return p, tonumber(i) end
  return nil
end

local surv_cache
local function survivors()
  if surv_cache == nil then
    local raw = redis.call('HGET', KEYS[1], 'surv')
    surv_cache = (raw and raw ~= '') and cjson.decode(raw) or {}
  end
  return surv_cache
end

-- Whether a unit goes on after the run's stop (a survivor of a fail-fast stop, or an
-- item of one).
local function spared(unit)
  local stop = run_stop()
  if stop == '' then return true end
  if stop ~= 'failed' then return false end
  local step = parent_of(unit) or unit
  return survivors()[step] ~= nil
end

local STOP_MESSAGES = {
  failed = 'the run stopped: another step failed (fail_fast)',
  cancelled = 'the run was cancelled',
  timed_out = 'the run timed out',
}
local function stop_error(reason)
  return {type = 'CancelledError', message = STOP_MESSAGES[reason] or ('run ' .. reason)}
end

-- Close an attempt record whose worker stopped renewing its lease, if still open.
local function mark_lost(field, at)
  local raw = redis.call('HGET', KEYS[6], field)
  if raw then
    local rec = cjson.decode(raw)
    if rec['finished_at'] == nil then
      rec['finished_at'] = at
      rec['error'] = {type = 'WorkerLost', message = 'the worker stopped renewing its lease'}
      redis.call('HSET', KEYS[6], field, cjson.encode(rec))
    end
  end
end

-- The outputs a unit reads, in order of its needs, and (an item) its value.
local function load_inputs(unit, reply)
  local step = parent_of(unit) or unit
  local key = parent_of(unit) and ('n:' .. step .. '[]') or ('n:' .. step)
  local needs = redis.call('HGET', KEYS[1], key)
  local names = {}
  if needs and needs ~= '' then
    for name in string.gmatch(needs, '[^,]+') do names[#names + 1] = name end
  end
  reply[#reply + 1] = #names
  -- In chunks: unpack() is bounded by Lua's C stack (a step may read many outputs).
  for i = 1, #names, 1000 do
    local outs = redis.call('HMGET', KEYS[4], unpack(names, i, math.min(i + 999, #names)))
    for j = 1, #outs do
      reply[#reply + 1] = names[i + j - 1]
      reply[#reply + 1] = outs[j] or ''
    end
  end
  if parent_of(unit) then reply[#reply + 1] = redis.call('HGET', KEYS[11], unit) or 'null' end
end

-- Claim a unit for its next attempt and load what the worker needs.
-- c: unit, token, lease_ms, started_at, worker, lane, mode ('queued': taken from its todo
-- set; 'inplace': a pending step the caller decided itself; 'ahead': a pending step
-- made ready by the completion in this same script, claimed only if every dependency
-- succeeded (`c.clean`)).
-- Returns {'ok', unit, attempt (or 'attempt/base'), queued_at, first started_at, trace parent or '',
-- n outputs, (step, output JSON or '')..., [item value]} or {reason, unit, detail}.
local function claim_unit(c)
  local unit = c.unit
  -- A step this very script made ready (`clean`) is pending: no need to ask.
  local st = (c.mode == 'ahead' and c.clean) and 'pending' or redis.call('HGET', KEYS[2], unit)
  if not st then return {'missing', unit, ''} end
  if c.mode == 'queued' then
    if st ~= 'queued' then return {TERMINAL[st] and 'done' or 'stale', unit, st} end
  else
    if st ~= 'pending' then return {TERMINAL[st] and 'done' or 'stale', unit, st} end
    if c.mode == 'ahead' and not c.clean then return {'unready', unit, ''} end
  end
  if not spared(unit) then return {'stopped', unit, run_stop()} end
  -- A pending step was never queued: its first attempt (of this pass: a rerun numbers
  -- on after the earlier passes' `base` attempts), with no trace parent stored.
  local attempt, trace, base
  if st == 'queued' then
    local r = redis.call('HMGET', KEYS[7], unit .. ':next', unit .. ':tp', unit .. ':base')
    attempt, trace, base = tonumber(r[1] or '1'), r[2] or '', tonumber(r[3] or '0')
  else
    base = attempt_base(unit)
    attempt, trace = base + 1, ''
  end
  local now = now_ms()
  redis.call('HSET', KEYS[2], unit, 'running')
  local expiry = now + tonumber(c.lease_ms)
  redis.call('HSET', KEYS[7], unit, attempt .. '|' .. c.token .. '|' .. expiry)
  redis.call('ZADD', KEYS[13], expiry, unit .. '|' .. c.lane)
  local queued_at, started_at
  local item = parent_of(unit)
  if st == 'pending' then
    -- Run in place by the worker that completed its last dependency: queued and
    -- claimed at once, so no moment exists where it is queued with no token.
    redis.call('XADD', KEYS[8], '*', 'step', unit, 'status', 'queued', 'at', c.started_at)
    redis.call('HSET', KEYS[9], unit .. ':q', c.started_at, unit .. ':s', c.started_at)
    queued_at, started_at = c.started_at, c.started_at
  else
    redis.call('HSETNX', KEYS[9], unit .. ':s', c.started_at)
    local t = redis.call('HMGET', KEYS[9], unit .. ':q', unit .. ':s')
    queued_at, started_at = t[1] or '', t[2] or ''
  end
  redis.call('HSET', KEYS[6], unit .. ':' .. attempt,
    cjson.encode({number = attempt, started_at = c.started_at, worker = c.worker}))
  if not item then
    redis.call('XADD', KEYS[8], '*', 'step', unit, 'status', 'running', 'attempt', attempt,
      'worker', c.worker, 'at', c.started_at)
  end
  -- `attempt/base` when earlier passes made attempts: the retry policy counts this pass's.
  local reply = {'ok', unit, base > 0 and (attempt .. '/' .. base) or attempt, queued_at,
    started_at, trace}
  load_inputs(unit, reply)
  return reply
end

-- Enough token messages for a lane's due units, `k` units a token: how many more to
-- send now, and (none due, some later, no token left) in how many ms to send one.
local function tokens(lane, todo, k)
  local now = now_ms()
  local due = redis.call('ZCOUNT', todo, '-inf', now)
  local field = 'tok:' .. lane
  local have = tonumber(redis.call('HGET', KEYS[1], field) or '0')
  local need = math.ceil(due / k)
  local extra = math.max(0, need - have)
  local delay = -1
  if due == 0 and have == 0 then
    local first = redis.call('ZRANGE', todo, 0, 0, 'WITHSCORES')
    if first[2] then
      extra = 1
      delay = math.max(1, tonumber(first[2]) - now)
    end
  end
  if extra > 0 then redis.call('HINCRBY', KEYS[1], field, extra) end
  return extra, delay
end

-- Queue a unit in a lane's todo set, due `delay_ms` from now; `trace` is the W3C
-- traceparent of what made it ready ('' when tracing is off): its span's parent.
local lanes_added = {}
local function enqueue_unit(unit, lane, todo, delay_ms, trace)
  if trace and trace ~= '' then redis.call('HSET', KEYS[7], unit .. ':tp', trace) end
  redis.call('ZADD', todo, now_ms() + delay_ms, unit)
  if not lanes_added[lane] then
    redis.call('SADD', KEYS[12], lane)
    lanes_added[lane] = true
  end
end

-- Release a step's dependents: each one's counter of unfinished dependencies goes
-- down (`dep|x` counts those that did not succeed); the pending ones it brings to zero
-- come back, as `id|x` when some dependency did not succeed. `clean` gets the others.
local function release(failed, first, last, clean)
  local ready = {}
  for d = first, last do
    local dep = ARGV[d]
    if failed then redis.call('HINCRBY', KEYS[3], dep .. '|x', 1) end
    if redis.call('HINCRBY', KEYS[3], dep, -1) == 0 and
        redis.call('HGET', KEYS[2], dep) == 'pending' then
      if redis.call('HEXISTS', KEYS[3], dep .. '|x') == 1 then
        dep = dep .. '|x'
      else
        clean[dep] = true
      end
      ready[#ready + 1] = dep
    end
  end
  return ready
end

-- Thousands separators, as Python's `{:,}`.
local function commas(n)
  local s = tostring(n)
  local out = string.reverse(string.gsub(string.reverse(s), '(%d%d%d)', '%1,'))
  return (string.gsub(out, '^,', ''))
end

-- A map whose items are all terminal becomes terminal itself: its output is the items'
-- outputs in item order (`null` for a skipped one), its error the first failed item's.
-- Returns the map's status, output JSON, error (a table or nil).
local function map_outcome(step, max_bytes)
  local n = tonumber(redis.call('HGET', KEYS[3], step .. '|n') or '0')
  local outs, failed, first_failed, cancelled = {}, 0, nil, false
  for i = 0, n - 1 do
    local unit = step .. '[' .. i .. ']'
    local st = redis.call('HGET', KEYS[2], unit)
    if st == 'succeeded' then
      outs[#outs + 1] = redis.call('HGET', KEYS[4], unit) or 'null'
    elseif st == 'failed' then
      failed = failed + 1
      first_failed = first_failed or i
    elseif st == 'cancelled' then
      cancelled = true
    else
      outs[#outs + 1] = 'null'
    end
  end
  if cancelled then return 'cancelled', '', stop_error(run_stop()) end
  if failed > 0 then
    local raw = redis.call('HGET', KEYS[5], step .. '[' .. first_failed .. ']')
    local err = raw and cjson.decode(raw)['error'] or nil
    if type(err) ~= 'table' then err = {type = 'Error', message = 'failed'} end
    return 'failed', '', {type = err['type'], traceback = err['traceback'],
      message = failed .. ' of ' .. n .. ' items failed; item ' .. first_failed .. ': ' ..
        tostring(err['message'])}
  end
  local output = '[' .. table.concat(outs, ', ') .. ']'
  if max_bytes and #output > max_bytes then
    -- None of it reaches the result: the items' outputs go too.
    for i = 0, n - 1 do redis.call('HDEL', KEYS[4], step .. '[' .. i .. ']') end
    local tool = redis.call('HGET', KEYS[1], 'tool:' .. step) or step
    return 'failed', '', {type = 'executor.errors.ToolOutputError',
      message = "output of tool '" .. tool .. "' is " .. commas(#output) ..
        ' bytes of JSON, over the limit of ' .. commas(max_bytes) ..
        ' bytes per step (max_output_bytes, DAGRELAY_MAX_OUTPUT_BYTES)'}
  end
  return 'succeeded', output, nil
end

-- A JSON object (text) with an `error` field added: records are never decoded and
-- encoded again here, as Lua's cjson would round numbers in them (inputs) to 14 digits.
local function with_error(json, err)
  local e = err and cjson.encode(err) or 'null'
  if json == '' or json == '{}' then return '{"error":' .. e .. '}' end
  return string.sub(json, 1, -2) .. ',"error":' .. e .. '}'
end

-- Write a unit's terminal status, output, record and attempt (JSON texts, '' for none),
-- and its event; `err` is a table or nil.
local function write_terminal(unit, status, output, rec, attempt, att, at, worker, err)
  redis.call('HSET', KEYS[2], unit, status)
  if output ~= '' then redis.call('HSET', KEYS[4], unit, output) end
  if rec ~= '' then redis.call('HSET', KEYS[5], unit, rec) end
  if attempt ~= '' and att ~= '' then
    redis.call('HSET', KEYS[6], unit .. ':' .. attempt, att)
  end
  redis.call('HDEL', KEYS[7], unit)
  if not parent_of(unit) then
    local text = ''
    if err then text = tostring(err['type']) .. ': ' .. tostring(err['message']) end
    redis.call('XADD', KEYS[8], '*', 'step', unit, 'status', status, 'attempt', attempt,
      'worker', worker, 'at', at, 'error', text)
    if status == 'failed' then
      redis.call('HSETNX', KEYS[1], 'first_failed', unit)
      redis.call('HINCRBY', KEYS[1], 'n_failed', 1)
    end
  end
end

-- Complete an expanded map whose items have all ended (their runner's completion, or
-- the stop that cancelled the last of them). Returns its status.
local function finish_map(step, at, max_bytes)
  local status, output, err = map_outcome(step, max_bytes)
  local claim = redis.call('HGET', KEYS[7], step) or ''
  local attempt = string.match(claim, '^(%d+)|') or '1'
  -- The map's own record and attempt hold no data of the flow (no inputs): safe to
  -- decode and encode again.
  local raw = redis.call('HGET', KEYS[5], step)
  local rec = raw and cjson.decode(raw) or {}
  local t0 = tonumber(redis.call('HGET', KEYS[9], step .. ':t0') or '')
  local duration = t0 and (now_ms() - t0) / 1000 or nil
  rec['finished_at'], rec['duration'], rec['error'] = at, duration, err or cjson.null
  rec['status'] = status
  local att_raw = redis.call('HGET', KEYS[6], step .. ':' .. attempt)
  local att = att_raw and cjson.decode(att_raw) or {number = tonumber(attempt)}
  att['finished_at'], att['duration'], att['error'] = at, duration, err or cjson.null
  write_terminal(step, status, output, cjson.encode(rec), attempt, cjson.encode(att), at,
    rec['worker'] or '', err)
  redis.call('HINCRBY', KEYS[1], 'unfinished', -1)
  return status
end

-- Stop the run: set the reason once, cancel every unit that has not started (but the
-- survivors of a fail-fast stop), complete maps whose last items that cancelled, and
-- tell the workers running the rest. Returns the survivors that are ready now.
local function stop_run(reason, at, max_bytes)
  redis.call('HSET', KEYS[1], 'stop', reason)
  run_stop() -- loads `passes` too, before the reason is set here
  stop_reason = reason
  local all = redis.call('HGETALL', KEYS[2])
  local maps = {}
  for i = 1, #all, 2 do
    local unit, s = all[i], all[i + 1]
    if (s == 'pending' or s == 'queued') and not spared(unit) then
      redis.call('HSET', KEYS[2], unit, 'cancelled')
      local parent = parent_of(unit)
      if parent then
        if redis.call('HINCRBY', KEYS[3], parent .. '|left', -1) == 0 then
          maps[#maps + 1] = parent
        end
      else
        redis.call('XADD', KEYS[8], '*', 'step', unit, 'status', 'cancelled', 'at', at)
        redis.call('HINCRBY', KEYS[1], 'unfinished', -1)
      end
    end
  end
  for _, step in ipairs(maps) do
    if redis.call('HGET', KEYS[2], step) == 'running' then finish_map(step, at, max_bytes) end
  end
  -- A survivor waits only for dependencies that are not terminal yet.
  local ready = {}
  for step, deps in pairs(survivors()) do
    if redis.call('HGET', KEYS[2], step) == 'pending' then
      local left, bad = 0, false
      for _, d in ipairs(deps) do
        local ds = redis.call('HGET', KEYS[2], d)
        if not TERMINAL[ds] then left = left + 1 elseif ds ~= 'succeeded' then bad = true end
      end
      redis.call('HSET', KEYS[3], step, left)
      if bad then redis.call('HSET', KEYS[3], step .. '|x', 1) end
      if left == 0 then ready[#ready + 1] = step end
    end
  end
  redis.call('PUBLISH', redis.call('HGET', KEYS[1], 'stop_channel') or 'dagrelay:stops',
    redis.call('HGET', KEYS[1], 'run_id') .. '|' .. reason)
  return ready
end

-- A map has ended (see `finish_map`): release its dependents (ARGV[first..last]) and,
-- under fail_fast, stop the run if it failed. Returns {1, unfinished, stop, ready}.
local function after_map(step, at, max_bytes, first, last, clean)
  local status = finish_map(step, at, max_bytes)
  local ready = release(status ~= 'succeeded', first, last, clean)
  return status, ready
end

-- Under fail_fast a failure stops the run in the script that records it, so no other
-- step can start in between; the dependents it made ready that the stop cancelled are
-- dropped, and the survivors the stop made ready are added.
local function fail_fast(status, at, max_bytes, ready)
  if status ~= 'failed' or run_stop() ~= '' or redis.call('HGET', KEYS[1], 'ff') ~= '1' then
    return ready
  end
  local spared_ready = stop_run('failed', at, max_bytes)
  local out, seen = {}, {}
  for _, dep in ipairs(ready) do
    local id = string.gsub(dep, '|x$', '')
    if redis.call('HGET', KEYS[2], id) == 'pending' and not seen[id] then
      out[#out + 1] = dep
      seen[id] = true
    end
  end
  for _, id in ipairs(spared_ready) do
    if not seen[id] then
      out[#out + 1] = id .. '|x'
      seen[id] = true
    end
  end
  return out
end
