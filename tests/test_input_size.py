"""A run's input has a size limit, refused before anything is written (issue 17, item 5),
and `dagrelay`'s exit codes are the documented ones, through the real entry point."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import fakeredis
import pytest
import redis

from executor import Flow, FlowExecutor, FlowValidationError, Step
from executor.model.input_size import DEFAULT_MAX_INPUT_BYTES, check_input_size, max_input_bytes
from tests.conformance.tools import registry
from tests.support.servers import ROOT, RedisServer

pytestmark = pytest.mark.timeout(120)
DAGRELAY = str(Path(sys.executable).with_name("dagrelay"))
BRANCH = "examples/branch.yaml"


def echo_flow() -> Flow:
    return Flow(name="echo", steps=[Step(id="e", tool="echo", inputs={"value": "$input.blob"})])


def big(n: int) -> dict[str, str]:
    return {"blob": "x" * n}


def test_the_limit_comes_from_the_argument_else_the_environment_else_4_mib(monkeypatch):
    monkeypatch.delenv("DAGRELAY_MAX_INPUT_BYTES", raising=False)
    assert max_input_bytes() == DEFAULT_MAX_INPUT_BYTES == 4 * 1024 * 1024
    monkeypatch.setenv("DAGRELAY_MAX_INPUT_BYTES", "1000")
    assert max_input_bytes() == 1000
    assert max_input_bytes(50) == 50
    monkeypatch.setenv("DAGRELAY_MAX_INPUT_BYTES", "0")
    assert max_input_bytes() is None  # 0: no limit
    check_input_size(big(10_000), None)
    monkeypatch.setenv("DAGRELAY_MAX_INPUT_BYTES", "lots")
    with pytest.raises(FlowValidationError, match="not a whole number"):
        max_input_bytes()


def test_an_input_over_the_default_limit_is_refused_in_one_line_embedded():
    with FlowExecutor(registry=registry) as ex:
        assert ex.run(echo_flow(), big(1000)).succeeded
        with pytest.raises(FlowValidationError) as err:
            ex.submit(echo_flow(), big(5 * 1024 * 1024))
    message = str(err.value)
    assert "\n" not in message
    assert "input is 5.0 MiB of JSON, over the limit of 4.0 MiB" in message


def test_an_input_over_the_limit_writes_nothing_to_redis():
    server = fakeredis.FakeServer()
    client = fakeredis.FakeRedis(server=server, decode_responses=True)
    with FlowExecutor(registry=registry, redis_client=client, max_input_bytes=10_000) as ex:
        with pytest.raises(FlowValidationError, match="over the limit of 10000 bytes"):
            ex.submit(echo_flow(), big(20_000))
        assert client.dbsize() == 0
        ex.submit(echo_flow(), big(5_000))  # under it: the run is created
        assert client.dbsize() > 0


@pytest.fixture(scope="module")
def server() -> Iterator[RedisServer]:
    s = RedisServer().start()
    yield s
    s.close()


def dagrelay(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """The installed `dagrelay` console script, as a user runs it."""
    full = {k: v for k, v in os.environ.items() if not k.startswith("DAGRELAY_")}
    full.update({"COLUMNS": "200", "PYTHONPATH": str(ROOT), **(env or {})})
    return subprocess.run(
        [DAGRELAY, *args], cwd=ROOT, env=full, capture_output=True, text=True, timeout=60
    )


def test_exit_codes_through_the_entry_point(server, tmp_path):
    """0 ok, 1 failed or invalid (an input too large included), 2 usage error, missing
    file, unknown or vanished run, Redis refusing the password; as `--help` says."""
    text = json.dumps({"text": "great fast tool"})
    tools = ["--tools", "examples.tools"]
    assert dagrelay("run", BRANCH, *tools, "--input", text).returncode == 0
    failing = tmp_path / "fails.yaml"
    failing.write_text("name: f\nsteps:\n  - {id: a, tool: decide, inputs: {approved: 3}}\n")
    assert dagrelay("run", str(failing), *tools).returncode == 1  # invalid input
    big_file = tmp_path / "big.json"
    big_file.write_text(json.dumps({"text": "y" * 3000}))
    env = {"DAGRELAY_MAX_INPUT_BYTES": "2000"}
    for cmd in (["run", BRANCH, *tools], ["submit", BRANCH, "--redis", server.url]):
        proc = dagrelay(*cmd, "--input-file", str(big_file), env=env)
        assert proc.returncode == 1, proc.stderr
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and "over the limit of 2000 bytes" in lines[0], proc.stderr
    assert redis.Redis.from_url(server.url).dbsize() == 0  # the refused submit wrote nothing
    assert dagrelay("run", "no/such.yaml", *tools).returncode == 2
    assert dagrelay("status", "nosuchrun", "--redis", server.url).returncode == 2
    wrong = f"redis://:nope@127.0.0.1:{server.port}/0"
    assert dagrelay("status", "nosuchrun", "--redis", wrong).returncode == 2
    help_text = dagrelay("--help").stdout
    assert "Exit codes: 0 ok; 1 the flow failed or is invalid" in " ".join(help_text.split())


def test_a_run_whose_state_vanishes_while_it_is_watched_exits_2(server):
    """No worker serves: `dagrelay run --redis` waits; the run's keys are deleted; the
    command says so in one line and exits 2 (as `run --help` says), never hangs."""
    client = redis.Redis.from_url(server.url)
    env = {k: v for k, v in os.environ.items() if not k.startswith("DAGRELAY_")}
    env["PYTHONPATH"] = str(ROOT)
    proc = subprocess.Popen(
        [DAGRELAY, "run", BRANCH, "--redis", server.url, "--input", '{"text": "x"}'],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 30
        while not list(client.scan_iter(match="dagrelay:{*}:status")):
            assert time.monotonic() < deadline and proc.poll() is None
            time.sleep(0.05)
        time.sleep(0.3)
        client.delete(*client.scan_iter(match="dagrelay:{*"))
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 2, err
    # With no worker at all, the watcher also says which steps no live worker serves.
    lines = err.strip().splitlines()
    assert all(ln.startswith("warning: no live worker serves") for ln in lines[:-1]), err
    assert lines[-1].startswith("error: ") and "gone from Redis" in lines[-1]
