-- Record terminal statuses, each once; release the dependents; claim ahead the
-- dependents the worker runs next. The steps of a run that end together come in one
-- call (group commit, see workers/bundles.py): one round trip, the run's keys sent once.
-- ARGV: number of completions, then per completion: step, status, output JSON or '',
--       record JSON, at, worker, attempt number or '', attempt JSON or '', error text,
--       number of dependents, dependents..., number of claims ahead, then per claim
--       ahead: step, token, lease ms, started_at, worker, number of the deps whose
--       outputs to return, those deps... (each claimed as claim.lua's `1+` mode: only
--       if all its dependencies are now done and succeeded).
-- Returns per completion {applied, unfinished steps, stop reason, {dependents that
-- became ready...}, {claim.lua's reply for each claim ahead...}}; applied is 1, 0 when
-- the step was already terminal (a duplicate: nothing changes) or -1 when the step is
-- unknown. A ready dependent comes as `id|x` when some of its dependencies did not
-- succeed (counted in the `remaining` hash as `id|x`), else as its id: the coordinator
-- then knows every dependency succeeded without reading their statuses.

-- The completion whose fields start at ARGV[i]; `clean` gets the dependents it made
-- ready with all their dependencies succeeded.
local function complete(i, clean)
  local step, status, attempt = ARGV[i], ARGV[i + 1], ARGV[i + 6]
  local st = redis.call('HGET', KEYS[2], step)
  if not st then return {-1, -1, '', {}} end
  if st ~= 'pending' and st ~= 'queued' and st ~= 'running' then return {0, -1, '', {}} end
  if attempt ~= '' and st == 'running' then
    -- An attempt whose lease expired and was taken over must not record over the
    -- attempt that now holds the claim (the tool ran twice; the record keeps one result).
    local claim = redis.call('HGET', KEYS[7], step) or ''
    if string.match(claim, '^(%d+)|') ~= attempt then return {0, -1, '', {}} end
  end
  redis.call('HSET', KEYS[2], step, status)
  if ARGV[i + 2] ~= '' then redis.call('HSET', KEYS[4], step, ARGV[i + 2]) end
  redis.call('HSET', KEYS[5], step, ARGV[i + 3])
  if attempt ~= '' and ARGV[i + 7] ~= '' then
    redis.call('HSET', KEYS[6], step .. ':' .. attempt, ARGV[i + 7])
  end
  redis.call('HDEL', KEYS[7], step)
  redis.call('XADD', KEYS[8], '*', 'step', step, 'status', status, 'attempt', attempt,
    'worker', ARGV[i + 5], 'at', ARGV[i + 4], 'error', ARGV[i + 8])
  local unfinished = redis.call('HINCRBY', KEYS[1], 'unfinished', -1)
  local stop = run_stop()
  local ready = {}
  if stop == '' then
    local failed = status ~= 'succeeded'
    for d = i + 10, i + 9 + tonumber(ARGV[i + 9]) do
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
  end
  return {1, unfinished, stop, ready}
end

local replies = {}
local i = 2
for _ = 1, tonumber(ARGV[1]) do
  local clean = {}
  local reply = complete(i, clean)
  i = i + 10 + tonumber(ARGV[i + 9])
  local claims = {}
  local last = i + 1
  for _ = 1, tonumber(ARGV[i]) do
    local c = last
    local n = tonumber(ARGV[c + 5])
    claims[#claims + 1] = claim_step({step = ARGV[c], attempt = '1', token = ARGV[c + 1],
      lease_ms = ARGV[c + 2], started_at = ARGV[c + 3], worker = ARGV[c + 4], mode = '1+',
      ready = clean[ARGV[c]]}, c + 6, c + 5 + n)
    last = c + 6 + n
  end
  i = last
  reply[5] = claims
  replies[#replies + 1] = reply
end
return replies
