"""Broker set-up: a Dramatiq RedisBroker from settings, the `run_step` actor, our middleware."""

from __future__ import annotations

import logging
from typing import Any

import dramatiq
import redis
from dramatiq.middleware import Middleware

from executor.backends.redis import NO_TIME_LIMIT_MS
from executor.backends.redis_store import RedisStore
from executor.backends.wakeup import WakingRedisBroker
from executor.coordinator import ACTOR_NAME
from executor.tools import ToolRegistry, default_registry, load_tools
from workers.runtime import StepRuntime
from workers.settings import Settings

log = logging.getLogger("dagrelay.worker")


class DagrelayMiddleware(Middleware):
    """Starts and stops the per-process lease monitor and sweeper with the worker."""

    def __init__(self, runtime: StepRuntime) -> None:
        self.runtime = runtime

    def after_worker_boot(self, broker: dramatiq.Broker, worker: Any) -> None:
        self.runtime.start()

    def before_worker_shutdown(self, broker: dramatiq.Broker, worker: Any) -> None:
        self.runtime.stop()


def setup(
    settings: Settings | None = None,
    *,
    registry: ToolRegistry | None = None,
    client: redis.Redis | None = None,
    broker_client: Any = None,
    set_global: bool = True,
) -> tuple[dramatiq.Broker, StepRuntime]:
    """Build the broker, the runtime and the `run_step` actor for a worker process.

    Args:
        settings: default `Settings.from_env()`.
        registry: the tools; default: import `settings.tools` into the default registry.
        client, broker_client: Redis clients to use instead of connecting to the URL
            (tests pass fakeredis here).
    """
    settings = settings or Settings.from_env()
    if registry is None:
        registry = load_tools(settings.tools) if settings.tools else default_registry
    if client is None:
        client = redis.Redis.from_url(
            settings.redis_url, decode_responses=True, health_check_interval=30
        )
    if broker_client is not None:
        broker = WakingRedisBroker(client=broker_client)
    else:
        broker = WakingRedisBroker(url=settings.redis_url)
    store = RedisStore(client, settings.namespace, settings.result_ttl)
    runtime = StepRuntime(settings, registry, store, broker)
    broker.add_middleware(DagrelayMiddleware(runtime))
    for queue in settings.queues:
        broker.declare_queue(queue)
    dramatiq.actor(  # type: ignore[call-overload]
        runtime.run_step,
        broker=broker,
        actor_name=ACTOR_NAME,
        queue_name=settings.queues[0],
        max_retries=0,
        time_limit=NO_TIME_LIMIT_MS,
    )
    if set_global:
        dramatiq.set_broker(broker)
    return broker, runtime
