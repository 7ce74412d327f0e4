"""Redis failover under Sentinel (issue 17, item 6): one master, one replica, three
sentinels, all local `redis-server` processes; workers and the client use a
`redis+sentinel://` URL. The master is SIGKILLed mid-run: the sentinels promote the
replica, everyone reconnects to it, and the run completes with the right output, each
step recorded once (a step whose completion the old master had not replicated yet runs
again: at least once, recorded once).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from executor import FlowExecutor
from executor.backends.redis.urls import open_redis, sentinel_parts
from tests import fault_tools
from tests.faults.support import (
    FAST,
    TOOLS,
    WAIT,
    measure,
    one_final_record_each,
    trace,
    wait_until,
)
from tests.faults.test_workers import victim_flow
from tests.support.servers import RedisServer, WorkerProcess, free_port, redis_server_binary

pytestmark = pytest.mark.timeout(180)
SERVICE = "dagmaster"


class SentinelGroup:
    """A master, its replica and three sentinels watching it (quorum 2)."""

    def __init__(self) -> None:
        self.master = RedisServer().start()
        self.replica = RedisServer()
        self.procs: list[subprocess.Popen[bytes]] = []
        self.replica.start()
        client = redis.Redis(port=self.replica.port)
        client.replicaof("127.0.0.1", self.master.port)
        assert wait_until(
            lambda: client.info("replication").get("master_link_status") == "up", 20
        ), "the replica did not sync"
        client.close()
        self.sentinel_ports = [free_port() for _ in range(3)]
        for port in self.sentinel_ports:
            conf = self.master.dir / f"sentinel-{port}.conf"
            conf.write_text(
                f"port {port}\nbind 127.0.0.1\ndir {self.master.dir}\n"
                f"sentinel monitor {SERVICE} 127.0.0.1 {self.master.port} 2\n"
                f"sentinel down-after-milliseconds {SERVICE} 1000\n"
                f"sentinel failover-timeout {SERVICE} 5000\n"
            )
            self.procs.append(
                subprocess.Popen(
                    [redis_server_binary(), str(conf), "--sentinel"],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
            )
        for port in self.sentinel_ports:
            s = redis.Redis(port=port, decode_responses=True)
            assert wait_until(lambda s=s: _sees_replica(s), 20), "sentinels not ready"
            s.close()

    @property
    def url(self) -> str:
        hosts = ",".join(f"127.0.0.1:{p}" for p in self.sentinel_ports)
        return f"redis+sentinel://{hosts}/{SERVICE}/0"

    def master_port(self) -> int:
        s = redis.Redis(port=self.sentinel_ports[0], decode_responses=True)
        try:
            return int(s.sentinel_get_master_addr_by_name(SERVICE)[1])
        finally:
            s.close()

    def close(self) -> None:
        for p in self.procs:
            with contextlib.suppress(ProcessLookupError):
                p.kill()
            p.wait()
        self.replica.close()
        self.master.close()


def _sees_replica(s: redis.Redis) -> bool:
    try:
        return bool(s.sentinel_slaves(SERVICE)) and len(s.sentinel_sentinels(SERVICE)) == 2
    except redis.RedisError:
        return False


@pytest.fixture
def group() -> Iterator[SentinelGroup]:
    g = SentinelGroup()
    try:
        yield g
    finally:
        g.close()


def test_a_sentinel_url_is_parsed_with_its_sentinels_service_and_db():
    hosts, service, db, user, password = sentinel_parts(
        "redis+sentinel://:s3cret@h1:26379,h2:26380/mymaster/2"
    )
    assert hosts == [("h1", 26379), ("h2", 26380)]
    assert (service, db, user, password) == ("mymaster", 2, None, "s3cret")
    assert sentinel_parts("redis+sentinel://h1/svc")[0] == [("h1", 26379)]
    for bad in ("redis+sentinel://h1:26379", "redis+sentinel://h1:x/svc"):
        with pytest.raises(ValueError):
            sentinel_parts(bad)


def test_the_master_killed_mid_run_the_run_completes_on_the_promoted_replica(group, tmp_path):
    first_port = group.master_port()
    assert first_port == group.master.port
    workers = [WorkerProcess(group.url, TOOLS, threads=2, env={**FAST}) for _ in range(2)]
    try:
        for w in workers:
            w.wait_ready(timeout=WAIT)
        log = str(tmp_path / "trace")
        with FlowExecutor(group.url, registry=fault_tools.registry) as ex:
            handle = ex.submit(victim_flow(log, seconds=1.0))
            assert wait_until(lambda: len(trace(log)) >= 1, WAIT)
            assert group.master.proc is not None
            killed_at = time.monotonic()
            os.kill(group.master.proc.pid, signal.SIGKILL)
            result = handle.wait(timeout=WAIT)
            measure(
                "Sentinel failover: run done after the master's SIGKILL",
                time.monotonic() - killed_at,
            )
        assert result.status == "succeeded" and result.output == 2, [
            w.log()[-3000:] for w in workers
        ]
        one_final_record_each(result)
        assert group.master_port() == group.replica.port  # the replica is the master now
        # A new run, from a new client, on the new master.
        with FlowExecutor(group.url, registry=fault_tools.registry) as ex:
            again = ex.run(victim_flow(str(tmp_path / "trace2"), seconds=0.0), timeout=WAIT)
        assert again.status == "succeeded"
        assert "Redis at" in "".join(w.log() for w in workers)  # the loss was said
    finally:
        for w in workers:
            w.kill_all()
            w.proc.wait()


def test_a_sentinel_client_reaches_the_master(group):
    client = open_redis(group.url, decode_responses=True)
    client.set("k", "v")
    assert redis.Redis(port=group.master.port, decode_responses=True).get("k") == "v"
    client.close()
    assert Path(group.master.dir).exists()
