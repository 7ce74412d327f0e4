-- Record a step's terminal status once, release its dependents, and claim ahead the
-- dependents its worker runs next.
-- ARGV: step, status, output JSON or '', record JSON, at, worker, attempt number or '',
--       attempt JSON or '', error text, number of dependents, dependents...,
--       then per claim ahead: step, token, lease ms, started_at, worker, number of the
--       deps whose outputs to return, those deps... (each claimed as claim.lua's `1+`
--       mode: only if all its dependencies are now done and succeeded).
-- Returns {applied, unfinished steps, stop reason, {dependents that became ready...},
-- {claim.lua's reply for each claim ahead...}}; applied is 1, 0 when the step was
-- already terminal (a duplicate: nothing changes) or -1 when the step is unknown. A ready
-- dependent comes as `id|x` when some of its dependencies did not succeed (counted in
-- the `remaining` hash as `id|x`), else as its id: the coordinator then knows every
-- dependency succeeded without reading their statuses.
local clean = {}  -- dependents this completion made ready, all their dependencies succeeded

local function complete()
  local step = ARGV[1]
  local st = redis.call('HGET', KEYS[2], step)
  if not st then return {-1, -1, '', {}} end
  if st ~= 'pending' and st ~= 'queued' and st ~= 'running' then return {0, -1, '', {}} end
  if ARGV[7] ~= '' and st == 'running' then
    -- An attempt whose lease expired and was taken over must not record over the
    -- attempt that now holds the claim (the tool ran twice; the record keeps one result).
    local claim = redis.call('HGET', KEYS[7], step) or ''
    if string.match(claim, '^(%d+)|') ~= ARGV[7] then return {0, -1, '', {}} end
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
  local stop = run_stop()
  local ready = {}
  if stop == '' then
    local failed = ARGV[2] ~= 'succeeded'
    for i = 11, 10 + tonumber(ARGV[10]) do
      local dep = ARGV[i]
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

local reply = complete()
local claims = {}
local i = 11 + tonumber(ARGV[10])
while i <= #ARGV do
  local n = tonumber(ARGV[i + 5])
  claims[#claims + 1] = claim_step({step = ARGV[i], attempt = '1', token = ARGV[i + 1],
    lease_ms = ARGV[i + 2], started_at = ARGV[i + 3], worker = ARGV[i + 4], limit = '0',
    mode = '1+', ready = clean[ARGV[i]]}, i + 6, i + 5 + n)
  i = i + 6 + n
end
reply[5] = claims
return reply
