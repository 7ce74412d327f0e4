-- Shared by every script: prepended to each when it is loaded (see redis_store.py).

-- The Redis server's clock in milliseconds: leases are judged by one clock.
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
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

