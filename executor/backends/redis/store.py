"""Run state in Redis: every key of a run under one hash tag, changed only by Lua scripts.

Keys of run R (namespace N): `N:{R}:meta` (flow, input, status, stop reason, counters),
`:status`, `:remaining` (unfinished dependencies), `:out` (outputs), `:rec` (final step
records), `:att` (attempts, `step:n`), `:claims` (`attempt|token|lease expiry`),
`:events` (a stream), `:times` (queued/started timestamps), `:end` (one entry once the run
has finished: what a waiting client blocks on). Cross-run indexes (`N:runs`,
`N:leases`, `N:deadlines`) are sorted sets outside the tag: only hints, each checked
against the run's own keys by a script. A tool's concurrency slots (`N:sem:TOOL`) are
shared by every run: a script of their own takes one before the claim, so that no
script spans two hash slots.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass, replace
from importlib import resources
from typing import Any

import redis

from executor.backends.redis.claims import Claim, Completion, NextClaim, Terminal, parse_claim
from executor.backends.redis.connections import Command, RoundTrips
from executor.errors import RunNotFoundError

KEY_NAMES = (
    "meta",
    "status",
    "remaining",
    "out",
    "rec",
    "att",
    "claims",
    "events",
    "times",
    "end",
)
SCRIPTS = (
    "acquire_slot",
    "claim",
    "complete",
    "enqueue",
    "retry",
    "renew",
    "renew_slot",
    "reclaim",
    "stop",
    "finish",
)
DEFAULT_TTL = 7 * 24 * 3600


def _load_script(name: str) -> str:
    """A script with lib.lua's shared functions in front (Redis scripts cannot import)."""
    folder = resources.files("executor.backends.redis") / "lua"
    return (folder / "lib.lua").read_text() + (folder / f"{name}.lua").read_text()


@dataclass(slots=True)
class RunData:
    """Everything stored about a run, read in one round trip."""

    meta: dict[str, str]
    status: dict[str, str]
    outputs: dict[str, str]
    records: dict[str, str]
    attempts: dict[str, str]
    times: dict[str, str]


class RedisStore:
    """Reads and changes run state; the only code that knows the key layout."""

    def __init__(
        self, client: redis.Redis, namespace: str = "dagrelay", result_ttl: int = DEFAULT_TTL
    ) -> None:
        self.client = client
        self.namespace = namespace
        self.result_ttl = result_ttl
        self._texts = {n: _load_script(n) for n in SCRIPTS}
        self._shas = {n: hashlib.sha1(t.encode()).hexdigest() for n, t in self._texts.items()}
        self._trips = RoundTrips(client, self._texts.values())
        self.runs_key = f"{namespace}:runs"
        self.leases_key = f"{namespace}:leases"
        self.deadlines_key = f"{namespace}:deadlines"

    def keys(self, run_id: str) -> list[str]:
        """The run's keys, in the order every script expects."""
        return [f"{self.namespace}:{{{run_id}}}:{name}" for name in KEY_NAMES]

    def _script(self, name: str, keys: list[str], args: list[Any]) -> Command:
        return ("EVALSHA", self._shas[name], len(keys), *keys, *args)

    def _batch(self, commands: list[Command]) -> list[Any]:
        """Run scripts and commands in one round trip; their raw replies."""
        return self._trips.run(commands)

    def _run(self, script: str, run_id: str, args: list[Any]) -> Any:
        """One script on the run's keys (all in the run's hash slot)."""
        return self._batch([self._script(script, self.keys(run_id), args)])[0]

    def semaphore_key(self, tool: str) -> str:
        """The cluster-wide concurrency slots of a tool (holders scored by lease expiry)."""
        return f"{self.namespace}:sem:{tool}"

    # Creating and reading runs ---------------------------------------------------------
    def create_run(
        self,
        run_id: str,
        meta: dict[str, Any],
        steps: list[str],
        remaining: dict[str, int],
        deadline: float | None,
    ) -> None:
        """Write a new run atomically (MULTI): meta, every step pending, counters.

        Raises:
            ValueError: a run with this id exists already.
        """
        k = self.keys(run_id)
        if self.client.exists(k[0]):
            raise ValueError(f"run {run_id!r} exists already")
        pipe = self.client.pipeline(transaction=True)
        # The run's TTL is chosen by its creator, whichever process finishes it.
        fields = {"ttl": self.result_ttl, **meta, "unfinished": len(steps), "stop": ""}
        pipe.hset(k[0], mapping=fields)  # type: ignore[arg-type]
        pipe.hset(k[1], mapping=dict.fromkeys(steps, "pending"))
        counts = {s: n for s, n in remaining.items() if n}
        if counts:
            pipe.hset(k[2], mapping=counts)  # type: ignore[arg-type]
        pipe.zadd(self.runs_key, {run_id: time.time()})
        # The index outlives no run: drop ids whose results have expired by now.
        pipe.zremrangebyscore(self.runs_key, "-inf", time.time() - self.result_ttl)
        if deadline is not None:
            pipe.zadd(self.deadlines_key, {run_id: deadline})
        pipe.execute()

    def run_meta(self, run_id: str, *fields: str) -> dict[str, str]:
        """Some fields of the run's meta hash.

        Raises:
            RunNotFoundError: no such run (or its results expired).
        """
        values = self.client.hmget(self.keys(run_id)[0], list(fields))
        if all(v is None for v in values):
            raise RunNotFoundError(f"no run {run_id!r} (unknown, or its results expired)")
        return {f: v for f, v in zip(fields, values, strict=True) if v is not None}

    def read_run(self, run_id: str) -> RunData:
        """The whole run, for building its result."""
        k = self.keys(run_id)
        pipe = self.client.pipeline(transaction=False)
        for key in (k[0], k[1], k[3], k[4], k[5], k[8]):
            pipe.hgetall(key)
        meta, status, out, rec, att, times = pipe.execute()
        if not meta:
            raise RunNotFoundError(f"no run {run_id!r} (unknown, or its results expired)")
        return RunData(meta, status, out, rec, att, times)

    def dep_state(
        self, run_id: str, steps: list[str], outputs: list[str]
    ) -> tuple[dict[str, str], dict[str, Any]]:
        """Statuses of some steps and the outputs of others, in one round trip."""
        k = self.keys(run_id)
        pipe = self.client.pipeline(transaction=False)
        pipe.hmget(k[1], steps or ["-"])
        pipe.hmget(k[3], outputs or ["-"])
        st, out = pipe.execute()
        statuses = {s: v for s, v in zip(steps, st, strict=False) if v is not None}
        outs = {s: json.loads(v) for s, v in zip(outputs, out, strict=False) if v is not None}
        return statuses, outs

    def all_statuses(self, run_id: str) -> dict[str, str]:
        return self.client.hgetall(self.keys(run_id)[1])

    def all_outputs(self, run_id: str) -> dict[str, Any]:
        raw = self.client.hgetall(self.keys(run_id)[3])
        return {s: json.loads(v) for s, v in raw.items()}

    def read_events(
        self, run_id: str, after: str, block_ms: int | None, count: int = 1000
    ) -> list[tuple[str, dict[str, str]]]:
        """Events after stream id `after`, waiting up to `block_ms` for the first."""
        reply = self.client.xread({self.keys(run_id)[7]: after}, count=count, block=block_ms)
        if not reply:
            return []
        return list(reply[0][1])

    def wait_end(self, run_id: str, block_ms: int | None) -> bool:
        """Whether the run has finished, waiting up to `block_ms` for it to."""
        return bool(self.client.xread({self.keys(run_id)[9]: "0-0"}, count=1, block=block_ms))

    def list_runs(self, limit: int = 50) -> list[tuple[str, dict[str, str]]]:
        """Recent runs, newest first, with their meta (expired ones left out)."""
        fields = ["flow_name", "status", "submitted_at", "finished_at", "wall_time"]
        out: list[tuple[str, dict[str, str]]] = []
        start = 0
        while len(out) < limit:
            ids = self.client.zrevrange(self.runs_key, start, start + limit - 1)
            if not ids:
                break
            start += len(ids)
            pipe = self.client.pipeline(transaction=False)
            for rid in ids:
                pipe.hmget(self.keys(rid)[0], fields)
            gone = []
            for rid, values in zip(ids, pipe.execute(), strict=True):
                if values[1] is None:
                    gone.append(rid)  # expired (a run of another TTL): forget it
                else:
                    out.append((rid, {f: v for f, v in zip(fields, values, strict=True) if v}))
            if gone:
                self.client.zrem(self.runs_key, *gone)
                start -= len(gone)
        return out[:limit]

    # Step transitions (each one script) --------------------------------------------------
    def claim(
        self,
        run_id: str,
        step: str,
        attempt: int,
        token: str,
        lease_ms: int,
        started_at: str,
        worker: str,
        needs: tuple[str, ...],
        semaphore: tuple[str, int] | None = None,
        inplace: bool = False,
        drop_hints: list[str] | None = None,
    ) -> Claim:
        """Claim a step for an attempt and load the outputs it reads, in one round trip
        with the sweeper's lease hint.

        Args:
            semaphore: (tool, limit) to also take one of the tool's slots first (a round
                trip of its own: see `_acquire_slot`); the answer is `full` when none is
                free, and an `ok` claim names its slot (`Claim.slot`).
            inplace: the caller decided this pending step itself and runs it without a
                message (continue in place).
            drop_hints: lease hints (`run|step`) of steps this worker finished
                coordinating, removed in the same round trip.
        """
        one = [(step, attempt, token, needs)]
        if semaphore is None:
            return self.claim_many(run_id, one, lease_ms, started_at, worker, inplace, drop_hints)[
                0
            ]
        slot = self.holder(run_id, step, token)
        refused = self._acquire_slot(run_id, step, semaphore, slot, lease_ms)
        if refused is not None:
            return refused
        claim = self.claim_many(run_id, one, lease_ms, started_at, worker, inplace, drop_hints)[0]
        if claim.kind != "ok":  # a duplicate, a stale message...: the slot goes back
            self.release_slot(semaphore[0], slot)
            return claim
        return replace(claim, slot=slot)

    def _acquire_slot(
        self, run_id: str, step: str, semaphore: tuple[str, int], holder: str, lease_ms: int
    ) -> Claim | None:
        """Take a slot of the tool's semaphore for `holder`; None when taken, else the
        answer to the claim.

        The semaphore is shared by every run, so it cannot share a run's hash slot: it is
        taken by a script of its own, before the claim, and given back if the claim is
        refused (should this worker die in between, the slot's lease runs out). When
        every slot is taken, the step's state read alongside tells a message that has
        nothing left to run (stopped, done) from one that must come back later.
        """
        tool, limit = semaphore
        k = self.keys(run_id)
        got, stop, status = self._batch(
            [
                self._script("acquire_slot", [self.semaphore_key(tool)], [holder, limit, lease_ms]),
                ("HGET", k[0], "stop"),
                ("HGET", k[1], step),
            ]
        )
        if got:
            return None
        if status is None:
            return Claim("missing")
        if status not in ("pending", "queued", "running"):
            return Claim("done", detail=status)
        if stop:
            return Claim("stopped", detail=stop)
        return Claim("full")

    def claim_many(
        self,
        run_id: str,
        steps: list[tuple[str, int, str, tuple[str, ...]]],
        lease_ms: int,
        started_at: str,
        worker: str,
        inplace: bool = False,
        drop_hints: list[str] | None = None,
    ) -> list[Claim]:
        """`claim` for several (step, attempt, token, needs) of a run (no tool slots), in
        one round trip; a claim each, in order."""
        args: list[Any] = [lease_ms, started_at, worker, int(inplace)]
        for step, attempt, token, needs in steps:
            args += [step, attempt, token, len(needs), *needs]
        # The hints are harmless when a claim is refused: the sweeper checks the claim.
        hint = time.time() + lease_ms / 1000
        hints = [x for s in steps for x in (hint, f"{run_id}|{s[0]}")]
        commands = [
            self._script("claim", self.keys(run_id), args),
            ("ZADD", self.leases_key, *hints),
        ]
        if drop_hints:
            commands.append(("ZREM", self.leases_key, *drop_hints))
        replies = self._batch(commands)[0]
        return [parse_claim(r, s[3]) for r, s in zip(replies, steps, strict=True)]

    def complete(
        self,
        run_id: str,
        step: str,
        status: str,
        output_json: str,
        record: dict[str, Any],
        at: str,
        worker: str,
        attempt: int | None,
        attempt_json: str,
        error: str,
        dependents: tuple[str, ...],
        then: tuple[NextClaim, ...] = (),
    ) -> Completion:
        """Record a terminal status once; returns the dependents that became ready.

        The step's lease hint stays: until its completer has decided the dependents, a
        crash must leave a trace the sweeper finds (it then repairs, see `repair_state`).
        """
        item = Terminal(step, status, output_json, record, at, worker, attempt, attempt_json, error)
        return self.complete_many(run_id, [(item, dependents, then)])[0]

    def complete_many(
        self,
        run_id: str,
        items: list[tuple[Terminal, tuple[str, ...], tuple[NextClaim, ...]]],
        drop_hints: list[str] | None = None,
    ) -> list[Completion]:
        """`complete` for several steps of a run (each with its dependents and claims
        ahead), in one round trip; a completion each, in order. `drop_hints` as for
        `claim`: hints of steps whose completers finished coordinating."""
        args: list[Any] = [len(items)]
        hints: list[Any] = []
        for t, dependents, then in items:
            attempt = "" if t.attempt is None else t.attempt
            args += [t.step, t.status, t.output_json, json.dumps(t.record), t.at, t.worker]
            args += [attempt, t.attempt_json, t.error, len(dependents), *dependents, len(then)]
            for n in then:  # claimed by the same script, after the completion
                args += [n.step, n.token, n.lease_ms, n.started_at, n.worker, len(n.needs)]
                args += n.needs
                hints += [time.time() + n.lease_ms / 1000, f"{run_id}|{n.step}"]
        commands: list[Command] = [self._script("complete", self.keys(run_id), args)]
        if hints:
            commands.append(("ZADD", self.leases_key, *hints))
        if drop_hints:
            commands.append(("ZREM", self.leases_key, *drop_hints))
        out = []
        for (_, _, then), r in zip(items, self._batch(commands)[0], strict=True):
            claimed = tuple(parse_claim(c, n.needs) for c, n in zip(r[4], then, strict=True))
            if r[0] != 1:
                out.append(Completion(False, then=claimed))
                continue
            ready = tuple(d.removesuffix("|x") for d in r[3])
            clean = frozenset(d for d in r[3] if "|" not in d)
            out.append(Completion(True, int(r[1]), r[2], ready, clean, claimed))
        return out

    def repair_state(
        self, run_id: str, steps: tuple[str, ...]
    ) -> tuple[dict[str, str], dict[str, int], dict[str, int], str]:
        """Statuses, unfinished-dependency counts and next attempts of some steps, and the
        run's unfinished count, for repairing after a coordinator died."""
        k = self.keys(run_id)
        pipe = self.client.pipeline(transaction=False)
        pipe.hmget(k[1], list(steps) or ["-"])
        pipe.hmget(k[2], list(steps) or ["-"])
        pipe.hmget(k[6], [f"{s}:next" for s in steps] or ["-"])
        pipe.hget(k[0], "unfinished")
        st, rem, nxt, unfinished = pipe.execute()
        statuses = {s: v for s, v in zip(steps, st, strict=False) if v is not None}
        remaining = {s: int(v or 0) for s, v in zip(steps, rem, strict=False)}
        attempts = {s: int(v or 1) for s, v in zip(steps, nxt, strict=False)}
        return statuses, remaining, attempts, unfinished or ""

    def mark_queued(self, run_id: str, steps: list[str], queued_at: str) -> list[str]:
        """Move pending steps to queued; returns those that moved (they must be sent)."""
        return list(self._run("enqueue", run_id, [queued_at, *steps]))

    def retry(
        self,
        run_id: str,
        step: str,
        attempt: int,
        attempt_json: str,
        at: str,
        worker: str,
        error: str,
    ) -> bool:
        """Queue a step again after a failed attempt; True if the caller must send it."""
        return bool(self._run("retry", run_id, [step, attempt, attempt_json, at, worker, error]))

    def renew(self, run_id: str, step: str, attempt: int, lease_ms: int) -> tuple[bool, str]:
        """Extend a lease; returns (still held, the run's stop reason or '')."""
        return self.renew_many([(run_id, step, attempt)], lease_ms)[0]

    def renew_many(
        self, attempts: list[tuple[str, str, int]], lease_ms: int
    ) -> list[tuple[bool, str]]:
        """Extend the leases of (run, step, attempt)s in one round trip; for each, whether
        it is still held and its run's stop reason (or '')."""

        if not attempts:
            return []
        replies = self._batch(
            [self._script("renew", self.keys(r), [s, a, lease_ms]) for r, s, a in attempts]
        )
        return [(bool(held), stop) for held, stop in replies]

    def reclaim(self, run_id: str, step: str, at: str) -> tuple[int, int]:
        """Queue a step whose lease expired; see reclaim.lua for the answer."""
        r = self._run("reclaim", run_id, [step, at])
        return int(r[0]), int(r[1]) if len(r) > 1 else 0

    def stop(self, run_id: str, reason: str, at: str) -> tuple[bool, int, list[str]]:
        """Stop a run; returns (this call stopped it, unfinished, running steps)."""
        r = self._run("stop", run_id, [reason, at])
        if r[0] != 1:
            return False, -1, []
        return True, int(r[1]), list(r[2:])

    def finish(
        self,
        run_id: str,
        status: str,
        finished_at: str,
        output_json: str,
        error: str,
        wall_time: float,
    ) -> bool:
        """Write the final status once and set the TTL on every key of the run (the TTL
        stored by `create_run`, else this store's `result_ttl`)."""
        done = self._run(
            "finish",
            run_id,
            [status, finished_at, output_json, error, repr(wall_time), self.result_ttl],
        )
        if done:
            pipe = self.client.pipeline(transaction=False)
            pipe.zrem(self.deadlines_key, run_id)
            pipe.execute()
        return bool(done)

    # Cross-run indexes ------------------------------------------------------------------
    def set_leases(self, leases: dict[str, float]) -> None:
        """Record lease expiries (`run|step` → epoch seconds) for the sweeper."""
        if leases:
            self.client.zadd(self.leases_key, leases)  # type: ignore[arg-type]

    def expired_leases(self, now: float, limit: int = 100) -> list[tuple[str, str]]:
        members = self.client.zrangebyscore(self.leases_key, 0, now, start=0, num=limit)
        return [(m.split("|", 1)[0], m.split("|", 1)[1]) for m in members]

    def take_lease_hint(self, run_id: str, step: str) -> bool:
        """Remove a lease hint; True for exactly one of several sweepers."""
        return bool(self.client.zrem(self.leases_key, f"{run_id}|{step}"))

    def release_slot(self, tool: str, holder: str) -> None:
        """Give back a tool slot taken by `claim` (`Claim.slot`)."""
        self.client.zrem(self.semaphore_key(tool), holder)

    def holder(self, run_id: str, step: str, token: str) -> str:
        """A claim attempt's member name in a tool semaphore: its own, so that giving
        back a refused duplicate's slot leaves the running attempt's alone."""
        return f"{step}@{run_id}#{token}"

    def renew_slots(self, holders: list[tuple[str, str]], lease_ms: int) -> None:
        """Extend the slot leases of (tool, holder) pairs, on the Redis clock."""

        if holders:
            self._batch(
                [
                    self._script("renew_slot", [self.semaphore_key(tool)], [holder, lease_ms])
                    for tool, holder in holders
                ]
            )

    def overdue_runs(self, now: float, limit: int = 100) -> list[str]:
        return list(self.client.zrangebyscore(self.deadlines_key, 0, now, start=0, num=limit))
