"""The pure scheduling core (`executor.run.scheduling`): no asyncio, no clocks, no tools."""

from __future__ import annotations

import itertools

import pytest

from executor import Flow, Step
from executor.run.scheduling import Actions, RunState, Scheduler
from tests.support.rules import AIRFLOW_RULES

TERMINAL = ("succeeded", "failed", "skipped", "upstream_failed", "cancelled")


def dag_of(*steps: Step, on_failure: str = "fail_fast"):
    return Flow(name="t", steps=list(steps), on_failure=on_failure).validate_flow()


RULES = AIRFLOW_RULES
# The rules a fail_fast stop spares (the README: they can fire when a dependency failed
# and none succeeded).
SPARED = {"all_failed", "all_done", "one_failed", "one_done", "none_skipped", "always"}
FAILED = {"failed", "upstream_failed"}


def join_dag(trigger: str, when: str | None = None, on_failure: str = "continue", n: int = 2):
    deps = ["a", "b", "e"][:n]
    return dag_of(
        *[Step(id=d, tool="t") for d in deps],
        Step(id="c", tool="t", depends_on=deps, trigger=trigger, when=when),
        on_failure=on_failure,
    )


def expected_decision(trigger: str, deps: tuple[str, ...]) -> str:
    """Airflow's documented rules, written as what each needs of the set of outcomes."""
    if "cancelled" in deps and trigger not in SPARED:
        return "cancelled"  # the run is stopping: nothing new starts
    seen = {"upstream_failed" if s == "cancelled" else s for s in deps}
    fires = {
        "all_success": seen <= {"succeeded"},
        "all_failed": seen <= FAILED,
        "all_done": True,
        "all_skipped": seen <= {"skipped"},
        "one_success": "succeeded" in seen,
        "one_failed": bool(seen & FAILED),
        "one_done": bool(seen & {"succeeded", "failed"}),
        "none_failed": not seen & FAILED,
        "none_failed_min_one_success": not seen & FAILED and "succeeded" in seen,
        "none_skipped": "skipped" not in seen,
        "always": True,
    }[trigger]
    if fires:
        return "run"
    # What could never fire because something failed upstream is upstream_failed.
    needs_no_failure = {"all_success", "none_failed", "none_failed_min_one_success"}
    if trigger in needs_no_failure and seen & FAILED:
        return "upstream_failed"
    if trigger == "one_success" and seen != {"skipped"}:
        return "upstream_failed"
    return "skipped"


# decide() ----------------------------------------------------------------------------
@pytest.mark.parametrize("trigger", RULES)
@pytest.mark.parametrize("n", [1, 2, 3])
def test_decide_trigger_rules(trigger, n):
    dag = join_dag(trigger, n=n)
    scheduler = Scheduler(dag)
    for outcomes in itertools.product(TERMINAL, repeat=n):
        statuses = dict(zip(["a", "b", "e"], outcomes, strict=False))
        res = scheduler.decide("c", statuses, {}, {})
        assert res.decision == expected_decision(trigger, outcomes), outcomes
        assert res.error is None


def test_every_rule_is_known_to_the_model():
    import typing

    assert set(typing.get_args(Step.model_fields["trigger"].annotation)) == set(RULES)


def test_survivors_and_clean_steps_by_rule():
    for rule in RULES:
        ff = Scheduler(join_dag(rule, on_failure="fail_fast"))
        assert ("c" in ff.survivors) == (rule in SPARED), rule
        assert not Scheduler(join_dag(rule)).survivors  # only fail_fast spares anything
        # Claimed ahead when its dependencies succeed: only if that makes it run.
        assert ("c" in ff.clean) == (expected_decision(rule, ("succeeded",)) == "run"), rule


@pytest.mark.parametrize("trigger", ["all_failed", "all_skipped", "one_failed"])
def test_rules_that_refuse_a_root_have_no_say(trigger):
    # Airflow: a task without upstream tasks passes its trigger rule.
    dag = dag_of(Step(id="r", tool="t", trigger=trigger))
    assert Scheduler(dag).decide("r", {}, {}, {}).decision == "run"


@pytest.mark.parametrize("trigger", RULES)
@pytest.mark.parametrize("source", TERMINAL)
def test_a_map_whose_source_did_not_succeed_is_skipped(trigger, source):
    dag = dag_of(
        Step(id="src", tool="t"),
        Step(id="m", tool="t", map="$steps.src.xs", inputs={"x": "$item"}, trigger=trigger),
        on_failure="continue",
    )
    res = Scheduler(dag).decide("m", {"src": source}, {}, {"src": None})
    verdict = expected_decision(trigger, (source,))
    # Its rule decides first; if that lets it run, it has nothing to map over.
    if source == "succeeded" or verdict != "run":
        assert res.decision == verdict
    else:
        assert res.decision == "skipped"


@pytest.mark.parametrize(("go", "decision"), [(True, "run"), (False, "skipped")])
def test_decide_when(go, decision):
    dag = join_dag("all_success", when="input.go and steps.a.n > 1")
    res = Scheduler(dag).decide(
        "c", {"a": "succeeded", "b": "succeeded"}, {"go": go}, {"a": {"n": 2}, "b": None}
    )
    assert res.decision == decision


def test_decide_when_error_fails_the_step():
    dag = join_dag("all_success", when="steps.a.missing > 1")
    res = Scheduler(dag).decide("c", {"a": "succeeded", "b": "succeeded"}, {}, {"a": {}})
    assert res.decision == "failed"
    assert res.error is not None and res.error.type == "PredicateError"
    assert "missing" in res.error.message


def test_decide_when_sees_none_for_steps_that_did_not_succeed():
    dag = join_dag("all_done", when="steps.a == None and steps.b == 3")
    # a failed but (wrongly) has an output lying around: the predicate must not see it.
    res = Scheduler(dag).decide("c", {"a": "failed", "b": "succeeded"}, {}, {"a": "stale", "b": 3})
    assert res.decision == "run"


def test_decide_trigger_before_when():
    # A skipped dependency skips an all_success step without evaluating its `when`
    # (which would fail on the missing output).
    dag = join_dag("all_success", when="steps.a.x > 0")
    res = Scheduler(dag).decide("c", {"a": "skipped", "b": "succeeded"}, {}, {})
    assert res.decision == "skipped"
    res = Scheduler(dag).decide("c", {"a": "failed", "b": "succeeded"}, {}, {})
    assert res.decision == "upstream_failed"


def test_decide_roots():
    dag = dag_of(Step(id="r", tool="t"), Step(id="w", tool="t", when="input.x == 1"))
    s = Scheduler(dag)
    assert s.decide("r", {}, {}, {}).decision == "run"
    assert s.decide("w", {}, {"x": 1}, {}).decision == "run"
    assert s.decide("w", {}, {"x": 2}, {}).decision == "skipped"


def test_decide_map_step_when():
    dag = dag_of(
        Step(id="whole", tool="t", map="$input.xs", when="input.go"),
        Step(id="per_item", tool="t", map="$input.xs", when="item > 1"),
    )
    s = Scheduler(dag)
    # A `when` not reading item/index decides the whole map step ...
    assert s.decide("whole", {}, {"go": False}, {}).decision == "skipped"
    assert s.decide("whole", {}, {"go": True}, {}).decision == "run"
    # ... one reading `item` filters items, so the step itself runs.
    assert s.decide("per_item", {}, {}, {}).decision == "run"


def test_stops_run_and_run_status():
    ff = Scheduler(join_dag("all_success", on_failure="fail_fast"))
    cont = Scheduler(join_dag("all_success", on_failure="continue"))
    assert ff.stops_run("failed")
    assert not ff.stops_run("upstream_failed") and not ff.stops_run("succeeded")
    assert not cont.stops_run("failed")
    rs = Scheduler.run_status
    assert rs({"a": "succeeded", "b": "skipped"}, None) == "succeeded"
    assert rs({"a": "succeeded", "b": "failed"}, None) == "failed"
    assert rs({"a": "succeeded", "b": "upstream_failed"}, None) == "failed"
    assert rs({"a": "succeeded", "b": "cancelled"}, "failed") == "failed"
    assert rs({"a": "failed", "b": "cancelled"}, "cancelled") == "cancelled"
    assert rs({"a": "succeeded", "b": "cancelled"}, "timed_out") == "timed_out"


# RunState ----------------------------------------------------------------------------
def diamond(on_failure: str = "fail_fast") -> RunState:
    dag = dag_of(
        Step(id="a", tool="t"),
        Step(id="b", tool="t", depends_on=["a"]),
        Step(id="c", tool="t", depends_on=["a"]),
        Step(id="d", tool="t", depends_on=["b", "c"]),
        on_failure=on_failure,
    )
    return RunState(dag, {})


def test_runstate_walks_a_diamond():
    st = diamond()
    assert st.run_status() == "running"
    acts = st.start()
    assert acts.run == ["a"] and acts.resolved == [] and acts.cancel_running == []
    assert st.status["a"] == "queued"
    st.mark_running("a")
    assert st.status["a"] == "running"
    acts = st.finish("a", "succeeded", 1)
    assert sorted(acts.run) == ["b", "c"]
    assert st.outputs == {"a": 1}
    # d waits for both b and c.
    assert st.finish("b", "succeeded", 2).run == []
    assert st.status["d"] == "pending"
    assert st.finish("c", "succeeded", 3).run == ["d"]
    assert not st.finished
    assert st.finish("d", "succeeded", 5).run == []
    assert st.finished
    assert st.run_status() == "succeeded"
    assert st.outputs == {"a": 1, "b": 2, "c": 3, "d": 5}


def test_runstate_only_keeps_outputs_of_succeeded_steps():
    st = diamond("continue")
    st.start()
    st.finish("a", "failed", "ignored")
    assert st.outputs == {}


def test_runstate_finish_of_terminal_step_is_a_noop():
    st = diamond()
    st.start()
    st.finish("a", "succeeded", 1)
    before = (dict(st.status), dict(st.outputs), dict(st.remaining), st.unfinished)
    acts = st.finish("a", "failed", 2)
    assert acts == Actions()
    assert (dict(st.status), dict(st.outputs), dict(st.remaining), st.unfinished) == before
    # A duplicate must not release dependents twice either.
    st.finish("b", "succeeded", 2)
    st.finish("b", "succeeded", 2)
    assert st.status["d"] == "pending"
    assert st.finish("c", "succeeded", 3).run == ["d"]


def test_runstate_mark_running_only_from_queued():
    st = diamond()
    st.start()
    st.mark_running("d")  # pending: not started yet
    assert st.status["d"] == "pending"
    st.finish("a", "succeeded")
    st.mark_running("a")  # terminal stays terminal
    assert st.status["a"] == "succeeded"


def test_fail_fast_stop_cancels_pending_and_reports_running():
    dag = dag_of(
        Step(id="bad", tool="t"),
        Step(id="run1", tool="t"),
        Step(id="queued1", tool="t"),
        Step(id="child", tool="t", depends_on=["run1"]),
        Step(id="after_bad", tool="t", depends_on=["bad"]),
    )
    st = RunState(dag, {})
    assert sorted(st.start().run) == ["bad", "queued1", "run1"]
    st.mark_running("bad")
    st.mark_running("run1")
    acts = st.finish("bad", "failed")
    assert st.stop_reason == "failed"
    assert acts.run == []
    assert acts.cancel_running == ["run1"]
    assert sorted(sid for sid, status, _ in acts.resolved) == ["after_bad", "child", "queued1"]
    assert {status for _, status, _ in acts.resolved} == {"cancelled"}
    assert st.status["run1"] == "running"
    assert not st.finished
    assert st.run_status() == "running"
    # The running step ends (cancelled); nothing new is released.
    acts = st.finish("run1", "cancelled")
    assert acts.run == [] and acts.resolved == []
    assert st.finished
    assert st.run_status() == "failed"


def test_fail_fast_second_failure_after_stop():
    dag = dag_of(
        Step(id="x", tool="t"), Step(id="y", tool="t"), Step(id="z", tool="t", depends_on=["y"])
    )
    st = RunState(dag, {})
    st.start()
    st.mark_running("x")
    st.mark_running("y")
    st.finish("x", "failed")
    acts = st.finish("y", "failed")
    assert acts.run == [] and acts.cancel_running == []
    assert st.status == {"x": "failed", "y": "failed", "z": "cancelled"}
    assert st.run_status() == "failed"
    assert st.failed == ["x", "y"]  # in the order they were recorded


def cleanup_dag():
    """`work` fails; `slow` runs alongside; `cleanup` (all_done) waits for both, and
    `report` (all_success) waits for `cleanup`."""
    return dag_of(
        Step(id="work", tool="t"),
        Step(id="slow", tool="t"),
        Step(id="cleanup", tool="t", depends_on=["work", "slow"], trigger="all_done"),
        Step(id="report", tool="t", depends_on=["cleanup"]),
    )


def test_a_fail_fast_stop_spares_a_step_whose_rule_fires_on_failures():
    st = RunState(cleanup_dag(), {})
    st.start()
    st.mark_running("work")
    st.mark_running("slow")
    acts = st.finish("work", "failed")
    assert st.stop_reason == "failed"
    # Not started and not a survivor: cancelled at once; the survivor waits for `slow`.
    assert [(sid, status) for sid, status, _ in acts.resolved] == [("report", "cancelled")]
    assert acts.cancel_running == ["slow"]
    assert st.status["cleanup"] == "pending"
    acts = st.finish("slow", "cancelled")
    assert acts.run == ["cleanup"]  # its dependencies are done: it runs, after the stop
    assert not st.finished
    st.mark_running("cleanup")
    acts = st.finish("cleanup", "succeeded")
    assert st.finished and st.run_status() == "failed"
    assert st.status == {
        "work": "failed",
        "slow": "cancelled",
        "cleanup": "succeeded",
        "report": "cancelled",
    }


def test_a_survivor_whose_dependencies_the_stop_cancelled_runs_at_once():
    st = RunState(cleanup_dag(), {})
    st.start()
    st.mark_running("work")  # `slow` is still queued when `work` fails
    acts = st.finish("work", "failed")
    assert "cleanup" in acts.run
    assert st.status["slow"] == "cancelled"


@pytest.mark.parametrize("reason", ["cancelled", "timed_out"])
def test_a_cancel_or_timeout_spares_nothing(reason):
    st = RunState(cleanup_dag(), {})
    st.start()
    acts = st.stop(reason)
    assert acts.run == []
    assert set(st.status.values()) == {"cancelled"}


def test_settled_cancels_what_ends_after_a_stop_unless_it_survives():
    sched = Scheduler(cleanup_dag())
    assert sched.settled("slow", "succeeded", None) == "succeeded"
    assert sched.settled("slow", "succeeded", "failed") == "cancelled"
    assert sched.settled("slow", "failed", "cancelled") == "cancelled"
    assert sched.settled("cleanup", "failed", "failed") == "failed"  # a survivor's own
    assert sched.settled("cleanup", "succeeded", "cancelled") == "cancelled"


def test_the_run_error_names_the_first_failure_in_time_and_counts_the_others():
    sched = Scheduler(cleanup_dag())
    from executor import StepError

    late = StepError(type="ValueError", message="late")
    assert sched.run_error("failed", "slow", 2, late) == (
        "step 'slow' failed: ValueError: late (1 other step failed too)"
    )
    assert sched.run_error("failed", "slow", 3, late).endswith("(2 other steps failed too)")
    assert sched.run_error("failed", "work", 1) == "step 'work' failed"
    assert sched.run_error("failed", None) == "run failed"
    assert sched.run_error("cancelled", "work", 1, late) == "run cancelled"
    assert sched.run_error("succeeded", None) is None


def test_continue_propagates_upstream_failed_only_downstream():
    dag = dag_of(
        Step(id="bad", tool="t"),
        Step(id="u1", tool="t", depends_on=["bad"]),
        Step(id="u2", tool="t", depends_on=["u1"]),
        Step(id="clean", tool="t", depends_on=["u2"], trigger="all_done"),
        Step(id="ok", tool="t"),
        on_failure="continue",
    )
    st = RunState(dag, {})
    st.start()
    acts = st.finish("bad", "failed")
    assert acts.resolved == [("u1", "upstream_failed", None), ("u2", "upstream_failed", None)]
    assert acts.run == ["clean"]
    assert st.stop_reason is None
    assert st.status["ok"] == "queued"
    st.finish("clean", "succeeded")
    st.finish("ok", "succeeded")
    assert st.run_status() == "failed"


def test_when_false_at_start_skips_and_cascades():
    dag = dag_of(
        Step(id="gate", tool="t", when="input.go"),
        Step(id="s1", tool="t", depends_on=["gate"]),
        Step(id="join", tool="t", depends_on=["s1"], trigger="none_failed"),
    )
    st = RunState(dag, {"go": False})
    acts = st.start()
    assert [(s, d) for s, d, _ in acts.resolved] == [("gate", "skipped"), ("s1", "skipped")]
    assert acts.run == ["join"]
    st.finish("join", "succeeded")
    assert st.run_status() == "succeeded"


def test_predicate_error_fails_and_stops_in_fail_fast():
    dag = dag_of(
        Step(id="a", tool="t"),
        Step(id="b", tool="t", depends_on=["a"], when="steps.a.k > 0"),
        Step(id="other", tool="t"),
    )
    st = RunState(dag, {})
    st.start()
    st.mark_running("other")
    acts = st.finish("a", "succeeded", {})
    assert acts.resolved[0][:2] == ("b", "failed")
    assert acts.resolved[0][2].type == "PredicateError"
    assert acts.cancel_running == ["other"]
    assert st.stop_reason == "failed"


def test_stop_cancels_and_is_idempotent():
    st = diamond()
    st.start()
    st.mark_running("a")
    acts = st.stop("cancelled")
    assert acts.cancel_running == ["a"]
    assert sorted(s for s, _, _ in acts.resolved) == ["b", "c", "d"]
    assert st.stop("timed_out") == Actions()  # first reason wins
    st.finish("a", "cancelled")
    assert st.run_status() == "cancelled"
    assert st.stop("cancelled") == Actions()


def test_stop_after_the_end_changes_nothing():
    st = diamond()
    st.start()
    for sid in ("a", "b", "c", "d"):
        st.finish(sid, "succeeded")
    assert st.stop("timed_out") == Actions()
    assert st.run_status() == "succeeded"


def test_timed_out_status():
    st = diamond()
    st.start()
    st.stop("timed_out")
    st.finish("a", "cancelled")
    assert st.run_status() == "timed_out"


def test_skip_cascade_down_a_long_chain_is_not_recursive():
    n = 3000
    steps = [Step(id="s0", tool="t", when="input.go")]
    steps += [Step(id=f"s{i}", tool="t", depends_on=[f"s{i - 1}"]) for i in range(1, n)]
    st = RunState(dag_of(*steps), {"go": False})
    acts = st.start()
    assert len(acts.resolved) == n
    assert st.finished and st.run_status() == "succeeded"
