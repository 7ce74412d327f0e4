"""Redis restarted, emptied, or dropping connections while runs go on."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

from executor import ExecutionResult, Flow, RunNotFoundError, Step
from tests.faults.support import (
    WAIT,
    measure,
    one_final_record_each,
    trace,
    wait_until,
)

pytestmark = pytest.mark.timeout(180)


def chain(log: str, n: int, seconds: float) -> Flow:
    """`n` traced steps in a row, each adding one: the output is n."""
    steps = [Step(id="s0", tool="traced", inputs={"log": log, "seconds": seconds, "value": 0})]
    for i in range(1, n):
        steps.append(Step(id=f"p{i}", tool="add", inputs={"a": f"$steps.s{i - 1}", "b": 1}))
        steps.append(
            Step(
                id=f"s{i}",
                tool="traced",
                inputs={"log": log, "seconds": seconds, "value": f"$steps.p{i}"},
            )
        )
    return Flow(name="chain", steps=steps, output=f"$steps.s{n - 1}")


def ends(log: str) -> list[float]:
    return [at for kind, _, at in trace(log) if kind == "end"]


def starts(log: str) -> list[float]:
    return [at for kind, _, at in trace(log) if kind == "start"]


class Waiter:
    """`handle.wait()` in a thread, as a client blocked on the event stream."""

    def __init__(self, handle: Any) -> None:
        self.result: ExecutionResult | None = None
        self.error: BaseException | None = None
        self.done_at = 0.0
        self._thread = threading.Thread(target=self._run, args=(handle,), daemon=True)
        self._thread.start()

    def _run(self, handle: Any) -> None:
        try:
            self.result = handle.wait(timeout=2 * WAIT)
        except BaseException as exc:
            self.error = exc
        self.done_at = time.time()

    def join(self, timeout: float = 2 * WAIT + 10) -> None:
        self._thread.join(timeout)
        assert not self._thread.is_alive(), "the waiting client hangs"


def test_redis_restarted_with_aof_mid_run_everyone_reconnects(make_cluster, tmp_path):
    """Redis (AOF on) stops for two seconds in the middle of a run and comes back on
    the same port: the workers and the client waiting on the event stream reconnect
    with backoff and the run completes, each step recorded once."""
    c = make_cluster(appendonly=True)
    c.start_workers(2)
    log = str(tmp_path / "trace")
    handle = c.executor().submit(chain(log, 6, 0.4))
    waiter = Waiter(handle)
    assert wait_until(lambda: len(ends(log)) >= 2), c.logs()
    c.stop_redis()
    time.sleep(2)
    c.start_redis()
    back_at = time.time()
    waiter.join()
    assert waiter.error is None, f"{waiter.error!r}\n{c.logs()}"
    result = waiter.result
    assert result is not None and result.status == "succeeded" and result.output == 5, c.logs()
    one_final_record_each(result)
    # Progress resumed soon after Redis came back.
    after = [t for t in ends(log) if t > back_at]
    assert after, "no step finished after the restart"
    measure("Redis restart (AOF) -> first step done after it is back", min(after) - back_at)
    # Every step ran to completion once (a step interrupted by the restart may have
    # run again only if it lost its claim: then its record shows the lost attempt).
    retaken = sum(len(r.attempts) - 1 for r in result.steps.values())
    assert len(starts(log)) == 6 + retaken


def test_redis_restarted_without_persistence_fails_the_waiting_client_clearly(
    make_cluster, tmp_path
):
    """Persistence off: after a restart the run's state is gone. The client waiting on
    it gets RunNotFoundError saying so (never a hang), and the workers carry on with
    new runs."""
    c = make_cluster(appendonly=False)
    c.start_workers(1)
    log = str(tmp_path / "trace")
    ex = c.executor()
    handle = ex.submit(chain(log, 3, 2.0))
    waiter = Waiter(handle)
    assert wait_until(lambda: len(starts(log)) == 1), c.logs()
    c.stop_redis()
    c.start_redis()
    back_at = time.time()
    waiter.join()
    assert isinstance(waiter.error, RunNotFoundError), repr(waiter.error)
    message = str(waiter.error)
    assert handle.run_id in message and "gone" in message and "persistence" in message
    measure(
        "Redis restart without persistence -> client told the run is gone", waiter.done_at - back_at
    )
    assert waiter.done_at - back_at < 15
    with pytest.raises(RunNotFoundError):
        ex.get_run(handle.run_id)
    # The worker reconnected: a new run completes (its interrupted step was dropped).
    again = ex.run(
        Flow(
            name="after",
            steps=[Step(id="a", tool="add", inputs={"a": 1, "b": 2})],
            output="$steps.a",
        ),
        timeout=WAIT,
    )
    assert again.status == "succeeded" and again.output == 3, c.logs()


def test_client_connections_killed_while_a_step_runs(make_cluster, tmp_path):
    """CLIENT KILL drops every client connection (the workers' and the waiting
    client's) while a step runs: each reconnects, the step's completion is written,
    the tool ran once."""
    c = make_cluster()
    c.start_workers(1)
    log = str(tmp_path / "trace")
    handle = c.executor().submit(chain(log, 2, 1.0))
    waiter = Waiter(handle)
    assert wait_until(lambda: len(starts(log)) == 1), c.logs()
    killed = c.client.execute_command("CLIENT", "KILL", "TYPE", "normal")
    assert int(killed) >= 2
    waiter.join()
    assert waiter.error is None, f"{waiter.error!r}\n{c.logs()}"
    result = waiter.result
    assert result is not None and result.status == "succeeded" and result.output == 1
    one_final_record_each(result)
    assert len(starts(log)) == 2 and len(ends(log)) == 2
    assert all(len(r.attempts) == 1 for r in result.steps.values())


def test_redis_down_when_a_step_finishes_the_worker_retries_its_completion(make_cluster, tmp_path):
    """Redis stops while a tool runs and stays down for seconds (redis-py itself does
    not retry a refused connection): the tool finishes meanwhile; the worker keeps
    retrying its completion write with backoff until Redis is back, so the step is
    recorded from that one call (one attempt, no re-run) and the run completes."""
    c = make_cluster(appendonly=True)
    # A long lease: this test is about the write being retried, not taken over.
    c.start_workers(1, env={"DAGRELAY_LEASE_SECONDS": "20"})
    log = str(tmp_path / "trace")
    handle = c.executor().submit(chain(log, 2, 1.0))
    waiter = Waiter(handle)
    assert wait_until(lambda: len(starts(log)) == 1), c.logs()
    c.stop_redis()
    assert wait_until(lambda: len(ends(log)) == 1, 10)  # finished while Redis is down
    time.sleep(3)
    c.start_redis()
    back_at = time.time()
    waiter.join()
    assert waiter.error is None, f"{waiter.error!r}\n{c.logs()}"
    result = waiter.result
    assert result is not None and result.status == "succeeded" and result.output == 1, c.logs()
    one_final_record_each(result)
    assert len(starts(log)) == 2, c.logs()
    assert [len(r.attempts) for r in result.steps.values()] == [1, 1, 1]
    measure(
        "Redis down 3+ s at a step's end -> completion written, next step started",
        starts(log)[1] - back_at,
    )
