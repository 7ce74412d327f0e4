"""The named checks: each is one contract, so a failure says which contract broke.

Three kinds:
* `reference`: the backend's result against the reference interpreter's allowed sets;
* `self`: a contract a result must satisfy on its own (issue 14's contracts that the
  documents leave to timestamps: the first failure in time, the final attempt's error);
* `differential`: a distributed result against the embedded one, for what the documents
  do not decide but the backends must agree on ("map steps record attempts the same
  way on both backends", "`items` the same on both").

"One difference, one check": the specific checks run first and mark the steps (or the
run) they explain; the general checks (`step_*`, `run_*`) skip those, so a known
difference makes exactly its own check fail.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from executor import ExecutionResult, StepRecord

from .generator import Case
from .reference import ANY, CANCEL, WILD, Expectation, Outcome, _retryable, canon

#: Two failures closer than this (seconds) count as simultaneous.
SAME_TIME = 0.05
#: A step ready for longer than this (seconds) without starting is late. Two workers of
#: eight threads each and at most three slow steps a flow: capacity is never short.
LATE = 0.5
#: A stop must end the attempts it catches within this (seconds; workers poll 0.25 s).
PROMPT = 1.5


@dataclass(frozen=True)
class Check:
    name: str
    kind: str  # reference | self | differential
    contract: str


CHECKS: dict[str, Check] = {
    c.name: c
    for c in [
        Check(
            "stop_cancels_steps_with_retries_left",
            "self",
            "a step the run's stop catches while it has retries left is `cancelled`, not "
            "`failed`; a cancelled step's last attempt record has an error (says why)",
        ),
        Check(
            "stop_keeps_finished_work",
            "self",
            "a step or map item whose attempt finished (succeeded) before the stop keeps "
            "its result: a cancelled record's last attempt has an error",
        ),
        Check(
            "ready_steps_start_promptly",
            "self",
            f"a step starts within {LATE}s of its last dependency (DESIGN: a kept dependent "
            "only into free local capacity, else published at once); one the stop caught "
            f"unstarted had been ready for less than {LATE}s",
        ),
        Check(
            "no_attempt_lost",
            "self",
            "no attempt is recorded `WorkerLost`: no worker dies in the fuzz, so a lost "
            "attempt is a step whose lease its live worker let expire",
        ),
        Check(
            "stop_reaches_running_steps",
            "self",
            f"a stop ends the attempts it catches within {PROMPT}s (cancelled async tools "
            "stop, sync tools are abandoned)",
        ),
        Check(
            "run_error_names_first_failure",
            "self",
            "the run's `error` names the step that failed first in time",
        ),
        Check(
            "step_error_is_final_attempts",
            "self",
            "`StepRecord.error` is the final attempt's error (None when it succeeded); map "
            "items too",
        ),
        Check(
            "cleanup_runs_after_stop",
            "reference",
            "under fail_fast a step whose trigger rule can fire on failures is not "
            "cancelled: it runs once its dependencies are terminal",
        ),
        Check(
            "every_run_ends",
            "self",
            "every run ends (within DAGRELAY_FUZZ_RUN_LIMIT, 60 s): no step is lost",
        ),
        Check(
            "workers_log_no_errors",
            "self",
            "no worker logs an ERROR while a case runs (a failing actor dead-letters its "
            "step message: Dramatiq's retries are off)",
        ),
        Check("run_status", "reference", "the run's status"),
        Check(
            "run_error",
            "reference",
            "the run's error: None when it succeeded, names a failed step when one failed, "
            "says cancelled / timeout",
        ),
        Check("run_output", "reference", "the run's output (None when it failed)"),
        Check("step_status", "reference", "each step's status"),
        Check("step_attempts", "reference", "each (non-map) step's number of attempts"),
        Check("step_output", "reference", "each succeeded step's output"),
        Check("step_error", "reference", "each step's error type"),
        Check(
            "step_joint",
            "reference",
            "each step's (status, attempts, error, output) together is one allowed outcome",
        ),
        Check(
            "map_items",
            "reference",
            "a map step's child records: one per item, each item's status, attempts, "
            "error and output",
        ),
        Check(
            "map_attempts_same_on_backends",
            "differential",
            "a map step's own attempt records: the same number on both backends",
        ),
        Check(
            "map_items_same_on_backends",
            "differential",
            "a map step's `items`: None or a list of the same length on both backends",
        ),
    ]
}


@dataclass
class Violation:
    check: str
    case: str
    step: str | None
    message: str

    def __str__(self) -> str:
        where = f" step {self.step}" if self.step else ""
        return f"[{self.check}]{where}: {self.message}"


@dataclass
class Report:
    """The violations of one case on one backend, by check."""

    case: Case
    backend: str
    violations: dict[str, list[Violation]] = field(default_factory=dict)
    wall: float = 0.0
    crashed: str | None = None

    def count(self) -> int:
        return sum(len(v) for v in self.violations.values())

    def add(self, check: str, step: str | None, message: str) -> None:
        self.violations.setdefault(check, []).append(
            Violation(check, self.case.name, step, message)
        )


# Matching ---------------------------------------------------------------------------
def error_matches(expected: str | None, actual: str | None) -> bool:
    if expected == WILD:
        return True
    if expected is None or actual is None:
        return expected is None and actual is None
    if expected == ANY:
        return True
    if expected == CANCEL:
        low = actual.lower()
        return "cancel" in low or "timeout" in low or "stop" in low
    return actual.split(".")[-1] == expected


def outcome_of(rec: StepRecord, is_map: bool) -> Outcome:
    """What a record says, as an `Outcome`. The error is the final attempt's when there
    are attempts (a map step's own: the record's): whether `StepRecord.error` mirrors it
    is `step_error_is_final_attempts`'s business, not every check's."""
    error = rec.error
    if rec.attempts and not is_map:
        error = rec.attempts[-1].error
    return Outcome(
        rec.status,
        None if is_map else len(rec.attempts),
        error.type if error else None,
        canon(rec.output) if rec.status == "succeeded" else None,
    )


def matches(expected: Outcome, actual: Outcome) -> bool:
    return (
        expected.status == actual.status
        and (expected.attempts is None or expected.attempts == actual.attempts)
        and error_matches(expected.error, actual.error)
        and (expected.output is None or expected.output == actual.output)
    )


def _fmt(outcomes: Iterable[Outcome]) -> str:
    def one(o: Outcome) -> str:
        parts = [o.status]
        if o.attempts is not None:
            parts.append(f"{o.attempts} att")
        if o.error is not None:
            parts.append(o.error)
        if o.output is not None:
            parts.append(o.output[:40])
        return "/".join(parts)

    return "{" + ", ".join(sorted(one(o) for o in outcomes)) + "}"


def _fmt1(o: Outcome) -> str:
    return _fmt({o})[1:-1]


def named_step(error: str | None) -> str | None:
    m = re.search(r"'([^']+)'", error or "")
    return m.group(1) if m else None


def _stop_time(case: Case, result: ExecutionResult) -> datetime | None:
    """When the run was stopped, from its own record (None: not stopped)."""
    if result.status == "cancelled" and case.cancel_after is not None and result.submitted_at:
        return result.submitted_at + timedelta(seconds=case.cancel_after)
    if result.status == "timed_out" and case.flow.timeout is not None:
        start = result.started_at or result.submitted_at
        return start + timedelta(seconds=case.flow.timeout) if start else None
    if result.status == "failed" and case.flow.on_failure == "fail_fast":
        ends = [
            _finished(r) for r in result.steps.values() if r.status == "failed" and _finished(r)
        ]
        return min((t for t in ends if t is not None), default=None)
    return None


def _finished(rec: StepRecord) -> datetime | None:
    if rec.attempts and rec.attempts[-1].finished_at is not None:
        return rec.attempts[-1].finished_at
    return rec.finished_at


# The checks of one result -------------------------------------------------------------
def check_result(case: Case, exp: Expectation, result: ExecutionResult, report: Report) -> None:
    """Every `reference` and `self` check of one backend's result."""
    steps = {s.id: s for s in case.flow.steps}
    explained: set[str] = set()
    run_explained = False

    if set(result.steps) != set(steps):
        report.add("step_status", None, f"records for {sorted(result.steps)}, not the flow's")

    # stop_cancels_steps_with_retries_left ---------------------------------------------
    for sid, rec in result.steps.items():
        if sid not in exp.steps or exp.steps[sid].is_map:
            continue
        policy = exp.steps[sid].policy
        if rec.status == "failed" and rec.attempts and rec.error is not None:
            name = rec.error.type.split(".")[-1]
            if len(rec.attempts) < policy.max_attempts and _retryable(policy, name):
                report.add(
                    "stop_cancels_steps_with_retries_left",
                    sid,
                    f"failed after {len(rec.attempts)} of {policy.max_attempts} attempts "
                    f"({rec.error.type}, retryable): run {result.status}",
                )
                explained.add(sid)
                run_explained = True

    # stop_keeps_finished_work ---------------------------------------------------------
    for sid, rec in result.steps.items():
        records = [(sid, rec)] if not (sid in exp.steps and exp.steps[sid].is_map) else []
        records += [(f"{sid}[{i}]", item) for i, item in enumerate(rec.items or [])]
        for name, r in records:
            if r.status == "cancelled" and r.attempts and r.attempts[-1].error is None:
                report.add(
                    "stop_keeps_finished_work",
                    name,
                    f"cancelled, but its last attempt ({len(r.attempts)}) finished without "
                    "an error",
                )
                explained.add(name)

    # no_attempt_lost, stop_reaches_running_steps -----------------------------------------
    stop_at = _stop_time(case, result)
    for sid, rec in result.steps.items():
        records = [(sid, rec), *((f"{sid}[{i}]", it) for i, it in enumerate(rec.items or []))]
        for name, r in records:
            lost = [a.number for a in r.attempts if a.error and "WorkerLost" in a.error.type]
            if lost:
                report.add("no_attempt_lost", name, f"{r.status}: attempts {lost} WorkerLost")
                explained.add(sid)
            last = r.attempts[-1] if r.attempts else None
            if (
                r.status == "cancelled"
                and stop_at is not None
                and last is not None
                and last.finished_at is not None
                and last.started_at < stop_at
                and (last.finished_at - stop_at).total_seconds() > PROMPT
            ):
                report.add(
                    "stop_reaches_running_steps",
                    name,
                    f"attempt {last.number} ended "
                    f"{(last.finished_at - stop_at).total_seconds():.2f}s after the stop",
                )
                explained.add(sid)

    # ready_steps_start_promptly ---------------------------------------------------------
    late: set[str] = set()
    for sid, rec in result.steps.items():
        e = exp.steps.get(sid)
        if e is None:
            continue
        deps = [result.steps[d] for d in e.deps if d in result.steps]
        ends = [d.finished_at for d in deps]
        if any(t is None for t in ends):
            continue
        ready = max((t for t in ends if t is not None), default=result.submitted_at)
        if ready is None:
            continue
        if rec.started_at is not None and not e.cleanup:
            lag = (rec.started_at - ready).total_seconds()
            if lag > LATE and case.flow.step(sid).trigger not in ("one_success", "one_failed"):
                report.add(
                    "ready_steps_start_promptly",
                    sid,
                    f"started {lag:.3f}s after its last dependency ended",
                )
                late.add(sid)
        elif (
            rec.status == "cancelled"
            and not rec.attempts
            and e.runs
            and not e.cleanup
            and stop_at is not None
            and all(
                result.steps[d].status == exp.steps[d].normal_status()
                for d in e.deps
                if d in result.steps
            )
        ):
            waited = (stop_at - ready).total_seconds()
            if waited > LATE:
                report.add(
                    "ready_steps_start_promptly",
                    sid,
                    f"never started: ready {waited:.3f}s before the run's stop",
                )
                late.add(sid)
    # What a late step holds up is late too: the general checks skip all of it.
    for sid, e in exp.steps.items():
        if any(d in late for d in e.deps):
            late.add(sid)
    explained |= late
    run_explained = run_explained or bool(late)

    # run_error_names_first_failure ----------------------------------------------------
    failed = {
        sid: rec
        for sid, rec in result.steps.items()
        if rec.status == "failed" and sid not in explained
    }
    named = named_step(result.error)
    if result.status == "failed" and failed and named in failed and not run_explained:
        times = {sid: _finished(rec) for sid, rec in failed.items()}
        known = [t for t in times.values() if t is not None]
        at = times.get(named)
        if known and at is not None:
            first = min(known)
            if (at - first).total_seconds() > SAME_TIME:
                earliest = min((t, sid) for sid, t in times.items() if t is not None)[1]
                report.add(
                    "run_error_names_first_failure",
                    named,
                    f"the run's error names {named!r}, which failed "
                    f"{(at - first).total_seconds():.3f}s after {earliest!r}",
                )

    # step_error_is_final_attempts -----------------------------------------------------
    for sid, rec in result.steps.items():
        records = [(sid, rec)]
        if rec.items:
            records = [(f"{sid}[{i}]", item) for i, item in enumerate(rec.items)]
            if not exp.steps.get(sid) or not exp.steps[sid].is_map:
                records.insert(0, (sid, rec))
        for name, r in records:
            if name == sid and sid in exp.steps and exp.steps[sid].is_map:
                continue  # a map step's own attempts: see map_attempts_same_on_backends
            if not r.attempts:
                continue
            final = r.attempts[-1].error
            want = final.type if final else None
            got = r.error.type if r.error else None
            if want != got:
                report.add(
                    "step_error_is_final_attempts",
                    name,
                    f"{r.status}: error {got!r}, final attempt's ({len(r.attempts)}) {want!r}",
                )

    # cleanup_runs_after_stop + the general step checks ----------------------------------
    # In dependency order; a step is judged only when its dependencies behaved as allowed:
    # what a deviating step does to its dependents is that deviation's check, not theirs.
    deviant = set(explained)
    for sid, e in exp.steps.items():  # the reference's topological order
        record = result.steps.get(sid)
        if record is None or e.unknown:
            continue
        if any(d in deviant for d in e.deps):
            deviant.add(sid)
            continue
        before = report.count()
        actual = outcome_of(record, e.is_map)
        if e.cleanup:
            if not any(matches(o, actual) for o in e.outcomes):
                report.add(
                    "cleanup_runs_after_stop",
                    sid,
                    f"{case.flow.step(sid).trigger}: got {_fmt1(actual)}, "
                    f"allowed {_fmt(e.outcomes)}",
                )
                deviant.add(sid)
            continue
        if sid in explained:
            continue
        _step_checks(report, sid, e.is_map, e.outcomes, actual)
        if e.is_map:
            _item_checks(report, sid, e.items, record, explained)
        if report.count() > before:
            deviant.add(sid)

    # run-level ------------------------------------------------------------------------
    if not run_explained:
        if result.status not in exp.run_status:
            report.add("run_status", None, f"{result.status}, allowed {sorted(exp.run_status)}")
        err = result.error
        if result.status == "succeeded" and err is not None:
            report.add("run_error", None, f"succeeded with error {err!r}")
        elif result.status == "cancelled" and not err:
            report.add("run_error", None, "cancelled without an error")
        elif result.status == "timed_out" and "timeout" not in (err or "").lower():
            report.add("run_error", None, f"timed out, error {err!r}")
        elif result.status == "failed" and any(r.status == "failed" for r in result.steps.values()):
            if named is None or result.steps.get(named) is None:
                report.add("run_error", None, f"failed, error names no step: {err!r}")
            elif result.steps[named].status != "failed":
                report.add(
                    "run_error",
                    named,
                    f"names {named!r}, which is {result.steps[named].status}: {err!r}",
                )
    if result.status == "succeeded" and exp.output and canon(result.output) not in exp.output:
        report.add(
            "run_output",
            None,
            f"{canon(result.output)[:120]}, expected {sorted(exp.output)[0][:120]}",
        )
    if result.status == "failed" and result.output is not None:
        report.add("run_output", None, f"a failed run's output is {result.output!r}")


def _step_checks(
    report: Report, sid: str, is_map: bool, allowed: set[Outcome], actual: Outcome
) -> None:
    if actual.status not in {o.status for o in allowed}:
        report.add("step_status", sid, f"got {actual.status}, allowed {_fmt(allowed)}")
        return
    same = [o for o in allowed if o.status == actual.status]
    if not is_map and not any(o.attempts in (None, actual.attempts) for o in same):
        report.add(
            "step_attempts", sid, f"{actual.status} after {actual.attempts}, allowed {_fmt(same)}"
        )
    if actual.status == "succeeded" and not any(
        o.output is None or o.output == actual.output for o in same
    ):
        report.add("step_output", sid, f"output {actual.output}, allowed {_fmt(same)}")
    if not any(error_matches(o.error, actual.error) for o in same):
        report.add(
            "step_error", sid, f"{actual.status} error {actual.error!r}, allowed {_fmt(same)}"
        )
    if not any(matches(o, actual) for o in same):
        report.add("step_joint", sid, f"got {_fmt1(actual)}, allowed {_fmt(allowed)}")


def _item_checks(
    report: Report,
    sid: str,
    expected: list[set[Outcome]] | None,
    rec: StepRecord,
    explained: set[str],
) -> None:
    items = rec.items
    if rec.status == "succeeded":
        if expected is None:
            return
        if items is None or len(items) != len(expected):
            n = None if items is None else len(items)
            report.add("map_items", sid, f"succeeded with {n} items, expected {len(expected)}")
            return
    if not items or expected is None:
        return
    if len(items) != len(expected):
        report.add("map_items", sid, f"{len(items)} items, expected {len(expected)}")
        return
    for i, (item, allowed) in enumerate(zip(items, expected, strict=True)):
        if f"{sid}[{i}]" in explained:
            continue
        actual = outcome_of(item, False)
        if not any(matches(o, actual) for o in allowed):
            report.add("map_items", f"{sid}[{i}]", f"got {_fmt1(actual)}, allowed {_fmt(allowed)}")


def check_against(
    case: Case, base: ExecutionResult, other: ExecutionResult, report: Report
) -> None:
    """The `differential` checks: `other` (a distributed result) against `base`
    (the embedded one)."""
    for s in case.flow.steps:
        if s.map is None:
            continue
        a, b = base.steps.get(s.id), other.steps.get(s.id)
        if a is None or b is None or a.status != b.status:
            continue
        if a.status in ("succeeded", "failed") and len(a.attempts) != len(b.attempts):
            report.add(
                "map_attempts_same_on_backends",
                s.id,
                f"{a.status}: {len(a.attempts)} attempt records embedded, {len(b.attempts)} here",
            )
        na = None if a.items is None else len(a.items)
        nb = None if b.items is None else len(b.items)
        if a.status != "cancelled" and na != nb:
            report.add(
                "map_items_same_on_backends",
                s.id,
                f"{a.status}: items {_items(a)} embedded, {_items(b)} here",
            )


def _items(rec: StepRecord) -> str:
    return "None" if rec.items is None else f"{len(rec.items)} records"


#: Which checks run on which backend (differential checks need the embedded result).
def checks_for(backend: str) -> list[str]:
    return [n for n, c in CHECKS.items() if c.kind != "differential" or backend != "embedded"]
