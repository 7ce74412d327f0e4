"""Every trigger rule against every outcome of its dependencies: the README's table.

Each scenario is one flow: two dependencies `a` and `b` that end as the scenario says,
and one join per trigger rule (`j_<rule>`, depending on both) that echoes "ran" when
its rule fires. `TABLE` is written out by hand from the README (Airflow's meaning): a
change of one cell on either backend fails the scenario, naming the rule.
"""

from __future__ import annotations

from typing import Any

import pytest

from executor import Flow, Step
from tests.support.rules import AIRFLOW_RULES

from .support import statuses

pytestmark = pytest.mark.timeout(90)
LONG = 5.0  # a sleep the fail_fast stop cuts short

RULES = AIRFLOW_RULES

# How a dependency ends: a step (and what it needs) that comes to that.
_OK = {"tool": "echo", "inputs": {"value": 1}}
_FAIL = {"tool": "fail", "inputs": {"message": "nope"}}
_SKIP = {"tool": "echo", "inputs": {"value": 1}, "when": "1 == 2"}
_UPSTREAM_FAILED = {"tool": "echo", "inputs": {"value": "$steps.x"}}  # x fails
_LONG = {"tool": "sleep", "inputs": {"seconds": LONG}}  # cancelled while it runs
_QUICK_OK = {"tool": "echo", "inputs": {"value": 1}}  # done before x fails (0.3 s)

# scenario: (a, b, on_failure, x: a step the dependencies do not need, or None)
SCENARIOS: dict[str, tuple[dict[str, Any], dict[str, Any], str, dict[str, Any] | None]] = {
    "ok+ok": (_OK, _OK, "continue", None),
    "ok+failed": (_OK, _FAIL, "continue", None),
    "ok+skipped": (_OK, _SKIP, "continue", None),
    "skipped+skipped": (_SKIP, _SKIP, "continue", None),
    "failed+failed": (_FAIL, _FAIL, "continue", None),
    "skipped+failed": (_SKIP, _FAIL, "continue", None),
    "failed+upstream_failed": (_FAIL, _UPSTREAM_FAILED, "continue", _FAIL),
    "skipped+upstream_failed": (_SKIP, _UPSTREAM_FAILED, "continue", _FAIL),
    # fail_fast: the stop cancels b while it runs (and a in the last one); the joins
    # whose rule can fire on failures are spared and see `cancelled` as upstream_failed.
    "ff:failed+cancelled": (
        {"tool": "fail", "inputs": {"seconds": 0.05}},
        _LONG,
        "fail_fast",
        None,
    ),
    "ff:ok+cancelled": (
        _QUICK_OK,
        _LONG,
        "fail_fast",
        {"tool": "fail", "inputs": {"seconds": 0.3}},
    ),
    "ff:cancelled+cancelled": (
        _LONG,
        _LONG,
        "fail_fast",
        {"tool": "fail", "inputs": {"seconds": 0.05}},
    ),
}

R, K, U, C = "succeeded", "skipped", "upstream_failed", "cancelled"  # R: the rule fired
COLUMNS = tuple(SCENARIOS)
# rule: what its join becomes in each scenario, in COLUMNS order.
TABLE: dict[str, tuple[str, ...]] = {
    #                             ok+ok ok+f ok+sk sk+sk f+f sk+f f+uf sk+uf ff:f+c ff:ok+c ff:c+c
    "all_success": (R, U, K, K, U, U, U, U, C, C, C),
    "all_failed": (K, K, K, K, R, K, R, K, R, K, R),
    "all_done": (R, R, R, R, R, R, R, R, R, R, R),
    "all_skipped": (K, K, K, R, K, K, K, K, C, C, C),
    "one_success": (R, R, R, K, U, U, U, U, C, C, C),
    "one_failed": (K, R, K, K, R, R, R, R, R, R, R),
    "one_done": (R, R, R, K, R, R, R, K, R, R, K),
    "none_failed": (R, U, R, R, U, U, U, U, C, C, C),
    "none_failed_min_one_success": (R, U, R, K, U, U, U, U, C, C, C),
    "none_skipped": (R, R, K, K, R, K, R, K, R, R, R),
    "always": (R, R, R, R, R, R, R, R, R, R, R),
}


def scenario_flow(name: str) -> Flow:
    a, b, on_failure, x = SCENARIOS[name]
    steps = [Step(id="x", **x)] if x is not None else []
    steps += [Step(id="a", **a), Step(id="b", **b)]
    steps += [
        Step(
            id=f"j_{rule}",
            tool="echo",
            inputs={"value": "ran"},
            depends_on=["a", "b"],
            trigger=rule,
        )
        for rule in RULES
    ]
    return Flow(
        name=f"triggers-{name.replace(':', '-').replace('+', '-')}",
        steps=steps,
        on_failure=on_failure,
    )


def test_the_table_has_every_rule_and_scenario():
    import typing

    assert set(TABLE) == set(typing.get_args(Step.model_fields["trigger"].annotation))
    assert all(len(row) == len(COLUMNS) for row in TABLE.values())


@pytest.mark.parametrize("scenario", COLUMNS)
def test_every_rule_in_scenario(backend, scenario):
    r = backend.run(scenario_flow(scenario))
    got = statuses(r)
    # The dependencies ended as the scenario says.
    ends = scenario.removeprefix("ff:").split("+")
    dep = {"ok": "succeeded"}
    assert (got["a"], got["b"]) == tuple(dep.get(e, e) for e in ends)
    col = COLUMNS.index(scenario)
    wrong = {
        rule: (got[f"j_{rule}"], row[col])
        for rule, row in TABLE.items()
        if got[f"j_{rule}"] != row[col]
    }
    assert not wrong, f"{scenario}: rule -> (got, README table): {wrong}"
    for rule, row in TABLE.items():
        rec = r.steps[f"j_{rule}"]
        if row[col] == R:
            assert rec.output == "ran" and len(rec.attempts) == 1
        else:
            assert rec.attempts == [] and rec.started_at is None
    something_failed = "failed" in scenario or "cancelled" in scenario
    assert r.status == ("failed" if something_failed else "succeeded")


# Maps whose list comes from a step that did not succeed ----------------------------
@pytest.mark.parametrize(
    ("source", "trigger"),
    [
        (_SKIP, "all_success"),
        (_SKIP, "none_failed"),
        (_SKIP, "all_done"),
        (_FAIL, "all_done"),
        (_FAIL, "one_failed"),
    ],
)
def test_a_map_over_a_step_that_did_not_succeed_is_skipped(backend, source, trigger):
    flow = Flow(
        name="map-over-nothing",
        steps=[
            Step(id="src", **source),
            Step(id="m", tool="echo", map="$steps.src", inputs={"value": "$item"}, trigger=trigger),
            Step(id="after", tool="echo", inputs={"value": "$steps.m"}, trigger="none_failed"),
        ],
        on_failure="continue",
    )
    r = backend.run(flow)
    m = r.steps["m"]
    assert m.status == "skipped"
    assert m.attempts == [] and m.output is None and m.error is None
    # What reads the skipped map (a none_failed join) sees None.
    assert r.steps["after"].status == "succeeded" and r.steps["after"].output is None
    assert r.status == ("succeeded" if source is _SKIP else "failed")


def test_a_map_over_a_step_that_succeeded_runs_under_any_rule(backend):
    flow = Flow(
        name="map-over-list",
        steps=[
            Step(id="src", tool="echo", inputs={"value": [1, 2]}),
            Step(
                id="m",
                tool="echo",
                map="$steps.src",
                inputs={"value": "$item"},
                trigger="none_failed_min_one_success",
            ),
        ],
        on_failure="continue",
    )
    r = backend.run(flow)
    assert r.steps["m"].status == "succeeded" and r.steps["m"].output == [1, 2]


def test_an_all_failed_handler_after_a_chain(backend):
    # upstream_failed counts as failed: the handler of a broken chain runs, and what
    # depends on the handler sees its output.
    flow = Flow(
        name="handler",
        steps=[
            Step(id="load", tool="fail", inputs={"message": "bad row"}),
            Step(id="transform", tool="echo", inputs={"value": "$steps.load"}),
            Step(
                id="alert",
                tool="echo",
                inputs={"value": "alert"},
                depends_on=["transform"],
                trigger="all_failed",
            ),
            Step(id="report", tool="echo", inputs={"value": "$steps.alert"}),
        ],
        on_failure="continue",
    )
    r = backend.run(flow)
    assert statuses(r) == {
        "load": "failed",
        "transform": "upstream_failed",
        "alert": "succeeded",
        "report": "succeeded",
    }
    assert r.steps["report"].output == "alert"
