"""The rules of a DAG run, as pure Python: no I/O, no asyncio, no clocks.

Every backend drives these rules. `Scheduler` answers the questions a transport asks
(what does a step whose dependencies are all terminal become? does a failure stop the
run? what is the run's status?); `RunState` is the in-memory bookkeeping the embedded
backend and the reference tests use. The Redis backend keeps its counters in Lua and
asks `Scheduler` the same questions.
"""

from __future__ import annotations

import ast
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from executor.model.dag import Dag
from executor.model.predicates import PredicateError
from executor.model.references import parse_ref
from executor.run.records import TERMINAL_STEP, RunStatus, StepError, StepStatus

Decision = Literal["run", "skipped", "upstream_failed", "cancelled", "failed"]
StopReason = Literal["failed", "cancelled", "timed_out"]
_FAILED = frozenset({"failed", "upstream_failed"})
# Trigger rules that can fire when a dependency failed and none succeeded: under
# fail_fast a step with one is not cancelled by the stop (cleanup and alerting run when
# a run fails); it is decided once its dependencies are terminal, a dependency the stop
# cancelled counting as `upstream_failed` (it did not run because the run failed).
# `one_success` and the `none_failed*` rules need a success or no failure: work, not
# cleanup, so the stop cancels them.
FIRES_ON_FAILURE = frozenset(
    {"all_done", "all_failed", "one_failed", "one_done", "none_skipped", "always"}
)
# Trigger rules that refuse a step whose dependencies all succeeded.
REFUSE_ALL_SUCCEEDED = frozenset({"all_failed", "all_skipped", "one_failed"})
# What a stop says to the attempts it cuts short.
STOP_MESSAGES: dict[str, str] = {
    "failed": "the run stopped: another step failed (fail_fast)",
    "cancelled": "the run was cancelled",
    "timed_out": "the run timed out",
}


def stop_error(reason: str) -> StepError:
    """The error of an attempt (and its step) that a stop cut short."""
    return StepError(type="CancelledError", message=STOP_MESSAGES.get(reason, f"run {reason}"))


@dataclass(frozen=True, slots=True)
class Resolution:
    """What a step whose dependencies are all terminal becomes."""

    decision: Decision
    error: StepError | None = None


# Shared (frozen) answers: `decide` runs for every step and most answers carry no error.
_RUN = Resolution("run")
_SKIPPED = Resolution("skipped")
_UPSTREAM_FAILED = Resolution("upstream_failed")
_CANCELLED = Resolution("cancelled")


class Scheduler:
    """Trigger rules, conditions, fail-fast and the run status for one flow."""

    def __init__(self, dag: Dag) -> None:
        self.dag = dag
        self.fail_fast = dag.flow.on_failure == "fail_fast"
        # Steps a fail-fast stop does not cancel (see FIRES_ON_FAILURE).
        self.survivors = frozenset(
            sid
            for sid, st in dag.steps.items()
            if self.fail_fast and st.trigger in FIRES_ON_FAILURE
        )
        # Steps that run, once ready, whenever all their dependencies succeeded: no
        # trigger rule or condition to ask (what a worker may claim ahead of deciding).
        self.clean = frozenset(
            sid
            for sid, st in dag.steps.items()
            if st.trigger not in REFUSE_ALL_SUCCEEDED and sid not in dag.predicates
        )
        # Steps whose rule must be asked even when every dependency succeeded.
        self._strict = frozenset(
            sid for sid, st in dag.steps.items() if st.trigger in REFUSE_ALL_SUCCEEDED
        )
        # The step a map step's list comes from (`map: $steps.x.urls` -> x).
        self.map_source = {
            sid: ref.step
            for sid, st in dag.steps.items()
            if st.map is not None and (ref := parse_ref(st.map)).step is not None
        }
        # A map step's `when` that reads `item`/`index` filters items (the backend
        # evaluates it per item); any other `when` decides the whole step here.
        self.per_item = frozenset(
            sid
            for sid, pred in dag.predicates.items()
            if dag.steps[sid].map is not None and _reads_item(pred.tree)
        )

    def decide(
        self,
        step_id: str,
        statuses: Mapping[str, StepStatus],
        input: Any,
        outputs: Mapping[str, Any],
    ) -> Resolution:
        """Decide a step once every dependency is terminal.

        Args:
            statuses: the status of (at least) each dependency.
            outputs: outputs of succeeded steps (at least those `when` reads).
        """
        deps = self.dag.deps[step_id]
        # All succeeded (the common case): only a rule in REFUSE_ALL_SUCCEEDED says no.
        if deps and (step_id in self._strict or any(statuses[d] != "succeeded" for d in deps)):
            refused = self._trigger_refuses(step_id, statuses)
            if refused is not None:
                return refused
            source = self.map_source.get(step_id)
            if source is not None and statuses[source] != "succeeded":
                return _SKIPPED  # its rule fired, but it has no list to map over
        predicate = self.dag.predicates.get(step_id)
        if predicate is not None and step_id not in self.per_item:
            try:
                ok = predicate.evaluate(input, _only_succeeded(outputs, statuses, predicate.steps))
            except PredicateError as exc:
                return Resolution("failed", StepError(type="PredicateError", message=str(exc)))
            if not ok:
                return _SKIPPED
        return _RUN

    def _trigger_refuses(
        self, step_id: str, statuses: Mapping[str, StepStatus]
    ) -> Resolution | None:
        """What the step's trigger rule makes of it (None: it may run, if its `when`
        agrees). A cancelled dependency cancels the step, unless its rule fires on
        failures: then it counts as `upstream_failed`."""
        trigger = self.dag.steps[step_id].trigger
        counts = dict.fromkeys(("succeeded", "failed", "upstream_failed", "skipped"), 0)
        for d in self.dag.deps[step_id]:
            status = statuses[d]
            if status == "cancelled":
                if trigger not in FIRES_ON_FAILURE:
                    return _CANCELLED
                status = "upstream_failed"
            counts[status] += 1
        verdict = trigger_rule(trigger, **counts)
        if verdict == "run":
            return None
        return _SKIPPED if verdict == "skipped" else _UPSTREAM_FAILED

    def stops_run(self, status: StepStatus) -> bool:
        """Whether a step ending with `status` stops the whole run (fail-fast)."""
        return self.fail_fast and status == "failed"

    def survives(self, step_id: str, stop: str | None) -> bool:
        """Whether a step goes on (starts, runs, keeps its outcome) after a stop."""
        return stop == "failed" and step_id in self.survivors

    def settled(self, step_id: str, outcome: StepStatus, stop: str | None) -> StepStatus:
        """The status an attempt's outcome is recorded as: a stop cancels what it catches
        running (recorded after the stop means cancelled), a survivor keeps its own."""
        if stop and not self.survives(step_id, stop):
            return "cancelled"
        return outcome

    def run_error(
        self,
        status: RunStatus,
        first_failed: str | None,
        failed: int = 0,
        error: StepError | None = None,
    ) -> str | None:
        """The run's `error`: why it did not succeed, naming the step that failed first.

        Args:
            first_failed: the step whose failure was recorded first (first in time).
            failed: how many steps failed in all.
            error: the first failed step's error.
        """
        if status == "succeeded":
            return None
        if status == "cancelled":
            return "run cancelled"
        if status == "timed_out":
            return f"run exceeded its timeout of {self.dag.flow.timeout}s"
        if first_failed is None:
            return "run failed"
        text = f"step {first_failed!r} failed" + (f": {error}" if error else "")
        if failed > 1:
            others = failed - 1
            text += f" ({others} other step{'s' if others > 1 else ''} failed too)"
        return text

    @staticmethod
    def run_status(statuses: Mapping[str, StepStatus], stop: StopReason | None) -> RunStatus:
        """The status of a finished run."""
        if stop in ("cancelled", "timed_out"):
            return stop
        if stop == "failed" or any(s in _FAILED for s in statuses.values()):
            return "failed"
        return "succeeded"


def trigger_rule(
    rule: str, *, succeeded: int, failed: int, upstream_failed: int, skipped: int
) -> Literal["run", "skipped", "upstream_failed"]:
    """Airflow's verdict on a step with dependencies, all terminal, that ended so (counts
    of each status): whether it runs, or what it becomes instead."""
    broken = failed + upstream_failed  # Airflow's "failed" for most rules
    n = succeeded + broken + skipped
    if rule == "all_success":
        return "upstream_failed" if broken else "skipped" if skipped else "run"
    if rule == "all_failed":
        return "skipped" if succeeded or skipped else "run"
    if rule in ("all_done", "always"):
        return "run"
    if rule == "all_skipped":
        return "skipped" if succeeded or broken else "run"
    if rule == "one_success":
        return "run" if succeeded else "skipped" if skipped == n else "upstream_failed"
    if rule == "one_failed":
        return "run" if broken else "skipped"
    if rule == "one_done":  # Airflow counts only success and failure, not upstream_failed
        return "run" if succeeded or failed else "skipped"
    if rule == "none_failed":
        return "upstream_failed" if broken else "run"
    if rule == "none_failed_min_one_success":
        return "upstream_failed" if broken else "skipped" if skipped == n else "run"
    if rule == "none_skipped":
        return "skipped" if skipped else "run"
    raise ValueError(f"unknown trigger rule {rule!r}")


def _reads_item(tree: ast.AST) -> bool:
    return any(isinstance(n, ast.Name) and n.id in ("item", "index") for n in ast.walk(tree))


def _only_succeeded(
    outputs: Mapping[str, Any], statuses: Mapping[str, StepStatus], wanted: frozenset[str]
) -> dict[str, Any]:
    return {s: outputs.get(s) if statuses.get(s) == "succeeded" else None for s in wanted}


@dataclass(slots=True)
class Actions:
    """What a backend must do after a state change."""

    run: list[str] = field(default_factory=list)
    resolved: list[tuple[str, StepStatus, StepError | None]] = field(default_factory=list)
    cancel_running: list[str] = field(default_factory=list)


class RunState:
    """In-memory state of one run: statuses, outputs, unfinished-dependency counters."""

    def __init__(self, dag: Dag, input: Any) -> None:
        self.dag = dag
        self.scheduler = Scheduler(dag)
        self.input = input
        self.status: dict[str, StepStatus] = dict.fromkeys(dag.steps, "pending")
        self.outputs: dict[str, Any] = {}
        self.remaining = {s: len(d) for s, d in dag.deps.items()}
        self.unfinished = len(dag.steps)
        self.stop_reason: StopReason | None = None
        self.failed: list[str] = []  # failed steps, first in time first

    @property
    def finished(self) -> bool:
        """Every step is terminal."""
        return self.unfinished == 0

    def run_status(self) -> RunStatus:
        """`running` until every step is terminal, then the final status."""
        if not self.finished:
            return "running"
        return self.scheduler.run_status(self.status, self.stop_reason)

    def reuse(self, outputs: Mapping[str, Any]) -> None:
        """Before `start`: these steps succeeded in an earlier pass of the run, with these
        outputs (a rerun); their dependents no longer wait for them."""
        for sid, output in outputs.items():
            self._set(sid, "succeeded", output)
            for child in self.dag.dependents[sid]:
                self.remaining[child] -= 1

    def start(self) -> Actions:
        """Resolve the steps with nothing left to wait for (the roots, on a first pass)."""
        actions = Actions()
        self._resolve([s for s, n in self.remaining.items() if n == 0], actions)
        return actions

    def mark_running(self, step_id: str) -> None:
        """A queued step has started."""
        if self.status[step_id] == "queued":
            self.status[step_id] = "running"

    def finish(self, step_id: str, status: StepStatus, output: Any = None) -> Actions:
        """Record a step's terminal status; returns what becomes ready or stops.

        A second finish of a terminal step is ignored (exactly-once recording).
        """
        actions = Actions()
        if self.status[step_id] in TERMINAL_STEP:
            return actions
        self._set(step_id, status, output)
        if self.scheduler.stops_run(status) and self.stop_reason is None:
            self._stop("failed", actions)
        self._release(step_id, actions)
        return actions

    def stop(self, reason: StopReason) -> Actions:
        """Stop the run: cancel what has not started, ask to cancel what runs."""
        actions = Actions()
        if self.stop_reason is None and not self.finished:
            self._stop(reason, actions)
        return actions

    def _stop(self, reason: StopReason, actions: Actions) -> None:
        self.stop_reason = reason
        survivors = self.scheduler.survivors if reason == "failed" else frozenset()
        cancelled = []
        for sid, st in self.status.items():
            if sid in survivors:
                continue
            if st in ("pending", "queued"):
                self._set(sid, "cancelled", None)
                actions.resolved.append((sid, "cancelled", None))
                cancelled.append(sid)
            elif st == "running":
                actions.cancel_running.append(sid)
        # What the stop cancelled is done: survivors waiting on it may be ready now.
        for sid in cancelled:
            self._release(sid, actions)

    def _set(self, step_id: str, status: StepStatus, output: Any) -> None:
        self.status[step_id] = status
        self.unfinished -= 1
        if status == "succeeded":
            self.outputs[step_id] = output
        elif status == "failed":
            self.failed.append(step_id)

    def _release(self, step_id: str, actions: Actions) -> None:
        ready: list[str] = []
        for child in self.dag.dependents[step_id]:
            self.remaining[child] -= 1
            if self.remaining[child] == 0 and self.status[child] == "pending":
                ready.append(child)
        if ready:
            self._resolve(ready, actions)

    def _resolve(self, ready: list[str], actions: Actions) -> None:
        """Decide ready steps in waves: every step of a wave, in order, then the steps its
        skips and failures made ready, as the next wave (the order the Redis backend
        records them in, a wave per round trip, so both agree on what a fail-fast stop
        in a cascade catches). Iterative: a skip can cascade down a 10,000-step chain."""
        wave = ready
        while wave:
            later: list[str] = []
            for sid in wave:
                if self.status[sid] != "pending":
                    continue  # cancelled by a stop meanwhile
                if self.stop_reason is not None and not self.scheduler.survives(
                    sid, self.stop_reason
                ):
                    continue
                res = self.scheduler.decide(sid, self.status, self.input, self.outputs)
                if res.decision == "run":
                    self.status[sid] = "queued"
                    actions.run.append(sid)
                    continue
                self._set(sid, res.decision, None)
                actions.resolved.append((sid, res.decision, res.error))
                if self.scheduler.stops_run(res.decision) and self.stop_reason is None:
                    self._stop("failed", actions)
                for child in self.dag.dependents[sid]:
                    self.remaining[child] -= 1
                    if self.remaining[child] == 0 and self.status[child] == "pending":
                        later.append(child)
            wave = later
