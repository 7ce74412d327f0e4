"""Is Redis there, and will it talk to us: the start-up check and the watch while running.

A worker that cannot work must say so. A refused password, a bad URL or a server that
is not Redis will not mend by waiting: `probe` raises `RedisMisconfigured` and the worker
exits at once. An unreachable Redis may come back (a restart, a failover, a slow start
of the stack): the worker says so within a second, names the host (never the password)
and says it again every few seconds until Redis answers.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from urllib.parse import urlsplit

import redis

from executor.backends.redis.urls import is_sentinel, open_redis, sentinel_parts

log = logging.getLogger("dagrelay.worker")
# A connect that takes longer than this counts as unreachable (and is said at once).
PROBE_TIMEOUT = 0.8
# While Redis is unreachable the worker says so again this often.
WARN_EVERY = 5.0
# A running worker looks whether Redis answers this often.
WATCH_EVERY = 1.0


class RedisMisconfigured(Exception):
    """Redis refused us in a way waiting will not mend (password, URL, not Redis)."""


def where(url: str) -> str:
    """The Redis a URL names, for logs: `host:port/db`, never the password."""
    try:
        if is_sentinel(url):
            hosts, service, number, _, _ = sentinel_parts(url)
            sentinels = ",".join(f"{h}:{p}" for h, p in hosts)
            return f"{service}/{number} via sentinels {sentinels}"
        parts = urlsplit(url)
        if parts.scheme == "unix":
            return f"unix:{parts.path}"
        host = parts.hostname or "localhost"
        port = parts.port or 6379
    except ValueError:
        return "(an invalid URL)"
    db = parts.path.strip("/") or "0"
    return f"{host}:{port}/{db}"


def probe(url: str, timeout: float = PROBE_TIMEOUT) -> None:
    """PING the Redis of `url` once, on a connection of its own.

    Raises:
        RedisMisconfigured: a bad URL, a refused authentication, a bad database, or a
            server that does not speak Redis.
        redis.ConnectionError: Redis cannot be reached now (it may be later).
    """
    try:
        client = open_redis(url, socket_connect_timeout=timeout, socket_timeout=timeout)
    except ValueError as exc:
        raise RedisMisconfigured(f"invalid Redis URL {where(url)}: {exc}") from None
    try:
        client.ping()
    except redis.AuthenticationError as exc:
        raise RedisMisconfigured(
            f"Redis at {where(url)} refused authentication ({exc}): check the password "
            "(and user) in the Redis URL"
        ) from None
    except (redis.ConnectionError, redis.TimeoutError, OSError) as exc:
        raise redis.ConnectionError(str(exc)) from None
    except ValueError as exc:  # a port that is no number, found on connect
        raise RedisMisconfigured(f"invalid Redis URL {where(url)}: {exc}") from None
    except redis.RedisError as exc:  # a bad DB index, a server that is not Redis
        raise RedisMisconfigured(f"Redis at {where(url)} answered with an error: {exc}") from None
    finally:
        client.close()


def wait_for_redis(
    url: str,
    *,
    stop: Callable[[], bool] = lambda: False,
    every: float = WARN_EVERY,
    sleep: Callable[[float], None] = time.sleep,
) -> bool:
    """Block until Redis answers a PING: True, or False when `stop()` became true first.

    While it is unreachable, a warning names the host at once and again every `every`
    seconds.

    Raises:
        RedisMisconfigured: see `probe`.
    """
    since: float | None = None
    said = 0.0
    while not stop():
        try:
            probe(url)
        except redis.ConnectionError as exc:
            now = time.monotonic()
            if since is None:
                since = said = now
                log.warning("Redis at %s is unreachable (%s); waiting for it", where(url), exc)
            elif now - said >= every:
                said = now
                log.warning(
                    "Redis at %s still unreachable after %.0f s (%s)", where(url), now - since, exc
                )
            sleep(min(0.5, every))
            continue
        if since is not None:
            log.warning("Redis at %s answered after %.1f s", where(url), time.monotonic() - since)
        return True
    return False


class RedisWatch:
    """A daemon thread that says when Redis becomes unreachable and when it is back."""

    def __init__(self, url: str, every: float = WATCH_EVERY, warn_every: float = WARN_EVERY):
        self.url = url
        self.every = every
        self.warn_every = warn_every
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="dagrelay-redis-watch", daemon=True)
        self.down_since: float | None = None

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def _loop(self) -> None:
        said = 0.0
        refused = ""
        while not self._stop.wait(self.every):
            try:
                probe(self.url)
            except redis.ConnectionError as exc:
                now = time.monotonic()
                if self.down_since is None:
                    self.down_since = said = now
                    log.warning(
                        "Redis at %s became unreachable (%s): steps wait for it",
                        where(self.url),
                        exc,
                    )
                elif now - said >= self.warn_every:
                    said = now
                    log.warning(
                        "Redis at %s still unreachable after %.0f s",
                        where(self.url),
                        now - self.down_since,
                    )
                continue
            except RedisMisconfigured as exc:  # a password changed under us, say
                if str(exc) != refused:
                    refused = str(exc)
                    log.error("%s", exc)
                continue
            refused = ""
            if self.down_since is not None:
                log.warning(
                    "Redis at %s is back after %.1f s",
                    where(self.url),
                    time.monotonic() - self.down_since,
                )
                self.down_since = None
