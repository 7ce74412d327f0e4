"""The coordinator: turns a completion into the next steps, wherever a step completes.

It runs in the worker that finished a step (and in the client for the roots). The
scheduling core decides; the store records atomically; the sender puts messages on the
broker. Nothing here waits on a central loop.
"""

from __future__ import annotations

import contextvars
import json
import threading
from collections import OrderedDict
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from executor.backends.redis.claims import Claim, Completion, NextClaim, Terminal
from executor.backends.redis.messages import Sender, StepMessage, bundle_size
from executor.backends.redis.run_context import RunContext
from executor.backends.redis.store import RedisStore
from executor.model.flow import Flow
from executor.model.references import Scope
from executor.run.records import StepError

FLOW_CACHE = 32  # parsed flows kept per process


def now_iso() -> str:
    return datetime.now(UTC).isoformat()


# Whether the completing worker runs a ready step itself: (step id, steps kept so far).
Keep = Callable[[str, int], bool]


class Coordinator:
    """Decides and records what follows each completion, for any number of runs."""

    def __init__(
        self,
        store: RedisStore,
        sender: Sender,
        tool_timeout: Callable[[str], float | None] = lambda name: None,
        cache_size: int = 256,
    ) -> None:
        self.store = store
        self.sender = sender
        self.tool_timeout = tool_timeout
        self._cache: OrderedDict[str, RunContext] = OrderedDict()
        self._flows: OrderedDict[str, RunContext] = OrderedDict()  # by the flow's JSON
        self._lock = threading.Lock()
        self._cache_size = cache_size

    def context(self, run_id: str) -> RunContext:
        """The run's context, from the cache or read once from Redis."""
        with self._lock:  # worker threads share the caches
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
            ctx = RunContext.build(run_id, Flow.model_validate_json(meta["flow"]), inputs)
            with self._lock:
                self._flows[meta["flow"]] = ctx
                while len(self._flows) > FLOW_CACHE:
                    self._flows.popitem(last=False)
        else:
            ctx = RunContext(run_id, same.dag, inputs, same.scheduler, same.needs)
        self.remember(ctx)
        return ctx

    def remember(self, ctx: RunContext) -> None:
        with self._lock:
            self._cache[ctx.run_id] = ctx
            while len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)

    # Driving a run ------------------------------------------------------------------
    def start(self, ctx: RunContext) -> None:
        """Decide the roots of a freshly created run."""
        self.resolve(ctx, ctx.dag.roots)

    def completed(
        self,
        ctx: RunContext,
        step_id: str,
        status: str,
        *,
        output: Any = None,
        output_json: str = "",
        record: dict[str, Any],
        worker: str = "",
        attempt: int | None = None,
        attempt_json: str = "",
        error: str = "",
        keep: Keep | None = None,
        then: tuple[NextClaim, ...] = (),
        claimed: dict[str, Claim] | None = None,
    ) -> list[str]:
        """Record a step's terminal status and carry the run forward.

        Args:
            output: the step's output as data (what `output_json` encodes), so that
                dependents reading it are decided without another round trip.
            keep: asked for each ready dependent, with how many are kept so far, whether
                the caller runs it itself: those are returned instead of sent, and the
                caller runs them in place (claiming each first, like any worker).
            then: dependents to claim in place in the same round trip (each taken only if
                this completion makes it ready with every dependency succeeded); those
                taken go into `claimed` and come first among the kept steps.
        Returns:
            the kept step ids.
        """
        item = Terminal(
            step_id, status, output_json, record, now_iso(), worker, attempt, attempt_json, error
        )
        return self.completed_many(ctx, [(item, output, then)], keep, claimed)[0]

    def completed_many(
        self,
        ctx: RunContext,
        items: list[tuple[Terminal, Any, tuple[NextClaim, ...]]],
        keep: Keep | None = None,
        claimed: dict[str, Claim] | None = None,
        drop_hints: list[str] | None = None,
        recorded: list[str] | None = None,
        scopes: list[contextvars.Context] | None = None,
    ) -> list[list[str]]:
        """`completed` for several steps of a run at once (each with its output as data
        and its claims ahead): recorded in one round trip, then each carried forward.
        `recorded` gets the steps whose status this call wrote (not a duplicate's);
        `scopes`, one per item, are the contexts to carry each forward in (its trace span
        and log ids: the messages it sends carry them).

        A refused claim ahead leaves its lease hint: another worker may hold that step
        by now under the same hint, so only the sweeper, which checks the claim, may
        take it away.
        """
        deps = ctx.dag.dependents
        dones = self.store.complete_many(
            ctx.run_id, [(t, deps[t.step], then) for t, _, then in items], drop_hints
        )
        if recorded is not None:
            pairs = zip(items, dones, strict=True)
            recorded += [t.step for (t, _, _), done in pairs if done.applied]
        runs: list[Callable[..., list[str]]] = (
            [s.run for s in scopes] if scopes else [_call] * len(items)
        )
        return [
            run(self._carry, ctx, t, output, then, done, keep, claimed)
            for (t, output, then), done, run in zip(items, dones, runs, strict=True)
        ]

    def _carry(
        self,
        ctx: RunContext,
        t: Terminal,
        output: Any,
        then: tuple[NextClaim, ...],
        done: Completion,
        keep: Keep | None,
        claimed: dict[str, Claim] | None,
    ) -> list[str]:
        step_id, status = t.step, t.status
        ahead: list[str] = []
        for n, claim in zip(then, done.then, strict=False):
            if claim.kind == "ok":
                ahead.append(n.step)
                if claimed is not None:
                    claimed[n.step] = claim
        if not done.applied:
            # Recorded already: by another attempt, or by this call whose first reply was
            # lost and which redis-py retried. Make sure the dependents were decided.
            self.repair(ctx, step_id)
            return ahead
        if ctx.scheduler.stops_run(status):  # type: ignore[arg-type]
            self.stop(ctx.run_id, "failed")
            if done.unfinished == 0:  # the run was stopping already: this was its last step
                self.finalize(ctx)
            return ahead
        ready = [d for d in done.ready if d not in ahead]
        if ready:
            known = {step_id: status}
            outputs = {step_id: output} if status == "succeeded" else {}
            kept = self.resolve(ctx, ready, known, outputs, keep, done.clean, len(ahead))
            return ahead + kept
        if done.unfinished == 0 and not ahead:
            self.finalize(ctx)
        return ahead

    def resolve(
        self,
        ctx: RunContext,
        ready: list[str],
        known: dict[str, str] | None = None,
        known_outputs: dict[str, Any] | None = None,
        keep: Keep | None = None,
        clean: frozenset[str] = frozenset(),
        kept_already: int = 0,
    ) -> list[str]:
        """Decide steps whose dependencies are all terminal: send, skip or fail them.

        Args:
            known, known_outputs: statuses and outputs the caller already has (the step
                it just completed); only the rest is read from Redis.
            keep: see `completed`.
            clean: steps whose dependencies are known to have all succeeded.
            kept_already: steps the caller keeps besides (for `keep`'s count).
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
            later: list[str] = []
            for sid in work:
                if ctx.scheduler.fail_fast and any(
                    statuses.get(d) in ("failed", "upstream_failed") for d in ctx.dag.deps[sid]
                ):
                    # A dependency failed, so the run is stopping, though the failed
                    # step's worker may not have stopped it yet: stop it here (the step
                    # ends cancelled, as every not-started step of a fail-fast run).
                    self.stop(ctx.run_id, "failed")
                    return []
                res = ctx.scheduler.decide(sid, statuses, ctx.inputs, outputs)  # type: ignore[arg-type]
                if res.decision == "run":
                    to_run.append(sid)
                    continue
                record = _resolved_record(sid, ctx, res.decision, res.error)
                done = self.store.complete(
                    ctx.run_id,
                    sid,
                    res.decision,
                    "",
                    record,
                    now_iso(),
                    "",
                    None,
                    "",
                    str(res.error) if res.error else "",
                    ctx.dag.dependents[sid],
                )
                if not done.applied:
                    continue
                statuses[sid] = res.decision
                if ctx.scheduler.stops_run(res.decision):
                    self.stop(ctx.run_id, "failed")
                    if done.unfinished == 0:
                        self.finalize(ctx)
                    return []
                later.extend(done.ready)
                clean |= done.clean
                if done.unfinished == 0:
                    self.finalize(ctx)
            if keep is not None:
                for sid in list(to_run):
                    if keep(sid, kept_already + len(kept)):
                        kept.append(sid)
                        to_run.remove(sid)
            if to_run:
                self.send(ctx, self.store.mark_queued(ctx.run_id, to_run, now_iso()))
            work = later
        return kept

    def send(
        self, ctx: RunContext, steps: list[str], attempt: int = 1, delay_ms: int | None = None
    ) -> None:
        """Send step messages (one round trip for all of them).

        Many first attempts made ready at once (a fan-out) go as bundles of a few steps
        per message: a worker claims a bundle in one round trip and runs its steps
        concurrently, so a broker message's fixed cost is paid once per bundle. Bundles
        stay small next to the fan-out's width, so every worker still gets a share.
        """
        limits = {
            sid: ctx.time_limit_ms(sid, self.tool_timeout(ctx.dag.steps[sid].tool)) for sid in steps
        }
        messages: list[StepMessage] = []
        size = bundle_size(len(steps)) if attempt == 1 and delay_ms is None else 1
        groups: dict[str, list[str]] = {}
        for sid in steps:
            # A message's Dramatiq time limit covers all of it: bundle unlimited steps only.
            if size > 1 and limits[sid] is None:
                groups.setdefault(ctx.queue(sid), []).append(sid)
            else:
                messages.append(
                    StepMessage(ctx.run_id, sid, attempt, ctx.queue(sid), delay_ms, limits[sid])
                )
        for queue, sids in groups.items():
            for i in range(0, len(sids), size):
                first, *more = sids[i : i + size]
                messages.append(StepMessage(ctx.run_id, first, attempt, queue, more=tuple(more)))
        self.sender.send_many(messages)

    def repair(self, ctx: RunContext, step_id: str) -> None:
        """Finish what a terminal step's completer may have left undone when it died:
        decide dependents it released, re-send queued ones (a duplicate message is
        harmless), and finalize a run whose last step is done. Idempotent."""
        deps = ctx.dag.dependents[step_id]
        statuses, remaining, attempts, unfinished = self.store.repair_state(ctx.run_id, deps)
        queued = [d for d in deps if statuses.get(d) == "queued"]
        for d in queued:
            self.send(ctx, [d], attempts[d])
        ready = [d for d in deps if statuses.get(d) == "pending" and remaining[d] <= 0]
        if ready:
            self.resolve(ctx, ready)
        if unfinished == "0":
            self.finalize(ctx)

    def stop(self, run_id: str, reason: str) -> list[str]:
        """Stop a run; returns the steps still running (their workers are told)."""
        stopped, unfinished, running = self.store.stop(run_id, reason, now_iso())
        if stopped and unfinished == 0:
            self.finalize(self.context(run_id))
        return running

    def finalize(self, ctx: RunContext) -> None:
        """Compute and write the run's final status (once; later calls change nothing)."""
        meta = self.store.run_meta(ctx.run_id, "stop", "started_at", "status")
        if meta.get("status") not in ("running", "pending"):
            return
        statuses = self.store.all_statuses(ctx.run_id)
        stop = meta.get("stop") or None
        status = ctx.scheduler.run_status(statuses, stop)  # type: ignore[arg-type]
        output_json, error = "", ""
        if status == "succeeded" and ctx.dag.flow.output is not None:
            try:
                output = Scope(ctx.inputs, self.store.all_outputs(ctx.run_id)).resolve(
                    ctx.dag.flow.output
                )
                output_json = json.dumps(output)
            except Exception as exc:
                status, error = "failed", f"output: {exc}"
        elif status != "succeeded":
            error = self._error_summary(ctx, status, statuses)
        finished = datetime.now(UTC)
        started = datetime.fromisoformat(meta["started_at"])
        wall = (finished - started).total_seconds()
        self.store.finish(ctx.run_id, status, finished.isoformat(), output_json, error, wall)

    def _error_summary(self, ctx: RunContext, status: str, statuses: dict[str, str]) -> str:
        if status == "cancelled":
            return "run cancelled"
        if status == "timed_out":
            return f"run exceeded its timeout of {ctx.dag.flow.timeout}s"
        for sid in ctx.dag.steps:
            if statuses.get(sid) == "failed":
                raw = self.store.client.hget(self.store.keys(ctx.run_id)[4], sid)
                err = json.loads(raw).get("error") if raw else None
                if err:
                    return f"step {sid!r} failed: {err['type']}: {err['message']}"
                return f"step {sid!r} failed"
        return "run failed"


def _resolved_record(
    sid: str, ctx: RunContext, status: str, error: StepError | None
) -> dict[str, Any]:
    return {"status": status, "error": error.model_dump() if error else None}


def _call(fn: Callable[..., Any], *args: Any) -> Any:
    """`Context.run` in the current context."""
    return fn(*args)
