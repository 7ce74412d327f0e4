"""`dagrelay worker` checks Redis before it serves and keeps its processes (issue 17).

Real `dagrelay worker` processes and real `redis-server`s: a wrong password exits at
once, an unreachable Redis is said within a second and no process is ready before it
answers, Redis going and coming back is said, and a SIGKILLed worker process is replaced
while the run it was on still completes.
"""

from __future__ import annotations

import os
import re
import signal
import time

import pytest

from tests.faults.support import WAIT, measure, one_final_record_each, trace, wait_until
from tests.faults.test_workers import victim_flow
from tests.support.servers import RedisServer, WorkerProcess, descendants, worker_pid

pytestmark = pytest.mark.timeout(120)
TOOLS = "tests.fault_tools"


def children(worker: WorkerProcess) -> set[int]:
    """The worker processes under a `dagrelay worker` (alive ones)."""
    return {p for p in descendants(worker.proc.pid) - {worker.proc.pid} if _alive(p)}


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def test_a_wrong_password_exits_at_once_with_one_clear_line():
    server = RedisServer(password="right-one").start()
    try:
        url = f"redis://:wrong-secret@127.0.0.1:{server.port}/0"
        t0 = time.monotonic()
        worker = WorkerProcess(url, TOOLS)
        code = worker.proc.wait(20)
        elapsed = time.monotonic() - t0
        measure("wrong password: worker exits after", elapsed)
        text = worker.log()
        assert code == 2, text
        assert elapsed < 10, text
        lines = [ln for ln in text.splitlines() if ln.strip()]
        assert len(lines) == 1, text
        assert "refused authentication" in lines[0] and f"127.0.0.1:{server.port}" in lines[0]
        assert "wrong-secret" not in text and "Traceback" not in text
        assert "ready for action" not in text
    finally:
        server.close()


def test_a_bad_database_exits_at_once():
    server = RedisServer().start()
    try:
        worker = WorkerProcess(f"redis://127.0.0.1:{server.port}/999", TOOLS)
        code = worker.proc.wait(20)
        assert code == 2, worker.log()
        assert "Traceback" not in worker.log() and "ready for action" not in worker.log()
    finally:
        server.close()


def test_an_unreachable_redis_is_said_at_once_and_no_process_is_ready_until_it_answers():
    server = RedisServer(password="pw-not-in-logs")
    worker = WorkerProcess(server.url, TOOLS, env={"DAGRELAY_HEARTBEAT_SECONDS": "2"})
    try:
        host = f"127.0.0.1:{server.port}"
        t0 = time.monotonic()
        assert wait_until(lambda: f"Redis at {host}/0 is unreachable" in worker.log(), 10)
        said = time.monotonic() - t0
        measure("unreachable Redis: first warning after (s, incl. interpreter start)", said)
        assert wait_until(lambda: "still unreachable" in worker.log(), 15), worker.log()
        assert "ready for action" not in worker.log()
        assert worker.proc.poll() is None  # waiting, not dead: Redis may come
        server.start()
        worker.wait_ready(1, timeout=WAIT)
        text = worker.log()
        assert text.index("answered after") < text.index("ready for action")
        # While running: Redis goes away and comes back, and the worker says both.
        server.stop()
        assert wait_until(lambda: "became unreachable" in worker.log(), 10), worker.log()
        server.start()
        assert wait_until(lambda: "is back after" in worker.log(), 10), worker.log()
        assert "pw-not-in-logs" not in worker.log()
        assert worker.stop() == 0
    finally:
        worker.kill_all()
        server.close()


def test_a_sigkilled_worker_process_is_replaced_and_its_run_completes(make_cluster, tmp_path):
    """SIGKILL the process running a step: the supervisor logs its exit code, a new
    process serves within 10 s, the step runs again (its lease) and the run succeeds;
    a run after it succeeds too; the supervisor itself never stopped."""
    c = make_cluster()
    (worker,) = c.start_workers(1, processes=2)
    before = children(worker)
    assert len(before) == 2
    log = str(tmp_path / "trace")
    ex = c.executor()
    handle = ex.submit(victim_flow(log, seconds=1.0))
    assert wait_until(lambda: any(k == "start" for k, _, _ in trace(log))), c.logs()
    victim = next(pid for k, pid, _ in trace(log) if k == "start")
    assert victim in before
    killed_at = time.monotonic()
    os.kill(victim, signal.SIGKILL)
    assert wait_until(lambda: len(children(worker) - before) == 1, 10), worker.log()
    assert wait_until(lambda: worker.log().count("ready for action") == 3, 10), worker.log()
    measure("SIGKILLed worker process replaced after", time.monotonic() - killed_at)
    assert re.search(rf"PID {victim}\) died with exit code -9 \(SIGKILL\)", worker.log())
    result = handle.wait(timeout=WAIT)
    assert result.status == "succeeded" and result.output == 2, c.logs()
    one_final_record_each(result)
    first, second = result.steps["victim"].attempts
    assert first.error is not None and first.error.type == "WorkerLost"
    assert worker_pid(second.worker) != victim
    after = ex.run(victim_flow(str(tmp_path / "trace2"), seconds=0.0))
    assert after.status == "succeeded", c.logs()
    assert worker.proc.poll() is None
    assert worker.stop() == 0
