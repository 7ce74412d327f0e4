"""The worker pool across real processes: a real redis-server and two `dagrelay worker`
processes, counted by the tools themselves (each call logs when it starts and ends, and
in which process).

Work spreads over both processes; no process runs more sync calls than `--threads` or
async calls than `--async-steps`, whatever brought them (a token, a dependent kept in
place, a map item); a tool's `max_concurrency` holds across processes for map items;
a worker killed in the middle of a map costs only the items it was running; two runs
submitted together share the pool.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from executor import Flow, FlowExecutor, RetryPolicy, Step
from tests import dist_tools
from tests.conformance.tools import read_lines
from tests.support.servers import RedisServer, WorkerProcess, descendants

pytestmark = pytest.mark.timeout(120)
TOOLS = "tests.dist_tools"
WAIT = 60.0


def calls(log: Path) -> list[tuple[float, float, int, str]]:
    """(start, end, pid, value) of each logged call."""
    starts: dict[tuple[int, str], float] = {}
    out = []
    for line in read_lines(str(log)):
        kind, t, pid, value = line.split(" ", 3)
        if kind == "start":
            starts[(int(pid), value)] = float(t)
        else:
            out.append((starts.pop((int(pid), value)), float(t), int(pid), value))
    return out


def most_at_once(spans: list[tuple[float, float]]) -> int:
    points = sorted([(s, 1) for s, _ in spans] + [(e, -1) for _, e in spans])
    depth = best = 0
    for _, d in points:
        depth += d
        best = max(best, depth)
    return best


def per_process(log: Path) -> dict[int, list[tuple[float, float]]]:
    out: dict[int, list[tuple[float, float]]] = {}
    for s, e, pid, _ in calls(log):
        out.setdefault(pid, []).append((s, e))
    return out


class Pair:
    """A redis-server and two worker processes of the same settings."""

    def __init__(self, threads: int, env: dict[str, str] | None = None) -> None:
        self.server = RedisServer().start()
        self.workers = [
            WorkerProcess(self.server.url, TOOLS, threads=threads, env=env) for _ in range(2)
        ]
        for w in self.workers:
            w.wait_ready()
        self.ex = FlowExecutor(self.server.url, registry=dist_tools.registry)

    def close(self) -> None:
        self.ex.close()
        for w in self.workers:
            w.stop()
        self.server.close()


@pytest.fixture(scope="module")
def pair() -> Iterator[Pair]:
    p = Pair(threads=2, env={"DAGRELAY_ASYNC_STEPS": "3"})
    try:
        yield p
    finally:
        p.close()


def fan(leaf: Step, n: int, root: Step | None = None) -> Flow:
    root = root or Step(id="root", tool="echo", inputs={"value": 0})
    leaves = [
        leaf.model_copy(update={"id": f"w{i}", "inputs": {**leaf.inputs, "value": i}})
        for i in range(n)
    ]
    return Flow(
        name="fan",
        steps=[root, *[s.model_copy(update={"depends_on": ["root"]}) for s in leaves]],
    )


def test_sync_calls_spread_and_never_exceed_threads_whatever_brings_them(pair, tmp_path):
    log = tmp_path / "calls"
    leaf = Step(id="w", tool="logged", inputs={"log": str(log), "seconds": 0.15})
    flow = fan(leaf, 10)
    # A map and a chain besides: items and kept dependents take slots too.
    flow.steps += [
        Step(
            id="items",
            tool="logged",
            map="$input.items",
            inputs={"log": str(log), "seconds": 0.15, "value": "$item"},
        ),
        Step(id="c1", tool="logged", inputs={"log": str(log), "seconds": 0.1, "value": "c1"}),
        Step(
            id="c2",
            tool="logged",
            inputs={"log": str(log), "seconds": 0.1, "value": "$steps.c1"},
        ),
    ]
    result = pair.ex.run(flow, {"items": [f"i{i}" for i in range(6)]}, timeout=WAIT)
    assert result.status == "succeeded", result.error
    spans = per_process(log)
    assert len(calls(log)) == 10 + 6 + 2
    assert len(spans) == 2, "both processes ran calls"
    assert {pid: most_at_once(s) for pid, s in spans.items()} == dict.fromkeys(spans, 2)
    assert min(len(s) for s in spans.values()) >= 5


def test_async_calls_never_exceed_async_steps_per_process(pair, tmp_path):
    log = tmp_path / "calls"
    leaf = Step(id="w", tool="logged_async", inputs={"log": str(log), "seconds": 0.2})
    result = pair.ex.run(fan(leaf, 12), timeout=WAIT)
    assert result.status == "succeeded", result.error
    spans = per_process(log)
    assert len(spans) == 2
    assert all(most_at_once(s) <= 3 for s in spans.values())
    assert most_at_once([x for s in spans.values() for x in s]) >= 5  # both used theirs


def test_cpu_bound_leaves_spread_over_the_processes(pair, tmp_path):
    log = tmp_path / "calls"
    leaf = Step(id="w", tool="spin", inputs={"log": str(log), "seconds": 0.3})
    result = pair.ex.run(fan(leaf, 4), timeout=WAIT)
    assert result.status == "succeeded", result.error
    counts = sorted(len(s) for s in per_process(log).values())
    assert counts == [2, 2]  # two slots each: the root's process keeps two, sends two


def test_max_concurrency_holds_for_map_items_across_processes(pair, tmp_path):
    log = tmp_path / "calls"
    flow = Flow(
        name="limited-map",
        steps=[
            Step(
                id="each",
                tool="logged_limited",
                map="$input.items",
                inputs={"log": str(log), "seconds": 0.15, "value": "$item"},
            )
        ],
        output="$steps.each",
    )
    items = [f"i{i}" for i in range(8)]
    result = pair.ex.run(flow, {"items": items}, timeout=WAIT)
    assert result.status == "succeeded", result.error
    assert result.output == items  # in item order
    spans = [(s, e) for s, e, _, _ in calls(log)]
    assert len(spans) == 8 and most_at_once(spans) == 2
    assert len(per_process(log)) == 2  # the items spread
    assert [c.step_id for c in result.steps["each"].items or []] == [f"each[{i}]" for i in range(8)]


def test_two_runs_submitted_together_share_the_pool(pair, tmp_path):
    """A run of four long chains fills every slot; a one-step run submitted after it
    does not wait for it to end: the chains give way to the queue."""
    log = tmp_path / "calls"
    steps = []
    for c in range(4):
        for i in range(12):
            inputs: dict[str, Any] = {"log": str(log), "seconds": 0.05, "value": f"{c}.{i}"}
            steps.append(
                Step(id=f"c{c}_{i}", tool="logged", inputs=inputs)
                if i == 0
                else Step(
                    id=f"c{c}_{i}", tool="logged", inputs=inputs, depends_on=[f"c{c}_{i - 1}"]
                )
            )
    long = pair.ex.submit(Flow(name="chains", steps=steps))
    time.sleep(0.3)
    short = pair.ex.run(
        Flow(name="short", steps=[Step(id="s", tool="echo", inputs={"value": 1})]),
        timeout=WAIT,
    )
    assert short.status == "succeeded"
    done = long.wait(timeout=WAIT)
    assert done.status == "succeeded"
    assert short.finished_at is not None and done.finished_at is not None
    assert short.finished_at < done.finished_at  # it did not wait for the long run


def test_a_worker_killed_in_a_map_reruns_only_its_unfinished_items(tmp_path):
    env = {"DAGRELAY_LEASE_SECONDS": "1", "DAGRELAY_SWEEP_SECONDS": "0.2"}
    server = RedisServer().start()
    workers = [WorkerProcess(server.url, TOOLS, threads=2, env=env) for _ in range(2)]
    try:
        for w in workers:
            w.wait_ready()
        folder = tmp_path / "items"
        folder.mkdir()
        ran_in = tmp_path / "pids"
        ran_in.mkdir()
        n = 10
        flow = Flow(
            name="map",
            steps=[
                Step(
                    id="each",
                    tool="counted_item",
                    map="$input.items",
                    inputs={
                        "folder": str(folder),
                        "value": "$item",
                        "seconds": 0.6,
                        "pids": str(ran_in),
                    },
                    retry=RetryPolicy(max_attempts=1),
                )
            ],
            output="$steps.each",
        )
        victim = workers[0]
        victim_pids = {str(p) for p in descendants(victim.proc.pid)}
        with FlowExecutor(server.url, registry=dist_tools.registry) as ex:
            handle = ex.submit(flow, {"items": list(range(n))})
            # Kill one worker once it runs items of the map (not before: it would have
            # nothing to lose).
            deadline = time.monotonic() + 10
            while not victim_pids & set(os.listdir(ran_in)) and time.monotonic() < deadline:
                time.sleep(0.02)
            assert victim_pids & set(os.listdir(ran_in)), "the victim never ran an item"
            os.killpg(victim.proc.pid, signal.SIGKILL)
            result = handle.wait(timeout=WAIT)
        assert result.status == "succeeded", result.error
        assert result.output == list(range(n))
        runs = {int(name): int((folder / name).read_text()) for name in os.listdir(folder)}
        assert sorted(runs) == list(range(n))
        again = [i for i, k in runs.items() if k > 1]
        # Only what the dead worker was running ran again (at most its two slots).
        assert 1 <= len(again) <= 2, runs
        assert all(k <= 2 for k in runs.values())
        items = result.steps["each"].items or []
        for i in again:
            assert [a.number for a in items[i].attempts] == [1, 2]
            assert items[i].attempts[0].error is not None
            assert items[i].attempts[0].error.type == "WorkerLost"
    finally:
        for w in workers:
            w.stop()
        server.close()
