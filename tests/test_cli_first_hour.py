"""The first hour with dagrelay, as a new user meets it, through the installed `dagrelay`:

help that shows flags as flags and explains every option, usage errors in one line that
list the valid choices, Ctrl-C in an embedded run (the first cancels and says what it
waits for within `--grace`; a second exits 130 at once, never a traceback), `--detach`
only with `--redis`, counts by status, a map step's items by status, the worker banner,
and `make demo` on a fresh clone printing no warning line.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import typer

from executor.cli.banner import worker_banner
from executor.cli.main import app
from executor.model.tools import ToolRegistry
from executor.run.records import Attempt, RunRecord, StepRecord
from executor.views.report import status_line, step_table

ROOT = Path(__file__).resolve().parent.parent
DAGRELAY = Path(sys.executable).parent / "dagrelay"

pytestmark = pytest.mark.timeout(240)


def dagrelay(*args: str, cwd: Path = ROOT, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DAGRELAY_")}
    env["COLUMNS"] = "200"
    return subprocess.run(
        [str(DAGRELAY), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
    )


def one_error_line(proc: subprocess.CompletedProcess[str], *parts: str) -> str:
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("error: "), proc.stderr
    for part in parts:
        assert part in lines[0], (part, lines[0])
    return lines[0]


# Help and usage errors -------------------------------------------------------------------
COMMANDS = sorted(typer.main.get_command(app).commands)  # type: ignore[attr-defined]


def test_every_option_of_every_command_has_help_text() -> None:
    group = typer.main.get_command(app)
    for name, command in group.commands.items():  # type: ignore[attr-defined]
        for param in command.params:
            if param.param_type_name == "option" and param.name != "help":
                assert getattr(param, "help", None), f"dagrelay {name} {param.opts[0]}"


@pytest.mark.parametrize("command", COMMANDS)
def test_help_shows_flags_as_flags(command: str) -> None:
    proc = dagrelay(command, "--help")
    assert proc.returncode == 0, proc.stderr
    assert "<bool>" not in proc.stdout and "Show this message and exit" in proc.stdout


def test_a_bad_choice_is_one_line_listing_the_valid_ones() -> None:
    proc = dagrelay("runs", "--status", "bogus", "--redis", "redis://127.0.0.1:1/0")
    assert proc.returncode == 2
    line = one_error_line(proc, "'--status'", "'bogus'", "'cancelled'", "'timed_out'")
    assert "Value error" not in line and "dagrelay runs --help" in line
    proc = dagrelay("graph", "examples/report.yaml", "--format", "png")
    assert proc.returncode == 2
    one_error_line(proc, "'png'", "'mermaid'", "'dot'")


def test_an_unknown_option_and_a_missing_argument_are_one_line() -> None:
    one_error_line(dagrelay("run", "--bogus"), "no such option: --bogus")
    one_error_line(dagrelay("validate"), "missing argument")


def test_detach_needs_redis() -> None:
    proc = dagrelay("run", "examples/report.yaml", "--tools", "examples.tools", "--detach")
    assert proc.returncode == 2
    one_error_line(proc, "--detach needs --redis")


# Ctrl-C in an embedded run -----------------------------------------------------------------
@pytest.fixture
def slow_flow(tmp_path: Path) -> Path:
    (tmp_path / "sleepy.py").write_text(
        textwrap.dedent(
            """
            import time
            from executor import ToolRegistry, tool

            registry = ToolRegistry()

            @tool(registry=registry)
            def doze(seconds: float) -> float:
                print("dozing", flush=True)
                time.sleep(seconds)
                return seconds
            """
        )
    )
    (tmp_path / "slow.yaml").write_text(
        "name: slow\nsteps:\n  - {id: nap, tool: doze, inputs: {seconds: 60}}\n"
        "  - {id: after, tool: doze, inputs: {seconds: $steps.nap}}\n"
    )
    return tmp_path


def start_slow(folder: Path, *extra: str) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DAGRELAY_")}
    proc = subprocess.Popen(
        [str(DAGRELAY), "run", "slow.yaml", "--tools", "sleepy.py", *extra],
        cwd=folder,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "dozing"  # the sync tool runs in its thread
    return proc


def test_first_ctrl_c_cancels_says_what_it_waits_for_and_keeps_to_the_grace(
    slow_flow: Path,
) -> None:
    proc = start_slow(slow_flow, "--grace", "2")
    t0 = time.monotonic()
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=30)
    took = time.monotonic() - t0
    assert proc.returncode == 130, err
    assert took < 15, took  # the tool sleeps 60 s: the grace, not the tool, ends it
    assert "Traceback" not in err
    assert "interrupted: cancelling run" in err and "waiting up to 2s" in err
    assert "nap: tool doze" in err and "Ctrl-C again exits now" in err
    assert "1 sync tool call still running in this process's threads" in err
    assert err.strip().splitlines()[-1].startswith("error: interrupted: run ")
    assert "cancelled" in out  # the step table of the cancelled run


def test_second_ctrl_c_exits_at_once_without_a_traceback(slow_flow: Path) -> None:
    proc = start_slow(slow_flow, "--grace", "60")
    proc.send_signal(signal.SIGINT)
    time.sleep(1.0)
    t0 = time.monotonic()
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 130, err
    assert time.monotonic() - t0 < 5
    assert "Traceback" not in err and "interrupted again: exiting now" in err


def test_help_says_what_ctrl_c_and_sigterm_do() -> None:
    text = " ".join(dagrelay("run", "--help").stdout.split())
    assert "Ctrl-C cancels the run" in text and "--detach" in text
    assert "SIGTERM ends this command without cancelling" in text


# What the tables count -----------------------------------------------------------------------
T0 = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)


def attempt(n: int, worker: str = "w:1:t") -> Attempt:
    return Attempt(
        number=n,
        started_at=T0 + timedelta(seconds=n),
        finished_at=T0 + timedelta(seconds=n + 0.5),
        duration=0.5,
        worker=worker,
    )


def test_status_counts_each_status_and_cancelled_is_not_done() -> None:
    run = RunRecord(
        run_id="r1",
        flow_name="f",
        flow_version="1",
        status="cancelled",
        steps={
            "a": StepRecord(step_id="a", tool="t", status="succeeded"),
            "b": StepRecord(step_id="b", tool="t", status="cancelled"),
            "c": StepRecord(step_id="c", tool="t", status="cancelled"),
            "d": StepRecord(step_id="d", tool="t", status="skipped"),
        },
    )
    line = status_line(run).plain
    assert "4 steps: 1 succeeded, 2 cancelled, 1 skipped" in line
    assert "done" not in line


def test_a_map_steps_row_shows_its_items_by_status_not_their_attempts() -> None:
    items = [
        StepRecord(step_id="m", tool="t", status="succeeded", attempts=[attempt(1), attempt(2)]),
        StepRecord(step_id="m", tool="t", status="succeeded", attempts=[attempt(1)]),
        StepRecord(step_id="m", tool="t", status="failed", attempts=[attempt(1), attempt(2)]),
    ]
    run = RunRecord(
        run_id="r1",
        flow_name="f",
        flow_version="1",
        status="failed",
        steps={"m": StepRecord(step_id="m", tool="t", status="failed", items=items)},
    )
    from rich.console import Console

    console = Console(width=200, record=True)
    console.print(step_table(run))
    rows = [ln for ln in console.export_text().splitlines() if ln.strip().startswith("m ")]
    assert len(rows) == 1
    assert "3 items: 2 succeeded, 1 failed" in rows[0]
    assert " 5 " not in rows[0]  # not the 5 attempts of its items


def test_an_embedded_map_run_prints_items_by_status() -> None:
    proc = dagrelay(
        "run", "examples/map.yaml", "--tools", "examples.tools", "--input", '{"text": "a b c"}'
    )
    assert proc.returncode == 0, proc.stderr
    assert "3 items: 3 succeeded" in proc.stdout


# The worker's banner --------------------------------------------------------------------------
def test_the_banner_names_slots_and_hides_the_password() -> None:
    registry = ToolRegistry()
    registry.tool(lambda x: x, name="echo")  # type: ignore[misc]
    text = worker_banner(
        registry, "redis://:s3cret@redis:6379/0", "ns", ["gpu", "cpu"], 2, 4, async_steps=16
    )
    assert "s3cret" not in text and "redis://:***@redis:6379/0" in text
    assert "queues     gpu, cpu" in text and "namespace  ns" in text
    assert "tools      echo (1)" in text
    assert "capacity   2 processes x 4 threads (sync calls) and 16 async slots" in text


# make demo on a fresh clone ------------------------------------------------------------------
@pytest.mark.skipif(shutil.which("git") is None or shutil.which("make") is None, reason="git/make")
def test_make_demo_on_a_fresh_clone_prints_no_warning(tmp_path: Path) -> None:
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True, timeout=60)
    # The clone is of the committed tree; the tests run what is checked out here.
    for name in ("Makefile", "pyproject.toml"):
        shutil.copy(ROOT / name, clone / name)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DAGRELAY_", "VIRTUAL_ENV"))}
    proc = subprocess.run(
        ["make", "demo", f"PYTHON={sys.executable}"],
        cwd=clone,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    text = proc.stdout + proc.stderr
    warnings = [ln for ln in text.splitlines() if "warn" in ln.lower()]
    assert warnings == [], warnings
    assert "succeeded" in text and "source .venv/bin/activate" in text
