-- Claim steps of a run, each for one attempt, and load what the worker needs, in one
-- round trip (a bundle's steps are claimed together: one call, the run's keys sent once).
-- ARGV: lease ms, started_at, worker, in place (1: the caller decided these pending
--       steps and runs them without a message; `1+`: the same, asked ahead with the
--       completion of one of its dependencies (see complete.lua): claimed only if all
--       of them are now done and succeeded),
--       then per step: step, message attempt, token, number of the deps whose outputs
--       to return, those deps...
-- Returns per step {'ok', attempt, queued_at, first started_at, lost attempt or 0,
-- outputs...} or {'done'|'stopped'|'busy'|'stale'|'missing'|'unready', detail}.
local replies = {}
local i = 5
while i <= #ARGV do
  local n = tonumber(ARGV[i + 3])
  replies[#replies + 1] = claim_step({step = ARGV[i], attempt = ARGV[i + 1],
    token = ARGV[i + 2], lease_ms = ARGV[1], started_at = ARGV[2], worker = ARGV[3],
    mode = ARGV[4]}, i + 4, i + 3 + n)
  i = i + 4 + n
end
return replies
