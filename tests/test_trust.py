"""The trust boundary (SECURITY.md): what a flow or Redis content can and cannot make a
worker do, that nothing unpickles or evaluates data, that secrets stay out of logs and
errors, and that run ids are checked before they become part of a key.
"""

from __future__ import annotations

import ast
import json
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import dramatiq
import pytest

from executor import DagrelayError, Flow, FlowExecutor, FlowValidationError, Step, ToolRegistry
from executor.backends.redis.backend import BrokerSender
from executor.backends.redis.messages import Token
from tests import fault_tools
from tests.faults.support import FaultCluster, wait_until
from tests.support.servers import ROOT, WorkerProcess, free_port, redis_server_binary

pytestmark = pytest.mark.timeout(120)
WAIT = 30.0

MARKER_MODULE = """
import pathlib, sys
pathlib.Path(sys.argv[0] if False else {marker!r}).write_text("imported")

def boom(**kwargs):
    pathlib.Path({marker!r}).write_text("called")
"""

#: Tool names that look like ways out: module paths, builtins, dunders.
ESCAPES = [
    "os.system",
    "os:system",
    "subprocess.run",
    "builtins.eval",
    "eval",
    "exec",
    "__import__",
    "marker_mod.boom",
    "marker_mod:boom",
    "marker_mod",
    "tests.fault_tools.traced",  # a real function, but not by its registered name
    "../marker_mod",
    "$input.tool",
]


@pytest.fixture(scope="module")
def marker_dir(tmp_path_factory) -> Path:
    """A module `marker_mod` on the workers' path that writes a file if ever imported."""
    d = tmp_path_factory.mktemp("marker")
    (d / "marker_mod.py").write_text(MARKER_MODULE.format(marker=str(d / "touched")))
    return d


@pytest.fixture(scope="module")
def cluster(marker_dir: Path) -> Iterator[FaultCluster]:
    c = FaultCluster(appendonly=False)
    try:
        c.start_workers(1, threads=2, env={"PYTHONPATH": f"{ROOT}:{marker_dir}"})
        yield c
    finally:
        c.close()


# Tools by registered name only -----------------------------------------------------------
@pytest.mark.parametrize("name", ESCAPES)
def test_an_embedded_flow_naming_a_module_path_is_invalid(name):
    flow = Flow(name="escape", steps=[Step(id="a", tool=name)])
    with pytest.raises(FlowValidationError) as info:
        FlowExecutor(registry=fault_tools.registry).submit(flow)
    assert f"unknown tool {name!r}" in str(info.value)


def test_a_worker_runs_only_tools_registered_in_its_process(cluster, marker_dir):
    """A client without tools cannot check names: the flow reaches the worker, which
    looks each name up in its registry, passes the step over for a worker that has it,
    and, none live having it, fails the step saying so. Nothing is imported."""
    flow = Flow(
        name="escapes",
        on_failure="continue",
        steps=[Step(id=f"s{i}", tool=name) for i, name in enumerate(ESCAPES)],
    )
    with FlowExecutor(cluster.url, registry=ToolRegistry()) as client:
        result = client.run(flow, timeout=WAIT)
    assert result.status == "failed"
    for i, name in enumerate(ESCAPES):
        rec = result.steps[f"s{i}"]
        assert rec.status == "failed", name
        assert rec.error is not None and rec.error.type == "NoLiveWorker"
        assert rec.error.message == f"no live worker serves queue 'dagrelay' with tool {name!r}"
    assert not (marker_dir / "touched").exists()


def test_tampered_redis_state_cannot_make_a_worker_import_or_call(cluster, marker_dir):
    """Whoever writes to Redis controls flows (trusted, SECURITY.md), yet even a flow
    rewritten in Redis or a forged message only reaches tools by registered name."""
    with FlowExecutor(cluster.url, registry=fault_tools.registry) as client:
        handle = client.submit(
            Flow(
                name="victim",
                steps=[Step(id="a", tool="sleep", inputs={"seconds": 0.3})],
            )
        )
        handle.wait(timeout=WAIT)
        # A forged run: its stored flow names a module path.
        run_id = uuid.uuid4().hex
        store = client._redis.store  # type: ignore[union-attr]
        bad = Flow(name="forged", steps=[Step(id="x", tool="marker_mod.boom")])
        store.create_run(
            run_id,
            {
                "flow": bad.model_dump_json(),
                "inputs": "{}",
                "flow_name": "forged",
                "flow_version": "1",
                "status": "running",
                "submitted_at": "2020-01-01T00:00:00+00:00",
                "started_at": "2020-01-01T00:00:00+00:00",
            },
            ["x"],
            {"x": 0},
            None,
        )
        store.enqueue(run_id, [("dagrelay", 1, ["x"])], "2020-01-01T00:00:00+00:00")
        sender = BrokerSender(client._redis.broker)  # type: ignore[union-attr]
        sender.send_many([Token(run_id, "dagrelay")])
        # Forged messages: an unknown actor, bad arguments, garbage ids.
        broker = client._redis.broker  # type: ignore[union-attr]
        for actor, args in [
            ("os.system", ("echo pwned",)),
            ("marker_mod.boom", ()),
            ("run_step", ("no-such-run", "dagrelay", 1)),
            ("run_step", ("a}:{b", "../x", 1)),
            ("run_step", ("a}:{b", "dagrelay", 1)),
            ("run_step", (1, 2, 3)),
            ("run_step", ("r", "dagrelay", -5)),
            ("run_step", ()),
        ]:
            broker.enqueue(
                dramatiq.Message(
                    queue_name="dagrelay",
                    actor_name=actor,
                    args=args,
                    kwargs={},
                    options={"max_retries": 0},
                )
            )
        # Raw bytes that are not a Dramatiq message at all.
        cluster.client.hset("dramatiq:dagrelay.msgs", "garbage-id", "\x00not json{")
        cluster.client.rpush("dramatiq:dagrelay", "garbage-id")
        forged_result = client.get_run(run_id).wait(timeout=WAIT)
        assert forged_result.status == "failed"
        err = forged_result.steps["x"].error
        assert err is not None and "with tool 'marker_mod.boom'" in err.message
        # The worker survived all of it and still serves runs.
        try:
            after = client.run(
                Flow(name="after", steps=[Step(id="a", tool="add", inputs={"a": 1, "b": 1})]),
                timeout=WAIT,
            )
        except TimeoutError as e:
            raise AssertionError(cluster.logs()) from e
        assert after.status == "succeeded"
    # The bytes that were no message at all went to the dead letters, not a stuck ack set.
    assert cluster.client.zscore("dramatiq:dagrelay.XQ", "garbage-id") is not None
    assert not (marker_dir / "touched").exists()
    assert cluster.workers[0].proc.poll() is None


# No pickle, no eval ------------------------------------------------------------------
FORBIDDEN_MODULES = {"pickle", "cPickle", "dill", "marshal", "shelve", "cloudpickle", "jsonpickle"}
FORBIDDEN_CALLS = {"eval", "exec", "compile", "__import__", "execfile"}
FORBIDDEN_ATTRS = {"PickleEncoder", "unsafe_load", "full_load", "UnsafeLoader", "FullLoader"}


def _python_files() -> list[Path]:
    return sorted(p for d in ("executor", "workers") for p in (ROOT / d).rglob("*.py"))


def test_no_pickle_marshal_eval_or_exec_in_the_engine():
    """Data from Redis is JSON, parsed with json/pydantic; predicates are a whitelisted
    AST interpreter. The only import by name is `load_tools` (the operator's module)."""
    problems = []
    imports_by_name = []
    for path in _python_files():
        tree = ast.parse(path.read_text(), str(path))
        rel = path.relative_to(ROOT)
        for node in ast.walk(tree):
            if isinstance(node, ast.Import | ast.ImportFrom):
                names = [a.name for a in node.names]
                mod = node.module if isinstance(node, ast.ImportFrom) else None
                for name in [*(names if mod is None else []), *([mod] if mod else [])]:
                    if name.split(".")[0] in FORBIDDEN_MODULES:
                        problems.append(f"{rel}:{node.lineno} imports {name}")
            elif isinstance(node, ast.Call):
                f = node.func
                if isinstance(f, ast.Name) and f.id in FORBIDDEN_CALLS:
                    problems.append(f"{rel}:{node.lineno} calls {f.id}()")
                if isinstance(f, ast.Attribute) and f.attr == "import_module":
                    imports_by_name.append(str(rel))
                if isinstance(f, ast.Attribute) and f.attr == "load" and _is_yaml(f.value):
                    problems.append(f"{rel}:{node.lineno} calls yaml.load")
            elif isinstance(node, ast.Attribute | ast.Name):
                name = node.attr if isinstance(node, ast.Attribute) else node.id
                if name in FORBIDDEN_ATTRS:
                    problems.append(f"{rel}:{node.lineno} uses {name}")
    assert problems == []
    assert imports_by_name == ["executor/model/tools.py"]


def _is_yaml(node: ast.expr) -> bool:
    return isinstance(node, ast.Name) and node.id == "yaml"


def test_worker_messages_are_json_not_pickle():
    from tests.support.fakes import fake_worker

    _server, broker, pipeline = fake_worker(fault_tools.registry)
    try:
        assert isinstance(dramatiq.get_encoder(), dramatiq.JSONEncoder)
        message = dramatiq.Message(
            queue_name="dagrelay",
            actor_name="run_step",
            args=("r", "dagrelay", 1),
            kwargs={},
            options={},
        )
        assert json.loads(message.encode())["args"] == ["r", "dagrelay", 1]
    finally:
        pipeline.drain(timeout=1)
        broker.close()


# Secrets never printed ------------------------------------------------------------------
def test_a_worker_never_logs_its_redis_password(tmp_path):
    """The worker's whole output — start-up, a run, Redis going away and coming back —
    never contains the password (the CLI's own output: tests/test_cli_distributed.py
    ::test_redis_passwords_are_never_printed)."""
    secret = f"pw-{uuid.uuid4().hex}"
    c = FaultCluster(appendonly=True, password=secret)
    try:
        (w,) = c.start_workers(1)
        with FlowExecutor(c.url, registry=fault_tools.registry) as client:
            ok = client.run(
                Flow(name="pw", steps=[Step(id="a", tool="add", inputs={"a": 1, "b": 2})]),
                timeout=WAIT,
            )
            assert ok.status == "succeeded"
        c.stop_redis()  # the worker now logs connection errors ...
        time.sleep(2)
        c.start_redis()  # ... and reconnects
        with FlowExecutor(c.url, registry=fault_tools.registry) as client:
            assert client.run(ok_flow(), timeout=WAIT).status == "succeeded"
        log = w.log()
        assert "ready for action" in log
        assert secret not in log
    finally:
        c.close()
    # A wrong password: the worker fails to serve, and says so without the secret.
    c = FaultCluster(appendonly=False, password=secret)
    wrong = f"wrong-{uuid.uuid4().hex}"
    try:
        bad = WorkerProcess(c.url.replace(secret, wrong), "tests.fault_tools", threads=1)
        c.workers.append(bad)
        assert wait_until(lambda: bad.proc.poll() is not None or len(bad.log()) > 200, 20)
        time.sleep(1)
        assert wrong not in bad.log() and secret not in bad.log()
    finally:
        c.close()


def ok_flow() -> Flow:
    return Flow(name="ok", steps=[Step(id="a", tool="add", inputs={"a": 2, "b": 2})])


@pytest.mark.parametrize("scheme", ["redis", "rediss"])
def test_errors_never_show_the_password_of_any_url(scheme):
    port = free_port()
    url = f"{scheme}://user:s3cr3t-{scheme}@127.0.0.1:{port}/0"
    with pytest.raises(DagrelayError) as info:
        FlowExecutor(url, registry=fault_tools.registry)
    text = f"{info.value} {info.value!r} {info.value.__cause__!r}"
    assert f"127.0.0.1:{port}" in text and "s3cr3t" not in text


@pytest.fixture
def tls_redis(tmp_path) -> Iterator[tuple[str, str]]:
    """A redis-server that speaks only TLS (self-signed certificate) and needs a
    password; yields (rediss:// URL, password)."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl is needed to make a test certificate")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        [
            *("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1"),
            *("-keyout", str(key), "-out", str(cert), "-subj", "/CN=127.0.0.1"),
            *("-addext", "subjectAltName=IP:127.0.0.1"),
        ],
        check=True,
        capture_output=True,
    )
    port, secret = free_port(), f"tls-{uuid.uuid4().hex}"
    proc = subprocess.Popen(
        [
            *(redis_server_binary(), "--port", "0", "--tls-port", str(port)),
            *("--bind", "127.0.0.1", "--tls-cert-file", str(cert), "--tls-key-file", str(key)),
            *("--tls-ca-cert-file", str(cert), "--tls-auth-clients", "no"),
            *("--requirepass", secret, "--save", "", "--appendonly", "no", "--dir", str(tmp_path)),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"rediss://:{secret}@127.0.0.1:{port}/0?ssl_ca_certs={cert}"
    try:
        import redis

        client = redis.Redis.from_url(url)
        if not wait_until(lambda: _pings(client), 10):
            pytest.skip("this redis-server cannot serve TLS")
        client.close()
        yield url, secret
    finally:
        proc.terminate()
        proc.wait(10)


def _pings(client) -> bool:
    import redis

    try:
        return bool(client.ping())
    except redis.RedisError:
        return False


def test_rediss_urls_work_end_to_end_and_stay_secret(tls_redis):
    url, secret = tls_redis
    worker = WorkerProcess(url, "tests.fault_tools", threads=1)
    try:
        worker.wait_ready(timeout=WAIT)
        with FlowExecutor(url, registry=fault_tools.registry) as client:
            result = client.run(ok_flow(), timeout=WAIT)
        assert result.status == "succeeded"
        assert secret not in worker.log()
    finally:
        worker.stop()
        worker.log_path.unlink(missing_ok=True)


# Run ids ------------------------------------------------------------------------------
BAD_RUN_IDS = ["", "a" * 129, "a}b", "{x}", "a:b", "../x", "a b", "x\x00", "ü", "*", "x\n"]


@pytest.mark.parametrize("run_id", BAD_RUN_IDS, ids=repr)
def test_run_ids_are_checked_before_they_reach_a_key(cluster, run_id):
    """`submit(run_id=...)` and `get_run(...)` refuse ids that could leave the run's
    hash tag or glob other keys; nothing is written (the CLI: tests/
    test_cli_distributed.py::test_unknown_and_malformed_run_ids)."""
    before = set(cluster.client.scan_iter(match="dagrelay:*"))
    with FlowExecutor(cluster.url, registry=fault_tools.registry) as client:
        with pytest.raises(FlowValidationError):
            client.submit(ok_flow(), run_id=run_id)
        with pytest.raises(FlowValidationError):
            client.get_run(run_id)
    with pytest.raises(FlowValidationError):
        FlowExecutor(registry=fault_tools.registry).submit(ok_flow(), run_id=run_id)
    assert set(cluster.client.scan_iter(match="dagrelay:*")) == before
