"""Property tests: random DAGs give the results of a plain sequential interpreter.

The reference interpreter below implements the documented semantics (DESIGN.md:
trigger rules, `when`, references to non-succeeded steps resolving to None,
fail-fast/continue, run status) directly, without `executor.run.scheduling`. Random
flows are run (a) on the embedded backend and (b) through `RunState` with random
completion orders, and compared to it.
"""

from __future__ import annotations

import os
import typing
from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from executor import Flow, FlowExecutor, Step, ToolRegistry, tool
from executor.run.records import StepStatus
from executor.run.scheduling import RunState

registry = ToolRegistry()


@tool(registry=registry)
def add(a: int, b: int) -> int:
    return a + b


@tool(registry=registry)
async def concat(parts: list[Any]) -> str:
    return "".join(str(p) for p in parts)


@tool(registry=registry)
async def fail() -> int:
    raise ValueError("planned failure")


# Every rule the model accepts (Airflow's set); the reference below spells each out.
TRIGGERS: tuple[str, ...] = typing.get_args(Step.model_fields["trigger"].annotation)
FAILED = ("failed", "upstream_failed")
# Rules a fail_fast stop spares (README): decided after the stop, from what it cancelled.
SPARED = ("all_failed", "all_done", "one_failed", "one_done", "none_skipped", "always")
# DAGRELAY_PROPERTY_EXAMPLES=2000 for a thorough local run; the default keeps CI fast.
PROPS = settings(
    max_examples=int(os.environ.get("DAGRELAY_PROPERTY_EXAMPLES", "60")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)


# A random flow, as data the reference can interpret -----------------------------------
@dataclass
class Spec:
    """One step: `kind` is add | concat | fail; args hold ("lit", v) | ("input",) |
    ("step", j); `when` is a tuple from `whens()`."""

    id: str
    kind: str
    args: list[tuple[Any, ...]]
    when: tuple[Any, ...] | None
    trigger: str
    after: list[int]  # explicit depends_on
    deps: list[int] = field(default_factory=list)  # every dependency, computed


def ref_text(arg: tuple[Any, ...]) -> Any:
    if arg[0] == "lit":
        return arg[1]
    if arg[0] == "input":
        return "$input.n"
    return f"$steps.s{arg[1]}"


def when_text(w: tuple[Any, ...]) -> str:
    match w:
        case ("flag", neg):
            return "not input.flag" if neg else "input.flag"
        case ("gt", j, k):
            return f"steps.s{j} > {k}"
        case ("none_or_gt", j, k):
            return f"steps.s{j} == None or steps.s{j} > {k}"
        case ("len", j, k):
            return f"len(steps.s{j}) > {k}"
        case ("bad_key", j):
            return f"steps.s{j}.missing > 0"
    raise AssertionError(w)


def to_flow(specs: list[Spec], on_failure: str) -> Flow:
    steps = []
    for s in specs:
        if s.kind == "add":
            inputs: dict[str, Any] = {"a": ref_text(s.args[0]), "b": ref_text(s.args[1])}
        elif s.kind == "concat":
            inputs = {"parts": [ref_text(a) for a in s.args]}
        else:
            inputs = {}
        steps.append(
            Step(
                id=s.id,
                tool=s.kind,
                inputs=inputs,
                when=None if s.when is None else when_text(s.when),
                trigger=s.trigger,
                depends_on=[f"s{j}" for j in s.after],
            )
        )
    return Flow(
        name="random",
        steps=steps,
        on_failure=on_failure,
        output={s.id: f"$steps.{s.id}" for s in specs},
    )


@st.composite
def flows(draw: st.DrawFn) -> tuple[list[Spec], str]:
    n = draw(st.integers(1, 9))
    specs: list[Spec] = []
    for i in range(n):
        earlier = list(range(i))
        # add reads int-valued steps (add, or fail: never succeeds, so None).
        ints = [j for j in earlier if specs[j].kind in ("add", "fail")]
        strs = [j for j in earlier if specs[j].kind in ("concat", "fail")]
        kind = draw(st.sampled_from(["add", "add", "concat", "concat", "fail"]))
        int_arg = st.one_of(
            st.tuples(st.just("lit"), st.integers(-5, 5)),
            st.just(("input",)),
            *([st.tuples(st.just("step"), st.sampled_from(ints))] if ints else []),
        )
        any_arg = st.one_of(
            st.tuples(st.just("lit"), st.sampled_from(["x", "-", "$$lit"])),
            st.just(("input",)),
            *([st.tuples(st.just("step"), st.sampled_from(earlier))] if earlier else []),
        )
        if kind == "add":
            args = [draw(int_arg), draw(int_arg)]
        elif kind == "concat":
            args = draw(st.lists(any_arg, min_size=0, max_size=3))
        else:
            args = []
        when_options: list[st.SearchStrategy[tuple[Any, ...]]] = [
            st.tuples(st.just("flag"), st.booleans())
        ]
        if ints:
            j_int = st.sampled_from(ints)
            k = st.integers(-3, 6)
            when_options.append(st.tuples(st.just("gt"), j_int, k))
            when_options.append(st.tuples(st.just("none_or_gt"), j_int, k))
            when_options.append(st.tuples(st.just("bad_key"), j_int))
        if strs:
            when_options.append(st.tuples(st.just("len"), st.sampled_from(strs), st.integers(0, 8)))
        when = draw(st.none() | st.none() | st.one_of(*when_options))
        trigger = draw(st.sampled_from(TRIGGERS))
        after = sorted(draw(st.sets(st.sampled_from(earlier), max_size=2))) if earlier else []
        spec = Spec(f"s{i}", kind, args, when, trigger, after)
        deps: dict[int, None] = {}
        for a in args:
            if a[0] == "step":
                deps[a[1]] = None
        if when is not None and when[0] != "flag":
            deps[when[1]] = None
        for j in after:
            deps[j] = None
        spec.deps = list(deps)
        specs.append(spec)
    on_failure = draw(st.sampled_from(["continue", "continue", "fail_fast"]))
    return specs, on_failure


inputs_st = st.fixed_dictionaries({"n": st.integers(-4, 4), "flag": st.booleans()})


# The reference interpreter --------------------------------------------------------------
def resolve(arg: tuple[Any, ...], inputs: dict[str, Any], out: dict[int, Any]) -> Any:
    if arg[0] == "lit":
        v = arg[1]
        return v[1:] if isinstance(v, str) and v.startswith("$$") else v
    if arg[0] == "input":
        return inputs["n"]
    return out.get(arg[1])  # a step that did not succeed reads as None


def eval_when(w: tuple[Any, ...], inputs: dict[str, Any], out: dict[int, Any]) -> bool | None:
    """True/False, or None when evaluating it is an error (the step fails).

    A step that did not succeed reads as None, and None propagates: its fields and
    `len()` are None, and an ordering comparison with None is false.
    """
    match w:
        case ("flag", neg):
            return not inputs["flag"] if neg else bool(inputs["flag"])
        case ("gt", j, k):
            v = out.get(j)
            return v is not None and v > k
        case ("none_or_gt", j, k):
            v = out.get(j)
            return v is None or v > k
        case ("len", j, k):
            v = out.get(j)
            return v is not None and len(v) > k
        case ("bad_key", j):
            # An int has no keys: an error, unless the step gave None (then false).
            return False if out.get(j) is None else None
    raise AssertionError(w)


def call(spec: Spec, inputs: dict[str, Any], out: dict[int, Any]) -> tuple[StepStatus, Any]:
    """Run one step's tool the way the tools above behave, with pydantic's int check."""
    if spec.kind == "fail":
        return "failed", None
    values = [resolve(a, inputs, out) for a in spec.args]
    if spec.kind == "add":
        if any(v is None for v in values):
            return "failed", None  # None is not an int: input validation fails
        return "succeeded", values[0] + values[1]
    return "succeeded", "".join(str(v) for v in values)


def airflow(rule: str, ds: list[str]) -> str:
    """Airflow's trigger rule table (docs, "Trigger Rules"): run, skipped or upstream_failed."""
    ok = sum(s == "succeeded" for s in ds)
    bad = sum(s in FAILED for s in ds)
    skip = sum(s == "skipped" for s in ds)
    table = {
        "all_success": "run" if ok == len(ds) else ("upstream_failed" if bad else "skipped"),
        "all_failed": "run" if bad == len(ds) else "skipped",
        "all_done": "run",
        "all_skipped": "run" if skip == len(ds) else "skipped",
        "one_success": "run" if ok else ("skipped" if skip == len(ds) else "upstream_failed"),
        "one_failed": "run" if bad else "skipped",
        "one_done": "run" if ok or "failed" in ds else "skipped",
        "none_failed": "upstream_failed" if bad else "run",
        "none_failed_min_one_success": ("upstream_failed" if bad else ("run" if ok else "skipped")),
        "none_skipped": "skipped" if skip else "run",
        "always": "run",
    }
    return table[rule]


def decide(spec: Spec, status: dict[int, str], inputs, out) -> str:
    """'run', or the terminal status the step gets without running."""
    ds = [status[d] for d in spec.deps]
    if ds:
        verdict = airflow(spec.trigger, ds)
        if verdict != "run":
            return verdict
    if spec.when is not None:
        ok = eval_when(spec.when, inputs, out)
        if ok is None:
            return "failed"
        if not ok:
            return "skipped"
    return "run"


def reference(specs: list[Spec], inputs: dict[str, Any]) -> tuple[dict[str, str], dict, str]:
    """Statuses and outputs as if every step ran one after another (`continue` mode)."""
    status: dict[int, str] = {}
    out: dict[int, Any] = {}
    for i, spec in enumerate(specs):
        d = decide(spec, status, inputs, out)
        if d == "run":
            d, value = call(spec, inputs, out)
            if d == "succeeded":
                out[i] = value
        status[i] = d
    run = "failed" if any(s in FAILED for s in status.values()) else "succeeded"
    return (
        {specs[i].id: s for i, s in status.items()},
        {specs[i].id: v for i, v in out.items()},
        run,
    )


def check_against_reference(
    specs: list[Spec],
    on_failure: str,
    inputs: dict[str, Any],
    statuses: dict[str, str],
    outputs: dict[str, Any],
    run_status: str,
) -> None:
    want_status, want_out, want_run = reference(specs, inputs)
    assert run_status == want_run
    if on_failure == "continue" or want_run == "succeeded":
        assert statuses == want_status
        assert outputs == want_out
        return
    # fail_fast after a failure: what happens before the stop is timing, but every step
    # either did what the reference says or was cancelled, and nothing is upstream_failed
    # (the failure stops the run before any dependent is decided).
    assert any(s == "failed" for s in statuses.values())
    spared = {spec.id for spec in specs if spec.trigger in SPARED}
    for sid, s in statuses.items():
        assert s != "upstream_failed"
        if sid in spared:
            continue  # decided after the stop, from what it cancelled (the fuzz checks it)
        assert s in (want_status[sid], "cancelled"), (sid, s, want_status[sid])
        if s == "succeeded":
            assert outputs[sid] == want_out[sid]


# (a) the embedded backend ----------------------------------------------------------------
@pytest.fixture(scope="module")
def executor():
    ex = FlowExecutor(registry=registry)
    yield ex
    ex.close()


@PROPS
@given(flows(), inputs_st)
def test_random_flows_match_the_reference(executor, case, inputs):
    specs, on_failure = case
    flow = to_flow(specs, on_failure)
    r = executor.run(flow, inputs, timeout=30)
    statuses = {sid: rec.status for sid, rec in r.steps.items()}
    outputs = {sid: rec.output for sid, rec in r.steps.items() if rec.status == "succeeded"}
    check_against_reference(specs, on_failure, inputs, statuses, outputs, r.status)
    if r.status == "succeeded":
        assert r.output == {s.id: outputs.get(s.id) for s in specs}
    # Every step starts only after each of its dependencies finished.
    for spec in specs:
        rec = r.steps[spec.id]
        if rec.started_at is None:
            continue
        assert rec.queued_at is not None and rec.queued_at <= rec.started_at
        for j in spec.deps:
            dep = r.steps[specs[j].id]
            if dep.finished_at is not None:
                assert rec.started_at >= dep.finished_at, (spec.id, specs[j].id)
    # Steps the reference never runs never start.
    want_status, _, _ = reference(specs, inputs)
    stopped = on_failure == "fail_fast" and r.status == "failed"
    for sid, s in want_status.items():
        if stopped and flow.step(sid).trigger in SPARED:
            continue  # decided after the stop, from what it cancelled
        if s in ("skipped", "upstream_failed"):
            assert r.steps[sid].attempts == []


# (b) the pure core, under random completion orders ---------------------------------------
@PROPS
@given(flows(), inputs_st, st.data())
def test_runstate_in_any_completion_order_matches_the_reference(case, inputs, data):
    specs, on_failure = case
    flow = to_flow(specs, on_failure)
    state = RunState(flow.validate_flow(), inputs)
    index = {s.id: i for i, s in enumerate(specs)}
    running: set[str] = set()
    cancelling: set[str] = set()

    def apply(actions) -> None:
        for sid in actions.run:
            state.mark_running(sid)
            running.add(sid)
        cancelling.update(actions.cancel_running)

    apply(state.start())
    steps_taken = 0
    while running:
        steps_taken += 1
        assert steps_taken <= 2 * len(specs)
        sid = data.draw(st.sampled_from(sorted(running)))
        running.discard(sid)
        # Every dependency is terminal before a step is released.
        for j in specs[index[sid]].deps:
            assert state.status[specs[j].id] not in ("pending", "queued", "running")
        if sid in cancelling:
            apply(state.finish(sid, "cancelled"))
            continue
        out = {index[k]: v for k, v in state.outputs.items()}
        status, value = call(specs[index[sid]], inputs, out)
        apply(state.finish(sid, status, value))
    assert state.finished
    assert not (cancelling - {s for s, v in state.status.items() if v == "cancelled"})
    check_against_reference(
        specs, on_failure, inputs, dict(state.status), dict(state.outputs), state.run_status()
    )
