"""Redis URLs: `redis://`, `rediss://`, `unix://`, and Sentinel's `redis+sentinel://`.

`redis+sentinel://[[USER]:PASSWORD@]h1:26379,h2:26379/SERVICE[/DB]` (`rediss+sentinel`
for TLS to the master) names the sentinels and the master's service name: the client
asks a sentinel for the master on every new connection, so after a failover the next
connection (redis-py reconnects on the error, with the retries its caller set) goes to
the new master. The password is the master's; `?sentinel_password=` gives the
sentinels' own, if they have one.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry
from redis.sentinel import Sentinel, SentinelManagedConnection

SENTINEL_SCHEMES = ("redis+sentinel", "rediss+sentinel")
SCHEMES = ("redis", "rediss", "unix", *SENTINEL_SCHEMES)


class MasterFollowingConnection(SentinelManagedConnection):
    """A Sentinel connection that asks the sentinels for the master on every connect.

    Every reconnect goes through `connect`, whose retry asks the sentinels on each try,
    and the socket connect to the address they gave is tried once. redis-py itself
    retries the last address (the dead master) with the client's whole retry policy, so
    a client would wait out all its retries after a failover: from `send_command`'s
    reconnect (`connect_check_health`, redis-py 6-7) and inside `connect_to` (redis-py
    5-6, whose socket connect has its own retry).
    """

    _connecting_to = False

    def connect_to(self, address: tuple[str, int]) -> None:
        retry, self.retry = self.retry, Retry(NoBackoff(), 0)
        self._connecting_to = True
        try:
            super().connect_to(address)
        finally:
            self.retry, self._connecting_to = retry, False

    def connect_check_health(self, *args: Any, **kwargs: Any) -> None:
        if self._sock:  # type: ignore[attr-defined]
            return
        if not self._connecting_to:  # a reconnect elsewhere: find the master first
            self.connect()
            return
        super().connect_check_health(*args, **kwargs)  # type: ignore[misc]


def is_sentinel(url: str) -> bool:
    return url.split("://", 1)[0].lower() in SENTINEL_SCHEMES


def sentinel_parts(url: str) -> tuple[list[tuple[str, int]], str, int, str | None, str | None]:
    """(sentinels, service, db, username, password) of a `redis+sentinel://` URL.

    Raises:
        ValueError: no sentinel, a bad port, no service name, a bad database.
    """
    parts = urlsplit(url)
    userinfo, _, hostlist = parts.netloc.rpartition("@")
    username = password = None
    if userinfo:
        user, _, pw = userinfo.partition(":")
        username, password = unquote(user) or None, unquote(pw) or None
    hosts: list[tuple[str, int]] = []
    for item in hostlist.split(","):
        host, _, port = item.strip().rpartition(":") if ":" in item else (item, "", "26379")
        if not host:
            raise ValueError(f"sentinel {item!r} has no host")
        try:
            hosts.append((host.strip("[]"), int(port)))
        except ValueError:
            raise ValueError(f"sentinel {item!r}: port {port!r} is not a number") from None
    segments = [s for s in parts.path.split("/") if s]
    if not segments:
        raise ValueError("no master service name: redis+sentinel://HOST:PORT/SERVICE[/DB]")
    try:
        db = int(segments[1]) if len(segments) > 1 else 0
    except ValueError:
        raise ValueError(f"database {segments[1]!r} is not a number") from None
    return hosts, segments[0], db, username, password


def open_redis(url: str, **kwargs: Any) -> redis.Redis:
    """A client for the Redis a URL names (through its sentinels for a Sentinel URL);
    `kwargs` as for `redis.Redis` (timeouts, retries, decode_responses).

    Raises:
        ValueError: the URL is malformed.
    """
    if not is_sentinel(url):
        return redis.Redis.from_url(url, **kwargs)
    hosts, service, db, username, password = sentinel_parts(url)
    query = parse_qs(urlsplit(url).query)
    sentinel_kwargs: dict[str, Any] = {
        "socket_connect_timeout": kwargs.get("socket_connect_timeout", 5),
        "socket_timeout": kwargs.get("socket_timeout") or 5,
    }
    if "sentinel_password" in query:
        sentinel_kwargs["password"] = query["sentinel_password"][0]
    if url.lower().startswith("rediss+"):
        kwargs.setdefault("ssl", True)
    sentinel = Sentinel(hosts, sentinel_kwargs=sentinel_kwargs)
    return sentinel.master_for(
        service,
        db=db,
        username=username,
        password=password,
        connection_class=MasterFollowingConnection,
        **kwargs,
    )
