"""The distributed commands end to end: a real redis-server, a real worker process, and
`python -m executor.cli ...` in subprocesses, as a user would type them.

run --redis, submit, status (--follow), result (--wait, --json), cancel, runs; exit codes;
unknown and malformed run ids; a Redis that cannot be reached (its URL named, its
password never printed, no traceback).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from executor import ExecutionResult, FlowExecutor, load_flow, load_tools
from tests.support.servers import RedisServer, WorkerProcess, free_port

ROOT = Path(__file__).resolve().parent.parent
REPORT = "examples/report.yaml"
REPORT_INPUT = {"user_ids": [1, 2, 3]}
TOOLS = "tests.cli_tools"  # the example tools plus slow and failing ones
RUN_ID = re.compile(r"^[0-9a-f]{32}$")

pytestmark = pytest.mark.timeout(180)


# Fixtures and helpers -----------------------------------------------------------------
@pytest.fixture(scope="module")
def redis_url() -> Iterator[str]:
    server = RedisServer().start()
    try:
        yield server.url
    finally:
        server.close()


@pytest.fixture(scope="module")
def worker(redis_url: str) -> Iterator[WorkerProcess]:
    proc = WorkerProcess(redis_url, TOOLS, threads=8)
    try:
        proc.wait_ready()
        yield proc
    finally:
        proc.stop()


@pytest.fixture(scope="module")
def embedded_report() -> ExecutionResult:
    """The report flow run in this process: what the workers must reproduce."""
    with FlowExecutor(registry=load_tools("examples.tools")) as ex:
        result = ex.run(load_flow(ROOT / REPORT), REPORT_INPUT)
    assert result.succeeded, result.error
    return result


def cli_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DAGRELAY_")}
    env["COLUMNS"] = "200"
    env.update(extra or {})
    return env


def cli(
    *args: str, env: dict[str, str] | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """`python -m executor.cli ARGS` from the repository root."""
    return subprocess.run(
        [sys.executable, "-m", "executor.cli", *args],
        cwd=ROOT,
        env=cli_env(env),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def cli_all(commands: Sequence[Sequence[str]]) -> list[subprocess.CompletedProcess[str]]:
    """Several CLI invocations at once (each a separate process), in order."""
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "executor.cli", *args],
            cwd=ROOT,
            env=cli_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for args in commands
    ]
    done = []
    for args, p in zip(commands, procs, strict=True):
        out, err = p.communicate(timeout=60)
        done.append(subprocess.CompletedProcess(list(args), p.returncode, out, err))
    return done


def one_error_line(proc: subprocess.CompletedProcess[str], *parts: str) -> str:
    """stderr is one `error: ...` line holding every part, and no traceback (a failed
    step's traceback from the worker may be in the report on stdout)."""
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("error: "), proc.stderr
    for part in parts:
        assert part in lines[0], (part, lines[0])
    return lines[0]


def write_flow(tmp_path: Path, text: str) -> str:
    path = tmp_path / f"flow-{uuid.uuid4().hex[:6]}.yaml"
    path.write_text(textwrap.dedent(text))
    return str(path)


def submit(redis_url: str, flow: str, *extra: str) -> str:
    proc = cli("submit", flow, "--redis", redis_url, *extra)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert len(lines) == 1, proc.stdout  # only the id: scripts capture it with $(...)
    return lines[0]


def steps_view(result: ExecutionResult) -> dict[str, tuple[str, object, list[object] | None]]:
    """What must not differ between backends: status, output, and map items' outputs."""
    return {
        sid: (
            rec.status,
            rec.output,
            None if rec.items is None else [(c.status, c.output) for c in rec.items],
        )
        for sid, rec in result.steps.items()
    }


def wait_for_status(redis_url: str, run_id: str, status: str, timeout: float = 20) -> None:
    with FlowExecutor(redis_url) as ex:
        handle = ex.get_run(run_id)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            res = handle.result()
            if any(r.status == status for r in res.steps.values()):
                return
            time.sleep(0.05)
    raise AssertionError(f"no step of run {run_id} reached {status!r}")


# run --redis -------------------------------------------------------------------------
def test_run_on_workers_gives_the_embedded_result(
    redis_url: str, worker: WorkerProcess, embedded_report: ExecutionResult
) -> None:
    proc = cli(
        "run",
        REPORT,
        "--tools",
        "examples.tools",
        "--redis",
        redis_url,
        "--input",
        json.dumps(REPORT_INPUT),
        "--json",
    )
    assert proc.returncode == 0, proc.stderr
    result = ExecutionResult.model_validate_json(proc.stdout)
    assert result.status == "succeeded"
    assert result.output == embedded_report.output
    assert steps_view(result) == steps_view(embedded_report)
    assert result.inputs == embedded_report.inputs
    assert (result.flow_name, result.flow_version) == ("user_report", "1")
    # The work happened in the worker's process (`host:pid:thread`), not in the client.
    pids = {str(rec.worker).split(":")[1] for rec in result.steps.values()}
    assert len(pids) == 1, pids
    assert f"[PID {pids.pop()}]" in worker.log()
    assert result.critical_path and result.wall_time and result.wall_time > 0


def test_run_on_workers_needs_no_tools_and_reads_the_env(
    redis_url: str, worker: WorkerProcess, embedded_report: ExecutionResult, tmp_path: Path
) -> None:
    """The client need not import the tools; DAGRELAY_REDIS_URL selects distributed mode."""
    data = tmp_path / "input.json"
    data.write_text(json.dumps(REPORT_INPUT))
    proc = cli(
        "run", REPORT, "--input-file", str(data), "--json", env={"DAGRELAY_REDIS_URL": redis_url}
    )
    assert proc.returncode == 0, proc.stderr
    assert ExecutionResult.model_validate_json(proc.stdout).output == embedded_report.output
    # The human report: the step table and the summary, as in embedded mode.
    proc = cli("run", REPORT, "--redis", redis_url, "--input", json.dumps(REPORT_INPUT))
    assert proc.returncode == 0, proc.stderr
    assert "render_report" in proc.stdout and "succeeded in" in proc.stdout


# submit, status, result, runs ----------------------------------------------------------
def test_submit_then_status_result_and_runs(
    redis_url: str, worker: WorkerProcess, embedded_report: ExecutionResult
) -> None:
    run_id = submit(redis_url, REPORT, "--input", json.dumps(REPORT_INPUT))
    assert RUN_ID.match(run_id), run_id

    proc = cli("status", run_id, "--redis", redis_url)
    assert proc.returncode == 0, proc.stderr  # succeeded or still running
    line = proc.stdout.strip()
    assert "\n" not in line
    assert line.startswith(run_id) and "user_report" in line
    assert re.search(r"\b(running|succeeded)\b", line) and "6 steps: " in line

    proc = cli("result", run_id, "--redis", redis_url, "--wait", "30", "--json")
    assert proc.returncode == 0, proc.stderr
    result = ExecutionResult.model_validate_json(proc.stdout)
    assert result.run_id == run_id and result.status == "succeeded"
    assert result.output == embedded_report.output
    assert steps_view(result) == steps_view(embedded_report)

    proc = cli("result", run_id, "--redis", redis_url)
    assert proc.returncode == 0, proc.stderr
    for text in ("user_report v1", "fetch_orders", "output:", "succeeded in", run_id):
        assert text in proc.stdout

    proc = cli("status", run_id, "--redis", redis_url)
    assert proc.returncode == 0
    assert "succeeded" in proc.stdout and "6 steps: 6 succeeded" in proc.stdout

    listed, only_ok, only_failed, other_flow, as_json = cli_all(
        [
            ["runs", "--redis", redis_url],
            ["runs", "--redis", redis_url, "--status", "succeeded", "--flow", "user_report"],
            ["runs", "--redis", redis_url, "--status", "failed", "--flow", "user_report"],
            ["runs", "--redis", redis_url, "--flow", "no_such_flow"],
            ["runs", "--redis", redis_url, "--json", "--limit", "500"],
        ]
    )
    for proc in (listed, only_ok, only_failed, other_flow, as_json):
        assert proc.returncode == 0, proc.stderr
    row = next(ln for ln in listed.stdout.splitlines() if run_id in ln)
    assert "user_report" in row and "succeeded" in row
    assert run_id in only_ok.stdout
    assert run_id not in only_failed.stdout
    assert other_flow.stdout == "" and "no runs match" in other_flow.stderr
    rows = {r["run_id"]: r for r in json.loads(as_json.stdout)}
    assert rows[run_id]["flow_name"] == "user_report"
    assert rows[run_id]["status"] == "succeeded"
    assert isinstance(rows[run_id]["wall_time"], float)


def test_runs_limit_and_order(redis_url: str, worker: WorkerProcess, tmp_path: Path) -> None:
    flow = write_flow(
        tmp_path,
        """
        name: tiny
        steps:
          - id: a
            tool: nap
            inputs: {seconds: 0}
        """,
    )
    first = submit(redis_url, flow)
    second = submit(redis_url, flow)
    proc = cli("runs", "--redis", redis_url, "--flow", "tiny", "--limit", "1", "--json")
    assert proc.returncode == 0, proc.stderr
    assert [r["run_id"] for r in json.loads(proc.stdout)] == [second]  # newest first
    proc = cli("runs", "--redis", redis_url, "--flow", "tiny", "--limit", "0")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    proc = cli("runs", "--redis", redis_url, "--status", "bogus")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert first != second


def test_status_follow_streams_events_until_the_end(
    redis_url: str, worker: WorkerProcess, tmp_path: Path
) -> None:
    flow = write_flow(
        tmp_path,
        """
        name: chain
        steps:
          - id: first
            tool: nap
            inputs: {seconds: 0.3}
          - id: second
            tool: doze
            inputs: {seconds: $steps.first}
        """,
    )
    run_id = submit(redis_url, flow)
    proc = cli("status", run_id, "--redis", redis_url, "--follow")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.strip().splitlines()
    events = lines[:-1]
    for step in ("first", "second"):
        assert any(re.search(rf"\b{step}\b.*\bqueued\b", ln) for ln in events), lines
        assert any(re.search(rf"\b{step} #1 running\b", ln) for ln in events), lines
        assert any(re.search(rf"\b{step} #1 succeeded\b", ln) for ln in events), lines
    first_done = next(i for i, ln in enumerate(events) if "first #1 succeeded" in ln)
    second_run = next(i for i, ln in enumerate(events) if "second #1 running" in ln)
    assert first_done < second_run
    assert re.search(r"\brun succeeded\b", events[-1]), lines
    assert (
        lines[-1].startswith(run_id)
        and "succeeded" in lines[-1]
        and "2 steps: 2 succeeded" in lines[-1]
    )


def test_a_failed_run(redis_url: str, worker: WorkerProcess, tmp_path: Path) -> None:
    flow = write_flow(
        tmp_path,
        """
        name: doomed
        on_failure: continue
        steps:
          - id: boom
            tool: explode
            inputs: {message: "kaboom\\nsecond line"}
          - id: after
            tool: nap
            inputs: {seconds: 0}
            depends_on: [boom]
        """,
    )
    run_id = submit(redis_url, flow)
    proc = cli("result", run_id, "--redis", redis_url, "--wait", "30")
    assert proc.returncode == 1
    assert "upstream_failed" in proc.stdout and "RuntimeError" in proc.stdout
    one_error_line(proc, run_id, "failed", "kaboom")
    # The failed step in full: tool, attempt, worker, exception, and the worker's traceback.
    panel = proc.stdout[proc.stdout.index("✗ boom failed") :]
    assert re.search(r"✗ boom failed · tool explode · attempt 1 · worker \S+:\d+:", panel)
    assert "RuntimeError: kaboom" in panel and "second line" in panel
    assert "Traceback (most recent call last)" in panel and "in explode" in panel

    proc = cli("result", run_id, "--redis", redis_url, "--json")
    assert proc.returncode == 1
    result = ExecutionResult.model_validate_json(proc.stdout)
    assert result.status == "failed"
    assert result.steps["boom"].error is not None
    assert result.steps["boom"].error.type == "RuntimeError"

    proc = cli("status", run_id, "--redis", redis_url)
    assert proc.returncode == 1
    assert (
        "failed" in proc.stdout
        and "2 steps: 1 failed, 1 upstream_failed" in proc.stdout
        and proc.stderr == ""
    )


def test_a_tool_only_the_workers_lack_fails_the_step(
    redis_url: str, worker: WorkerProcess, tmp_path: Path
) -> None:
    """Without --tools the client cannot know the tools: the worker reports it."""
    flow = write_flow(
        tmp_path,
        """
        name: missing_tool
        steps:
          - id: a
            tool: no_such_tool
            inputs: {x: 1}
        """,
    )
    run_id = submit(redis_url, flow)
    proc = cli("result", run_id, "--redis", redis_url, "--wait", "30", "--json")
    assert proc.returncode == 1
    result = ExecutionResult.model_validate_json(proc.stdout)
    assert result.status == "failed"
    assert result.steps["a"].error is not None
    assert result.steps["a"].error.type == "NoLiveWorker"
    assert "with tool 'no_such_tool'" in result.steps["a"].error.message
    # With --tools the client checks the flow against them before anything is queued.
    proc = cli("submit", flow, "--redis", redis_url, "--tools", "examples.tools")
    assert proc.returncode == 1 and proc.stdout == ""
    assert "no_such_tool" in proc.stderr and "Traceback" not in proc.stderr


def test_result_wait_times_out_on_a_running_run(
    redis_url: str, worker: WorkerProcess, tmp_path: Path
) -> None:
    flow = write_flow(
        tmp_path,
        """
        name: slow
        steps:
          - id: a
            tool: nap
            inputs: {seconds: 60}
        """,
    )
    run_id = submit(redis_url, flow)
    try:
        t0 = time.monotonic()
        proc = cli("result", run_id, "--redis", redis_url, "--wait", "0.5", "--json")
        assert time.monotonic() - t0 < 20
        assert proc.returncode == 1
        assert ExecutionResult.model_validate_json(proc.stdout).status == "running"
        one_error_line(proc, run_id, "still running")
        proc = cli("status", run_id, "--redis", redis_url)
        assert proc.returncode == 0 and "running" in proc.stdout
    finally:
        cli("cancel", run_id, "--redis", redis_url, "--wait", "0")


# cancel ------------------------------------------------------------------------------
def test_cancel_a_long_run(redis_url: str, worker: WorkerProcess, tmp_path: Path) -> None:
    flow = write_flow(
        tmp_path,
        """
        name: long
        steps:
          - id: sleep
            tool: nap
            inputs: {seconds: 120}
          - id: never
            tool: nap
            inputs: {seconds: $steps.sleep}
        """,
    )
    run_id = f"cancel-me-{uuid.uuid4().hex[:8]}"
    assert submit(redis_url, flow, "--run-id", run_id) == run_id
    wait_for_status(redis_url, run_id, "running")

    t0 = time.monotonic()
    proc = cli("cancel", run_id, "--redis", redis_url)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == f"{run_id} cancelled"
    assert time.monotonic() - t0 < 15

    proc = cli("status", run_id, "--redis", redis_url)
    assert proc.returncode == 1
    # A cancelled step is counted as cancelled, never as done.
    assert "cancelled" in proc.stdout and "2 steps: 2 cancelled" in proc.stdout
    proc = cli("result", run_id, "--redis", redis_url, "--json")
    assert proc.returncode == 1
    result = ExecutionResult.model_validate_json(proc.stdout)
    assert result.status == "cancelled"
    assert result.steps["sleep"].status == "cancelled"
    assert result.steps["never"].status == "cancelled"
    assert result.wall_time is not None and result.wall_time < 60

    proc = cli("cancel", run_id, "--redis", redis_url)  # once more: nothing to do
    assert proc.returncode == 0
    assert "cancelled" in proc.stdout and "nothing to cancel" in proc.stdout


def test_a_taken_run_id_is_refused(redis_url: str, worker: WorkerProcess, tmp_path: Path) -> None:
    flow = write_flow(
        tmp_path,
        """
        name: once
        steps:
          - id: a
            tool: nap
            inputs: {seconds: 0}
        """,
    )
    run_id = f"taken-{uuid.uuid4().hex[:8]}"
    submit(redis_url, flow, "--run-id", run_id)
    proc = cli("submit", flow, "--redis", redis_url, "--run-id", run_id)
    assert proc.returncode == 2 and proc.stdout == ""
    one_error_line(proc, run_id, "taken")


# Unknown and malformed run ids ---------------------------------------------------------
def test_unknown_and_malformed_run_ids(redis_url: str) -> None:
    unknown = f"nope-{uuid.uuid4().hex[:8]}"
    commands = [[cmd, unknown, "--redis", redis_url] for cmd in ("status", "result", "cancel")] + [
        [cmd, "bad id/../x", "--redis", redis_url] for cmd in ("status", "result", "cancel")
    ]
    commands.append(["submit", REPORT, "--redis", redis_url, "--run-id", "a:b*"])
    procs = cli_all(commands)
    for proc in procs[:3]:
        assert proc.returncode == 2, (proc.args, proc.stderr)
        assert proc.stdout == ""
        one_error_line(proc, unknown, "no run")
    for proc in procs[3:]:
        assert proc.returncode == 2, (proc.args, proc.stderr)
        assert proc.stdout == ""
        one_error_line(proc, "invalid run id", "letters, digits")


# Usage errors before anything reaches Redis ------------------------------------------
def test_submit_usage_errors(redis_url: str, tmp_path: Path) -> None:
    bad_flow = write_flow(
        tmp_path,
        """
        name: bad
        steps:
          - id: a
            tool: nap
            inputs: {seconds: $steps.nowhere}
        """,
    )
    missing_input = ["submit", REPORT, "--redis", redis_url]
    procs = cli_all(
        [
            ["submit", "no/such/flow.yaml", "--redis", redis_url],
            ["submit", REPORT, "--redis", redis_url, "--input", "{not json"],
            ["submit", REPORT, "--redis", redis_url, "--input-file", str(tmp_path / "none")],
            ["submit", REPORT, "--redis", redis_url, "--tools", "no_such_tools_module"],
            ["submit", bad_flow, "--redis", redis_url],
            missing_input,
        ]
    )
    codes = [p.returncode for p in procs]
    assert codes == [2, 2, 2, 2, 1, 1], [(p.args, p.stderr) for p in procs]
    for proc in procs:
        assert proc.stdout == "" and "Traceback" not in proc.stderr
    assert "nowhere" in procs[4].stderr and bad_flow in procs[4].stderr
    assert procs[5].stderr.startswith(f"error: {REPORT}: ") and "user_ids" in procs[5].stderr


# Redis that cannot be reached ----------------------------------------------------------
def test_unreachable_redis_is_one_clear_line(tmp_path: Path) -> None:
    url = f"redis://127.0.0.1:{free_port()}/0"
    commands = [
        ["submit", REPORT, "--redis", url, "--input", json.dumps(REPORT_INPUT)],
        ["status", "some-run", "--redis", url],
        ["status", "some-run", "--redis", url, "--follow"],
        ["result", "some-run", "--redis", url, "--wait", "5"],
        ["cancel", "some-run", "--redis", url],
        ["runs", "--redis", url],
        ["run", REPORT, "--redis", url, "--input", json.dumps(REPORT_INPUT)],
    ]
    for proc in cli_all(commands):
        assert proc.returncode == 2, (proc.args, proc.stderr)
        assert proc.stdout == ""
        one_error_line(proc, f"cannot reach Redis at {url}")


def test_redis_passwords_are_never_printed(tmp_path: Path) -> None:
    secret = f"pw-{uuid.uuid4().hex}"
    server = RedisServer(password=secret).start()
    try:
        port = server.port
        wrong = f"wrong-{uuid.uuid4().hex}"
        closed = free_port()
        urls = {
            "nothing listening": f"redis://:{secret}@127.0.0.1:{closed}/0",
            "wrong password": f"redis://:{wrong}@127.0.0.1:{port}/0",
            "user and password": f"redis://alice:{wrong}@127.0.0.1:{port}/0",
            "malformed port": f"redis://:{secret}@127.0.0.1:notaport/0",
        }
        commands = [["runs", "--redis", u] for u in urls.values()]
        commands += [["status", "r1", "--redis", u] for u in urls.values()]
        commands.append(["runs", "--redis", server.url])  # the right password: works
        procs = cli_all(commands)
        for proc in procs[:-1]:
            out = proc.stdout + proc.stderr
            assert proc.returncode == 2, (proc.args, out)
            assert secret not in out and wrong not in out, out
            line = one_error_line(proc)
            assert ":***@127.0.0.1:" in line, line
        assert procs[-1].returncode == 0, procs[-1].stderr
        assert secret not in procs[-1].stdout + procs[-1].stderr
        # The same URL from the environment.
        proc = cli("runs", env={"DAGRELAY_REDIS_URL": urls["wrong password"]})
        assert proc.returncode == 2 and wrong not in proc.stderr
        one_error_line(proc, f"cannot reach Redis at redis://:***@127.0.0.1:{port}/0")
    finally:
        server.close()


# report -------------------------------------------------------------------------------
def test_report_of_a_run_on_workers(redis_url: str, worker: WorkerProcess, tmp_path: Path) -> None:
    page = tmp_path / "run.html"
    proc = cli(
        "run", REPORT, "--redis", redis_url, "--input", json.dumps(REPORT_INPUT),
        "--report", str(page),
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.strip() == f"wrote {page} (html)"
    html = page.read_text()
    assert "user_report" in html and "worker " in html
    run_id = re.search(r"run <code>([0-9a-f]{32})</code>", html)
    assert run_id is not None
    # The same run, drawn again later from Redis by its id.
    again = tmp_path / "again.html"
    proc = cli("report", run_id.group(1), "--redis", redis_url, "-o", str(again))
    assert proc.returncode == 0, proc.stderr
    assert f"run {run_id.group(1)} succeeded" in proc.stderr
    for sid in ("users", "orders", "prices", "totals", "render", "archive"):
        assert f">{sid}" in again.read_text()
    proc = cli("report", run_id.group(1), "--redis", redis_url, "-o", "-")
    assert proc.returncode == 0 and proc.stdout.startswith("<!doctype html>")
    proc = cli("report", "no-such-run", "--redis", redis_url)
    assert proc.returncode == 2
    one_error_line(proc, "no-such-run")
    # The flow's DAG with this run's statuses and times, the critical path bold.
    proc = cli("graph", REPORT, "--run", run_id.group(1), "--redis", redis_url)
    assert proc.returncode == 0, proc.stderr
    assert "succeeded · " in proc.stdout and "linkStyle" in proc.stdout
    assert "classDef succeeded" in proc.stdout
    proc = cli("graph", "examples/map.yaml", "--run", run_id.group(1), "--redis", redis_url)
    assert proc.returncode == 2
    one_error_line(proc, "is of flow 'user_report'")


def test_retry_reruns_a_failed_run_in_place_on_the_workers(
    redis_url: str, worker: WorkerProcess, tmp_path: Path
) -> None:
    needed = tmp_path / "needed.txt"
    flow = tmp_path / "needs.yaml"
    flow.write_text(
        textwrap.dedent(f"""
            name: needs
            output: $steps.read
            steps:
              - {{id: first, tool: nap, inputs: {{seconds: 0.01}}}}
              - {{id: read, tool: needs_file, depends_on: [first], inputs: {{path: "{needed}"}}}}
        """)
    )
    failed = cli("run", str(flow), "--redis", redis_url, "--json")
    assert failed.returncode == 1
    run_id = json.loads(failed.stdout)["run_id"]
    one_error_line(failed, "step 'read' failed", "FileNotFoundError")

    needed.write_text("here now", encoding="utf-8")
    again = cli("retry", run_id, "--redis", redis_url, "--json")
    assert again.returncode == 0, again.stderr
    result = ExecutionResult.model_validate_json(again.stdout)
    assert (result.run_id, result.status, result.output) == (run_id, "succeeded", "here now")
    assert [a.number for a in result.steps["read"].attempts] == [1, 2]
    assert len(result.steps["first"].attempts) == 1  # reused, not run again

    proc = cli("retry", run_id, "--redis", redis_url)
    assert proc.returncode == 1
    one_error_line(proc, "succeeded: nothing to rerun")
    proc = cli("retry", run_id, "--redis", redis_url, "--from", "first", "--json")
    assert proc.returncode == 0, proc.stderr
    rerun = ExecutionResult.model_validate_json(proc.stdout)
    assert [len(rerun.steps[s].attempts) for s in ("first", "read")] == [2, 3]
    proc = cli("retry", "0" * 32, "--redis", redis_url)
    assert proc.returncode == 2
    one_error_line(proc, "no run")
