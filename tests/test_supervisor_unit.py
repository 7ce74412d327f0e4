"""The supervisor's pure parts and the Redis probe's verdicts (no processes started)."""

from __future__ import annotations

import pytest
import redis

from tests.support.servers import free_port
from workers.checks import RedisMisconfigured, probe, where
from workers.supervisor import CRASH_WINDOW, backoff, describe


def test_a_process_dying_again_within_a_minute_waits_longer_each_time():
    assert backoff(1) == 0.0  # the first death: replaced at once
    assert [backoff(n) for n in (2, 3, 4, 5)] == [1.0, 2.0, 4.0, 8.0]
    assert backoff(50) == 30.0
    assert CRASH_WINDOW == 60.0


def test_exit_codes_are_told_with_their_signal():
    assert describe(-9) == "exit code -9 (SIGKILL)"
    assert describe(1) == "exit code 1"


def test_where_never_shows_the_password():
    assert where("redis://:s3cret@db.example:6380/2") == "db.example:6380/2"
    assert where("redis://user:s3cret@db.example/0") == "db.example:6379/0"
    assert "s3cret" not in where("rediss://:s3cret@h:1")


def test_probe_tells_a_bad_url_from_an_unreachable_redis():
    with pytest.raises(RedisMisconfigured, match="invalid Redis URL"):
        probe("redis://127.0.0.1:notaport/0")
    with pytest.raises(RedisMisconfigured, match="invalid Redis URL"):
        probe("http://127.0.0.1:6379/0")
    with pytest.raises(redis.ConnectionError):
        probe(f"redis://127.0.0.1:{free_port()}/0")


def test_a_sentinel_url_is_named_without_its_password():
    shown = where("redis+sentinel://:s3cret@h1:26379,h2:26380/mymaster/1")
    assert shown == "mymaster/1 via sentinels h1:26379,h2:26380"
    with pytest.raises(RedisMisconfigured, match="invalid Redis URL"):
        probe("redis+sentinel://h1:26379")  # no service name
