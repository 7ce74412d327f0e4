"""The coordinator: turns a completion into the next steps, wherever a unit completes.

It runs in the worker that finished a unit (and in the client for the roots). The
scheduling core decides; the store records atomically; the sender puts token messages
on the broker. Nothing here waits on a central loop.
"""

from __future__ import annotations

import contextvars
import json
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from executor.backends.redis.claims import Claim, Completion, Expansion, NextClaim, Terminal
from executor.backends.redis.messages import Sender, Token, local_share, per_token
from executor.backends.redis.run_context import RunContext
from executor.backends.redis.store import RedisStore, Refill
from executor.model.flow import Flow
from executor.model.references import Scope
from executor.model.tools import Tool
from executor.observability.tracing import current_context as trace_context
from executor.run.records import StepError

FLOW_CACHE = 32  # parsed flows kept per process


def now_iso() -> str:
    return datetime.now(UTC).isoformat()


def parent_of(unit: str) -> str | None:
    """The map step of an item unit (`s[3]` -> `s`); None for a step."""
    return unit.partition("[")[0] if unit.endswith("]") else None


# Whether the completing worker runs a ready step itself (it has a free slot for it).
Keep = Callable[[RunContext, str], bool]


@dataclass(slots=True)
class Next:
    """What a worker runs next after a completion: steps claimed with it, steps to claim
    in place (it reserved a slot for each)."""

    ahead: list[Claim] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)


class Coordinator:
    """Decides and records what follows each completion, for any number of runs."""

    def __init__(
        self,
        store: RedisStore,
        sender: Sender,
        tool_of: Callable[[str], Tool | None] = lambda name: None,
        cache_size: int = 256,
        max_map_bytes: int | None = None,
        lease_ms: int = 6000,
    ) -> None:
        self.store = store
        self.lease_ms = lease_ms  # how long a completed unit's lease stays, to coordinate
        self.sender = sender
        self.tool_of = tool_of
        self.max_map_bytes = max_map_bytes
        self._cache: OrderedDict[str, RunContext] = OrderedDict()
        self._flows: OrderedDict[str, RunContext] = OrderedDict()  # by the flow's JSON
        self._lock = threading.Lock()
        # Parsing a flow is serialized: CPython 3.11's `ast.parse` in several threads at
        # once can raise a spurious SystemError (cpython gh-106905), and a flow is parsed
        # once per process anyway.
        self._parsing = threading.Lock()
        self._cache_size = cache_size

    def context(self, run_id: str) -> RunContext:
        """The run's context, from the cache or read once from Redis."""
        with self._lock:  # threads share the caches
            ctx = self._cache.get(run_id)
            if ctx is not None:
                self._cache.move_to_end(run_id)
                return ctx
        meta = self.store.run_meta(run_id, "flow", "inputs")
        inputs = json.loads(meta["inputs"])
        # Runs of one flow share its parsed, validated form: a new run's first step here
        # costs no validation (it was validated at submit, and once in this process).
        with self._lock:
            same = self._flows.get(meta["flow"])
            if same is not None:
                self._flows.move_to_end(meta["flow"])
        if same is None:
            with self._parsing:
                ctx = RunContext.build(run_id, Flow.model_validate_json(meta["flow"]), inputs)
            with self._lock:
                self._flows[meta["flow"]] = ctx
                while len(self._flows) > FLOW_CACHE:
                    self._flows.popitem(last=False)
        else:
            ctx = same.with_inputs(run_id, inputs)
        self.remember(ctx)
        return ctx

    def remember(self, ctx: RunContext) -> None:
        with self._lock:
            self._cache[ctx.run_id] = ctx
            while len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)

    def lane(self, ctx: RunContext, step_id: str) -> str:
        """The lane a step's units wait on, by what this process knows of its tool (one
        it does not know goes to the sync lane: a slot there can run any tool)."""
        tool = self.tool_of(ctx.dag.steps[step_id].tool)
        return ctx.lane(step_id, tool is not None and tool.is_async)

    # Driving a run ------------------------------------------------------------------
    def start(self, ctx: RunContext) -> None:
        """Decide the roots of a freshly created run."""
        self.resolve(ctx, ctx.dag.roots)

    def completed(self, ctx: RunContext, unit: str, status: str, record: dict[str, Any]) -> None:
        """Record a terminal status decided without running (a lost attempt of a stopped
        run) and carry the run forward."""
        self.completed_many(ctx, [(Terminal(unit, status, "", record, now_iso()), None, ())])

    def completed_many(
        self,
        ctx: RunContext,
        items: list[tuple[Terminal, Any, tuple[NextClaim, ...]]],
        keep: Keep | None = None,
        drops: list[tuple[str, str]] | None = None,
        scopes: list[contextvars.Context] | None = None,
    ) -> list[Next]:
        """`settle` without taking more units."""
        return self.settle(ctx, items, keep, drops, scopes)[0]

    def settle(
        self,
        ctx: RunContext,
        items: list[tuple[Terminal, Any, tuple[NextClaim, ...]]],
        keep: Keep | None = None,
        drops: list[tuple[str, str]] | None = None,
        scopes: list[contextvars.Context] | None = None,
        take: Refill | None = None,
        taken: Callable[[list[Claim]], None] | None = None,
    ) -> tuple[list[Next], list[Claim]]:
        """Settle attempts of a run (each with its output as data, so that dependents
        reading it are decided without another round trip, and its claims ahead) in one
        round trip, then carry each forward, in its scope when given (its trace span and
        log ids: the messages it sends carry them). `take`: due units of a lane to claim
        in the same round trip, with the slots the completions free; `taken` is told
        what it took before the dependents are decided (so the slots it left are free
        for them).

        """
        deps = ctx.dag.dependents
        dones, claims = self.store.complete_many(
            ctx.run_id,
            [(t, deps[parent_of(t.unit) or t.unit], then) for t, _, then in items],
            self.max_map_bytes,
            drops,
            take,
            self.lease_ms,
        )
        if taken is not None:
            taken(claims)
        runs: list[Callable[..., Next]] = (
            [s.run for s in scopes] if scopes else [_call] * len(items)
        )
        nexts = [
            run(self._carry, ctx, t, output, done, keep)
            for (t, output, _), done, run in zip(items, dones, runs, strict=True)
        ]
        return nexts, claims

    def _carry(
        self, ctx: RunContext, t: Terminal, output: Any, done: Completion, keep: Keep | None
    ) -> Next:
        ahead = [c for c in done.then if c.kind == "ok"]
        if done.applied == 2:  # queued for a retry: a token comes back when it is due
            self.send_tokens(ctx.run_id, t.lane, done.retry_tokens, 1, t.retry_ms)
            return Next()
        parent = parent_of(t.unit)
        step = parent or t.unit
        if done.applied != 1:
            # Recorded already: by another attempt, or by this call whose first reply was
            # lost and which redis-py retried. Make sure the dependents were decided.
            self.repair(ctx, step)
            return Next(ahead)
        if parent is not None and not done.map_status:
            return Next()  # an item of a map that goes on
        # What was recorded decides the dependents: a stop may have made it `cancelled`.
        status = done.map_status or done.recorded_as or t.status
        known = output if parent is None and status == "succeeded" else None
        return Next(ahead, self.ended(ctx, step, status, known, done, keep, ahead))

    def ended(
        self,
        ctx: RunContext,
        step_id: str,
        status: str,
        output: Any,
        done: Completion | Expansion,
        keep: Keep | None,
        ahead: list[Claim] | None = None,
    ) -> list[str]:
        """A step has ended with `status`: decide the dependents it made ready (but those
        claimed ahead with it), or finalize the run it ended. Returns the kept ones.

        Args:
            output: its output as data, if known here (not a map's, assembled in Redis).
        """
        claimed = {c.unit for c in ahead or ()}
        ready = [d for d in done.ready if d not in claimed]
        if ready:
            known = {step_id: status}
            outputs = {step_id: output} if status == "succeeded" and output is not None else {}
            return self.resolve(ctx, ready, known, outputs, keep, done.clean, len(claimed))
        if done.unfinished == 0 and not claimed:
            self.finalize(ctx)
        return []

    def resolve(
        self,
        ctx: RunContext,
        ready: list[str],
        known: dict[str, str] | None = None,
        known_outputs: dict[str, Any] | None = None,
        keep: Keep | None = None,
        clean: frozenset[str] = frozenset(),
        here: int = 0,
    ) -> list[str]:
        """Decide steps whose dependencies are all terminal: run, skip or fail them.

        Decided steps that do not run are recorded together, a round trip per wave of
        the cascade; those that run are kept (`keep`: the caller runs them in place) or
        queued for any worker.

        Args:
            known, known_outputs: statuses and outputs the caller already has (the step
                it just completed); only the rest is read from Redis.
            clean: steps whose dependencies are known to have all succeeded.
            here: those of the same completion's dependents claimed ahead already: they
                count in the share the caller may keep.
        Returns:
            the kept step ids.
        """
        statuses: dict[str, str] = dict(known or {})
        outputs: dict[str, Any] = dict(known_outputs or {})
        kept: list[str] = []
        work = ready
        while work:
            for sid in clean.intersection(work):
                statuses.update(dict.fromkeys(ctx.dag.deps[sid], "succeeded"))
            need = sorted({d for s in work for d in ctx.dag.deps[s]} - statuses.keys())
            need_out = sorted(
                {d for s in work if (p := ctx.dag.predicates.get(s)) is not None for d in p.steps}
                - outputs.keys()
            )
            if need or need_out:
                more, more_out = self.store.dep_state(ctx.run_id, need, need_out)
                statuses.update(more)
                outputs.update(more_out)
            to_run: list[str] = []
            decided: list[tuple[str, str, StepError | None]] = []
            for sid in work:
                res = ctx.scheduler.decide(sid, statuses, ctx.inputs, outputs)  # type: ignore[arg-type]
                if res.decision == "run":
                    to_run.append(sid)
                else:
                    decided.append((sid, res.decision, res.error))
            work = []
            if decided:
                at = now_iso()
                items = [
                    (
                        Terminal(sid, decision, "", _resolved_record(decision, err), at),
                        ctx.dag.dependents[sid],
                        (),
                    )
                    for sid, decision, err in decided
                ]
                dones, _ = self.store.complete_many(ctx.run_id, items, self.max_map_bytes)
                for (sid, decision, _), done in zip(decided, dones, strict=True):
                    if not done.recorded:
                        continue
                    statuses[sid] = decision
                    work.extend(done.ready)
                    clean |= done.clean
                    if done.unfinished == 0:
                        self.finalize(ctx)
            if keep is not None and to_run:
                # What one token would carry stays; the rest spread over the pool.
                share = local_share(len(to_run) + here) - here
                mine: list[str] = []
                for sid in to_run:
                    if len(mine) >= share:
                        break
                    if keep(ctx, sid):
                        mine.append(sid)
                kept += mine
                to_run = [sid for sid in to_run if sid not in mine]
                here = 0  # a later wave's steps are its own
            if to_run:
                self.dispatch(ctx, to_run)
        return kept

    def dispatch(self, ctx: RunContext, steps: list[str]) -> None:
        """Queue decided steps in their lanes and send the tokens that bring workers to
        them (two round trips for all of them)."""
        by_lane: dict[str, list[str]] = {}
        for sid in steps:
            by_lane.setdefault(self.lane(ctx, sid), []).append(sid)
        groups = [(lane, per_token(len(sids)), sids) for lane, sids in by_lane.items()]
        trace = trace_context().get("traceparent", "")
        counts = self.store.enqueue(ctx.run_id, groups, now_iso(), trace, self.lease_ms)
        tokens = [
            Token(ctx.run_id, lane, k)
            for (lane, k, _), n in zip(groups, counts, strict=True)
            for _ in range(n)
        ]
        if tokens:
            self.sender.send_many(tokens)

    def send_tokens(
        self, run_id: str, lane: str, count: int, units: int, delay_ms: int | None = None
    ) -> None:
        """Send `count` tokens (each for up to `units` units) to a lane, maybe delayed."""
        if count > 0:
            self.sender.send_many([Token(run_id, lane, units, delay_ms)] * count)

    def repair(self, ctx: RunContext, step_id: str) -> None:
        """Finish what a terminal step's completer may have left undone when it died:
        decide dependents it released, make sure queued units have a token on its way,
        and finalize a run whose last step is done. Idempotent."""
        deps = ctx.dag.dependents[step_id]
        statuses, remaining, unfinished = self.store.repair_state(ctx.run_id, deps)
        ready = [d for d in deps if statuses.get(d) == "pending" and remaining[d] <= 0]
        if ready:
            self.resolve(ctx, ready)
        self.ensure_tokens(ctx.run_id)
        if unfinished == "0":
            self.finalize(ctx)

    def ensure_tokens(self, run_id: str) -> None:
        """A token for each lane with queued units: the one a dead completer counted may
        never have been sent (between queueing its units and sending it); a token too
        many costs a worker one look."""
        for lane, (queued, _) in self.store.lane_tokens(run_id).items():
            if queued:
                self.store.add_token(run_id, lane)
                self.send_tokens(run_id, lane, 1, per_token(queued))

    def stop(self, run_id: str, reason: str) -> bool:
        """Stop a run (its workers are told through the stop channel); decide the steps
        the stop spares that are ready now. Returns whether this call stopped it."""
        stopped, unfinished, ready = self.store.stop(run_id, reason, now_iso(), self.max_map_bytes)
        if not stopped:
            return False
        ctx = self.context(run_id)
        if ready:
            self.resolve(ctx, ready)
        elif unfinished == 0:
            self.finalize(ctx)
        return True

    def finalize(self, ctx: RunContext) -> None:
        """Compute and write the run's final status (once; later calls change nothing)."""
        meta = self.store.run_meta(
            ctx.run_id, "stop", "started_at", "status", "first_failed", "n_failed"
        )
        if meta.get("status") not in ("running", "pending"):
            return
        statuses = self.store.all_statuses(ctx.run_id)
        stop = meta.get("stop") or None
        status = ctx.scheduler.run_status(statuses, stop)  # type: ignore[arg-type]
        output_json, error = "", None
        if status == "succeeded" and ctx.dag.flow.output is not None:
            try:
                output = Scope(ctx.inputs, self.store.all_outputs(ctx.run_id)).resolve(
                    ctx.dag.flow.output
                )
                output_json = json.dumps(output)
            except Exception as exc:
                status, error = "failed", f"output: {exc}"
        elif status != "succeeded":
            first = meta.get("first_failed")
            err = self.store.step_error(ctx.run_id, first) if first else None
            error = ctx.scheduler.run_error(status, first, int(meta.get("n_failed", 0)), err)
        finished = datetime.now(UTC)
        started = datetime.fromisoformat(meta["started_at"])
        wall = (finished - started).total_seconds()
        self.store.finish(ctx.run_id, status, finished.isoformat(), output_json, error or "", wall)


def _resolved_record(status: str, error: StepError | None) -> dict[str, Any]:
    return {"status": status, "error": error.model_dump() if error else None}


def _call(fn: Callable[..., Any], *args: Any) -> Any:
    """`Context.run` in the current context."""
    return fn(*args)
