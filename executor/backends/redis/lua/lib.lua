-- Shared by every script: prepended to each when it is loaded (see redis_store.py).
-- Every script takes the run's keys in the same order:
-- KEYS: meta status remaining out rec att claims events times end [tool semaphore]

-- The Redis server's clock in milliseconds: leases are judged by one clock.
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- The run's stop reason ('' while it runs), read once per script: a script that claims
-- several steps, or completes one and claims the next, asks it more than once.
local stop_reason
local function run_stop()
  if stop_reason == nil then stop_reason = redis.call('HGET', KEYS[1], 'stop') or '' end
  return stop_reason
end

-- Close an attempt record whose worker stopped renewing its lease, if still open.
local function mark_lost(att_key, field, at)
  local raw = redis.call('HGET', att_key, field)
  if raw then
    local rec = cjson.decode(raw)
    if rec['finished_at'] == nil then
      rec['finished_at'] = at
      rec['error'] = {type = 'WorkerLost', message = 'the worker stopped renewing its lease'}
      redis.call('HSET', att_key, field, cjson.encode(rec))
    end
  end
end

-- Claim a step for one attempt, and load what the worker needs (see claim.lua).
-- c: step, attempt (wanted), token, lease_ms, started_at, worker, mode, and `ready`
-- when the caller has just made this pending step ready with every dependency
-- succeeded (its state is not read again); ARGV[first..last]: the steps whose outputs
-- to return. A tool's concurrency slot is taken before, apart (acquire_slot.lua).
local function claim_step(c, first, last)
  local step = c.step
  local st = 'pending'
  if not c.ready then st = redis.call('HGET', KEYS[2], step) end
  if not st then return {'missing', ''} end
  local inplace = string.sub(c.mode, 1, 1) == '1'
  if st == 'pending' and not inplace then return {'stale', st} end
  if c.mode == '1+' and not c.ready then
    local r = redis.call('HMGET', KEYS[3], step, step .. '|x')
    if tonumber(r[1] or '1') ~= 0 or r[2] then return {'unready', ''} end
  end
  if st ~= 'pending' and st ~= 'queued' and st ~= 'running' then return {'done', st} end
  local stop = run_stop()
  if stop ~= '' then return {'stopped', stop} end
  local now = now_ms()
  local wanted = tonumber(c.attempt)
  local attempt
  local lost = 0
  if st == 'pending' then
    attempt = 1
  elseif st == 'queued' then
    local expected = tonumber(redis.call('HGET', KEYS[7], step .. ':next') or '1')
    if wanted ~= expected then return {'stale', tostring(expected)} end
    attempt = expected
  else
    -- Running: a duplicate while the lease lives is dropped; after it expired, the
    -- holder is presumed dead and this delivery takes over with a new attempt.
    local claim = redis.call('HGET', KEYS[7], step)
    local cur, expiry = 0, 0
    if claim then
      local a, e = string.match(claim, '^(%d+)|[^|]*|(%d+)$')
      cur, expiry = tonumber(a), tonumber(e)
    end
    if expiry > now then return {'busy', tostring(cur)} end
    if wanted < cur then return {'stale', tostring(cur)} end
    lost = cur
    attempt = cur + 1
  end
  if lost > 0 then mark_lost(KEYS[6], step .. ':' .. lost, c.started_at) end
  redis.call('HSET', KEYS[2], step, 'running')
  redis.call('HSET', KEYS[7], step, attempt .. '|' .. c.token .. '|' .. (now + tonumber(c.lease_ms)))
  local queued_at, started_at
  if st == 'pending' then
    -- Continued in place by the worker that completed its last dependency: queued and
    -- claimed at once, so no moment exists where it is queued with no message.
    redis.call('XADD', KEYS[8], '*', 'step', step, 'status', 'queued', 'at', c.started_at)
    redis.call('HSET', KEYS[9], step .. ':q', c.started_at, step .. ':s', c.started_at)
    queued_at, started_at = c.started_at, c.started_at
  else
    redis.call('HSETNX', KEYS[9], step .. ':s', c.started_at)
    local t = redis.call('HMGET', KEYS[9], step .. ':q', step .. ':s')
    queued_at, started_at = t[1] or '', t[2] or ''
  end
  redis.call('HSET', KEYS[6], step .. ':' .. attempt,
    cjson.encode({number = attempt, started_at = c.started_at, worker = c.worker}))
  redis.call('XADD', KEYS[8], '*', 'step', step, 'status', 'running', 'attempt', attempt,
    'worker', c.worker, 'at', c.started_at)
  local reply = {'ok', attempt, queued_at, started_at, lost}
  -- In chunks: unpack() is bounded by Lua's C stack (a step may read many outputs).
  for i = first, last, 1000 do
    local outs = redis.call('HMGET', KEYS[4], unpack(ARGV, i, math.min(i + 999, last)))
    for j = 1, #outs do reply[#reply + 1] = outs[j] or '' end
  end
  return reply
end
