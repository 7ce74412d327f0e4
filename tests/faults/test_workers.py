"""Workers that die, stop, freeze or all go away: every run still finishes, once."""

from __future__ import annotations

import os
import signal
import time

import pytest

from executor import Flow, Step
from tests.faults.support import WAIT, measure, one_final_record_each, trace, wait_until
from tests.support.servers import descendants, worker_pid

pytestmark = pytest.mark.timeout(180)


def victim_flow(log: str, seconds: float = 1.0) -> Flow:
    return Flow(
        name="victim",
        steps=[
            Step(id="first", tool="echo", inputs={"value": 1}),
            Step(
                id="victim",
                tool="traced",
                inputs={"log": log, "seconds": seconds, "value": "$steps.first"},
            ),
            Step(id="after", tool="add", inputs={"a": "$steps.victim", "b": 1}),
        ],
        output="$steps.after",
    )


def starts(log: str) -> list[tuple[int, float]]:
    return [(pid, at) for kind, pid, at in trace(log) if kind == "start"]


def test_a_worker_killed_mid_step_costs_a_lease_and_another_worker_runs_it(make_cluster, tmp_path):
    """SIGKILL the worker running a step: within lease + sweep the other worker runs
    attempt 2; attempt 1 is recorded as WorkerLost; the run finishes with one record
    per step."""
    c = make_cluster()
    c.start_workers(2)
    log = str(tmp_path / "trace")
    handle = c.executor().submit(victim_flow(log))
    assert wait_until(lambda: len(starts(log)) == 1), c.logs()
    doomed = c.worker_of(starts(log)[0][0])
    doomed_pids = descendants(doomed.proc.pid)
    killed_at = time.time()
    c.kill(doomed)
    result = handle.wait(timeout=WAIT)
    assert result.status == "succeeded" and result.output == 2, c.logs()
    one_final_record_each(result)
    first, second = result.steps["victim"].attempts
    assert first.error is not None and first.error.type == "WorkerLost"
    assert worker_pid(first.worker) in doomed_pids
    assert worker_pid(second.worker) not in doomed_pids
    assert second.error is None
    (_, _t1), (pid2, t2) = starts(log)
    assert pid2 not in doomed_pids
    recovery = t2 - killed_at
    measure("worker SIGKILL mid-step -> step restarted (lease 2 s, sweep 0.5 s)", recovery)
    assert recovery < 15
    # The other steps ran once each.
    assert [len(result.steps[s].attempts) for s in ("first", "after")] == [1, 1]


def test_a_killed_workers_prefetched_messages_are_not_stranded(make_cluster, tmp_path):
    """A Dramatiq worker prefetches messages it has not started. Killed, those sit in
    its unacked set until Dramatiq's maintenance requeues them (by default after a
    60 s heartbeat timeout, on a 1-in-1000 chance per call: minutes). dagrelay workers
    declare a dead peer after a short heartbeat timeout and run maintenance on every
    call, so every run still finishes soon after the kill."""
    c = make_cluster()
    doomed, _survivor = c.start_workers(2, threads=2)  # each prefetches up to 4
    log = str(tmp_path / "trace")
    ex = c.executor()
    handles = [
        ex.submit(
            Flow(
                name=f"r{i}",
                steps=[Step(id="s", tool="traced", inputs={"log": log, "seconds": 0.5})],
            )
        )
        for i in range(12)
    ]
    doomed_pids = descendants(doomed.proc.pid)
    # Kill it while it runs two steps and holds more.
    assert wait_until(lambda: sum(p in doomed_pids for p, _ in starts(log)) >= 2), c.logs()
    killed_at = time.time()
    c.kill(doomed)
    results = [h.wait(timeout=WAIT) for h in handles]
    last = max(r.finished_at.timestamp() for r in results if r.finished_at)
    assert all(r.status == "succeeded" for r in results), c.logs()
    for r in results:
        one_final_record_each(r)
    measure("worker SIGKILL with prefetched messages -> last of 12 runs done", last - killed_at)
    assert last - killed_at < 30


def test_sigterm_lets_the_running_step_finish_and_takes_no_new_work(make_cluster, tmp_path):
    """Graceful stop: Dramatiq waits for the running actor (up to the shutdown timeout);
    the step finishes on that worker once, and the worker takes no new message."""
    c = make_cluster()
    c.start_workers(2, threads=1)
    log = str(tmp_path / "trace")
    ex = c.executor()
    handle = ex.submit(victim_flow(log, seconds=2.0))
    assert wait_until(lambda: len(starts(log)) == 1), c.logs()
    leaving = c.worker_of(starts(log)[0][0])
    leaving_pids = descendants(leaving.proc.pid)
    leaving.signal(signal.SIGTERM)
    later = ex.submit(
        Flow(name="later", steps=[Step(id="x", tool="echo", inputs={"value": 7})]),
    )
    result = handle.wait(timeout=WAIT)
    assert result.status == "succeeded" and result.output == 2, c.logs()
    one_final_record_each(result)
    victim = result.steps["victim"]
    assert len(victim.attempts) == 1 and victim.attempts[0].error is None
    assert worker_pid(victim.worker) in leaving_pids
    # Ran exactly once: one start and one end, both in the leaving worker.
    assert [(k, p in leaving_pids) for k, p, _ in trace(log)] == [("start", True), ("end", True)]
    assert leaving.proc.wait(WAIT) == 0, leaving.log()
    other = later.wait(timeout=WAIT)
    assert other.status == "succeeded" and other.output is None
    assert worker_pid(other.steps["x"].worker) not in leaving_pids


def test_all_workers_down_then_back(make_cluster, tmp_path):
    """Every worker is SIGKILLed mid-step, and a run is submitted while none is up:
    both wait in Redis; new workers finish them (the lost attempt is taken over)."""
    c = make_cluster()
    c.start_workers(2)
    log = str(tmp_path / "trace")
    ex = c.executor()
    first = ex.submit(victim_flow(log, seconds=1.5))
    assert wait_until(lambda: len(starts(log)) == 1), c.logs()
    for w in list(c.workers):
        c.kill(w)
    second = ex.submit(victim_flow(str(tmp_path / "trace2"), seconds=0.1))
    time.sleep(2.5)  # longer than the lease: nobody is there to notice
    assert first.status() == "running" and second.status() == "running"
    assert second.result().steps["first"].status == "queued"
    back_at = time.time()
    c.start_workers(2)
    r1, r2 = first.wait(timeout=WAIT), second.wait(timeout=WAIT)
    assert (r1.status, r1.output, r2.status, r2.output) == ("succeeded", 2, "succeeded", 2)
    one_final_record_each(r1)
    one_final_record_each(r2)
    lost, retaken = r1.steps["victim"].attempts
    assert lost.error is not None and lost.error.type == "WorkerLost"
    assert retaken.error is None
    measure("all workers down, then back -> lost step restarted", starts(log)[1][1] - back_at)


def test_a_frozen_worker_is_taken_over_and_its_late_result_is_dropped(make_cluster, tmp_path):
    """SIGSTOP the worker running a step (a stalled VM, a long GC pause): its lease
    expires, the other worker runs attempt 2 and the run finishes. SIGCONT: the frozen
    attempt completes its call (the tool ran twice: at-least-once) but cannot record
    over the takeover (recorded once)."""
    c = make_cluster()
    c.start_workers(2)
    log = str(tmp_path / "trace")
    handle = c.executor().submit(victim_flow(log, seconds=1.0))
    assert wait_until(lambda: len(starts(log)) == 1), c.logs()
    frozen = c.worker_of(starts(log)[0][0])
    frozen_pids = descendants(frozen.proc.pid)
    os.killpg(frozen.proc.pid, signal.SIGSTOP)
    try:
        result = handle.wait(timeout=WAIT)
    finally:
        os.killpg(frozen.proc.pid, signal.SIGCONT)
    assert result.status == "succeeded" and result.output == 2, c.logs()
    first, second = result.steps["victim"].attempts
    assert first.error is not None and first.error.type == "WorkerLost"
    assert worker_pid(first.worker) in frozen_pids
    assert worker_pid(second.worker) not in frozen_pids
    # The thawed attempt finishes its call ...
    assert wait_until(lambda: sum(k == "end" for k, _, _ in trace(log)) == 2), c.logs()
    time.sleep(1)  # ... and tries to record it: that must change nothing.
    assert handle.result().model_dump() == result.model_dump()
    assert frozen.proc.poll() is None  # and the thawed worker lives on


def test_a_worker_killed_mid_detached_async_step_costs_a_lease(make_cluster, tmp_path):
    """With --async-steps the step's message is acknowledged when it is claimed: only
    its lease stands for it. SIGKILL the worker: another one runs attempt 2."""
    c = make_cluster()
    c.start_workers(2, env={"DAGRELAY_ASYNC_STEPS": "10"})
    log = str(tmp_path / "trace")
    flow = Flow(
        name="detached-victim",
        steps=[Step(id="victim", tool="atraced", inputs={"log": log, "seconds": 1.0, "value": 7})],
        output="$steps.victim",
    )
    handle = c.executor().submit(flow)
    assert wait_until(lambda: len(starts(log)) == 1), c.logs()
    doomed = c.worker_of(starts(log)[0][0])
    killed_at = time.time()
    c.kill(doomed)
    result = handle.wait(timeout=WAIT)
    assert result.status == "succeeded" and result.output == 7, c.logs()
    one_final_record_each(result)
    first, second = result.steps["victim"].attempts
    assert first.error is not None and first.error.type == "WorkerLost"
    assert second.error is None
    measure("worker SIGKILL mid detached async step -> restarted", starts(log)[1][1] - killed_at)


def test_sigterm_lets_a_detached_async_step_finish_once(make_cluster, tmp_path):
    """A detached step's message is already acknowledged: on SIGTERM the worker still
    waits for it (its lease renewed meanwhile), records it, then exits cleanly."""
    c = make_cluster()
    c.start_workers(2, env={"DAGRELAY_ASYNC_STEPS": "10"})
    log = str(tmp_path / "trace")
    flow = Flow(
        name="detached-leaving",
        steps=[Step(id="victim", tool="atraced", inputs={"log": log, "seconds": 2.0, "value": 3})],
        output="$steps.victim",
    )
    handle = c.executor().submit(flow)
    assert wait_until(lambda: len(starts(log)) == 1), c.logs()
    leaving = c.worker_of(starts(log)[0][0])
    leaving_pids = descendants(leaving.proc.pid)
    leaving.signal(signal.SIGTERM)
    result = handle.wait(timeout=WAIT)
    assert result.status == "succeeded" and result.output == 3, c.logs()
    victim = result.steps["victim"]
    assert len(victim.attempts) == 1 and victim.attempts[0].error is None
    assert [(k, p in leaving_pids) for k, p, _ in trace(log)] == [("start", True), ("end", True)]
    assert leaving.proc.wait(WAIT) == 0, leaving.log()
