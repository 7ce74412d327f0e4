"""Operating a pool, end to end: a real redis-server, two real `dagrelay worker`
processes with different `--tools`, and the real `dagrelay` command in subprocesses.

* Workers you can see: the start banner (no password), a log line per step attempt
  (text, and JSON fields), heartbeat records listed by `dagrelay workers` (table and
  `--json`, running steps included), a killed worker dropping out, a stopped one at once.
* Routing by tool: steps of a tool only one worker has run only there (never a
  LookupError); a step whose tool no live worker has (or whose queue none serves) is
  named by `run` and `status`, and fails with that message after `--no-worker-timeout`.
* `graph --run` draws the run's stored flow without the flow file.
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
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from executor import ExecutionResult
from executor.version import __version__
from tests.support.servers import RedisServer, WorkerProcess, descendants, worker_pid

ROOT = Path(__file__).resolve().parent.parent
DAGRELAY = Path(sys.executable).parent / "dagrelay"
PASSWORD = "pool-secret-4711"
BEAT = {"DAGRELAY_BEAT_SECONDS": "0.5"}  # records expire 1.5 s after a missed beat

pytestmark = pytest.mark.timeout(180)


@pytest.fixture(scope="module")
def redis_url() -> Iterator[str]:
    server = RedisServer(password=PASSWORD).start()
    try:
        yield server.url
    finally:
        server.close()


@pytest.fixture(scope="module")
def worker_a(redis_url: str) -> Iterator[WorkerProcess]:
    proc = WorkerProcess(redis_url, "tests.route_tools_a", threads=2, env=BEAT)
    try:
        yield proc.wait_ready()
    finally:
        proc.stop()


@pytest.fixture(scope="module")
def worker_b(redis_url: str) -> Iterator[WorkerProcess]:
    env = {**BEAT, "DAGRELAY_LOG_FORMAT": "json"}
    proc = WorkerProcess(redis_url, "tests.route_tools_b", threads=2, env=env)
    try:
        yield proc.wait_ready()
    finally:
        proc.stop()


def dagrelay(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """The installed `dagrelay` script, from the repository root."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("DAGRELAY_")}
    env.update(COLUMNS="200", PYTHONPATH=str(ROOT))
    return subprocess.run(
        [str(DAGRELAY), *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout
    )


def write_flow(tmp_path: Path, text: str) -> str:
    path = tmp_path / f"flow-{uuid.uuid4().hex[:6]}.yaml"
    path.write_text(textwrap.dedent(text))
    return str(path)


def live(redis_url: str) -> list[dict[str, Any]]:
    proc = dagrelay("workers", "--redis", redis_url, "--json")
    assert proc.returncode == 0, proc.stderr
    return list(json.loads(proc.stdout))


def pids(worker: WorkerProcess) -> set[int]:
    return descendants(worker.proc.pid) - {worker.proc.pid}


# Workers you can see ---------------------------------------------------------------------
def test_the_banner_says_what_the_worker_serves_without_the_password(
    worker_a: WorkerProcess, redis_url: str
) -> None:
    log = worker_a.log()
    banner = log[: log.index("Worker process is ready")]
    assert f"dagrelay {__version__} worker" in banner
    port = redis_url.rsplit(":", 1)[1].split("/")[0]
    assert f"redis      redis://:***@127.0.0.1:{port}/0" in banner
    assert "namespace  dagrelay" in banner and "queues     dagrelay" in banner
    assert "tools      common, only_a, slow_a (3)" in banner
    assert "capacity   1 process x 2 threads" in banner
    assert PASSWORD not in log


def test_workers_lists_each_live_process_with_its_tools(
    worker_a: WorkerProcess, worker_b: WorkerProcess, redis_url: str
) -> None:
    found = {w["pid"]: w for w in live(redis_url)}
    a, b = pids(worker_a), pids(worker_b)
    assert set(found) == a | b
    for pid, w in found.items():
        want = ["common", "only_a", "slow_a"] if pid in a else ["common"]
        assert w["tools"] == want and w["queues"] == ["dagrelay"]
        assert w["threads"] == 2 and w["async_slots"] == 0 and w["version"] == __version__
        assert w["id"] == f"{w['host']}:{pid}" and w["started_at"] <= w["beat_at"]
    table = dagrelay("workers", "--redis", redis_url)
    assert table.returncode == 0, table.stderr
    rows = [ln for ln in table.stdout.splitlines() if re.search(r":\d+ ", ln)]
    assert len(rows) == 2
    assert any("common, only_a, slow_a" in r for r in rows)
    assert any(re.search(r"\bcommon\s+0/2\b", r) for r in rows)


def test_a_running_step_shows_in_its_workers_record(
    worker_a: WorkerProcess, worker_b: WorkerProcess, redis_url: str, tmp_path: Path
) -> None:
    flow = write_flow(
        tmp_path,
        """
        name: slow
        steps:
          - {id: nap, tool: slow_a, inputs: {seconds: 3}}
        """,
    )
    proc = dagrelay("submit", flow, "--redis", redis_url)
    assert proc.returncode == 0, proc.stderr
    run_id = proc.stdout.strip()
    deadline = time.monotonic() + 10
    running: list[dict[str, Any]] = []
    while time.monotonic() < deadline and not running:
        running = [u for w in live(redis_url) for u in w["running"]]
        time.sleep(0.2)
    assert running == [{"run_id": run_id, "step": "nap", "attempt": 1, "tool": "slow_a"}]
    busy = [w for w in live(redis_url) if w["running"]]
    assert busy and busy[0]["pid"] in pids(worker_a) and busy[0]["busy"] == 1
    done = dagrelay("result", run_id, "--redis", redis_url, "--wait", "30")
    assert done.returncode == 0, done.stderr


def test_each_attempt_is_a_log_line_in_text_and_json(
    worker_a: WorkerProcess, worker_b: WorkerProcess, redis_url: str, tmp_path: Path
) -> None:
    steps = "\n".join(f"  - {{id: c{i}, tool: common, inputs: {{x: {i}}}}}" for i in range(12))
    flow = write_flow(tmp_path, "name: logged\nsteps:\n" + steps + "\n")
    proc = dagrelay("run", flow, "--redis", redis_url, "--json")
    assert proc.returncode == 0, proc.stderr
    result = ExecutionResult.model_validate_json(proc.stdout)
    a = pids(worker_a)
    time.sleep(0.5)  # the last lines reach the logs
    for sid, rec in result.steps.items():
        if worker_pid(rec.worker) in a:  # text: tool, outcome, duration, then the ids
            pattern = (
                rf"tool common: succeeded in \d+\.\d{{3}}s \[run {result.run_id} step {sid} #1\]"
            )
            assert re.search(pattern, worker_a.log()), sid
        else:
            lines = [json.loads(ln) for ln in worker_b.log().splitlines() if ln.startswith("{")]
            mine = [
                ln
                for ln in lines
                if ln.get("run_id") == result.run_id
                and ln.get("step_id") == sid
                and ln.get("outcome")
            ]
            assert len(mine) == 1, sid
            line = mine[0]
            assert line["tool"] == "common" and line["outcome"] == "succeeded"
            assert line["attempt"] == 1 and isinstance(line["duration"], float)
            assert line["level"] == "INFO" and line["message"].startswith("tool common: ")


def test_a_killed_worker_drops_out_and_a_stopped_one_at_once(redis_url: str) -> None:
    killed = WorkerProcess(redis_url, "tests.route_tools_b", threads=1, env=BEAT).wait_ready()
    stopped = WorkerProcess(redis_url, "tests.route_tools_b", threads=1, env=BEAT).wait_ready()
    try:
        gone, left = pids(killed), pids(stopped)
        assert gone | left <= {w["pid"] for w in live(redis_url)}
        stopped.stop()
        assert not left & {w["pid"] for w in live(redis_url)}  # it removed its record
        killed.kill_all()
        deadline = time.monotonic() + 10
        while gone & {w["pid"] for w in live(redis_url)}:
            assert time.monotonic() < deadline, "a killed worker's record did not expire"
            time.sleep(0.2)
    finally:
        killed.stop()
        stopped.stop()


# Routing by tool --------------------------------------------------------------------------
def test_steps_run_only_where_their_tool_is(
    worker_a: WorkerProcess, worker_b: WorkerProcess, redis_url: str, tmp_path: Path
) -> None:
    flow = write_flow(
        tmp_path,
        """
        name: routed
        on_failure: continue
        steps:
          - {id: a1, tool: only_a, inputs: {x: 1}}
          - {id: a2, tool: only_a, inputs: {x: 2}}
          - {id: a3, tool: only_a, inputs: {x: 3}}
          - {id: c1, tool: common, inputs: {x: 4}}
          - {id: c2, tool: common, inputs: {x: $steps.a1.x}}
          - {id: a4, tool: only_a, inputs: {x: $steps.c1.x}}
          - {id: m, tool: only_a, map: $input.xs, inputs: {x: $item}}
          - {id: c3, tool: common, map: $input.xs, inputs: {x: $item}}
        """,
    )
    a = pids(worker_a)
    for _ in range(3):
        proc = dagrelay(
            "run",
            flow,
            "--redis",
            redis_url,
            "--json",
            "--input",
            '{"xs": [1, 2, 3, 4, 5, 6, 7, 8]}',
        )
        assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr
        assert "LookupError" not in proc.stdout + proc.stderr
        result = ExecutionResult.model_validate_json(proc.stdout)
        for sid in ("a1", "a2", "a3", "a4"):
            assert worker_pid(result.steps[sid].worker) in a, sid
        for item in result.steps["m"].items or []:
            assert worker_pid(item.worker) in a
    assert "only_a" not in worker_b.log()


def test_a_step_no_live_worker_can_run_is_named_then_fails(
    worker_a: WorkerProcess, worker_b: WorkerProcess, redis_url: str, tmp_path: Path
) -> None:
    flow = write_flow(
        tmp_path,
        """
        name: stranded
        steps:
          - {id: first, tool: common, inputs: {x: 1}}
          - {id: lost, tool: only_z, inputs: {x: $steps.first.x}}
        """,
    )
    t0 = time.monotonic()
    proc = dagrelay("run", flow, "--redis", redis_url, "--json", "--no-worker-timeout", "2")
    assert proc.returncode == 1, proc.stderr
    assert time.monotonic() - t0 < 30
    message = "no live worker serves queue 'dagrelay' with tool 'only_z'"
    assert f"warning: {message} (steps: lost)" in proc.stderr
    assert "LookupError" not in proc.stderr + proc.stdout and "Traceback" not in proc.stderr
    result = ExecutionResult.model_validate_json(proc.stdout)
    assert result.status == "failed" and result.steps["first"].status == "succeeded"
    error = result.steps["lost"].error
    assert result.steps["lost"].status == "failed" and error is not None
    assert error.type == "NoLiveWorker" and error.message == message


def test_status_names_a_queue_no_live_worker_serves(
    worker_a: WorkerProcess, worker_b: WorkerProcess, redis_url: str, tmp_path: Path
) -> None:
    flow = write_flow(
        tmp_path,
        """
        name: gpu_only
        steps:
          - {id: render, tool: common, inputs: {x: 1}, queue: gpu}
        """,
    )
    proc = dagrelay("submit", flow, "--redis", redis_url)
    assert proc.returncode == 0, proc.stderr
    run_id = proc.stdout.strip()
    try:
        status = dagrelay("status", run_id, "--redis", redis_url)
        assert status.returncode == 0, status.stderr
        assert "1 steps: 1 queued" in status.stdout or "1 steps: 1 pending" in status.stdout
        assert (
            "warning: no live worker serves queue 'gpu' with tool 'common' (steps: render)"
            in status.stderr
        )
    finally:
        dagrelay("cancel", run_id, "--redis", redis_url, "--wait", "0")


def test_graph_of_a_run_reads_its_stored_flow(
    worker_a: WorkerProcess, worker_b: WorkerProcess, redis_url: str, tmp_path: Path
) -> None:
    flow = write_flow(
        tmp_path,
        """
        name: drawn
        steps:
          - {id: left, tool: common, inputs: {x: 1}}
          - {id: right, tool: only_a, inputs: {x: $steps.left.x}}
        """,
    )
    proc = dagrelay("run", flow, "--redis", redis_url, "--json")
    assert proc.returncode == 0, proc.stderr
    run_id = ExecutionResult.model_validate_json(proc.stdout).run_id
    Path(flow).unlink()  # the run holds its flow
    graph = dagrelay("graph", "--run", run_id, "--redis", redis_url)
    assert graph.returncode == 0, graph.stderr
    assert "flow drawn v1" in graph.stdout
    assert re.search(r"left<br/>tool: common<br/>succeeded", graph.stdout)
    assert re.search(r"right<br/>tool: only_a<br/>succeeded", graph.stdout)
    nothing = dagrelay("graph")
    assert nothing.returncode == 2 and nothing.stderr.startswith("error: give a FLOW file")


def test_detach_leaves_the_run_going_on_ctrl_c(
    worker_a: WorkerProcess, worker_b: WorkerProcess, redis_url: str, tmp_path: Path
) -> None:
    flow = write_flow(
        tmp_path,
        """
        name: detached
        steps:
          - {id: nap, tool: slow_a, inputs: {seconds: 2}}
        """,
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("DAGRELAY_")}
    env["PYTHONPATH"] = str(ROOT)
    proc = subprocess.Popen(
        [str(DAGRELAY), "run", flow, "--redis", redis_url, "--detach"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 20
    runs: list[dict[str, Any]] = []
    while not runs:  # submitted: now Ctrl-C
        assert time.monotonic() < deadline and proc.poll() is None
        time.sleep(0.1)
        found = dagrelay("runs", "--flow", "detached", "--json", "--redis", redis_url)
        runs = json.loads(found.stdout or "[]")
    run_id = runs[0]["run_id"]
    proc.send_signal(2)  # SIGINT
    _, err = proc.communicate(timeout=20)
    assert proc.returncode == 130 and "Traceback" not in err
    assert f"detached: run {run_id} goes on on the workers" in err
    done = dagrelay("result", run_id, "--redis", redis_url, "--wait", "30", "--json")
    assert done.returncode == 0, done.stderr
    assert ExecutionResult.model_validate_json(done.stdout).status == "succeeded"
