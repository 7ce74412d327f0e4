"""The `backend` fixture: one harness per backend, the same tests against each.

A test takes `backend` (a `Harness`) and runs flows through it:

    def test_x(backend):
        result = backend.run(Flow(...), {"n": 1})

Tools come only from `tests/conformance/tools.py` (`backend.registry`), because a
distributed backend's workers import that module in their own processes.

Plugging in a backend (e.g. the coming `redis-fake` / `redis-real`):

1. Write a `BackendFactory` subclass whose `harness()` returns a `Harness` around a
   `FlowExecutor` for that backend: `FlowExecutor(url, registry=tools.registry)` for
   a real server, `FlowExecutor(redis_client=fake, broker=broker,
   registry=tools.registry)` for fakeredis. Expensive things live in the factory,
   which is session-scoped (created on first use, closed once at the end): the
   server (`tests.support.servers.RedisServer`), worker processes started with
   `--tools tests.conformance.tools` (`tests.support.servers.WorkerProcess`), or, for
   fakeredis (which cannot be shared across processes), a Dramatiq worker in this
   process using `tools.registry` itself. `harness()` runs per test and should be
   cheap (a fresh client; `Harness.close()` releases it).
2. Add its name to `BACKENDS` and to `_FACTORIES`. A factory may `pytest.skip(...)`
   in `__init__` when its prerequisite is missing (no server, no fakeredis).
3. If a test is inherently local-only, mark it `@pytest.mark.local_only`; the
   fixture skips it on other backends. Keep such tests rare: the point of this suite
   is that every backend gives the same `ExecutionResult`.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, ClassVar

import pytest

from executor import ExecutionResult, Flow, FlowExecutor, RunHandle, ToolRegistry

from . import tools

#: Seconds any single conformance run may take before the harness gives up on it.
RUN_TIMEOUT = 20.0


class Harness:
    """Runs flows on one backend. Thin on purpose: tests use the public API through it."""

    def __init__(self, name: str, executor: FlowExecutor) -> None:
        self.name = name
        self.executor = executor
        self.registry: ToolRegistry = executor.registry

    def run(
        self,
        flow: Flow,
        inputs: Mapping[str, Any] | None = None,
        *,
        timeout: float = RUN_TIMEOUT,
    ) -> ExecutionResult:
        """Run to the end (a failing step does not raise) and return the result."""
        return self.executor.run(flow, inputs, timeout=timeout)

    def submit(self, flow: Flow, inputs: Mapping[str, Any] | None = None) -> RunHandle:
        return self.executor.submit(flow, inputs)

    def get_run(self, run_id: str) -> RunHandle:
        return self.executor.get_run(run_id)

    async def arun(self, flow: Flow, inputs: Mapping[str, Any] | None = None) -> ExecutionResult:
        return await self.executor.arun(flow, inputs)

    def close(self) -> None:
        self.executor.close()


class BackendFactory:
    """Session-wide resources of one backend; makes a fresh `Harness` per test."""

    name = "?"

    def harness(self) -> Harness:
        raise NotImplementedError

    def close(self) -> None:
        """Release session resources (servers, worker processes)."""


class LocalFactory(BackendFactory):
    """The embedded asyncio backend: nothing to start."""

    name = "local"

    def harness(self) -> Harness:
        return Harness(self.name, FlowExecutor(registry=tools.registry))


class RedisFakeFactory(BackendFactory):
    """Redis semantics on fakeredis (Lua included), a Dramatiq worker in this process."""

    name = "redis-fake"

    def __init__(self) -> None:
        import dramatiq
        import fakeredis

        from tests.support.fakes import fake_worker

        self._fakeredis = fakeredis
        self.server, self.broker, self.pipeline = fake_worker(tools.registry)
        self.worker = dramatiq.Worker(self.broker, worker_threads=16, worker_timeout=100)
        self.worker.start()

    def harness(self) -> Harness:
        client = self._fakeredis.FakeRedis(server=self.server, decode_responses=True)
        ex = FlowExecutor(registry=tools.registry, redis_client=client, broker=self.broker)
        return Harness(self.name, ex)

    def close(self) -> None:
        self.worker.stop()
        self.pipeline.drain(timeout=5)


class RedisRealFactory(BackendFactory):
    """A real redis-server on a free port and a real `dagrelay worker` process."""

    name = "redis-real"
    env: ClassVar[dict[str, str]] = {}

    def __init__(self) -> None:
        from tests.support.servers import RedisServer, WorkerProcess

        self.server = RedisServer().start()
        try:
            self.worker = WorkerProcess(
                self.server.url,
                "tests.conformance.tools",
                processes=1,
                threads=16,
                env=self.env,
            ).wait_ready()
        except BaseException:
            self.server.close()
            raise

    def harness(self) -> Harness:
        return Harness(self.name, FlowExecutor(self.server.url, registry=tools.registry))

    def close(self) -> None:
        self.worker.stop()
        self.server.close()


class RedisAsyncFactory(RedisRealFactory):
    """The same, with slots of their own for async steps (`--async-steps`)."""

    name = "redis-async"
    env: ClassVar[dict[str, str]] = {"DAGRELAY_ASYNC_STEPS": "100"}


BACKENDS = ["local", "redis-fake", "redis-real", "redis-async"]
_FACTORIES: dict[str, type[BackendFactory]] = {
    "local": LocalFactory,
    "redis-fake": RedisFakeFactory,
    "redis-real": RedisRealFactory,
    "redis-async": RedisAsyncFactory,
}


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "local_only: a conformance test that only makes sense in-process"
    )


@pytest.fixture(scope="session", params=BACKENDS)
def backend_factory(request: pytest.FixtureRequest) -> Iterator[BackendFactory]:
    factory = _FACTORIES[request.param]()
    try:
        yield factory
    finally:
        factory.close()


@pytest.fixture
def backend(backend_factory: BackendFactory, request: pytest.FixtureRequest) -> Iterator[Harness]:
    """A `Harness` on one backend (the test runs once per backend)."""
    if backend_factory.name != "local" and request.node.get_closest_marker("local_only"):
        pytest.skip("local-only test")
    harness = backend_factory.harness()
    try:
        yield harness
    finally:
        harness.close()


@pytest.fixture
def files(tmp_path: Path) -> Files:
    """Fresh paths for counters and markers (process-independent tool state)."""
    return Files(tmp_path)


class Files:
    def __init__(self, root: Path) -> None:
        self.root = root
        self._n = 0

    def __call__(self, stem: str = "f") -> str:
        self._n += 1
        return str(self.root / f"{stem}-{self._n}")
