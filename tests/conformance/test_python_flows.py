"""Python flows (`@flow`) on every backend: the same result as their YAML, inputs checked first."""

from __future__ import annotations

import pytest

from executor import Flow, FlowValidationError, flow, index, item

from . import tools as t
from .tools import read_lines

pytestmark = pytest.mark.timeout(60)


@flow
def profile_totals(name: str, tags: list[str], extra: int = 0):
    """A profile, one echo per order, a total of their quantities plus `extra`."""
    p = t.profile(name=name, tags=tags)
    qtys = t.echo.options(id="qtys").map(p.orders, value=item.qty)
    labels = t.concat.options(id="labels")(parts=[p.name, p.tags[-1]], sep="/")
    total = t.total(values=qtys)
    return {
        "total": t.add(a=total, b=extra),
        "labels": labels,
        "positions": t.echo.options(id="positions").map(p.orders, value=index),
    }


YAML = """
name: profile_totals
description: A profile, one echo per order, a total of their quantities plus `extra`.
input:
  type: object
  properties:
    name: {type: string}
    tags: {type: array, items: {type: string}}
    extra: {type: integer, default: 0}
  required: [name, tags]
  additionalProperties: false
steps:
  - {id: profile, tool: profile, inputs: {name: $input.name, tags: $input.tags}}
  - {id: qtys, tool: echo, map: $steps.profile.orders, inputs: {value: $item.qty}}
  - id: labels
    tool: concat
    inputs: {parts: [$steps.profile.name, $steps.profile.tags.-1], sep: /}
  - {id: total, tool: total, inputs: {values: $steps.qtys}}
  - {id: add, tool: add, inputs: {a: $steps.total, b: $input.extra}}
  - {id: positions, tool: echo, map: $steps.profile.orders, inputs: {value: $index}}
output: {total: $steps.add, labels: $steps.labels, positions: $steps.positions}
"""


def test_a_python_flow_runs_as_its_yaml_does(backend):
    assert profile_totals == Flow.from_yaml(YAML)
    result = backend.run(profile_totals, {"name": "ann", "tags": ["x", "y"]})
    assert result.status == "succeeded", result.error
    # profile makes orders with qty 0, 1, 2; extra defaults to 0.
    assert result.output == {"total": 3, "labels": "ann/y", "positions": [0, 1, 2]}
    assert result.inputs == {"name": "ann", "tags": ["x", "y"], "extra": 0}
    again = backend.run(Flow.from_yaml(YAML), {"name": "ann", "tags": ["x", "y"], "extra": 4})
    assert again.output["total"] == 7
    assert set(again.steps) == set(result.steps)


def test_an_input_that_does_not_fit_the_schema_is_refused_before_anything_runs(backend, files):
    marker = files("ran")

    @flow
    def guarded(count: int, label: str = "x"):
        return t.sleep(value=count, marker=marker)

    before = _keys(backend)
    with pytest.raises(FlowValidationError) as caught:
        backend.submit(guarded, {"count": "many"})
    assert caught.value.problems == ["input.count: expected integer, got string"]
    with pytest.raises(FlowValidationError, match="'count' is required"):
        backend.run(guarded, {})
    assert read_lines(marker) == []
    # Nothing was written for the refused runs.
    assert _keys(backend) == before
    assert backend.run(guarded, {"count": 2}).output == 2


def _keys(backend) -> int | None:
    redis = getattr(backend.executor, "_redis", None)
    if redis is None:
        return None
    return sum(1 for key in redis.client.scan_iter("*") if "dagrelay" in str(key))
