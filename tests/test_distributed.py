"""The distributed mode end to end.

Part 1 (fakeredis, the `run_step` actor in this process, interleavings forced by
calling it directly): at-least-once delivery is recorded once — a step message
delivered twice runs its tool once, and a completion replayed after the run finished
changes nothing; fail_fast races between workers end the run as the local backend does.

Part 2 (a real redis-server, real `dagrelay worker` processes): concurrency across
workers, reattaching and cancelling from other processes, unknown tools, unreachable
Redis, broken tools modules, plain `dramatiq workers`, queue routing, cluster-wide
max_concurrency, TTLs on every key of a finished run, a SIGKILLed worker.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from executor import (
    DagrelayError,
    ExecutionResult,
    Flow,
    FlowExecutor,
    RetryPolicy,
    Step,
    ToolRegistry,
)
from executor.backends.redis.backend import BrokerSender
from executor.backends.redis.claims import Terminal
from executor.backends.redis.messages import Token
from executor.backends.redis.store import RedisStore
from tests import dist_tools
from tests.conformance.tools import read_lines
from tests.support.servers import (
    ROOT,
    RedisServer,
    WorkerProcess,
    descendants,
    free_port,
    python,
    worker_pid,
)

pytestmark = pytest.mark.timeout(120)
TOOLS = "tests.dist_tools"
WAIT = 30.0  # generous upper bound for any single run; runs here take about a second


def read_count(path: str) -> int:
    try:
        return int(Path(path).read_text() or 0)
    except FileNotFoundError:
        return 0


def wait_until(predicate: Any, timeout: float = 10.0, every: float = 0.02) -> bool:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(every)
    return True


def store_snapshot(store: RedisStore, run_id: str) -> dict[str, Any]:
    """Every key of the run with its content (TTL left out: it only counts down)."""
    c = store.client
    out: dict[str, Any] = {}
    for k in sorted(c.scan_iter(match=f"{store.namespace}:{{{run_id}}}:*")):
        kind = c.type(k)
        out[k] = c.hgetall(k) if kind == "hash" else c.xrange(k) if kind == "stream" else kind
    return out


def events_of(store: RedisStore, run_id: str) -> list[dict[str, str]]:
    return [fields for _, fields in store.client.xrange(store.keys(run_id)[7])]


# Part 1: fakeredis, the actor in this process (the `fake` fixture: tests/support/fakes.py)
def two_counted_steps(ca: str, cb: str, seconds: float = 0.0) -> Flow:
    return Flow(
        name="idem",
        steps=[
            Step(id="a", tool="counted", inputs={"counter": ca, "seconds": seconds, "value": 1}),
            Step(id="b", tool="counted", inputs={"counter": cb, "value": "$steps.a"}),
        ],
        output="$steps.b",
    )


def take(fake: Any, run_id: str, lane: str = "dagrelay", units: int = 1) -> None:
    """Deliver a token message by hand, as a duplicate delivery would."""
    fake.pipeline.take(run_id, lane, units)


def test_a_token_delivered_twice_runs_each_unit_once_and_records_it_once(fake, tmp_path):
    ca, cb = str(tmp_path / "a"), str(tmp_path / "b")
    handle = fake.executor.submit(two_counted_steps(ca, cb))
    run_id = handle.run_id
    # Deliver the roots' token twice, by hand, before any worker sees the broker's copy.
    take(fake, run_id)
    take(fake, run_id)
    result = handle.wait(timeout=5)
    assert result.status == "succeeded" and result.output == 1
    assert (read_count(ca), read_count(cb)) == (1, 1)
    before = result.model_dump_json()
    events = events_of(fake.store, run_id)
    assert [e["status"] for e in events if e.get("step") == "a"] == [
        "queued",
        "running",
        "succeeded",
    ]
    # Now the broker delivers its own copy (the submit's): after the run finished.
    fake.start_worker()
    fake.drain()
    take(fake, run_id)
    assert (read_count(ca), read_count(cb)) == (1, 1)
    assert handle.result().model_dump_json() == before
    assert events_of(fake.store, run_id) == events
    assert [len(r.attempts) for r in result.steps.values()] == [1, 1]


def test_a_token_delivered_while_its_unit_runs_takes_nothing(fake, tmp_path):
    ca, cb = str(tmp_path / "a"), str(tmp_path / "b")
    handle = fake.executor.submit(two_counted_steps(ca, cb, seconds=0.5))
    run_id = handle.run_id
    take(fake, run_id)
    assert wait_until(lambda: fake.store.all_statuses(run_id)["a"] == "running", 5)
    t0 = time.monotonic()
    take(fake, run_id)  # the duplicate: must not run the tool
    assert time.monotonic() - t0 < 0.4
    assert fake.store.all_statuses(run_id)["a"] == "running"
    result = handle.wait(timeout=10)
    assert result.status == "succeeded"
    assert (read_count(ca), read_count(cb)) == (1, 1)
    assert len(result.steps["a"].attempts) == 1


def test_duplicate_tokens_through_the_broker_run_each_tool_once(fake, tmp_path):
    fake.start_worker()
    ca, cb = str(tmp_path / "a"), str(tmp_path / "b")
    handle = fake.executor.submit(two_counted_steps(ca, cb, seconds=0.3))
    sender = BrokerSender(fake.broker)
    for _ in range(3):  # at-least-once: the same token, again and again
        sender.send_many([Token(handle.run_id, "dagrelay")])
    assert wait_until(lambda: read_count(ca) >= 1, 5)
    sender.send_many([Token(handle.run_id, "dagrelay", 4)])
    result = handle.wait(timeout=10)
    fake.drain()
    assert result.status == "succeeded" and result.output == 1
    assert (read_count(ca), read_count(cb)) == (1, 1)
    running = [
        e
        for e in events_of(fake.store, handle.run_id)
        if e["step"] and e["status"] in ("running", "succeeded")
    ]
    assert [(e["step"], e["status"]) for e in running] == [
        ("a", "running"),
        ("a", "succeeded"),
        ("b", "running"),
        ("b", "succeeded"),
    ]
    assert handle.result().model_dump_json() == result.model_dump_json()


def test_a_completion_replayed_after_the_run_finished_changes_nothing(fake, tmp_path):
    fake.start_worker()
    ca, cb = str(tmp_path / "a"), str(tmp_path / "b")
    handle = fake.executor.submit(two_counted_steps(ca, cb))
    result = handle.wait(timeout=10)
    assert result.status == "succeeded"
    fake.drain()
    run_id = handle.run_id
    before_json = handle.result().model_dump_json()
    before_keys = store_snapshot(fake.store, run_id)
    coordinator = fake.pipeline.coordinator
    ctx = coordinator.context(run_id)
    # The worker's completion, replayed (same and different outcomes, and a retry) ...
    for status, output, retry in (
        ("succeeded", "1", None),
        ("succeeded", '"other"', None),
        ("failed", "", None),
        ("failed", "", 0),
    ):
        attempt = json.dumps({"number": 1, "started_at": result.started_at.isoformat()})
        t = Terminal("b", status, output, {"worker": "replay"}, "x", "replay", 1, attempt, retry)
        (nxt,) = coordinator.completed_many(ctx, [(t, None, ())], keep=lambda c, s: True)
        assert (nxt.ahead, nxt.kept) == ([], [])  # nothing was unlocked again
    # ... the store's own completion, the run's end, a stop, a reclaim, a late token.
    assert not fake.store.complete(run_id, "a", "succeeded", {}, "x", ("b",)).recorded
    coordinator.finalize(ctx)
    assert coordinator.stop(run_id, "cancelled") is False
    assert fake.store.reclaim(run_id, "a", "dagrelay", "x") == (3, 0, 0)  # the sweeper repairs,
    coordinator.repair(ctx, "a")  # which changes nothing in a finished run
    take(fake, run_id)
    assert handle.result().model_dump_json() == before_json
    assert store_snapshot(fake.store, run_id) == before_keys
    assert (read_count(ca), read_count(cb)) == (1, 1)


def test_a_stop_cancels_a_running_step_whose_attempt_fails_after_it(fake):
    """Two steps fail under fail_fast, one at once, one 0.3 s later: the first failure
    stops the run in the script that records it, the stop reaches the other attempt at
    once (it is cancelled, its retries unused), and the run's error names the first."""
    flow = Flow(
        name="double-failure",
        on_failure="fail_fast",
        steps=[
            Step(id="quick", tool="fail", inputs={"message": "first", "seconds": 0.05}),
            Step(
                id="slow",
                tool="fail",
                inputs={"message": "second", "seconds": 0.3},
                retry=RetryPolicy(max_attempts=3),
            ),
            Step(id="after", tool="echo", inputs={"value": "$steps.quick"}),
        ],
    )
    fake.start_worker()
    t0 = time.monotonic()
    result = fake.executor.run(flow, timeout=10)
    assert time.monotonic() - t0 < 0.3  # `slow` did not run to its end
    assert result.status == "failed"
    assert {s: r.status for s, r in result.steps.items()} == {
        "quick": "failed",
        "slow": "cancelled",
        "after": "cancelled",
    }
    assert result.error == "step 'quick' failed: ValueError: first"
    (attempt,) = result.steps["slow"].attempts
    assert attempt.error is not None and attempt.error.type == "CancelledError"
    assert "fail_fast" in attempt.error.message
    assert result.steps["slow"].error == attempt.error


def test_every_script_of_a_run_stays_within_one_hash_slot(fake, monkeypatch, tmp_path):
    """Redis Cluster runs a script only if all its keys share a hash slot: every script
    on a run's path (takes, tool slots, retries, completions, maps, stops) must."""
    from redis.crc import key_slot

    from executor.backends.redis.connections import RoundTrips

    names = {sha: name for name, sha in fake.store._shas.items()}
    seen: dict[str, set[int]] = {}
    real = RoundTrips.run

    def run(self: RoundTrips, commands: list[tuple[Any, ...]]) -> list[Any]:
        for c in commands:
            if c[0] == "EVALSHA":
                slots = {key_slot(str(k).encode()) for k in c[3 : 3 + int(c[2])]}
                seen.setdefault(names.get(c[1], c[1]), set()).add(len(slots))
        return real(self, commands)

    monkeypatch.setattr(RoundTrips, "run", run)
    fake.start_worker()
    limited = [Step(id=f"x{i}", tool="exclusive", inputs={"value": i}) for i in range(3)]
    retried = Step(
        id="flaky",
        tool="flaky",
        inputs={"counter": str(tmp_path / "n"), "fail_times": 1, "value": [1, 2]},
        retry=RetryPolicy(max_attempts=2, backoff=0.0),
    )
    join = Step(id="join", tool="echo", inputs={"value": "$steps.x0"}, depends_on=["flaky"])
    each = Step(id="each", tool="echo", map="$steps.flaky", inputs={"value": "$item"})
    flow = Flow(name="slots", steps=[*limited, retried, join, each])
    ok = fake.executor.run(flow, timeout=20)
    assert ok.status == "succeeded", ok.error
    failing = Flow(name="stops", steps=[Step(id="bad", tool="fail"), *limited])
    assert fake.executor.run(failing, timeout=20).status == "failed"
    long = Flow(name="cancel", steps=[Step(id="s", tool="sleep", inputs={"seconds": 5})])
    handle = fake.executor.submit(long)
    assert wait_until(lambda: fake.store.all_statuses(handle.run_id)["s"] == "running", 5)
    handle.cancel()
    assert handle.wait(timeout=5).status == "cancelled"
    used = {"acquire_slot", "take", "complete", "enqueue", "expand", "stop", "finish"}
    assert used <= set(seen)
    assert {name: n for name, n in seen.items() if n != {1}} == {}


@pytest.mark.parametrize("with_join", [True, False])
def test_a_fail_fast_failure_stops_the_run_in_the_script_that_records_it(fake, tmp_path, with_join):
    """Under fail_fast a failure stops the run atomically with its record: a sibling
    that ends after it is recorded cancelled, a dependent is cancelled (never
    upstream_failed), and nothing is queued afterwards but the cleanup step the stop
    spares (its rule fires on failures), which runs once its dependencies are done."""
    counter = str(tmp_path / "cleanup")
    flow = Flow(
        name="failure-window",
        on_failure="fail_fast",
        steps=[
            Step(id="bad", tool="fail", inputs={}),
            Step(id="good", tool="echo", inputs={"value": 1}),
            *(
                [Step(id="join", tool="echo", inputs={"value": ["$steps.bad", "$steps.good"]})]
                if with_join
                else []
            ),
            Step(
                id="cleanup",
                tool="counted",
                inputs={"counter": counter},
                depends_on=["bad", "good"],
                trigger="all_done",
            ),
        ],
    )
    handle = fake.executor.submit(flow)
    run_id = handle.run_id
    # One worker holds both roots ...
    at = datetime.now(UTC).isoformat()
    claims = [
        c
        for lane in ("dagrelay", "dagrelay.async")  # `fail` is async, `echo` sync
        for c in fake.store.take(run_id, lane, 2, 1, 60_000, at, "w1", spend=True).claims
    ]
    assert sorted(c.unit for c in claims) == ["bad", "good"]
    # ... `bad` fails: the run stops in the same script.
    deps = fake.pipeline.coordinator.context(run_id).dag.dependents
    failed = fake.store.complete(
        run_id,
        "bad",
        "failed",
        {"error": {"type": "ValueError", "message": "boom"}},
        at,
        deps["bad"],
        attempt=1,
    )
    assert failed.recorded and failed.stop == "failed"
    assert fake.store.run_meta(run_id, "stop")["stop"] == "failed"
    # `good` ends after the stop: cancelled, whatever its tool did.
    late = fake.store.complete(run_id, "good", "succeeded", {}, at, deps["good"], attempt=1)
    assert late.recorded and late.ready == ("cleanup",)
    fake.pipeline.coordinator.resolve(fake.pipeline.coordinator.context(run_id), list(late.ready))
    fake.start_worker()
    result = handle.wait(timeout=5)
    assert result.status == "failed"
    expected = {"bad": "failed", "good": "cancelled", "cleanup": "succeeded"}
    if with_join:
        expected["join"] = "cancelled"
    assert {s: r.status for s, r in result.steps.items()} == expected
    assert result.steps["good"].error is not None
    assert result.steps["good"].error.type == "CancelledError"
    # Nothing was queued after the failure but the cleanup step, which ran once.
    queued = [e["step"] for e in events_of(fake.store, run_id) if e["status"] == "queued"]
    assert sorted(queued) == ["bad", "cleanup", "good"]
    fake.drain()
    assert read_count(counter) == 1


# Part 2: real redis-server, real worker processes ---------------------------------------
def overlap_depth(spans: list[tuple[datetime, datetime]]) -> int:
    """The largest number of spans that are open at one instant."""
    points = sorted([(s, 1) for s, _ in spans] + [(e, -1) for _, e in spans])
    depth = best = 0
    for _, d in points:
        depth += d
        best = max(best, depth)
    return best


def assert_every_key_expires(client: Any, run_id: str, max_ttl: int) -> list[str]:
    keys = sorted(client.scan_iter(match=f"dagrelay:{{{run_id}}}:*"))
    assert keys, "the run has no keys"
    for k in keys:
        ttl = client.ttl(k)
        assert 0 < ttl <= max_ttl, (k, ttl)
    # Nothing of the run lives outside its hash tag either.
    stray = [k for k in client.scan_iter(match=f"*{run_id}*") if k not in keys]
    assert stray == []
    return keys


class Cluster:
    """A redis-server and two `dagrelay worker` processes (2 threads each)."""

    def __init__(self) -> None:
        self.server = RedisServer().start()
        self.workers: list[WorkerProcess] = []
        try:
            self.workers = [WorkerProcess(self.server.url, TOOLS, threads=2) for _ in range(2)]
            for w in self.workers:
                w.wait_ready()
        except BaseException:
            self.close()
            raise
        import redis

        self.client = redis.Redis.from_url(self.server.url, decode_responses=True)

    @property
    def url(self) -> str:
        return self.server.url

    def executor(self, **kwargs: Any) -> FlowExecutor:
        kwargs.setdefault("registry", dist_tools.registry)
        return FlowExecutor(self.url, **kwargs)

    def close(self) -> None:
        stoppers = [threading.Thread(target=w.stop) for w in self.workers]
        for t in stoppers:  # in parallel: each graceful shutdown takes a few seconds
            t.start()
        for t in stoppers:
            t.join()
        self.server.close()


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    c = Cluster()
    try:
        yield c
    finally:
        c.close()


@pytest.fixture
def ex(cluster: Cluster) -> Iterator[FlowExecutor]:
    with cluster.executor() as executor:
        yield executor


def test_steps_run_concurrently_on_two_worker_processes(ex, cluster):
    steps = [
        Step(id=f"s{i}", tool="sync_sleep", inputs={"seconds": 0.5, "value": i}) for i in range(8)
    ]
    flow = Flow(name="fanout", steps=steps, output=[f"$steps.s{i}" for i in range(8)])
    result = ex.run(flow, timeout=WAIT)
    assert result.status == "succeeded" and result.output == list(range(8))
    records = list(result.steps.values())
    workers = {r.worker for r in records}
    pids = {worker_pid(w) for w in workers}
    assert len(workers) >= 2
    # Both processes worked: each has only 2 threads, so 3 steps at once needs both.
    assert len(pids) == 2, workers
    served = [descendants(w.proc.pid) for w in cluster.workers]
    assert all(pids & s for s in served), (pids, served)
    spans = []
    for r in records:
        assert r.started_at is not None and r.finished_at is not None
        spans.append((r.started_at, r.finished_at))
    assert overlap_depth(spans) >= 3, spans


GET_RUN = """
    import sys
    from executor import FlowExecutor
    with FlowExecutor(sys.argv[1]) as ex:
        result = ex.get_run(sys.argv[2]).wait(timeout=30)
    print(result.model_dump_json())
"""


def test_get_run_from_a_new_process_returns_the_same_result(ex, cluster):
    flow = Flow(
        name="reattach",
        steps=[
            Step(id="a", tool="sleep", inputs={"seconds": 0.8, "value": {"x": [1, 2]}}),
            Step(id="b", tool="echo", inputs={"value": "$steps.a.x"}),
        ],
        output="$steps.b",
    )
    handle = ex.submit(flow)
    # The other process attaches while the run is still going, and waits for it.
    proc = python(GET_RUN, cluster.url, handle.run_id)
    assert proc.returncode == 0, proc.stderr
    mine = handle.wait(timeout=WAIT)
    assert mine.status == "succeeded" and mine.output == [1, 2]
    theirs = ExecutionResult.model_validate_json(proc.stdout.strip().splitlines()[-1])
    assert theirs.model_dump() == mine.model_dump()


CANCEL = """
    import sys
    from executor import FlowExecutor
    with FlowExecutor(sys.argv[1]) as ex:
        ex.get_run(sys.argv[2]).cancel()
"""


def test_cancel_from_another_process(ex, cluster, tmp_path):
    marker = str(tmp_path / "marker")
    flow = Flow(
        name="cancel-me",
        steps=[
            Step(id="slow", tool="sleep", inputs={"seconds": 30, "marker": marker}),
            Step(id="after", tool="echo", inputs={"value": "$steps.slow"}),
        ],
    )
    handle = ex.submit(flow)
    assert wait_until(lambda: "started" in read_lines(marker), 10)
    t0 = time.monotonic()
    proc = python(CANCEL, cluster.url, handle.run_id)
    assert proc.returncode == 0, proc.stderr
    result = handle.wait(timeout=WAIT)
    assert time.monotonic() - t0 < 10
    assert result.status == "cancelled"
    assert result.steps["slow"].status == "cancelled"
    assert result.steps["after"].status == "cancelled"
    assert wait_until(lambda: "cancelled" in read_lines(marker), 5)
    assert "finished" not in read_lines(marker)
    assert_every_key_expires(cluster.client, handle.run_id, 7 * 24 * 3600)


def test_a_tool_no_worker_knows_fails_its_step_naming_the_tool(cluster):
    flow = Flow(
        name="unknown-tool",
        on_failure="continue",
        steps=[
            Step(id="a", tool="echo", inputs={"value": 1}),
            Step(id="b", tool="no_such_tool_xyz", inputs={"x": "$steps.a"}),
            Step(id="c", tool="echo", inputs={"value": "$steps.b"}),
        ],
    )
    with cluster.executor(registry=ToolRegistry()) as client:  # validation can't catch it
        result = client.run(flow, timeout=WAIT)
    assert result.status == "failed"
    assert result.steps["a"].status == "succeeded"
    b = result.steps["b"]
    assert b.status == "failed"
    assert b.error is not None and b.error.type == "NoLiveWorker"  # never a LookupError
    assert b.error.message == "no live worker serves queue 'dagrelay' with tool 'no_such_tool_xyz'"
    assert result.error is not None and "no_such_tool_xyz" in result.error
    assert result.steps["c"].status == "upstream_failed"


@pytest.mark.parametrize("user", ["", "alice"])
def test_unreachable_redis_raises_dagrelay_error_naming_the_url_without_password(user):
    port = free_port()  # nothing listens here
    url = f"redis://{user}:secret@127.0.0.1:{port}/0"
    flow = Flow(name="f", steps=[Step(id="a", tool="echo", inputs={"value": 1})])
    t0 = time.monotonic()
    with (
        pytest.raises(DagrelayError) as info,
        FlowExecutor(url, registry=dist_tools.registry) as client,
    ):
        client.submit(flow)
    assert time.monotonic() - t0 < 10
    message = str(info.value)
    assert f"127.0.0.1:{port}" in message
    assert "secret" not in message and "secret" not in repr(info.value)
    assert info.value.__cause__ is None or "secret" not in str(info.value.__cause__)


BROKEN_TOOLS = """
import no_such_dependency_xyz  # noqa

registry = None
"""


@pytest.mark.parametrize("kind", ["file", "module", "plain-dramatiq"])
def test_a_worker_whose_tools_module_fails_to_import_exits_with_the_error(cluster, tmp_path, kind):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    path = tmp_path / "broken_tools.py"
    path.write_text(BROKEN_TOOLS)
    tools, expected = str(path), "no_such_dependency_xyz"
    if kind == "module":
        tools, expected = "no_such_module_xyz", "no_such_module_xyz"
    argv = [sys.executable, "-m", "executor.cli", "worker", "--tools", tools]
    argv += ["--redis", cluster.url]
    if kind == "plain-dramatiq":
        argv = [sys.executable, "-m", "dramatiq", "workers", "--processes", "1"]
        env.update(DAGRELAY_TOOLS=tools, DAGRELAY_REDIS_URL=cluster.url)
    proc = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0
    output = proc.stdout + proc.stderr
    assert expected in output
    assert "ModuleNotFoundError" in output


def _plain_dramatiq(url: str, queues: tuple[str, ...] = ()) -> tuple[subprocess.Popen[bytes], Path]:
    log = Path(tempfile_path("dagrelay-plain-"))
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "DAGRELAY_TOOLS": TOOLS,
        "DAGRELAY_REDIS_URL": url,
    }
    argv = [sys.executable, "-m", "dramatiq", "workers", "--processes", "1", "--threads", "2"]
    with log.open("wb") as out:
        proc = subprocess.Popen(
            argv, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    return proc, log


def tempfile_path(prefix: str) -> str:
    import tempfile

    fd, path = tempfile.mkstemp(prefix=prefix, suffix=".log")
    os.close(fd)
    return path


def test_plain_dramatiq_workers_serve_runs(cluster):
    # A database of its own: only the plain `dramatiq workers` process serves it.
    url = cluster.url.rsplit("/", 1)[0] + "/3"
    proc, log = _plain_dramatiq(url)
    try:
        assert wait_until(lambda: "ready for action" in log.read_text(errors="replace"), 30), (
            log.read_text(errors="replace")
        )
        flow = Flow(
            name="plain",
            steps=[
                Step(id="a", tool="add", inputs={"a": "$input.x", "b": 1}),
                Step(id="b", tool="add", inputs={"a": "$steps.a", "b": 10}),
            ],
            output="$steps.b",
        )
        with FlowExecutor(url, registry=dist_tools.registry) as client:
            result = client.run(flow, {"x": 4}, timeout=WAIT)
        assert result.status == "succeeded" and result.output == 15
        assert worker_pid(result.steps["a"].worker) in descendants(proc.pid)
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGTERM)  # Dramatiq forwards it to its workers
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        log.unlink(missing_ok=True)


def test_a_step_routed_to_a_queue_waits_for_a_worker_of_that_queue(ex, cluster):
    flow = Flow(
        name="routing",
        steps=[
            Step(id="a", tool="echo", inputs={"value": "x"}),
            Step(id="b", tool="echo", inputs={"value": "$steps.a"}, queue="special"),
            Step(id="c", tool="echo", inputs={"value": "$steps.b"}),
        ],
        output="$steps.c",
    )
    handle = ex.submit(flow)
    assert wait_until(lambda: handle.result().steps["a"].status == "succeeded", 10)
    time.sleep(0.5)  # the default workers had every chance to take b: they must not
    now = handle.result()
    assert now.status == "running" and now.steps["b"].status == "queued"
    special = WorkerProcess(cluster.url, TOOLS, threads=1, queues=("special",))
    try:
        special.wait_ready()
        result = handle.wait(timeout=WAIT)
        assert result.status == "succeeded" and result.output == "x"
        assert worker_pid(result.steps["b"].worker) in descendants(special.proc.pid)
        assert worker_pid(result.steps["a"].worker) not in descendants(special.proc.pid)
    finally:
        special.stop()


def test_max_concurrency_holds_across_worker_processes(ex, cluster, tmp_path):
    log = str(tmp_path / "exclusive.log")
    n = 6
    flow = Flow(
        name="limited",
        steps=[
            *[
                Step(id=f"x{i}", tool="exclusive_logged", inputs={"log": log, "seconds": 0.1})
                for i in range(n)
            ],
            # Unlimited steps alongside still run in parallel with them.
            *[Step(id=f"f{i}", tool="sync_sleep", inputs={"seconds": 0.3}) for i in range(2)],
        ],
    )
    result = ex.run(flow, timeout=WAIT)
    assert result.status == "succeeded"
    lines = [line.split() for line in read_lines(log)]
    assert len(lines) == 2 * n
    # Inside the tool, calls strictly alternate start/end: never two at once.
    assert [w[0] for w in lines] == ["start", "end"] * n
    times = [float(w[1]) for w in lines]
    assert times == sorted(times)
    assert len({r.worker for r in result.steps.values() if r.tool == "exclusive_logged"}) >= 1


def test_every_key_of_a_finished_run_has_a_ttl(cluster, tmp_path):
    flow = Flow(
        name="keys",
        on_failure="continue",
        steps=[
            Step(
                id="flaky",
                tool="flaky",
                inputs={"counter": str(tmp_path / "c"), "fail_times": 1, "value": 2},
                retry=RetryPolicy(max_attempts=2),
            ),
            Step(id="items", tool="make_items", inputs={"n": "$steps.flaky"}),
            Step(id="each", tool="echo", map="$steps.items", inputs={"value": "$item.name"}),
            Step(id="skip", tool="echo", inputs={"value": 1}, when="input.never"),
            Step(id="bad", tool="fail", inputs={}),
            Step(id="after_bad", tool="echo", inputs={"value": "$steps.bad"}),
        ],
    )
    with cluster.executor(result_ttl=600) as client:
        result = client.run(flow, {"never": False}, timeout=WAIT)
    assert result.status == "failed"
    assert [a.number for a in result.steps["flaky"].attempts] == [1, 2]
    assert result.steps["each"].output == ["item0", "item1"]
    assert result.steps["skip"].status == "skipped"
    keys = assert_every_key_expires(cluster.client, result.run_id, 600)
    names = {k.rsplit(":", 1)[1] for k in keys}
    assert {"meta", "status", "out", "rec", "att", "events", "times", "remaining"} <= names


def test_a_killed_worker_costs_a_lease_not_the_step(cluster, tmp_path):
    """SIGKILL the worker running a step: its lease expires, a sweeper re-queues the
    step, and another worker runs attempt 2; attempt 1 is recorded as WorkerLost."""
    env = {"DAGRELAY_LEASE_SECONDS": "1", "DAGRELAY_SWEEP_SECONDS": "0.2"}
    counter = str(tmp_path / "count")
    flow = Flow(
        name="crash",
        steps=[
            Step(
                id="s",
                tool="flaky",
                queue="crashy",  # only the workers started here serve it
                inputs={
                    "counter": counter,
                    "fail_times": 0,
                    "slow_attempt": 1,  # the first call hangs until it is killed
                    "slow_seconds": 60,
                    "value": "ok",
                },
            )
        ],
        output="$steps.s",
    )
    doomed = WorkerProcess(cluster.url, TOOLS, threads=1, queues=("crashy",), env=env)
    survivor = None
    try:
        doomed.wait_ready()
        with cluster.executor() as client:
            handle = client.submit(flow)
            assert wait_until(lambda: read_count(counter) == 1, 10)
            doomed_pids = descendants(doomed.proc.pid)
            os.killpg(doomed.proc.pid, signal.SIGKILL)  # the main process and its workers
            doomed.proc.wait(10)
            killed_at = time.monotonic()
            survivor = WorkerProcess(cluster.url, TOOLS, threads=1, queues=("crashy",), env=env)
            survivor.wait_ready()
            result = handle.wait(timeout=WAIT)
        assert time.monotonic() - killed_at < 15
        assert result.status == "succeeded" and result.output == "ok"
        assert read_count(counter) == 2
        first, second = result.steps["s"].attempts
        assert (first.number, second.number) == (1, 2)
        assert first.error is not None and first.error.type == "WorkerLost"
        assert worker_pid(first.worker) in doomed_pids
        assert worker_pid(second.worker) in descendants(survivor.proc.pid)
    finally:
        doomed.stop()
        if survivor is not None:
            survivor.stop()


def test_a_completer_that_dies_before_deciding_dependents_is_repaired(fake, tmp_path):
    """The worker records `a` and dies before it decides `b`: `a`'s lease hint stays,
    the sweeper finds it expired on a terminal step and decides `b`; the run ends."""
    ca, cb = str(tmp_path / "a"), str(tmp_path / "b")
    flow = two_counted_steps(ca, cb)
    handle = fake.executor.submit(flow)
    run_id = handle.run_id
    store = fake.store
    # What a worker does up to its death: claim `a`, run it, record it, nothing more.
    now = datetime.now(UTC).isoformat()
    (claim,) = store.take(run_id, "dagrelay", 1, 1, 50, now, "dead", spend=True).claims
    assert claim.unit == "a"
    done = store.complete(run_id, "a", "succeeded", {}, now, ("b",), output_json="1", attempt=1)
    assert done.recorded and done.ready == ("b",)
    assert store.all_statuses(run_id)["b"] == "pending"  # released, never decided
    time.sleep(0.1)  # the hint of `a` expires
    fake.start_worker()
    fake.pipeline.sweeper.sweep()
    result = handle.wait(timeout=10)
    assert result.status == "succeeded" and result.output == 1
    assert read_count(cb) == 1 and read_count(ca) == 0  # `a` ran in the dead worker only


def test_a_unit_queued_without_its_token_is_sent_again_by_repair(fake, tmp_path):
    """The completer queued `b` and died before sending its token: repair sends one."""
    ca, cb = str(tmp_path / "a"), str(tmp_path / "b")
    handle = fake.executor.submit(two_counted_steps(ca, cb))
    run_id = handle.run_id
    store = fake.store
    now = datetime.now(UTC).isoformat()
    assert store.take(run_id, "dagrelay", 1, 1, 50, now, "dead", spend=True).claims
    store.complete(run_id, "a", "succeeded", {}, now, ("b",), output_json="1", attempt=1)
    assert store.enqueue(run_id, [("dagrelay", 1, ["b"])], now) == [1]  # ... and not sent
    time.sleep(0.1)
    fake.start_worker()
    fake.pipeline.sweeper.sweep()
    result = handle.wait(timeout=10)
    assert result.status == "succeeded" and read_count(cb) == 1


def test_a_lost_token_is_sent_again_by_a_sweeper(fake, tmp_path):
    """The roots' token is lost (a worker died with it fetched, or it was dead-lettered):
    once its unit has waited a lease with no taker, a sweeper sends another."""
    ca, cb = str(tmp_path / "a"), str(tmp_path / "b")
    handle = fake.executor.submit(two_counted_steps(ca, cb))
    fake.broker.flush_all()  # every message on the broker is gone
    fake.pipeline.sweeper.lease_seconds = 0.05
    time.sleep(0.1)
    fake.start_worker()
    fake.pipeline.sweeper.sweep()
    result = handle.wait(timeout=10)
    assert result.status == "succeeded" and (read_count(ca), read_count(cb)) == (1, 1)


def test_a_flow_is_parsed_by_one_thread_at_a_time(fake, monkeypatch):
    """CPython 3.11's `ast.parse` in several threads at once can fail spuriously: a
    worker parses each flow (its `when` conditions) under a lock."""
    import executor.backends.redis.coordinator as coordinator_module

    inside, most = [0], [0]
    real = coordinator_module.RunContext.build

    def build(*args: Any, **kwargs: Any) -> Any:
        inside[0] += 1
        most[0] = max(most[0], inside[0])
        time.sleep(0.02)
        try:
            return real(*args, **kwargs)
        finally:
            inside[0] -= 1

    monkeypatch.setattr(coordinator_module.RunContext, "build", build)
    flows = [
        Flow(name=f"f{i}", steps=[Step(id="a", tool="echo", when="input.x > 0")]) for i in range(6)
    ]
    handles = [fake.executor.submit(f, {"x": 1}) for f in flows]
    workers = [
        threading.Thread(target=fake.pipeline.coordinator.context, args=(h.run_id,))
        for h in handles
    ]
    for t in workers:
        t.start()
    for t in workers:
        t.join()
    assert most[0] == 1


def test_runs_of_one_flow_share_its_parsed_form_in_a_worker_and_keep_their_inputs(fake):
    flow = Flow(
        name="shared",
        steps=[Step(id="a", tool="add", inputs={"a": "$input.x", "b": 1})],
        output="$steps.a",
    )
    other = flow.model_copy(update={"name": "other"})
    fake.start_worker()
    first = fake.executor.run(flow, {"x": 1}, timeout=10)
    second = fake.executor.run(flow, {"x": 41}, timeout=10)
    third = fake.executor.run(other, {"x": 2}, timeout=10)
    assert (first.output, second.output, third.output) == (2, 42, 3)
    context = fake.pipeline.coordinator.context
    a, b, c = context(first.run_id), context(second.run_id), context(third.run_id)
    assert a.dag is b.dag and a.inputs != b.inputs  # validated once, inputs per run
    assert c.dag is not a.dag and c.dag.flow.name == "other"


def test_an_idle_worker_stops_at_once(cluster) -> None:
    """SIGTERM to an idle worker: its threads and consumers stop at once instead of each
    waiting out Dramatiq's one-second idle timeout (deploys and restarts wait on it)."""
    worker = WorkerProcess(cluster.url, TOOLS, threads=8)
    try:
        worker.wait_ready()
        time.sleep(0.3)  # idle: every thread and consumer is parked
    finally:
        worker.stop()
    began, ended = worker.log_times("Shutting down..."), worker.log_times("has been shut down")
    assert len(began) == len(ended) == 1, worker.log()
    assert ended[0] - began[0] < 0.8, worker.log()  # was about 1 s
