"""Steps no live worker can run: found from the heartbeats, failed once their wait ends.

A step waits for a worker that serves its queue and has its tool (workers pass over the
units of tools they lack). When no live worker's heartbeat offers that pair, a client
that watches the run says so (`NoWorkerWatch.poll`), and once the wait it allows has
passed it fails the step's queued units with that message: the client claims each one
like a worker would and settles it failed, so dependents, fail-fast and the run's end
follow from the usual rules.
"""

from __future__ import annotations

import json
import os
import socket
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime

from executor.backends.redis.backend import RedisBackend
from executor.backends.redis.claims import Terminal
from executor.backends.redis.coordinator import Coordinator
from executor.backends.redis.heartbeats import live_workers, no_worker_message, unserved
from executor.backends.redis.messages import lanes_of
from executor.backends.redis.store import RedisStore
from executor.errors import RunNotFoundError
from executor.run.records import StepError

WAITING = ("pending", "queued")
ERROR_TYPE = "NoLiveWorker"


@dataclass
class NoWorkerWatch:
    """Watches one run for steps no live worker can run.

    Args:
        fail_after: seconds a (queue, tool) pair may go unserved before its queued steps
            fail (None: they wait).
    """

    backend: RedisBackend
    run_id: str
    fail_after: float | None = None
    first_seen: dict[tuple[str, str], float] = field(default_factory=dict)
    failed: set[str] = field(default_factory=set)

    def poll(self, now: float | None = None) -> list[str]:
        """Look once; returns the lines to show for pairs newly found unserved (and for
        steps failed now)."""
        now = time.monotonic() if now is None else now
        store = self.backend.store
        ctx = self.backend.coordinator.context(self.run_id)
        statuses = store.all_statuses(self.run_id)
        waiting = {
            sid: (ctx.queue(sid), ctx.dag.steps[sid].tool)
            for sid, status in statuses.items()
            if status in WAITING and sid in ctx.dag.steps
        }
        if not waiting:
            return []
        missing = set(unserved(live_workers(store.client, store.namespace), waiting.values()))
        for pair in list(self.first_seen):
            if pair not in missing:  # a worker came
                del self.first_seen[pair]
        lines = []
        for pair in sorted(missing):
            steps = sorted(s for s, p in waiting.items() if p == pair)
            if pair not in self.first_seen:
                self.first_seen[pair] = now
                then = (
                    f"; they fail after {self.fail_after:g}s without one"
                    if self.fail_after is not None
                    else "; they wait for one"
                )
                lines.append(f"{no_worker_message(*pair)} (steps: {', '.join(steps)}){then}")
            elif self.fail_after is not None and now - self.first_seen[pair] >= self.fail_after:
                message = no_worker_message(*pair)
                for sid in steps:
                    if statuses[sid] != "queued" or sid in self.failed:
                        continue
                    if fail_waiting(self.backend, self.run_id, sid, message):
                        self.failed.add(sid)
                        lines.append(f"step {sid} failed: {message}")
        return lines


def waiting_unserved(backend: RedisBackend, run_id: str) -> list[str]:
    """One line per (queue, tool) pair of the run's waiting steps that no live worker
    serves (for `dagrelay status`)."""
    return NoWorkerWatch(backend, run_id).poll()


def fail_waiting(backend: RedisBackend, run_id: str, step_id: str, message: str) -> bool:
    """Fail a queued step with `message` (claimed and settled as a worker would); False
    if it is not queued any more (a worker took it, or the run ended)."""
    who = f"{socket.gethostname()}:{os.getpid()}:client"
    return fail_unit(backend.store, backend.coordinator, run_id, step_id, message, who)


def fail_unit(
    store: RedisStore, coordinator: Coordinator, run_id: str, unit: str, message: str, who: str
) -> bool:
    """Fail a queued unit (a step, or an item `s[i]`) with `message`: claim it by name as
    a worker would, and settle it failed (dependents and the run's end follow). False if
    it is not queued and due any more."""
    try:
        ctx = coordinator.context(run_id)
    except RunNotFoundError:
        return False
    at = datetime.now(UTC).isoformat()
    for lane in lanes_of([ctx.queue(unit.partition("[")[0])]):
        took = store.take(run_id, lane, 1, 1, 6000, at, who, spend=False, named=(unit,))
        # The take counts tokens for the lane's other units: they must go out.
        coordinator.send_tokens(run_id, lane, took.tokens, 1)
        if took.delay_ms >= 0:
            coordinator.send_tokens(run_id, lane, 1, 1, took.delay_ms)
        if not took.claims:
            continue
        claim = took.claims[0]
        error = StepError(type=ERROR_TYPE, message=message).model_dump()
        record = {
            "worker": who,
            "queued_at": claim.queued_at,
            "started_at": at,
            "finished_at": at,
            "duration": 0.0,
            "error": error,
        }
        attempt = {
            "number": claim.attempt,
            "started_at": at,
            "finished_at": at,
            "duration": 0.0,
            "worker": who,
        }
        terminal = Terminal(
            unit, "failed", "", record, at, who, claim.attempt, json.dumps(attempt), None, lane
        )
        coordinator.settle(ctx, [(terminal, None, ())])
        return True
    return False


__all__ = ["ERROR_TYPE", "NoWorkerWatch", "fail_unit", "fail_waiting", "waiting_unserved"]
