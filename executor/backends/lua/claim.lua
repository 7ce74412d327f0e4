-- Claim a step for one attempt, and load what the worker needs, in one round trip.
-- ARGV: step, message attempt, token, lease ms, started_at, worker, semaphore limit (0: none),
--       in place (1: the caller decided this pending step and runs it without a message;
--       `1+`: the same, asked ahead with the completion of one of its dependencies (see
--       complete.lua): claimed only if all of them are now done and succeeded),
--       deps whose outputs to return...
-- Returns {'ok', attempt, queued_at, first started_at, lost attempt or 0, outputs...}
-- or {'done'|'stopped'|'busy'|'stale'|'missing'|'full'|'unready', detail}.
-- The semaphore (a tool's max_concurrency, cluster-wide) is a sorted set of holders by
-- lease expiry: a crashed holder drops out when its lease passes, it cannot leak a slot.
return claim_step({step = ARGV[1], attempt = ARGV[2], token = ARGV[3], lease_ms = ARGV[4],
  started_at = ARGV[5], worker = ARGV[6], limit = ARGV[7], mode = ARGV[8]}, 9, #ARGV)
