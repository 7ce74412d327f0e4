"""`dagrelay report`, `run --report`, the failed-step panels of `run`/`result`, and live
progress (`run` and `status --follow`) on a terminal and off one.

The distributed forms (`report RUN --redis`, `run --redis --report`) are tested with a
real worker in tests/test_cli_distributed.py.
"""

from __future__ import annotations

import io
import json
import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console
from typer.testing import CliRunner

from executor import ExecutionResult, RunEvent, RunHandle, StepRecord
from executor.cli import runs as cli_runs_module
from executor.cli.live import watch
from executor.cli.main import app
from executor.views.report import event_line

ROOT = Path(__file__).resolve().parent.parent
REPORT = str(ROOT / "examples" / "report.yaml")
REPORT_INPUT = '{"user_ids": [1, 2, 3]}'
ANSI = re.compile(r"\x1b\[")


@pytest.fixture
def runner(monkeypatch: pytest.MonkeyPatch) -> CliRunner:
    for var in ("DAGRELAY_TOOLS", "DAGRELAY_REDIS_URL", "DAGRELAY_DEBUG"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("COLUMNS", "200")
    return CliRunner()


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A result saved by `dagrelay run --json`."""
    res = CliRunner().invoke(
        app, ["run", REPORT, "--tools", "examples.tools", "-i", REPORT_INPUT, "--json"]
    )
    assert res.exit_code == 0, res.output
    path = tmp_path_factory.mktemp("saved") / "result.json"
    path.write_text(res.stdout)
    return path


def one_error_line(stderr: str, *parts: str) -> None:
    assert "Traceback" not in stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), stderr
    for part in parts:
        assert part in lines[0], (part, lines[0])


# report --result -----------------------------------------------------------------------
def test_report_from_a_saved_result(runner: CliRunner, saved: Path, tmp_path: Path) -> None:
    result = ExecutionResult.model_validate_json(saved.read_text())
    out = tmp_path / "run.html"
    res = runner.invoke(app, ["report", "--result", str(saved), "-o", str(out)])
    assert res.exit_code == 0, res.output
    assert res.stderr.strip() == f"wrote {out} (html, run {result.run_id} succeeded)"
    page = out.read_text()
    assert page == result.to_html() or page.startswith("<!doctype html>")
    for sid in ("users", "orders", "prices", "totals", "render", "archive"):
        assert f">{sid}" in page
    assert "Critical path" in page and "<svg" in page


def test_report_svg_stdout_and_default_path(
    runner: CliRunner, saved: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    result = ExecutionResult.model_validate_json(saved.read_text())
    svg = tmp_path / "chart.SVG"
    res = runner.invoke(app, ["report", "--result", str(saved), "-o", str(svg)])
    assert res.exit_code == 0, res.output
    assert svg.read_text().startswith("<svg ") and "(svg," in res.stderr

    res = runner.invoke(app, ["report", "--result", str(saved), "-o", "-"])
    assert res.exit_code == 0 and res.stdout.startswith("<!doctype html>") and res.stderr == ""

    monkeypatch.chdir(tmp_path)
    res = runner.invoke(app, ["report", "--result", str(saved)])
    assert res.exit_code == 0, res.output
    assert (tmp_path / f"{result.run_id}.html").exists()


def test_report_usage_errors(runner: CliRunner, saved: Path, tmp_path: Path) -> None:
    res = runner.invoke(app, ["report"])
    assert res.exit_code == 2
    one_error_line(res.stderr, "RUN", "--result")
    res = runner.invoke(app, ["report", "some-run", "--result", str(saved)])
    assert res.exit_code == 2
    one_error_line(res.stderr, "one of them")
    res = runner.invoke(app, ["report", "--result", str(tmp_path / "nope.json")])
    assert res.exit_code == 2
    one_error_line(res.stderr, "nope.json", "no such file")
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"run_id": "x"}))
    res = runner.invoke(app, ["report", "--result", str(bad)])
    assert res.exit_code == 2
    one_error_line(res.stderr, "bad.json", "not an ExecutionResult")
    res = runner.invoke(app, ["report", "--result", str(tmp_path)])
    assert res.exit_code == 2
    one_error_line(res.stderr, "directory")
    res = runner.invoke(
        app, ["report", "--result", str(saved), "-o", str(tmp_path / "no" / "dir" / "x.html")]
    )
    assert res.exit_code == 2
    one_error_line(res.stderr, "cannot write")
    res = runner.invoke(app, ["report", "bad id!"])
    assert res.exit_code == 2
    one_error_line(res.stderr, "invalid run id")


def test_report_of_a_run_in_an_unreachable_redis(runner: CliRunner) -> None:
    res = runner.invoke(app, ["report", "some-run", "--redis", "redis://:secret@127.0.0.1:1/0"])
    assert res.exit_code == 2
    one_error_line(res.stderr, "cannot reach Redis", "127.0.0.1:1")
    assert "secret" not in res.stderr


# run --report -----------------------------------------------------------------------------
def test_run_writes_the_report(runner: CliRunner, tmp_path: Path) -> None:
    out = tmp_path / "run.html"
    res = runner.invoke(
        app, ["run", REPORT, "--tools", "examples.tools", "-i", REPORT_INPUT, "--report", str(out)]
    )
    assert res.exit_code == 0, res.output
    assert res.stderr.strip() == f"wrote {out} (html)"
    page = out.read_text()
    assert "user_report" in page and ">prices" in page and "succeeded" in page

    # With --json, stdout stays the JSON alone; the report is written all the same.
    svg = tmp_path / "run.svg"
    res = runner.invoke(
        app,
        ["run", REPORT, "-t", "examples.tools", "-i", REPORT_INPUT, "--json", "--report", str(svg)],
    )
    assert res.exit_code == 0, res.output
    result = ExecutionResult.model_validate_json(res.stdout)
    assert result.run_id in svg.read_text()


def test_a_failed_run_writes_its_report_and_shows_the_error(
    runner: CliRunner, tmp_path: Path
) -> None:
    flow = tmp_path / "fails.yaml"
    flow.write_text(
        "name: fails\n"
        "steps:\n"
        "  - id: users\n"
        "    tool: fetch_user\n"  # retried once (its policy), then fails
        "    inputs: {user_id: 0}\n"
    )
    out = tmp_path / "fails.html"
    res = runner.invoke(app, ["run", str(flow), "-t", "examples.tools", "--report", str(out)])
    assert res.exit_code == 1
    # stderr: the report line, then the one error line.
    assert res.stderr.splitlines()[0] == f"wrote {out} (html)"
    assert res.stderr.splitlines()[1].startswith("error: ")
    panel = res.stdout[res.stdout.index("✗ users failed") :]
    assert re.search(r"tool fetch_user · attempt 2 of 2 · worker \S+", panel)
    assert "LookupError: no user with id 0" in panel and "Traceback" in panel
    assert "retried: users attempt 1 failed: LookupError: no user with id 0" in res.stdout
    page = out.read_text()
    assert '<span class="type">LookupError</span>: no user with id 0' in page
    assert "attempt 2 of 2" in page and "attempt failed, retried" in page


# Live progress -------------------------------------------------------------------------------
T0 = datetime(2025, 1, 1, tzinfo=UTC)


class ScriptedHandle(RunHandle):
    """A run that replays a fixed list of events."""

    def __init__(self, events: list[RunEvent], result: ExecutionResult) -> None:
        self.run_id = result.run_id
        self._events = events
        self._result = result

    def status(self) -> Any:
        return self._result.status

    def wait(self, timeout: float | None = None) -> ExecutionResult:
        return self._result

    def result(self) -> ExecutionResult:
        return self._result

    def cancel(self) -> None:
        pass

    def events(self, timeout: float | None = None) -> Iterator[RunEvent]:
        yield from self._events


def scripted() -> ScriptedHandle:
    def ev(step: str | None, status: str, s: float, attempt: int | None = None) -> RunEvent:
        return RunEvent("r1", step, status, T0 + timedelta(seconds=s), attempt, None, "w:1")

    events = [
        ev("a", "queued", 0.0),
        ev("a", "running", 0.01, 1),
        ev("b", "queued", 0.01),
        ev("a", "succeeded", 0.2, 1),
        ev("b", "running", 0.21, 1),
        ev("b", "failed", 0.3, 1),
        ev(None, "failed", 0.31),
    ]
    result = ExecutionResult(
        run_id="r1",
        flow_name="two",
        flow_version="1",
        status="failed",
        started_at=T0,
        finished_at=T0 + timedelta(seconds=0.31),
        wall_time=0.31,
        steps={
            "a": StepRecord(step_id="a", tool="t", status="succeeded"),
            "b": StepRecord(step_id="b", tool="t", status="failed"),
        },
    )
    return ScriptedHandle(events, result)


def test_off_a_terminal_follow_prints_plain_lines_only() -> None:
    handle = scripted()
    buffer = io.StringIO()
    console = Console(file=buffer, force_terminal=False, width=120)
    watch(handle, console, "two", ["a", "b"], lines=True)
    expected = [event_line(e).plain for e in handle._events]
    assert buffer.getvalue().splitlines() == expected
    assert not ANSI.search(buffer.getvalue()) and "━" not in buffer.getvalue()
    # Without lines (what `run` asks for), nothing at all.
    quiet = io.StringIO()
    watch(scripted(), Console(file=quiet, force_terminal=False), "two", ["a", "b"])
    assert quiet.getvalue() == ""


def test_on_a_terminal_follow_adds_a_live_progress_bar() -> None:
    buffer = io.StringIO()
    console = Console(file=buffer, force_terminal=True, width=140)
    started = datetime.now(UTC) - timedelta(seconds=3)
    watch(scripted(), console, "two [bold]x", ["a", "b"], lines=True, started=started)
    text = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", buffer.getvalue()).replace("\r", "\n")
    assert "two [bold]x" in text  # the title is text, not markup
    assert "2/2" in text and "failed 1" in text and "queued" in text
    assert re.search(r"\b3\.\d\d s\b", text)  # time since the run started, not since now
    for line in ("a #1 succeeded", "b #1 failed", "run failed"):
        assert line in text


def test_status_follow_off_a_terminal_is_plain_lines(
    runner: CliRunner, monkeypatch: pytest.MonkeyPatch
) -> None:
    handle = scripted()

    class FakeExecutor:
        def __enter__(self) -> FakeExecutor:
            return self

        def __exit__(self, *exc: object) -> None:
            pass

        def get_run(self, run_id: str) -> RunHandle:
            assert run_id == "r1"
            return handle

    monkeypatch.setattr(cli_runs_module, "make_executor", lambda *a, **k: FakeExecutor())
    res = runner.invoke(app, ["status", "r1", "--follow", "--redis", "redis://127.0.0.1:1/0"])
    assert res.exit_code == 1  # the run failed
    lines = res.stdout.splitlines()
    assert lines[:-1] == [event_line(e).plain for e in handle._events]
    assert lines[-1].startswith("r1  two v1  failed  2 steps: 1 succeeded, 1 failed")
    assert not ANSI.search(res.stdout)


def test_tracebacks_start_at_the_tools_own_frames() -> None:
    from executor.views.report import tool_frames

    tb = (
        "Traceback (most recent call last):\n"
        '  File "/srv/app/workers/runtime.py", line 258, in _attempt\n'
        "    output = tool.dump_output(self._call(tool, kwargs, timeout, tracked))\n"
        "             ^^^^^^^^^^^^^^^^\n"
        '  File "/usr/lib/python3.11/asyncio/base_events.py", line 653, in run_until_complete\n'
        "    return future.result()\n"
        '  File "/srv/app/mytools.py", line 9, in parse\n'
        "    return helper(x)\n"
        '  File "/srv/app/asyncio/helpers.py", line 3, in helper\n'  # the user's own code
        "    raise KeyError(x)\n"
        "KeyError: 'x'\n"
        "\n"
        "During handling of the above exception, another exception occurred:\n"
        "\n"
        "Traceback (most recent call last):\n"
        '  File "/x/executor/attempts.py", line 111, in run_attempts\n'
        "    output = ...\n"
        '  File "/srv/app/mytools.py", line 11, in parse\n'
        "    raise ValueError('bad') from None\n"
        "ValueError: bad"
    )
    lines, hidden = tool_frames(tb)
    assert hidden == 3
    assert lines[:3] == [
        "Traceback (most recent call last):",
        "  … 2 frames of dagrelay and asyncio",
        '  File "/srv/app/mytools.py", line 9, in parse',
    ]
    assert '  File "/srv/app/asyncio/helpers.py", line 3, in helper' in lines
    second = lines.index("Traceback (most recent call last):", 1)
    assert lines[second + 1 : second + 3] == [
        "  … 1 frame of dagrelay and asyncio",
        '  File "/srv/app/mytools.py", line 11, in parse',
    ]
    assert lines[-1] == "ValueError: bad"
    assert tool_frames("no traceback here") == (["no traceback here"], 0)
