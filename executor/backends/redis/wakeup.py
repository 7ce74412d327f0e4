"""A Dramatiq Redis broker whose idle consumers block on Redis instead of sleeping.

Dramatiq's Redis consumer polls: with an empty queue it sleeps 5 ms, doubling up to
its idle timeout (1 s), so a message sent to an idle worker waits up to that long. Here
every enqueue also pushes a token on a per-queue "wake" list and an idle consumer waits
with BLPOP on it, so it wakes within a round trip. Delivery itself is unchanged: tokens
are only hints (a lost one costs one idle timeout), messages still move through
Dramatiq's own scripts with its acks, requeues and delayed queues.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any
from uuid import uuid4

import redis
from dramatiq.broker import MessageProxy
from dramatiq.brokers.redis import RedisBroker, _RedisConsumer
from dramatiq.common import current_millis, dq_name
from dramatiq.errors import ConnectionClosed, DecodeError
from dramatiq.message import Message

from executor.backends.redis.connections import Command, RoundTrips

logger = logging.getLogger("dagrelay.broker")

# While messages are in flight (or delayed ones wait for their eta), come back this often.
DUE_CHECK_SECONDS = 0.01
# Enough tokens to wake every idle consumer of a busy queue; more would only spin.
MAX_TOKENS = 64
# While its worker shuts down, a consumer comes back this often (it is stopped soon).
STOPPING_SECONDS = 0.01


def wake_key(namespace: str, queue_name: str) -> str:
    return f"{namespace}:wake:{queue_name}"


class WakingRedisBroker(RedisBroker):
    """`RedisBroker` + wake-up tokens; a drop-in replacement on both ends."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        dispatch: Any = self.scripts["dispatch"]
        self._dispatch_sha: str = dispatch.sha
        self._trips = RoundTrips(self.client, [dispatch.script])
        self.stopping = threading.Event()
        # A worker's slots (workers.pool.Pool), set by the worker: its consumers fetch
        # no more token messages than it has free slots to start.
        self.pool: Any = None
        # This broker's own wake list: set apart from the queues' lists, which any
        # worker's consumer may pop, so that a shutdown wakes this process's consumers.
        self.stop_key = f"{self.namespace}:wake:__stop__.{self.broker_id}"

    def wake_to_stop(self, consumers: int) -> None:
        """Wake this broker's idle consumers now and keep them from blocking again: the
        worker is shutting down and would otherwise wait out their idle timeout."""
        self.stopping.set()
        if consumers <= 0:
            return
        commands = [("LPUSH", self.stop_key, *([1] * consumers)), ("EXPIRE", self.stop_key, 10)]
        try:
            if self._trips.direct is not None:  # one try: no outage retry while stopping
                self._trips.direct.execute(commands)
            else:
                self._trips.run(commands)
        except redis.RedisError as e:
            logger.warning(
                "could not wake consumers to stop, they stop within their idle timeout: %s", e
            )

    @property
    def consumer_class(self) -> type[_RedisConsumer]:
        return _WakingConsumer

    def _dispatch_command(self, command: str, queue_name: str, *args: Any) -> Command:
        """Dramatiq's `dispatch` script call, as `RedisBroker._dispatch` makes it."""
        return (
            "EVALSHA",
            self._dispatch_sha,
            1,
            self.namespace,
            command,
            current_millis(),
            queue_name,
            self.broker_id,
            self.heartbeat_timeout,
            self.dead_message_ttl,
            self._should_do_maintenance(command),
            self._max_unpack_size(),
            *args,
        )

    def _execute(self, commands: list[Command]) -> list[Any]:
        return self._trips.run(commands)

    def _dispatch(self, command: str) -> Callable[..., Any]:
        # Dramatiq's fetch, ack, nack and requeue, on the direct connection too.
        def do_dispatch(queue_name: str, *args: Any) -> Any:
            return self._execute([self._dispatch_command(command, queue_name, *args)])[0]

        return do_dispatch

    def enqueue(self, message: Message[Any], *, delay: int | None = None) -> Message[Any]:
        return self.enqueue_many([(message, delay)])[0]

    def enqueue_many(self, batch: list[tuple[Message[Any], int | None]]) -> list[Message[Any]]:
        """Enqueue messages (each with an optional delay in ms) in one round trip.

        Each message goes through Dramatiq's own `dispatch` script, exactly as
        `RedisBroker.enqueue` sends it, with the middleware hooks around it.
        """
        sent: list[Message[Any]] = []
        commands: list[Command] = []
        queues: set[str] = set()
        for message, delay in batch:
            # As RedisBroker.enqueue: a fresh id per enqueue; delayed ones go to the DQ.
            message = message.copy(options={"redis_message_id": str(uuid4())})
            queue_name = message.queue_name
            if delay is not None:
                queue_name = dq_name(queue_name)
                message = message.copy(
                    queue_name=queue_name, options={"eta": current_millis() + delay}
                )
            self.emit_before("enqueue", message, delay)
            commands.append(
                self._dispatch_command(
                    "enqueue", queue_name, message.options["redis_message_id"], message.encode()
                )
            )
            sent.append(message)
            queues.add(queue_name)
        for queue_name in queues:
            key = wake_key(self.namespace, queue_name)
            commands.append(("LPUSH", key, *([1] * min(MAX_TOKENS, len(batch)))))
            commands.append(("LTRIM", key, 0, MAX_TOKENS - 1))
        try:
            self._execute(commands)
        except redis.ConnectionError as e:
            raise ConnectionClosed(e) from None
        for message, delay in zip(sent, (d for _, d in batch), strict=True):
            self.emit_after("enqueue", message, delay)
        return sent


class _WakingConsumer(_RedisConsumer):
    """Dramatiq's consumer with the idle sleep replaced by a BLPOP on the wake list, and
    (in a worker) its fetches bounded by the worker's free slots: each fetched message
    holds a slot until its actor takes it, so a worker holds no more fetched work than
    it can start, and what it cannot start stays on the queue for the others."""

    def __next__(self) -> MessageProxy | None:
        try:
            while True:
                if self.message_cache:
                    data = self.message_cache.pop(0)
                    if data is None:
                        continue
                    self.misses = 0
                    try:
                        message = Message.decode(data)
                    except DecodeError:
                        self._reject_undecodable(data)
                        self._unhold(1)
                        continue
                    if message.actor_name not in self.broker.actors:
                        self._unhold(1)  # Dramatiq's consumer sends it to the dead letters
                    self.queued_message_ids.add(message.message_id)
                    return MessageProxy(message)
                messages: list[bytes] = []
                want = self.prefetch - self.outstanding_message_count
                if want > 0 and self._slots() is not None:
                    want = self._slots().hold(self.queue_name, want)
                    if want == 0:
                        self._wait_for_slot()
                        return None
                if want > 0:
                    self.message_cache = messages = self.broker.do_fetch(self.queue_name, want)
                    self._unhold(want - len(messages))
                    if not messages and self._slots() is not None:
                        self._slots().backlog[self.queue_name] = False  # none waits
                if not messages:
                    self._idle_wait()
                    return None
        except redis.ConnectionError as e:
            raise ConnectionClosed(e) from None

    def _slots(self) -> Any:
        """The worker's pool, for a queue of units (not a delay queue: its messages wait
        for their time, then go to their queue, and run nothing here)."""
        pool = getattr(self.broker, "pool", None)
        return None if pool is None or self.queue_name.endswith(".DQ") else pool

    def _unhold(self, n: int) -> None:
        pool = self._slots()
        if pool is not None and n > 0:
            pool.unhold(self.queue_name, n)

    def _wait_for_slot(self) -> None:
        # Every slot is taken: fetch nothing (the queue's messages are for the workers
        # that have room) until one frees, or the consumer's thread has acks to do.
        if self.broker.stopping.is_set():
            time.sleep(STOPPING_SECONDS)
            return
        pool = self._slots()
        if not pool.wait_free(self.queue_name, DUE_CHECK_SECONDS * 5):
            key = f"{self.broker.namespace}:{self.queue_name}"
            pool.backlog[self.queue_name] = bool(self.broker.client.llen(key))

    def _reject_undecodable(self, data: bytes) -> None:
        # Dramatiq's consumer raises here and restarts, stranding the rest of the
        # fetched batch in this worker's ack set until it exits. Instead move the bad
        # entry to the dead-letter queue (found by its bytes: the fetch script returns
        # no ids) and go on with the batch.
        broker = self.broker
        acks = f"{broker.namespace}:__acks__.{broker.broker_id}.{self.queue_name}"
        ids = sorted(broker.client.smembers(acks))
        msgs = f"{broker.namespace}:{self.queue_name}.msgs"
        stored = broker.client.hmget(msgs, ids) if ids else []
        bad = [i for i, d in zip(ids, stored, strict=True) if d == data]
        for message_id in bad:
            broker.do_nack(self.queue_name, message_id)
        logger.error(
            "undecodable message on queue %r moved to the dead-letter queue: %r",
            self.queue_name,
            data[:200],
        )

    def _idle_wait(self) -> None:
        # The worker's consumer thread handles acks and due delayed messages between
        # calls to __next__: block long only when nothing is in flight.
        if self.outstanding_message_count >= self.prefetch:
            time.sleep(0.001)
            return
        broker: WakingRedisBroker = self.broker
        if broker.stopping.is_set():
            time.sleep(STOPPING_SECONDS)
            return
        timeout = DUE_CHECK_SECONDS if self.outstanding_message_count else self.timeout / 1000
        key = wake_key(broker.namespace, self.queue_name)
        broker.client.blpop([key, broker.stop_key], timeout=timeout)
