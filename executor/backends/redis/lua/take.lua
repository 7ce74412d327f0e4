-- A worker with free slots takes due units from a lane's todo set and claims them.
-- KEYS: meta status remaining out rec att claims events times end items lanes leases todo
-- ARGV: lane, at most this many, units per token, lease ms, started_at, worker, claim
--       token prefix, spend (1: a token message brought this call: one less is on its
--       way), number of steps to pass over (their tool has a concurrency limit: the caller
--       takes its slots first, then names the units; `s[]` passes over the items of a
--       map step `s`, not the step), those steps, number of units to take by name,
--       those units.
-- Returns {claims, tokens to send, delay ms of a token to send later or -1, units
-- passed over (due, left in the set)}.
local lane, n, k = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local c = {lease_ms = ARGV[4], started_at = ARGV[5], worker = ARGV[6], lane = lane,
  mode = 'queued'}
local prefix, spend = ARGV[7], ARGV[8] == '1'
local i = 9
local skip = {}
for j = i + 1, i + tonumber(ARGV[i]) do skip[ARGV[j]] = true end
i = i + 1 + tonumber(ARGV[i])
local named = {}
for j = i + 1, i + tonumber(ARGV[i]) do named[#named + 1] = ARGV[j] end
local todo = KEYS[TODO + 1]
local field = 'tok:' .. lane
if spend and tonumber(redis.call('HGET', KEYS[1], field) or '0') > 0 then
  redis.call('HINCRBY', KEYS[1], field, -1)
end
local now = now_ms()
local claims, passed = {}, {}
local function try(unit)
  redis.call('ZREM', todo, unit)
  c.unit, c.token = unit, prefix .. '.' .. (#claims + 1)
  local r = claim_unit(c)
  if r[1] == 'ok' then claims[#claims + 1] = r end
end
if #named > 0 then
  for _, unit in ipairs(named) do
    if #claims >= n then break end
    local score = redis.call('ZSCORE', todo, unit)
    if score and tonumber(score) <= now then try(unit) end
  end
else
  local offset = 0
  while #claims < n do
    local batch = redis.call('ZRANGEBYSCORE', todo, '-inf', now, 'LIMIT', offset, 100)
    if #batch == 0 then break end
    for _, unit in ipairs(batch) do
      if #claims >= n then break end
      local parent = string.match(unit, '^(.+)%[%d+%]$')
      if redis.call('HGET', KEYS[2], unit) ~= 'queued' then
        redis.call('ZREM', todo, unit) -- cancelled by a stop, or a duplicate: gone
        offset = offset - 1
      elseif skip[parent and (parent .. '[]') or unit] then
        if #passed < n then passed[#passed + 1] = unit end
      else
        try(unit)
        offset = offset - 1
      end
    end
    offset = offset + #batch
  end
end
local extra, delay = tokens(lane, todo, k)
return {claims, extra, delay, passed}
