"""One dedicated Redis connection per thread for the scripts on a step's path.

A redis-py pipeline spends most of its client time outside the socket: taking and
returning a pooled connection (with a readiness check each time), the retry wrapper,
command-name lookups and response callbacks: ~70 µs of CPU per call on a small VM,
against ~25 µs to pack, send and read the same commands on a connection the thread
already holds. Every hop of a DAG pays this twice (claim, complete), and all of a
worker's threads share one GIL, so it bounds throughput.

Only raw replies come back (no callbacks): callers send EVALSHA and commands whose
replies they read as-is. Any connection error is re-raised after closing the
connection; the caller then goes the ordinary (retrying) way.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterable
from typing import Any

import redis
import redis.sentinel

try:  # redis[hiredis] is a dependency; without it, packing is redis-py's (slower) way
    from hiredis import pack_command as _pack

    HIREDIS = True
except ImportError:  # pragma: no cover
    HIREDIS = False

Command = tuple[Any, ...]


class DirectConnections:
    """Per-thread connections built like the client's own pool builds them."""

    def __init__(self, client: redis.Redis) -> None:
        pool = client.connection_pool
        self._make = lambda: pool.connection_class(**pool.connection_kwargs)
        self._local = threading.local()

    @staticmethod
    def supported(client: Any) -> bool:
        """Only real redis-py connections (fakeredis and cluster clients go the usual way)."""
        pool = getattr(client, "connection_pool", None)
        cls = getattr(pool, "connection_class", None)
        return (
            isinstance(client, redis.Redis)
            # A Sentinel pool finds its master per connection: only it knows the address.
            and not isinstance(pool, redis.sentinel.SentinelConnectionPool)
            and isinstance(cls, type)
            and issubclass(cls, redis.connection.AbstractConnection)
            and cls.__module__.startswith("redis.")
        )

    def _conn(self) -> Any:
        held = getattr(self._local, "held", None)
        # After a fork the socket belongs to the parent: never share it.
        if held is None or held[0] != os.getpid():
            held = self._local.held = (os.getpid(), self._make())
        return held[1]

    def execute(self, commands: list[Command]) -> list[Any]:
        """Send commands in one round trip; replies in order, raising the first error
        reply (after reading them all, so the connection stays in step)."""
        conn = self._conn()
        try:
            packed = [b"".join(map(_pack, commands))] if HIREDIS else conn.pack_commands(commands)
            conn.send_packed_command(packed, check_health=False)
            replies: list[Any] = []
            error: redis.ResponseError | None = None
            for _ in commands:
                try:
                    replies.append(conn.read_response())
                except redis.ResponseError as e:
                    error = error or e
                    replies.append(e)
        except BaseException:
            # A half-read reply would poison the next call: start afresh.
            conn.disconnect()
            raise
        if error is not None:
            raise error
        return replies

    def close(self) -> None:
        held = getattr(self._local, "held", None)
        if held is not None:
            held[1].disconnect()
            self._local.held = None


class RoundTrips:
    """Commands (scripts among them) sent in one round trip, the fast way when it can."""

    def __init__(self, client: redis.Redis, scripts: Iterable[str]) -> None:
        self.client = client
        self.direct = DirectConnections(client) if DirectConnections.supported(client) else None
        self.scripts = list(scripts)

    def run(self, commands: list[Command]) -> list[Any]:
        """The raw replies, in order.

        On this thread's own connection when it can, else (fakeredis, or a connection
        error: the client's retry policy then rides out an outage) as a pipeline. A
        missing script (Redis restarted) is loaded on the NoScriptError and the batch
        runs again, so callers send only commands that are safe to repeat (scripts that
        refuse a repeated transition, idempotent commands). redis-py's own script
        support would ask SCRIPT EXISTS first, every time.
        """
        for again in (False, True):
            try:
                if self.direct is not None:
                    try:
                        return self.direct.execute(commands)
                    except (redis.ConnectionError, redis.TimeoutError):
                        pass
                pipe = self.client.pipeline(transaction=False)
                for command in commands:
                    pipe.execute_command(*command)
                return list(pipe.execute())
            except redis.exceptions.NoScriptError:
                if again:
                    raise
                for text in self.scripts:
                    self.client.script_load(text)
        raise AssertionError("unreachable")
