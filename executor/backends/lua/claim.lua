-- Claim a step for one attempt, and load what the worker needs, in one round trip.
-- KEYS: meta status remaining out rec att claims events times end [tool semaphore]
-- ARGV: step, message attempt, token, lease ms, started_at, worker, semaphore limit (0: none),
--       in place (1: the caller decided this pending step and runs it without a message;
--       `1+`: the same, asked ahead in one round trip with the completion of one of its
--       dependencies: claimed only if all of them are now done and succeeded),
--       deps whose outputs to return...
-- Returns {'ok', attempt, queued_at, first started_at, lost attempt or 0, outputs...}
-- or {'done'|'stopped'|'busy'|'stale'|'missing'|'full'|'unready', detail}.
-- The semaphore (a tool's max_concurrency, cluster-wide) is a sorted set of holders by
-- lease expiry: a crashed holder drops out when its lease passes, it cannot leak a slot.
local step = ARGV[1]
local st = redis.call('HGET', KEYS[2], step)
if not st then return {'missing', ''} end
local inplace = string.sub(ARGV[8], 1, 1) == '1'
if st == 'pending' and not inplace then return {'stale', st} end
if ARGV[8] == '1+' and (tonumber(redis.call('HGET', KEYS[3], step) or '1') ~= 0 or
    redis.call('HEXISTS', KEYS[3], step .. '|x') == 1) then
  return {'unready', ''}
end
if st ~= 'pending' and st ~= 'queued' and st ~= 'running' then return {'done', st} end
local stop = redis.call('HGET', KEYS[1], 'stop')
if stop and stop ~= '' then return {'stopped', stop} end
local now = now_ms()
local wanted = tonumber(ARGV[2])
local attempt
local lost = 0
if st == 'pending' then
  -- Continued in place by the worker that completed its last dependency: queued and
  -- claimed at once, so no moment exists where it is queued with no message.
  redis.call('HSET', KEYS[9], step .. ':q', ARGV[5])
  redis.call('XADD', KEYS[8], '*', 'step', step, 'status', 'queued', 'at', ARGV[5])
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
local limit = tonumber(ARGV[7])
if limit > 0 then
  local holder = step .. '@' .. KEYS[1]
  redis.call('ZREMRANGEBYSCORE', KEYS[11], '-inf', now)
  if not redis.call('ZSCORE', KEYS[11], holder) and redis.call('ZCARD', KEYS[11]) >= limit then
    return {'full', ''}
  end
  redis.call('ZADD', KEYS[11], now + tonumber(ARGV[4]), holder)
  redis.call('PEXPIRE', KEYS[11], 2 * tonumber(ARGV[4]))
end
if lost > 0 then mark_lost(KEYS[6], step .. ':' .. lost, ARGV[5]) end
redis.call('HSET', KEYS[2], step, 'running')
redis.call('HSET', KEYS[7], step, attempt .. '|' .. ARGV[3] .. '|' .. (now + tonumber(ARGV[4])))
redis.call('HSETNX', KEYS[9], step .. ':s', ARGV[5])
redis.call('HSET', KEYS[6], step .. ':' .. attempt,
  cjson.encode({number = attempt, started_at = ARGV[5], worker = ARGV[6]}))
redis.call('XADD', KEYS[8], '*', 'step', step, 'status', 'running', 'attempt', attempt,
  'worker', ARGV[6], 'at', ARGV[5])
local reply = {'ok', attempt, redis.call('HGET', KEYS[9], step .. ':q') or '',
  redis.call('HGET', KEYS[9], step .. ':s') or '', lost}
for i = 9, #ARGV do
  reply[#reply + 1] = redis.call('HGET', KEYS[4], ARGV[i]) or ''
end
return reply
