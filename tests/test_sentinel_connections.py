"""`MasterFollowingConnection` on every supported redis-py: each connect asks the sentinels
for the master and tries the address they give once, so after a failover the next try goes
to the new master (the full failover, with sentinels, is tests/faults/test_failover.py).

The sentinels' answer is stubbed here; the server is a real `redis-server`.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from redis.backoff import NoBackoff
from redis.retry import Retry
from redis.sentinel import Sentinel

from executor.backends.redis.urls import MasterFollowingConnection
from tests.support.servers import RedisServer, free_port


@pytest.fixture(scope="module")
def server() -> Iterator[RedisServer]:
    s = RedisServer().start()
    try:
        yield s
    finally:
        s.close()


def client_following(answers: list[tuple[str, int]], retries: int = 5) -> tuple:
    """A Sentinel client whose sentinels answer `answers` in turn (the last one after);
    also the list of addresses it opened a socket to."""
    sentinel = Sentinel([("127.0.0.1", free_port())])
    client = sentinel.master_for(
        "svc",
        connection_class=MasterFollowingConnection,
        retry=Retry(NoBackoff(), retries),
        retry_on_error=[ConnectionError, OSError],
        socket_connect_timeout=2,
    )
    asked: list[tuple[str, int]] = []

    def master() -> tuple[str, int]:
        asked.append(answers[min(len(asked), len(answers) - 1)])
        return asked[-1]

    # Connections reach the pool through its proxy (redis-py 5+).
    client.connection_pool.proxy.get_master_address = master
    opened: list[tuple[str, int]] = []
    real_connect = MasterFollowingConnection._connect

    def counting_connect(self):
        opened.append((self.host, self.port))
        return real_connect(self)

    return client, opened, counting_connect


def test_each_try_asks_the_sentinels_and_opens_the_address_once(server, monkeypatch):
    dead = ("127.0.0.1", free_port())
    live = ("127.0.0.1", server.port)
    client, opened, counting = client_following([dead, dead, live])
    monkeypatch.setattr(MasterFollowingConnection, "_connect", counting)
    assert client.ping() is True
    # redis-py 5-6 retried the dead address inside each connect (6 + 6 sockets first).
    assert opened == [dead, dead, live]
    client.close()


def test_a_dropped_connection_reconnects_to_the_master_the_sentinels_name_now(server):
    live = ("127.0.0.1", server.port)
    client, _, _ = client_following([live])
    assert client.set("k", "v")
    client.client_kill_filter(_type="normal", skipme=False)  # drops our own connection too
    # The next command's reconnect goes through `connect` (no endless recursion through
    # `connect_check_health`, as on redis-py 6.0-6.3) and reads the same data.
    assert client.get("k") == b"v"
    client.close()
