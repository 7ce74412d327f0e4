"""Workers that stay healthy (issue 17): real `dagrelay worker`s, real `redis-server`s.

A wrong password exits at once; an unreachable Redis is said within a second and no
process is ready before it answers; Redis going and coming back is said; a SIGKILLed
worker process is replaced while the run it was on still completes; a worker stopped
while Redis is frozen starts nothing once Redis answers again.
"""

from __future__ import annotations

import os
import re
import signal
import time

import pytest

from executor import Flow, Step
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


def test_a_worker_stopped_while_redis_is_frozen_starts_nothing_when_it_thaws(
    make_cluster, tmp_path
):
    """`a` ends while Redis is frozen (SIGSTOP): its completion's round trip, which also
    claims its dependents ahead, waits; SIGTERM the worker; thaw Redis. The stopping
    worker starts neither dependent (they go back to the queue, attempt 1 unspent) and
    exits; a new worker runs them."""
    c = make_cluster()
    (first,) = c.start_workers(1, threads=4)
    log = str(tmp_path / "trace")
    flow = Flow(
        name="fan",
        steps=[
            Step(id="a", tool="traced", inputs={"log": log, "seconds": 1.0, "value": 1}),
            Step(id="b0", tool="traced", inputs={"log": log, "value": "$steps.a"}),
            Step(id="b1", tool="traced", inputs={"log": log, "value": "$steps.a"}),
        ],
    )
    handle = c.executor().submit(flow)
    assert wait_until(lambda: len(trace(log)) == 1), c.logs()
    assert c.server.proc is not None
    redis_pid = c.server.proc.pid
    os.kill(redis_pid, signal.SIGSTOP)
    try:
        assert wait_until(lambda: len(trace(log)) == 2, 10)  # `a` ended, Redis frozen
        first.signal(signal.SIGTERM)
        time.sleep(2.0)  # the worker is stopping (and Redis still frozen)
    finally:
        os.kill(redis_pid, signal.SIGCONT)
    assert first.proc.wait(30) == 0, first.log()
    assert [k for k, _, _ in trace(log)] == ["start", "end"], first.log()
    c.start_workers(1)
    result = handle.wait(timeout=WAIT)
    assert result.status == "succeeded", c.logs()
    for b in ("b0", "b1"):
        assert [a.number for a in result.steps[b].attempts] == [1]
        assert result.steps[b].attempts[0].error is None
    assert len(trace(log)) == 6


def hung_map(log: str, n: int, seconds: float = 30.0) -> Flow:
    return Flow(
        name="hung",
        steps=[
            Step(id="items", tool="echo", inputs={"value": list(range(n))}),
            Step(
                id="m",
                tool="traced",
                map="$steps.items",
                inputs={"log": log, "seconds": seconds, "value": "$item"},
                timeout=0.3,
            ),
        ],
    )


def quick_chain(n: int = 10) -> Flow:
    steps = [Step(id="s0", tool="add", inputs={"a": 0, "b": 1}, timeout=1.0)]
    steps += [
        Step(id=f"s{i}", tool="add", inputs={"a": f"$steps.s{i - 1}", "b": 1}, timeout=1.0)
        for i in range(1, n)
    ]
    return Flow(name="chain", steps=steps, output=f"$steps.s{n - 1}")


def test_after_a_map_of_hung_calls_an_unrelated_chain_runs_at_normal_speed(make_cluster, tmp_path):
    """12 items of a tool that sleeps 30 s with `timeout=0.3`, on one process of 4
    threads: every item times out and gives its thread and slot up; a 10-step chain
    with `timeout: 1.0` on each step then succeeds, none of its steps waiting for a hung
    thread."""
    c = make_cluster()
    c.start_workers(1, threads=4, env={"DAGRELAY_MAX_ABANDONED": "100"})
    ex = c.executor()
    hung = ex.run(hung_map(str(tmp_path / "trace"), 12), timeout=WAIT)
    assert hung.status == "failed", c.logs()
    assert {i.error.type for i in hung.steps["m"].items or [] if i.error} == {"TimeoutError"}
    t0 = time.monotonic()
    chain = ex.run(quick_chain(), timeout=WAIT)
    measure("10-step chain after 12 hung sync calls", time.monotonic() - t0)
    assert chain.status == "succeeded" and chain.output == 10, chain.error
    assert all(len(r.attempts) == 1 for r in chain.steps.values())


def test_past_the_cap_of_abandoned_calls_a_worker_process_restarts_gracefully(
    make_cluster, tmp_path
):
    """DAGRELAY_MAX_ABANDONED=2: the third hung call past its timeout makes the process
    stop gracefully and exit 75; the supervisor starts another at once (no backoff) and
    a later run succeeds on it."""
    c = make_cluster()
    (worker,) = c.start_workers(1, threads=4, env={"DAGRELAY_MAX_ABANDONED": "2"})
    before = children(worker)
    ex = c.executor()
    hung = ex.run(hung_map(str(tmp_path / "trace"), 4), timeout=WAIT)
    assert hung.status == "failed", c.logs()
    assert wait_until(lambda: "asked to be replaced" in worker.log(), 20), worker.log()
    assert wait_until(lambda: len(children(worker) - before) == 1, 20), worker.log()
    assert "still run (cap 2)" in worker.log()
    assert ex.run(quick_chain(), timeout=WAIT).status == "succeeded", worker.log()
    assert worker.proc.poll() is None
