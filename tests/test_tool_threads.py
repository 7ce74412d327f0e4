"""Sync tool calls that time out give their thread up (issue 17, item 1), embedded."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from executor import Flow, FlowExecutor, Step, ToolRegistry, tool
from executor.run.tool_threads import ToolThreads, call_sync
from tests.faults.support import wait_until


def test_a_timeout_starts_when_the_call_starts_not_when_it_waits_for_a_thread():
    threads = ToolThreads(1)

    async def main() -> list[object]:
        first = call_sync(threads, lambda: time.sleep(0.4), {}, None, "busy")
        # Waits ~0.4 s for the one thread, then runs 0.05 s: within its 0.2 s timeout.
        second = call_sync(threads, lambda: time.sleep(0.05) or "ran", {}, 0.2, "quick")
        return await asyncio.gather(first, second)

    assert asyncio.run(main())[1] == "ran"
    assert threads.abandoned_total == 0


def test_hung_calls_leave_the_pool_and_later_calls_run_at_once():
    threads = ToolThreads(2)
    release = threading.Event()

    async def main() -> tuple[int, float]:
        hung = [call_sync(threads, release.wait, {"timeout": 30}, 0.1, "hang") for _ in range(4)]
        outcomes = await asyncio.gather(*hung, return_exceptions=True)
        timed_out = sum(isinstance(o, TimeoutError) for o in outcomes)
        t0 = time.perf_counter()
        await call_sync(threads, lambda: None, {}, 1.0, "next")
        return timed_out, time.perf_counter() - t0

    timed_out, waited = asyncio.run(main())
    assert timed_out == 4
    assert waited < 1.0  # it did not wait for any hung call (they wait up to 30 s)
    assert threads.abandoned == 4 and threads.abandoned_total == 4
    release.set()  # the hung calls return: their threads exit, the count goes down
    assert wait_until(lambda: threads.abandoned == 0, 5)


def test_a_call_looping_in_python_is_stopped_by_the_timeout_raised_into_it():
    threads = ToolThreads(1)
    stopped = threading.Event()

    def spin() -> None:
        try:
            while True:
                pass
        except TimeoutError:
            stopped.set()
            raise

    async def main() -> None:
        with pytest.raises(TimeoutError, match=r"exceeded its timeout of 0\.1s"):
            await call_sync(threads, spin, {}, 0.1, "spin")

    asyncio.run(main())
    assert stopped.wait(5)
    assert wait_until(lambda: threads.abandoned == 0, 5)


def test_past_the_cap_of_abandoned_calls_the_owner_is_told():
    told: list[int] = []
    threads = ToolThreads(4, max_abandoned=1, on_too_many=told.append)
    release = threading.Event()

    async def main() -> None:
        hung = [call_sync(threads, release.wait, {"timeout": 30}, 0.05, "hang") for _ in range(2)]
        await asyncio.gather(*hung, return_exceptions=True)

    asyncio.run(main())
    release.set()
    assert told == [2]


def test_after_a_map_of_hung_calls_an_unrelated_chain_runs_at_normal_speed():
    """40 items of a tool that blocks far past its timeout, then a 10-step chain of
    10 ms steps with `timeout: 1.0` each, on 8 tool threads: the chain succeeds (none of
    its steps times out waiting for a thread) and its steps' time is their own."""
    reg = ToolRegistry()
    release = threading.Event()

    @tool(registry=reg, timeout=0.2)
    def hang(x: int) -> int:
        release.wait(30)
        return x

    @tool(registry=reg)
    def step(x: int) -> int:
        time.sleep(0.01)
        return x + 1

    hung = Flow(
        name="hung",
        steps=[Step(id="m", tool="hang", map="$input.items", inputs={"x": "$item"})],
    )
    chain = [Step(id="s0", tool="step", inputs={"x": 0}, timeout=1.0)]
    chain += [
        Step(id=f"s{i}", tool="step", inputs={"x": f"$steps.s{i - 1}"}, timeout=1.0)
        for i in range(1, 10)
    ]
    try:
        with FlowExecutor(registry=reg, max_threads=8) as ex:
            first = ex.run(hung, {"items": list(range(40))})
            assert first.status == "failed"
            assert first.steps["m"].error is not None
            assert first.steps["m"].error.type == "TimeoutError"
            result = ex.run(Flow(name="chain", steps=chain, output="$steps.s9"))
            assert result.status == "succeeded", result.error
            assert result.output == 10
            # Each step ran about its 10 ms: no step waited on a hung thread.
            assert max(r.duration or 0 for r in result.steps.values()) < 0.5
    finally:
        release.set()
