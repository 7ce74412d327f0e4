"""`fake`: a fakeredis server, a worker broker and pipeline in this process, a client.

A fixture shared by the test modules that drive the `run_step` actor by hand
(registered for the whole suite in tests/conftest.py).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from executor import FlowExecutor
from tests import dist_tools


def fake_worker(registry: Any) -> tuple[Any, Any, Any]:
    """A fakeredis server and a worker's broker and pipeline on it, serving `registry`:
    `(server, broker, pipeline)`; no Dramatiq worker consumes yet."""
    import fakeredis

    from workers.broker import setup
    from workers.settings import Settings

    server = fakeredis.FakeServer()
    broker, pipeline = setup(
        Settings(),
        registry=registry,
        client=fakeredis.FakeRedis(server=server, decode_responses=True),
        broker_client=fakeredis.FakeRedis(server=server),
        set_global=False,
    )
    return server, broker, pipeline


class FakeCluster:
    """A fakeredis server, a broker with the `run_step` actor, and a client executor.

    No Dramatiq worker consumes messages until `start_worker()`: tests can call the
    actor (`pipeline.take`) directly, as a duplicate delivery would (the pipeline runs
    from the start).
    """

    def __init__(self) -> None:
        import fakeredis

        self.server, self.broker, self.pipeline = fake_worker(dist_tools.registry)
        self.store = self.pipeline.store
        self.executor = FlowExecutor(
            registry=dist_tools.registry,
            redis_client=fakeredis.FakeRedis(server=self.server, decode_responses=True),
            broker=self.broker,
        )
        self.worker: Any = None
        self.pipeline.start()

    def start_worker(self) -> None:
        import dramatiq

        self.worker = dramatiq.Worker(self.broker, worker_threads=4, worker_timeout=50)
        self.worker.start()

    def drain(self) -> None:
        """Wait until every queued message was handled."""
        self.broker.join("dagrelay", timeout=10_000)
        self.worker.join()

    def close(self) -> None:
        if self.worker is not None:
            self.worker.stop()
        self.pipeline.drain(timeout=5)
        self.executor.close()


@pytest.fixture
def fake() -> Iterator[FakeCluster]:
    cluster = FakeCluster()
    try:
        yield cluster
    finally:
        cluster.close()
