"""Load: 200 concurrent runs of a 20-step DAG on 2 worker processes."""

from __future__ import annotations

import time

import pytest

from executor import Flow, Step
from tests.faults.support import (
    WAIT,
    keys_without_ttl,
    measure,
    one_final_record_each,
    wait_until,
)

pytestmark = pytest.mark.timeout(300)

RUNS = 200
CHAINS, LENGTH = 4, 4


def twenty_steps(seconds: float = 0.0) -> Flow:
    """root → 4 chains of 4 → join → final, plus a step skipped by its `when`: 20 steps.
    Output for input x: root x+1, each chain end x+5, join 4(x+5), final 4x+21."""
    steps = [Step(id="root", tool="inc", inputs={"x": "$input.x"})]
    for j in range(CHAINS):
        prev = "root"
        for k in range(LENGTH):
            steps.append(
                Step(
                    id=f"c{j}_{k}",
                    tool="inc",
                    inputs={"x": f"$steps.{prev}", "seconds": seconds},
                )
            )
            prev = f"c{j}_{k}"
    ends = [f"$steps.c{j}_{LENGTH - 1}" for j in range(CHAINS)]
    steps.append(Step(id="join", tool="total_of", inputs={"values": ends}))
    steps.append(Step(id="final", tool="inc", inputs={"x": "$steps.join"}))
    steps.append(Step(id="never", tool="inc", inputs={"x": "$steps.root"}, when="input.x < 0"))
    assert len(steps) == 20
    return Flow(name="load", steps=steps, output="$steps.final")


def test_200_concurrent_runs_of_a_20_step_dag_on_2_workers(make_cluster):
    c = make_cluster(appendonly=False)
    c.start_workers(2, threads=8)
    flow = twenty_steps()
    with c.executor(result_ttl=3600) as ex:
        t0 = time.monotonic()
        handles = [ex.submit(flow, {"x": i}) for i in range(RUNS)]
        results = [h.wait(timeout=WAIT) for h in handles]
        elapsed = time.monotonic() - t0
    bad = [(r.run_id, r.status, r.error) for r in results if r.status != "succeeded"]
    assert not bad, (bad[:5], c.logs())
    assert [r.output for r in results] == [4 * i + 21 for i in range(RUNS)]
    for r in results:
        one_final_record_each(r)
        assert r.steps["never"].status == "skipped"
        assert all(len(s.attempts) == 1 for sid, s in r.steps.items() if sid != "never")
    # Both processes served, nothing is left running, every run key expires.
    workers = {s.worker.split(":")[1] for r in results for s in r.steps.values() if s.worker}
    assert len(workers) == 2, workers
    assert len(list(c.client.scan_iter(match="dagrelay:{*", count=1000))) >= RUNS * 8
    assert keys_without_ttl(c.client) == []
    # Lease hints of finished steps go with their thread's next claim, or else the
    # sweeper takes them once expired (a no-op repair): none is left for long.
    assert wait_until(lambda: c.client.zcard("dagrelay:leases") == 0, 15)
    assert c.client.zcard("dagrelay:deadlines") == 0
    steps_per_s = RUNS * 19 / elapsed
    measure(
        f"load: {RUNS} runs x 20 steps on 2 workers (wall time; {steps_per_s:.0f} steps/s)", elapsed
    )


def test_a_worker_killed_under_load_strands_no_run(make_cluster):
    """200 runs (steps that take 20 ms) on 2 workers; one is SIGKILLed in the middle:
    its running steps (leases) and its prefetched messages (dead-worker maintenance)
    go to the survivor, and every run completes once with the right output."""
    c = make_cluster(appendonly=False)
    doomed, _ = c.start_workers(2, threads=8)
    flow = twenty_steps(seconds=0.02)
    with c.executor(result_ttl=3600) as ex:
        handles = [ex.submit(flow, {"x": i}) for i in range(RUNS)]
        assert wait_until(lambda: handles[RUNS // 4].status() != "running", WAIT)
        killed_at = time.monotonic()
        c.kill(doomed)
        results = [h.wait(timeout=2 * WAIT) for h in handles]
        recovered = time.monotonic() - killed_at
    bad = [(r.run_id, r.status, r.error) for r in results if r.status != "succeeded"]
    assert not bad, (bad[:5], c.logs())
    assert [r.output for r in results] == [4 * i + 21 for i in range(RUNS)]
    lost = 0
    for r in results:
        one_final_record_each(r)
        for s in r.steps.values():
            lost += sum(1 for a in s.attempts if a.error is not None)
            assert s.attempts[-1].error is None if s.attempts else True
    assert keys_without_ttl(c.client) == []
    measure(
        f"load: worker SIGKILL mid-load -> all {RUNS} runs done ({lost} lost attempts)", recovered
    )
