"""Run state in Redis: every key of a run under one hash tag, changed only by Lua scripts.

Keys of run R (namespace N): `N:{R}:meta` (flow, input, status, stop reason, counters,
what the scripts need of the flow), `:status` (of every unit: a step `s`, or an item
`s[i]` of a map step), `:remaining` (unfinished dependencies; a map's items left),
`:out` (outputs), `:rec` (final records), `:att` (attempts, `unit:n`), `:claims`
(`attempt|token|lease expiry`, next attempts), `:events` (a stream), `:times`
(queued/started timestamps), `:end` (one entry once the run has finished: what a
waiting client blocks on), `:items` (map items' values), `:lanes` (the lanes it queued
units in), `:leases` (claimed units by lease expiry) and `:todo:LANE` (queued units of
a lane, scored by when they are due). Cross-run indexes (`N:runs`, `N:leased`: runs to
look at for expired leases, and when; `N:deadlines`) are sorted sets outside the tag:
only hints, each checked against the run's own keys by a script. A tool's concurrency
slots (`N:sem:TOOL`) are shared by every run: a script of their own takes them before
the claims, so that no script spans two hash slots.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from typing import Any

import redis

from executor.backends.redis.claims import (
    Claim,
    Completion,
    Expansion,
    NextClaim,
    Take,
    Terminal,
    new_token,
    parse_claim,
    parse_ready,
)
from executor.backends.redis.connections import Command, RoundTrips
from executor.errors import RunNotFoundError
from executor.run.records import StepError

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
    "items",
    "lanes",
    "leases",
)
SCRIPTS = (
    "acquire_slot",
    "claim",
    "complete",
    "enqueue",
    "expand",
    "take",
    "renew",
    "renew_slot",
    "reclaim",
    "give_back",
    "stop",
    "finish",
    "rerun",
)
DEFAULT_TTL = 7 * 24 * 3600


def _load_script(name: str) -> str:
    """A script with lib.lua's shared functions in front (Redis scripts cannot import)."""
    folder = resources.files("executor.backends.redis") / "lua"
    return (folder / "lib.lua").read_text() + (folder / f"{name}.lua").read_text()


@dataclass(frozen=True, slots=True)
class Refill:
    """Due units of a lane that a group commit takes with the slots it frees."""

    lane: str
    count: int
    lease_ms: int
    at: str
    worker: str
    skip: tuple[str, ...] = ()


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
        self.leased_key = f"{namespace}:leased"
        self.deadlines_key = f"{namespace}:deadlines"

    def keys(self, run_id: str) -> list[str]:
        """The run's keys, in the order every script expects."""
        return [f"{self.namespace}:{{{run_id}}}:{name}" for name in KEY_NAMES]

    def _script(self, name: str, keys: list[str], args: list[Any]) -> Command:
        return ("EVALSHA", self._shas[name], len(keys), *keys, *args)

    def _batch(self, commands: list[Command]) -> list[Any]:
        """Run scripts and commands in one round trip; their raw replies."""
        return self._trips.run(commands)

    def _run(self, script: str, run_id: str, args: list[Any], lanes: tuple[str, ...] = ()) -> Any:
        """One script on the run's keys and the todo sets of `lanes` (all in the run's
        hash slot)."""
        return self._batch([self._script(script, self._keys(run_id, lanes), args)])[0]

    def _keys(self, run_id: str, lanes: tuple[str, ...] | list[str] = ()) -> list[str]:
        return self.keys(run_id) + [self.todo_key(run_id, lane) for lane in lanes]

    def todo_key(self, run_id: str, lane: str) -> str:
        """The run's queued units of one lane (a Dramatiq queue), scored by due time."""
        return f"{self.namespace}:{{{run_id}}}:todo:{lane}"

    @staticmethod
    def lease_member(unit: str, lane: str) -> str:
        """A unit's member in its run's `leases` (what the sweeper needs to reclaim it)."""
        return f"{unit}|{lane}"

    def _watch(self, run_id: str, lease_ms: int) -> Command:
        """Have sweepers look at the run's leases by the time one taken now expires: sent
        before a script that claims, so that no lease exists that no sweeper will see."""
        return ("ZADD", self.leased_key, "LT", time.time() + lease_ms / 1000, run_id)

    def _drops(self, drops: list[tuple[str, str]] | None) -> list[Command]:
        """Remove the leases of units whose workers have coordinated them."""
        by_run: dict[str, list[str]] = {}
        for run_id, member in drops or ():
            by_run.setdefault(run_id, []).append(member)
        return [("ZREM", self.keys(r)[12], *ms) for r, ms in by_run.items()]

    @property
    def stop_channel(self) -> str:
        """The pub/sub channel on which stop.lua tells workers that a run stopped."""
        return f"{self.namespace}:stops"

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
        fields = {
            "ttl": self.result_ttl,
            **meta,
            "unfinished": len(steps),
            "stop": "",
            "run_id": run_id,
            "stop_channel": self.stop_channel,
        }
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
        """The statuses of the run's steps (not of map items)."""
        raw = self.client.hgetall(self.keys(run_id)[1])
        return {s: v for s, v in raw.items() if not s.endswith("]")}

    def all_outputs(self, run_id: str) -> dict[str, Any]:
        """The outputs of the run's succeeded steps (not of map items)."""
        raw = self.client.hgetall(self.keys(run_id)[3])
        return {s: json.loads(v) for s, v in raw.items() if not s.endswith("]")}

    def step_error(self, run_id: str, unit: str) -> StepError | None:
        """The error in a unit's final record, if any."""
        raw = self.client.hget(self.keys(run_id)[4], unit)
        err = json.loads(raw).get("error") if raw else None
        return StepError.model_validate(err) if err else None

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

    # Unit transitions (each one script) ------------------------------------------------
    def enqueue(
        self,
        run_id: str,
        lanes: list[tuple[str, int, list[str]]],
        at: str,
        trace: str = "",
        lease_ms: int = 6000,
    ) -> list[int]:
        """Queue pending steps, each in its lane's todo set: (lane, units per token,
        steps) each; returns, per lane, the token messages to send. `trace`: the W3C
        traceparent of the span that queues them (their spans' parent). A sweeper looks
        at the run within `lease_ms` (and then every lease) while units wait: should a
        token be lost, it sends another."""
        args: list[Any] = [at, trace]
        for lane, k, steps in lanes:
            args += [lane, k, len(steps), *steps]
        commands = [
            self._watch(run_id, lease_ms),
            self._script("enqueue", self._keys(run_id, tuple(x[0] for x in lanes)), args),
        ]
        return [int(n) for n in self._batch(commands)[1]]

    def take(
        self,
        run_id: str,
        lane: str,
        limit: int,
        per_token: int,
        lease_ms: int,
        at: str,
        worker: str,
        *,
        spend: bool,
        skip: tuple[str, ...] = (),
        named: tuple[str, ...] = (),
        drops: list[tuple[str, str]] | None = None,
    ) -> Take:
        """Claim up to `limit` due units of a lane, with their leases, in one round trip.

        Args:
            spend: a token message brought this call (one fewer is on its way).
            skip: steps to pass over (their tool has a concurrency limit): their due units
                come back in `Take.passed`, to be taken by name once slots are held.
            named: take these units (due ones) rather than the first due.
            drops: (run, lease member) of units whose workers finished coordinating.
        """
        args: list[Any] = [lane, limit, per_token, lease_ms, at, worker]
        args += [new_token(), int(spend), len(skip), *skip, len(named), *named]
        commands = [
            self._watch(run_id, lease_ms),
            self._script("take", self._keys(run_id, (lane,)), args),
            *self._drops(drops),
        ]
        r = self._batch(commands)[1]
        claims = tuple(parse_claim(c) for c in r[0])
        return Take(claims, int(r[1]), int(r[2]), tuple(r[3]))

    def claim_inplace(
        self,
        run_id: str,
        steps: list[tuple[str, str]],
        lane: str,
        lease_ms: int,
        at: str,
        worker: str,
        drops: list[tuple[str, str]] | None = None,
    ) -> list[Claim]:
        """Claim pending (step, token)s the caller decided and runs itself, with their
        leases, in one round trip; a claim each, in order."""
        args: list[Any] = [lease_ms, at, worker, lane]
        for step, token in steps:
            args += [step, token]
        commands = [
            self._watch(run_id, lease_ms),
            self._script("claim", self.keys(run_id), args),
            *self._drops(drops),
        ]
        return [parse_claim(r) for r in self._batch(commands)[1]]

    def complete_many(
        self,
        run_id: str,
        items: Sequence[tuple[Terminal, tuple[str, ...], tuple[NextClaim, ...]]],
        max_map_bytes: int | None = None,
        drops: list[tuple[str, str]] | None = None,
        take: Refill | None = None,
        lease_ms: int = 6000,
    ) -> tuple[list[Completion], list[Claim]]:
        """Settle attempts of a run (each with its dependents, those of its map for an
        item, and its claims ahead) in one round trip; a completion each, in order, and
        the units `take` claimed after them with the slots they freed.

        A completed unit's lease stays for `lease_ms` more: until its completer has
        decided the dependents, a crash must leave a trace the sweeper finds (it then
        repairs). `drops`: leases of units whose completers finished coordinating.
        """
        lanes: list[str] = [take.lane] if take else []
        bound = "" if max_map_bytes is None else max_map_bytes
        args: list[Any] = [bound, take.count if take else 0, take.lane if take else ""]
        args += [new_token(), take.lease_ms if take else lease_ms, take.at if take else ""]
        args += [take.worker if take else "", len(take.skip) if take else 0]
        args += [*(take.skip if take else ()), len(items)]
        claims_leases = take is not None
        for t, dependents, then in items:
            attempt = "" if t.attempt is None else t.attempt
            retry: Any = ""
            index = 0
            if t.retry_ms is not None:
                if t.lane not in lanes:
                    lanes.append(t.lane)
                retry, index = t.retry_ms, lanes.index(t.lane) + 1
            record = dict(t.record)
            error = record.pop("error", None)
            args += [t.unit, t.status, t.output_json, json.dumps(record)]
            args += ["" if error is None else json.dumps(error), t.at, t.worker, attempt]
            args += [_without_error(t.attempt_json), retry, index, t.lane]
            args += [len(dependents), *dependents]
            args.append(len(then))
            for n in then:  # claimed by the same script, after the completion
                args += [n.step, n.token, n.lease_ms, n.started_at, n.worker, n.lane]
                claims_leases = True
        commands: list[Command] = [self._watch(run_id, lease_ms)] if claims_leases else []
        commands.append(self._script("complete", self._keys(run_id, lanes), args))
        commands += self._drops(drops)
        *replies, taken = self._batch(commands)[1 if claims_leases else 0]
        out = []
        for r in replies:
            claimed = tuple(parse_claim(c) for c in r[4])
            ready, clean = parse_ready(r[3])
            out.append(
                Completion(int(r[0]), int(r[1]), r[2], ready, clean, claimed, r[5], int(r[6]), r[7])
            )
        return out, [parse_claim(c) for c in taken]

    def complete(
        self,
        run_id: str,
        unit: str,
        status: str,
        record: dict[str, Any],
        at: str,
        dependents: tuple[str, ...],
        **fields: Any,
    ) -> Completion:
        """Record one terminal status (see `complete_many`)."""
        t = Terminal(unit, status, fields.pop("output_json", ""), record, at, **fields)
        return self.complete_many(run_id, [(t, dependents, ())])[0][0]

    def expand(
        self,
        run_id: str,
        step: str,
        attempt: int,
        at: str,
        lane: str,
        own_lane: str,
        per_token: int,
        record: dict[str, Any],
        items: list[tuple[str, str]],
        ahead: int,
        lease_ms: int,
        worker: str,
        dependents: tuple[str, ...],
        max_map_bytes: int | None = None,
        trace: str = "",
    ) -> Expansion:
        """Turn a claimed map step (claimed in `own_lane`) into its items (in `lane`):
        (decided status or '', value or record JSON) each; claim `ahead` of them for the
        caller, with their leases."""
        args: list[Any] = [step, attempt, at, lane, own_lane, per_token]
        bound = "" if max_map_bytes is None else max_map_bytes
        args += [bound, json.dumps(record), trace, len(items)]
        for decided, data in items:
            args += [decided, data]
        args += [ahead, new_token(), lease_ms, worker, *dependents]
        commands = [
            self._watch(run_id, lease_ms),
            self._script("expand", self._keys(run_id, (lane,)), args),
        ]
        r = self._batch(commands)[1]
        if r[0] != "ok":
            return Expansion(r[0])
        claims = tuple(parse_claim(c) for c in r[2])
        ready, clean = parse_ready(r[4])
        return Expansion("ok", int(r[1]), claims, r[3], ready, clean, int(r[5]))

    def add_token(self, run_id: str, lane: str) -> None:
        """Count one more token message on its way for a lane (one sent again)."""
        self.client.hincrby(self.keys(run_id)[0], f"tok:{lane}", 1)

    def repair_state(
        self, run_id: str, steps: tuple[str, ...]
    ) -> tuple[dict[str, str], dict[str, int], str]:
        """Statuses and unfinished-dependency counts of some steps, and the run's
        unfinished count, for repairing after a coordinator died."""
        k = self.keys(run_id)
        pipe = self.client.pipeline(transaction=False)
        pipe.hmget(k[1], list(steps) or ["-"])
        pipe.hmget(k[2], list(steps) or ["-"])
        pipe.hget(k[0], "unfinished")
        st, rem, unfinished = pipe.execute()
        statuses = {s: v for s, v in zip(steps, st, strict=False) if v is not None}
        remaining = {s: int(v or 0) for s, v in zip(steps, rem, strict=False)}
        return statuses, remaining, unfinished or ""

    def stale_lanes(self, run_id: str, before: float) -> list[tuple[str, int]]:
        """Lanes of the run with units due since before `before` (epoch seconds), with how
        many units are queued in each: a token for them may have been lost."""
        lanes = sorted(self.client.smembers(self.keys(run_id)[11]))
        if not lanes:
            return []
        replies = self._batch(
            [
                c
                for lane in lanes
                for c in (
                    ("ZRANGE", self.todo_key(run_id, lane), 0, 0, "WITHSCORES"),
                    ("ZCARD", self.todo_key(run_id, lane)),
                )
            ]
        )
        out = []
        for lane, first, count in zip(lanes, replies[::2], replies[1::2], strict=True):
            if first and float(first[1]) / 1000 < before:
                out.append((lane, int(count)))
        return out

    def lane_tokens(self, run_id: str) -> dict[str, tuple[int, int]]:
        """Per lane of the run: (due units, tokens on their way), for repairs."""
        lanes = sorted(self.client.smembers(self.keys(run_id)[11]))
        if not lanes:
            return {}
        pipe = self.client.pipeline(transaction=False)
        for lane in lanes:
            pipe.zcard(self.todo_key(run_id, lane))
        pipe.hmget(self.keys(run_id)[0], [f"tok:{lane}" for lane in lanes])
        *counts, toks = pipe.execute()
        return {lane: (int(n), int(t or 0)) for lane, n, t in zip(lanes, counts, toks, strict=True)}

    def renew_many(
        self, attempts: list[tuple[str, str, int, str]], lease_ms: int
    ) -> list[tuple[bool, str]]:
        """Extend the leases of (run, unit, attempt, lane)s in one round trip; for each,
        whether it is still held and the stop reason that catches it (or '')."""
        if not attempts:
            return []
        replies = self._batch(
            [
                self._script("renew", self.keys(r), [u, a, lease_ms, lane])
                for r, u, a, lane in attempts
            ]
        )
        return [(bool(held), stop) for held, stop in replies]

    def reclaim(self, run_id: str, unit: str, lane: str, at: str) -> tuple[int, int, int]:
        """Queue a unit whose lease expired; see reclaim.lua for the answer:
        (kind, attempt, tokens to send)."""
        r = self._run("reclaim", run_id, [unit, at, lane], (lane,))
        return int(r[0]), int(r[1]) if len(r) > 1 else 0, int(r[2]) if len(r) > 2 else 0

    def give_back(
        self, run_id: str, unit: str, attempt: int, lane: str, at: str
    ) -> tuple[int, int]:
        """Queue again a unit claimed but never started (its worker is stopping); see
        give_back.lua for the answer: (kind, tokens to send)."""
        r = self._run("give_back", run_id, [unit, attempt, lane, at], (lane,))
        return int(r[0]), int(r[1]) if len(r) > 1 else 0

    def stop(
        self, run_id: str, reason: str, at: str, max_map_bytes: int | None = None
    ) -> tuple[bool, int, list[str]]:
        """Stop a run; returns (this call stopped it, unfinished, survivors now ready)."""
        bound = "" if max_map_bytes is None else max_map_bytes
        r = self._run("stop", run_id, [reason, at, bound])
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
        lanes = tuple(sorted(self.client.smembers(self.keys(run_id)[11])))
        done = self._run(
            "finish",
            run_id,
            [status, finished_at, output_json, error, repr(wall_time), self.result_ttl],
            lanes,
        )
        if done:
            self._batch([("ZREM", self.deadlines_key, run_id), ("ZREM", self.leased_key, run_id)])
        return bool(done)

    def rerun(
        self,
        run_id: str,
        steps: list[tuple[str, int, int, int]],
        at: str,
        deadline: float | None,
    ) -> str | None:
        """Make a finished run run again in place: `steps` (step, dependencies it waits
        for, attempts made so far, items of its map last time) back to pending.

        Returns:
            the id of the new pass's first event, or None if the run is not finished
            (then nothing changed).
        """
        lanes = tuple(sorted(self.client.smembers(self.keys(run_id)[11])))
        args: list[Any] = [at]
        for step, waits, made, items in steps:
            args += [step, waits, made, items]
        r = self._run("rerun", run_id, args, lanes)
        if r[0] != 1:
            return None
        pipe = self.client.pipeline(transaction=False)
        pipe.zadd(self.runs_key, {run_id: time.time()})
        if deadline is not None:
            pipe.zadd(self.deadlines_key, {run_id: deadline})
        pipe.execute()
        return str(r[1])

    # Cross-run indexes ------------------------------------------------------------------
    def leased_runs(self, now: float, limit: int = 100) -> list[str]:
        """Runs whose leases are due for a look (some may have expired)."""
        return list(self.client.zrangebyscore(self.leased_key, 0, now, start=0, num=limit))

    def expired_leases(self, run_id: str, now: float) -> tuple[list[tuple[str, str]], float]:
        """A run's units whose lease expired by `now` (epoch seconds): (unit, lane) each,
        and when the earliest lease left expires (0: none is left)."""
        k = self.keys(run_id)[12]
        expired, first = self._batch(
            [("ZRANGEBYSCORE", k, "-inf", int(now * 1000)), ("ZRANGE", k, 0, 0, "WITHSCORES")]
        )
        units = [m.rsplit("|", 1) for m in expired]
        soonest = float(first[1]) / 1000 if first else 0.0
        return [(u, lane) for u, lane in units], soonest

    def watch_at(self, run_id: str, when: float | None) -> None:
        """Look at a run's leases again at `when` (None: never, it holds none)."""
        if when is None:
            self.client.zrem(self.leased_key, run_id)
        else:
            self.client.zadd(self.leased_key, {run_id: when})

    def acquire_slots(self, tool: str, limit: int, holders: list[str], lease_ms: int) -> list[str]:
        """Take up to `len(holders)` of a tool's concurrency slots; the holders that got one."""
        if not holders:
            return []
        got = self._batch(
            [self._script("acquire_slot", [self.semaphore_key(tool)], [limit, lease_ms, *holders])]
        )[0]
        return list(got)

    def release_slot(self, tool: str, holder: str) -> None:
        """Give back a tool slot (`Claim.slot`)."""
        self.client.zrem(self.semaphore_key(tool), holder)

    def release_slots(self, slots: list[tuple[str, str]]) -> None:
        """Give back (tool, holder) slots in one round trip."""
        if slots:
            self._batch([("ZREM", self.semaphore_key(tool), holder) for tool, holder in slots])

    @staticmethod
    def holder(run_id: str, unit: str) -> str:
        """A member name in a tool semaphore for one try at a unit: its own, so that
        giving back a slot that a try did not use leaves everyone else's alone."""
        return f"{unit}@{run_id}#{new_token()}"

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


def _without_error(attempt_json: str) -> str:
    """An attempt record's JSON without its error (the script adds the error it settles)."""
    if '"error"' not in attempt_json:
        return attempt_json
    att = json.loads(attempt_json)
    att.pop("error", None)
    return json.dumps(att)
