-- Claim pending steps the caller decided itself and runs in place (no token): each is
-- queued and running at once. One call for several steps of a run.
-- KEYS: meta status remaining out rec att claims events times end items lanes leases
-- ARGV: lease ms, started_at, worker, lane, then per step: step, claim token.
-- Returns claim_unit's reply for each (see lib.lua).
local replies = {}
for i = 5, #ARGV, 2 do
  replies[#replies + 1] = claim_unit({unit = ARGV[i], token = ARGV[i + 1], lease_ms = ARGV[1],
    started_at = ARGV[2], worker = ARGV[3], lane = ARGV[4], mode = 'inplace'})
end
return replies
