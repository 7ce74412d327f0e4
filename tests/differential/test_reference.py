"""The reference interpreter on its own: Airflow's trigger tables, the predicate and
reference languages, and a few expectations worked out by hand. No backend runs here."""

from __future__ import annotations

import pytest

from executor import Flow, RetryPolicy, Step
from tests.support.rules import AIRFLOW_RULES

from .generator import _w, generate
from .reference import CANCEL, Outcome, evaluate, expect, resolve, trigger

S, F, U, K = "succeeded", "failed", "upstream_failed", "skipped"


@pytest.mark.parametrize(
    ("rule", "deps", "verdict"),
    [
        ("all_success", [S, S], "run"),
        ("all_success", [S, K], "skipped"),
        ("all_success", [K, F], "upstream_failed"),
        ("all_failed", [F, U], "run"),
        ("all_failed", [F, S], "skipped"),
        ("all_failed", [F, K], "skipped"),
        ("all_done", [F, K, U], "run"),
        ("all_skipped", [K, K], "run"),
        ("all_skipped", [K, F], "skipped"),
        ("one_success", [F, S], "run"),
        ("one_success", [K, K], "skipped"),
        ("one_success", [F, K], "upstream_failed"),
        ("one_failed", [S, U], "run"),
        ("one_failed", [S, K], "skipped"),
        ("one_done", [K, F], "run"),
        ("one_done", [K, U], "skipped"),
        ("none_failed", [S, K], "run"),
        ("none_failed", [S, U], "upstream_failed"),
        ("none_failed_min_one_success", [K, S], "run"),
        ("none_failed_min_one_success", [K, K], "skipped"),
        ("none_failed_min_one_success", [F, S], "upstream_failed"),
        ("none_skipped", [F, S], "run"),
        ("none_skipped", [S, K], "skipped"),
        ("always", [U, K], "run"),
    ],
)
def test_airflow_trigger_tables(rule: str, deps: list[str], verdict: str) -> None:
    assert trigger(rule, deps) == verdict


def test_predicates_and_references() -> None:
    data = {"k": 3, "tags": ["a"], "xs": [1, 2]}
    outs = {"a": {"n": 4, "xs": [5]}, "b": None}
    assert evaluate("steps.a.n > 3 and input.k <= 3", data, outs)
    assert evaluate("'a' in input.tags and len(input.xs) >= 2 and steps.b == None", data, outs)
    assert not evaluate("not input.k or steps.a.n != 4", data, outs)
    assert resolve(["$$x", "$steps.a.xs.0", "$steps.b", "$input.k"], data, outs) == [
        "$x",
        5,
        None,
        3,
    ]
    assert resolve({"v": "$item.n", "i": "$index"}, data, outs, ({"n": 7}, 2)) == {"v": 7, "i": 2}


def test_every_airflow_rule_is_interpreted_on_generated_flows() -> None:
    """The reference handles the full set DESIGN promises before Step accepts it."""
    used: set[str] = set()
    for seed in range(1, 120):
        case = generate(seed, rules=AIRFLOW_RULES)
        used |= {s.trigger for s in case.flow.steps}
        exp = expect(case.flow, {**case.inputs, "nonce": "-"}, case.cancel_after)
        assert exp.run_status
        assert all(e.outcomes or e.unknown for e in exp.steps.values())
    assert used == set(AIRFLOW_RULES)


def test_a_stop_never_allows_failed_with_retries_left() -> None:
    flow = Flow(
        name="kd1",
        steps=[
            Step(
                id="slow",
                tool="work",
                inputs=_w("slow", seconds=0.05, fail_before=99),
                retry=RetryPolicy(max_attempts=3),
            ),
            Step(id="bad", tool="work", inputs=_w("bad", fail_before=99)),
        ],
    )
    exp = expect(flow, {})
    assert Outcome("failed", 1, "ValueError") in exp.steps["bad"].outcomes
    slow = exp.steps["slow"].outcomes
    assert Outcome("cancelled", 1, CANCEL) in slow
    assert all(o.attempts == 3 for o in slow if o.status == "failed")
    assert exp.run_status == {"failed"}


def test_the_only_possible_first_failure_is_recorded_failed() -> None:
    flow = Flow(
        name="ff",
        steps=[
            Step(id="bad", tool="work", inputs=_w("bad", fail_before=99)),
            Step(id="slow", tool="work", inputs=_w("slow", seconds=2.0)),
        ],
    )
    exp = expect(flow, {})
    assert exp.steps["bad"].outcomes == {Outcome("failed", 1, "ValueError")}
    assert exp.steps["slow"].statuses() == {"cancelled"}


def test_without_a_stop_the_expectation_is_one_outcome_per_step() -> None:
    flow = Flow(
        name="cont",
        on_failure="continue",
        steps=[
            Step(id="bad", tool="work", inputs=_w("bad", fail_before=99)),
            Step(id="after", tool="work", inputs=_w("after", parts=["$steps.bad"])),
            Step(
                id="join",
                tool="work",
                inputs=_w("join", parts=["$steps.bad"]),
                trigger="all_done",
            ),
            Step(id="skip", tool="work", inputs=_w("skip"), when="input.k > 5"),
            Step(
                id="nf", tool="work", inputs=_w("nf", parts=["$steps.skip"]), trigger="none_failed"
            ),
        ],
    )
    exp = expect(flow, {"k": 1})
    assert exp.run_status == {"failed"}
    assert {sid: e.statuses() for sid, e in exp.steps.items()} == {
        "bad": {"failed"},
        "after": {"upstream_failed"},
        "join": {"succeeded"},
        "skip": {"skipped"},
        "nf": {"succeeded"},
    }
    assert all(len(e.outcomes) == 1 for e in exp.steps.values())


def test_cleanup_under_fail_fast_runs() -> None:
    flow = Flow(
        name="cleanup",
        steps=[
            Step(id="bad", tool="work", inputs=_w("bad", fail_before=99)),
            Step(id="c", tool="work", inputs=_w("c"), depends_on=["bad"], trigger="all_done"),
        ],
    )
    c = expect(flow, {}).steps["c"]
    assert c.cleanup and c.statuses() == {"succeeded"}


def test_a_map_over_a_skipped_or_failed_step_is_skipped() -> None:
    flow = Flow(
        name="map-src",
        on_failure="continue",
        steps=[
            Step(id="skip", tool="work", inputs=_w("skip"), when="input.k > 5"),
            Step(id="bad", tool="work", inputs=_w("bad", fail_before=99)),
            Step(
                id="m1",
                tool="work",
                map="$steps.skip.xs",
                inputs=_w("m1", parts=["$item"]),
                trigger="none_failed",
            ),
            Step(
                id="m2",
                tool="work",
                map="$steps.bad.xs",
                inputs=_w("m2", parts=["$item"]),
                trigger="all_done",
            ),
        ],
    )
    exp = expect(flow, {"k": 1})
    assert exp.steps["m1"].statuses() == {"skipped"}
    assert exp.steps["m2"].statuses() == {"skipped"}


def test_a_cancelled_dependency_counts_as_upstream_failed_for_a_spared_step() -> None:
    # bad fails at once, slow is cancelled by the stop while it runs: one_done sees
    # (failed, upstream_failed) and runs; all_failed too; none_skipped too.
    def spared(rule: str, deps: list[str]) -> set[str]:
        flow = Flow(
            name="spared",
            steps=[
                Step(id="bad", tool="work", inputs=_w("bad", fail_before=99)),
                Step(id="slow", tool="work", inputs=_w("slow", seconds=2.0)),
                Step(id="slow2", tool="work", inputs=_w("slow2", seconds=2.0)),
                Step(id="c", tool="work", inputs=_w("c"), depends_on=deps, trigger=rule),
            ],
        )
        return expect(flow, {}).steps["c"].statuses()

    assert spared("all_failed", ["bad", "slow"]) == {"succeeded"}
    assert spared("one_done", ["bad", "slow"]) == {"succeeded"}
    assert spared("one_done", ["slow", "slow2"]) == {"skipped"}
    assert spared("none_skipped", ["slow", "slow2"]) == {"succeeded"}
    assert spared("one_success", ["slow", "slow2"]) == {"cancelled"}
