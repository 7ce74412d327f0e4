"""The example flows in `examples/` run and produce what their tools say they should.

Expected outputs are computed here from the rules the example tools document (user n
has n orders, sentiment is positive words over sentiment words, ...), not copied from a
previous run.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from examples import flows
from examples import tools as ex
from executor import ExecutionResult, Flow, FlowExecutor, ToolRegistry, load_flow, load_tools
from executor.views.diagram import FORMATS, render_graph

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
FLOWS = sorted(EXAMPLES.glob("*.yaml"))


@pytest.fixture(scope="module")
def executor() -> Iterator[FlowExecutor]:
    with FlowExecutor(registry=load_tools("examples.tools")) as executor:
        yield executor


def run(executor: FlowExecutor, name: str, inputs: dict) -> ExecutionResult:
    result = executor.run(EXAMPLES / name, inputs, timeout=30)
    # Whatever the run did, its result survives a JSON round trip.
    assert ExecutionResult.model_validate_json(result.model_dump_json()) == result
    return result


def test_the_three_documented_examples_exist() -> None:
    assert {p.name for p in FLOWS} >= {"report.yaml", "branch.yaml", "map.yaml"}


@pytest.mark.parametrize("path", FLOWS, ids=lambda p: p.name)
def test_every_example_validates_against_its_tools_and_draws(path: Path) -> None:
    flow = load_flow(path)
    dag = flow.validate_flow(load_tools("examples.tools"))
    for fmt in FORMATS:
        text = render_graph(flow, fmt)
        for sid in dag.steps:
            assert sid in text


# report.yaml ---------------------------------------------------------------------------
def expected_report(user_ids: list[int]) -> dict[str, Any]:
    """The report the flow should render, from the documented rules of the tools."""
    lines: list[dict[str, Any]] = []
    for uid in user_ids:
        total = 0.0
        for k in range(uid):  # user n has n orders; order k is k+1 of sku (n+k) mod 4
            sku = ex.SKUS[(uid + k) % len(ex.SKUS)]
            total += (k + 1) * round(ex.PRICES[sku] * ex.CURRENCY_RATES["EUR"], 2)
        name = ex.NAMES[(uid - 1) % len(ex.NAMES)]
        lines.append({"user_id": uid, "name": name, "orders": uid, "total": round(total, 2)})
    return {
        "title": "Weekly order report",
        "currency": "EUR",
        "lines": lines,
        "grand_total": round(sum(line["total"] for line in lines), 2),
    }


def test_report_fans_out_per_user_and_joins(executor: FlowExecutor) -> None:
    user_ids = [1, 2, 3]
    result = run(executor, "report.yaml", {"user_ids": user_ids})

    assert result.status == "succeeded", result.error
    assert {sid: r.status for sid, r in result.steps.items()} == dict.fromkeys(
        ["users", "orders", "prices", "totals", "render", "archive"], "succeeded"
    )
    expected = expected_report(user_ids)
    output = dict(result.output)
    text = output.pop("text")
    assert output == expected
    assert text.splitlines()[0] == "Weekly order report"
    assert f"{expected['grand_total']:.2f} EUR" in text.splitlines()[-1]

    # The map steps made one call per user, in item order, with $item as the user id.
    users = result.steps["users"]
    assert users.items is not None and len(users.items) == len(user_ids)
    assert [i.inputs for i in users.items] == [{"user_id": u} for u in user_ids]
    assert [u["id"] for u in users.output] == user_ids
    orders = result.steps["orders"].output
    assert [len(o) for o in orders] == user_ids
    assert result.steps["archive"].output == "archive://reports/weekly-order-report"

    # The items ran concurrently: every one started before any of them finished.
    starts = [i.started_at for i in users.items if i.started_at is not None]
    ends = [i.finished_at for i in users.items if i.finished_at is not None]
    assert len(starts) == len(ends) == len(user_ids)
    assert max(starts) < min(ends)

    # Timing analysis: the run overlapped work and ends on the ordering-only step.
    assert result.critical_path[-1] == "archive"
    assert "render" in result.critical_path
    assert result.wall_time is not None and result.step_time > result.wall_time
    assert result.parallelism is not None and result.parallelism > 1.2


def test_report_with_an_unknown_user_fails_fast_after_retrying(executor: FlowExecutor) -> None:
    result = run(executor, "report.yaml", {"user_ids": [1, -2]})

    assert result.status == "failed"
    users = result.steps["users"]
    assert users.status == "failed"
    assert users.items is not None
    assert [i.status for i in users.items] == ["succeeded", "failed"]
    bad = users.items[1]
    assert len(bad.attempts) == 2  # fetch_user's RetryPolicy(max_attempts=2)
    assert bad.error is not None and bad.error.type == "LookupError"
    assert "no user with id -2" in (result.error or "")
    # fail_fast: nothing downstream of the failure ran to success.
    for sid in ("render", "archive"):
        assert result.steps[sid].status in ("cancelled", "upstream_failed")
    assert result.output is None


# branch.yaml ---------------------------------------------------------------------------
def expected_score(text: str) -> float:
    words = [w.strip(".,!?;:").lower() for w in text.split()]
    pos = sum(w in ex.POSITIVE for w in words)
    neg = sum(w in ex.NEGATIVE for w in words)
    return 0.5 if pos + neg == 0 else pos / (pos + neg)


@pytest.mark.parametrize(
    "text",
    [
        "great fast and clean tool",
        "slow and broken, a bug",
        "one good thing, two bad things and a crash",
        "nothing to see here",  # no sentiment words: 0.5, the approve side
    ],
)
def test_branch_runs_exactly_one_side_and_the_join(executor: FlowExecutor, text: str) -> None:
    result = run(executor, "branch.yaml", {"text": text})

    assert result.status == "succeeded", result.error
    score = expected_score(text)
    assert result.steps["score"].output["value"] == pytest.approx(score, abs=1e-4)
    approved = score >= 0.5
    taken, other = ("approve", "review") if approved else ("review", "approve")
    assert result.steps[taken].status == "succeeded"
    assert result.steps[other].status == "skipped"
    assert result.steps[other].output is None
    assert result.steps[other].attempts == []
    # The join ran although one of its dependencies was skipped (trigger none_failed).
    assert result.steps["decide"].status == "succeeded"
    skipped_input = "review" if approved else "approved"
    assert result.steps["decide"].inputs[skipped_input] is None
    assert result.output == {
        "action": "publish" if approved else "hold",
        "route": taken,
        "note": result.steps[taken].output,
    }
    if approved:
        assert result.output["note"] == f"approved automatically (score {score:.2f})"
    else:
        negative = [w.strip(".,!?;:").lower() for w in text.split()]
        negative = [w for w in negative if w in ex.NEGATIVE]
        assert result.output["note"] == f"review opened: {', '.join(negative)}"


# map.yaml ------------------------------------------------------------------------------
def test_map_calls_the_tool_once_per_item_with_item_and_index(executor: FlowExecutor) -> None:
    text = "Maps run every item at once, in order!"
    result = run(executor, "map.yaml", {"text": text})

    assert result.status == "succeeded", result.error
    words = [w.strip(".,!?;:").lower() for w in text.split()]
    assert result.steps["split"].output == words
    step = result.steps["words"]
    assert step.items is not None and len(step.items) == len(words)
    for i, (word, item) in enumerate(zip(words, step.items, strict=True)):
        assert item.status == "succeeded"
        assert item.inputs == {"word": word, "position": i}
        assert item.output == {
            "position": i,
            "word": word,
            "length": len(word),
            "vowels": sum(c in "aeiou" for c in word),
        }
    assert step.output == [item.output for item in step.items]
    longest = max(range(len(words)), key=lambda i: (len(words[i]), -i))
    assert result.output == {
        "label": "word statistics",
        "words": len(words),
        "letters": sum(len(w) for w in words),
        "vowels": sum(c in "aeiou" for w in words for c in w),
        "longest": words[longest],
        "order": words,
    }


def test_map_over_an_empty_text_gives_empty_stats(executor: FlowExecutor) -> None:
    result = run(executor, "map.yaml", {"text": "  "})
    assert result.status == "succeeded", result.error
    assert result.steps["words"].output == []
    assert result.output is not None
    assert result.output["words"] == 0 and result.output["longest"] is None


# The same flows written in Python (examples/flows.py) --------------------------------------
PYTHON_FLOWS = {
    "report.yaml": flows.user_report,
    "branch.yaml": flows.review_branch,
    "map.yaml": flows.word_map,
}


@pytest.mark.parametrize("path", FLOWS, ids=lambda p: p.name)
def test_every_example_is_a_python_flow_equal_to_its_yaml(path: Path) -> None:
    python_flow = PYTHON_FLOWS[path.name]  # a YAML example without its Python twin fails here
    assert python_flow == load_flow(path)
    assert Flow.from_yaml(python_flow.to_yaml()) == python_flow
    assert python_flow.input is not None  # the schema the CLI checks inputs against


def test_a_python_example_runs_like_its_yaml(executor: FlowExecutor) -> None:
    text = {"text": "maps run every item at once"}
    by_python = executor.run(flows.word_map, text, timeout=30)
    by_yaml = run(executor, "map.yaml", text)
    assert by_python.status == by_yaml.status == "succeeded"
    assert by_python.output == by_yaml.output
    assert by_python.output["order"] == ex.split_words(text["text"])


def test_the_readme_tutorial_works_as_written(tmp_path: Path, monkeypatch: Any) -> None:
    readme = (EXAMPLES.parent / "README.md").read_text(encoding="utf-8")
    blocks = {}
    for block in readme.split("```")[1::2]:
        lang, _, body = block.partition("\n")
        first = body.split("\n", 1)[0]
        if lang in ("python", "yaml") and first.startswith("# ") and "." in first:
            blocks.setdefault(first[2:].strip(), body)
    for name in ("mytools.py", "report.py", "report.yaml"):
        (tmp_path / name).write_text(blocks[name], encoding="utf-8")
    monkeypatch.syspath_prepend(str(tmp_path))
    registry = ToolRegistry()
    monkeypatch.setattr("executor.model.tools.default_registry", registry)
    report = importlib.import_module("report")
    assert report.user_report == load_flow(tmp_path / "report.yaml")
    with FlowExecutor(registry=registry) as executor:
        result = executor.run(report.user_report, {"user_id": 3}, timeout=30)
    assert (result.status, result.output) == ("succeeded", "user3: 3 orders")
