"""`current_step()`: a running tool knows its run, step, attempt, map item and deadline."""

from __future__ import annotations

import pytest

from executor import Flow, RetryPolicy, Step, current_step

pytestmark = pytest.mark.timeout(60)

RETRY = RetryPolicy(max_attempts=2)


@pytest.mark.parametrize("tool", ["context_sync", "context_async"])
def test_a_tool_reads_the_call_it_serves(backend, tool: str) -> None:
    flow = Flow(
        name="ctx",
        steps=[
            Step(id="plain", tool=tool, timeout=30),
            Step(id="retried", tool=tool, inputs={"fail_first": True}, retry=RETRY),
            Step(id="items", tool=tool, map="$input.xs", inputs={"value": "$item"}, timeout=30),
        ],
    )
    result = backend.run(flow, {"xs": ["a", "b", "c"]})
    assert result.status == "succeeded", result.error
    rid = result.run_id
    plain = result.steps["plain"].output
    assert plain == {
        "run_id": rid,
        "flow": "ctx",
        "step_id": "plain",
        "attempt": 1,
        "item": None,
        "worker": True,
        "deadline_ahead": True,
        "log_ids": [rid, "plain"],
    }
    retried = result.steps["retried"].output
    assert (retried["attempt"], retried["deadline_ahead"]) == (2, False)  # no timeout
    items = result.steps["items"].output
    assert [(o["step_id"], o["item"], o["attempt"]) for o in items] == [
        ("items", 0, 1),
        ("items", 1, 1),
        ("items", 2, 1),
    ]
    assert all(o["run_id"] == rid and o["deadline_ahead"] for o in items)


def test_outside_a_run_there_is_no_current_step() -> None:
    assert current_step() is None
