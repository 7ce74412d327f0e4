"""Broker set-up: a Dramatiq RedisBroker from settings, the `run_step` actor, our middleware."""

from __future__ import annotations

import logging
import math
import threading
from typing import Any

import dramatiq
import redis
from dramatiq.middleware import Middleware
from redis.backoff import EqualJitterBackoff
from redis.retry import Retry

from executor.backends.redis.backend import NO_TIME_LIMIT_MS, BrokerSender
from executor.backends.redis.messages import ACTOR_NAME, lanes_of
from executor.backends.redis.store import RedisStore
from executor.backends.redis.urls import open_redis
from executor.backends.redis.wakeup import WakingRedisBroker
from executor.model.tools import ToolRegistry, default_registry, load_tools
from workers.heartbeat import HeartbeatMiddleware
from workers.periodic import Periodic
from workers.pipeline import INTAKE, Intake, Pipeline
from workers.settings import Settings
from workers.tracing import ObservabilityMiddleware

log = logging.getLogger("dagrelay.worker")
# How often an idle Dramatiq worker thread checks whether its worker is stopping.
THREAD_POLL_SECONDS = 0.25


class WorkerBroker(WakingRedisBroker):
    """The worker's broker: Dramatiq's maintenance on request, not only by chance.

    Dramatiq requeues the fetched-but-unacked messages of a dead worker (its heartbeat
    older than `heartbeat_timeout`) only during "maintenance", which a command triggers
    with a 1-in-1000 chance: a SIGKILLed worker's prefetched messages could wait minutes.
    `maintain()` runs it now (an empty `requeue` with maintenance forced); it also
    stamps this process's heartbeat, so a busy worker is never taken for dead.
    """

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._maintaining = threading.local()

    def _should_do_maintenance(self, command: str) -> int:
        if command == "requeue" and getattr(self._maintaining, "on", False):
            return 1
        return int(super()._should_do_maintenance(command))

    def maintain(self) -> None:
        """Requeue dead workers' unacked messages on every queue this broker serves."""
        self._maintaining.on = True
        try:
            for queue in sorted(self.queues | self.delay_queues):
                self.do_requeue(queue)
        finally:
            self._maintaining.on = False


class Maintainer(Periodic):
    """A thread per worker process: heartbeat and dead-worker maintenance every period."""

    name = "dagrelay-maint"

    def __init__(self, broker: WorkerBroker, period: float) -> None:
        super().__init__(period)
        self.broker = broker

    def tick(self) -> None:
        self.broker.maintain()


class DagrelayMiddleware(Middleware):
    """Sizes the pipeline's slots to the worker's threads before its consumers fetch,
    starts the pipeline and maintainer with the worker, and stops them once its units
    have finished."""

    def __init__(self, pipeline: Pipeline, maintainer: Maintainer | None = None) -> None:
        self.pipeline = pipeline
        self.maintainer = maintainer

    def before_worker_boot(self, broker: dramatiq.Broker, worker: Any) -> None:
        # `--threads` is the sync slots, whether from `dagrelay worker` or `dramatiq`.
        self.pipeline.pool.resize(worker.worker_threads)
        if isinstance(broker, WakingRedisBroker):
            broker.pool = self.pipeline.pool

    def after_worker_boot(self, broker: dramatiq.Broker, worker: Any) -> None:
        # An idle Dramatiq worker thread looks whether to stop once per worker timeout (1
        # s), so every shutdown waited that long; a look costs microseconds. The
        # consumers keep their timeout: they block on Redis and are woken to stop.
        for thread in worker.workers:
            thread.timeout = THREAD_POLL_SECONDS
        self.pipeline.start()
        if self.maintainer is not None:
            self.maintainer.start()

    def before_worker_shutdown(self, broker: dramatiq.Broker, worker: Any) -> None:
        # Finish what runs, but start nothing more here: dependents go to the queue.
        self.pipeline.draining = True
        if isinstance(broker, WakingRedisBroker):
            broker.wake_to_stop(len(worker.consumers))

    def before_process_message(self, broker: dramatiq.Broker, message: Any) -> None:
        # The slot its consumer held for it is the message's now; the actor takes it over.
        if message.queue_name in self.pipeline.lanes:
            slot = self.pipeline.pool.take_hold(message.queue_name)
            INTAKE.set(Intake(message.queue_name, slot))

    def after_process_message(
        self,
        broker: dramatiq.Broker,
        message: Any,
        *,
        result: Any = None,
        exception: BaseException | None = None,
    ) -> None:
        self._done(message)

    def after_skip_message(self, broker: dramatiq.Broker, message: Any) -> None:
        self._done(message)

    def _done(self, message: Any) -> None:
        # A message whose actor never took its slot over (skipped, not our actor, bad
        # arguments) gives it back.
        intake = INTAKE.get()
        if intake is not None and intake.slot and not intake.taken:
            self.pipeline.pool.release(intake.lane)
        INTAKE.set(None)

    def after_worker_shutdown(self, broker: dramatiq.Broker, worker: Any) -> None:
        # After, not before: Dramatiq stops fetching first; the units in flight finish,
        # their leases renewed meanwhile (else another worker takes them over and the
        # tool runs twice).
        if self.maintainer is not None:
            self.maintainer.stop()
        self.pipeline.drain(timeout=30)


def outage_retry(seconds: float) -> dict[str, Any]:
    """redis-py options: retry a failed call with backoff (0.05 s doubling to 1 s, with
    jitter) for about `seconds`, reconnecting each time, before raising."""
    retries = max(1, math.ceil(seconds / 0.75))
    return {
        "retry": Retry(EqualJitterBackoff(cap=1.0, base=0.05), retries),
        # OSError: a refused connect (Redis down) is retried too, not only a dropped one.
        "retry_on_error": [redis.ConnectionError, redis.TimeoutError, OSError],
        "socket_connect_timeout": 5,
    }


def setup(
    settings: Settings | None = None,
    *,
    registry: ToolRegistry | None = None,
    client: redis.Redis | None = None,
    broker_client: Any = None,
    set_global: bool = True,
) -> tuple[dramatiq.Broker, Pipeline]:
    """Build the broker, the pipeline and the `run_step` actor for a worker process.

    Args:
        settings: default `Settings.from_env()`.
        registry: the tools; default: import `settings.tools` into the default registry.
        client, broker_client: Redis clients to use instead of connecting to the URL
            (tests pass fakeredis here).
    """
    settings = settings or Settings.from_env()
    if registry is None:
        registry = load_tools(settings.tools) if settings.tools else default_registry
    # Every Redis call of a worker rides out an outage (a restart, a failover) with
    # backoff, so a step's claim, completion and follow-up messages are not lost.
    retry = outage_retry(settings.redis_retry_seconds)
    if client is None:
        client = open_redis(
            settings.redis_url, decode_responses=True, health_check_interval=30, **retry
        )
    heartbeat_ms = int(settings.heartbeat_seconds * 1000)
    broker: WakingRedisBroker
    maintainer = None
    if broker_client is not None:
        broker = WakingRedisBroker(client=broker_client)
    else:
        broker = WorkerBroker(
            client=open_redis(settings.redis_url, **retry),
            heartbeat_timeout=heartbeat_ms,
        )
        # Maintenance (and heartbeat) several times per heartbeat timeout.
        maintainer = Maintainer(broker, min(settings.heartbeat_seconds / 4, 1.0))
    store = RedisStore(client, settings.namespace, settings.result_ttl)
    pipeline = Pipeline(settings, registry, store, BrokerSender(broker))
    broker.add_middleware(DagrelayMiddleware(pipeline, maintainer))
    if maintainer is not None:  # a real worker (not a test's fakeredis): seen by `workers`
        broker.add_middleware(HeartbeatMiddleware(pipeline, settings.beat_seconds))
    broker.add_middleware(ObservabilityMiddleware())  # trace context and log ids per message
    if isinstance(broker, WakingRedisBroker):
        broker.pool = pipeline.pool
    for lane in lanes_of(settings.queues):
        broker.declare_queue(lane)
    dramatiq.actor(  # type: ignore[call-overload]
        pipeline.take,
        broker=broker,
        actor_name=ACTOR_NAME,
        queue_name=settings.queues[0],
        max_retries=0,
        time_limit=NO_TIME_LIMIT_MS,
    )
    if set_global:
        dramatiq.set_broker(broker)
    return broker, pipeline
