"""compose.yaml agrees with the code: its commands parse with the real CLI, the modules,
files and settings it names exist, and the worker service can be scaled.

No Docker needed: these check the file against the code, so renaming a flag or a setting
without updating the deployment fails here.
"""

from __future__ import annotations

import importlib
import re
import shlex
from pathlib import Path
from typing import Any

import pytest
import typer
import yaml

from executor.cli.main import app

ROOT = Path(__file__).resolve().parent.parent
COMPOSE = ROOT / "compose.yaml"
DOCKERFILE = ROOT / "Dockerfile"
README = ROOT / "README.md"
SETTINGS_SOURCES = [*sorted((ROOT / "executor").rglob("*.py")), ROOT / "workers" / "settings.py"]


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data = yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))
    assert isinstance(data, dict) and isinstance(data.get("services"), dict)
    return data


def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return compose["services"]


def argv(command: str | list[str]) -> list[str]:
    """A compose `command` (exec form or a string) as argv."""
    return shlex.split(command) if isinstance(command, str) else [str(a) for a in command]


def dagrelay_commands(compose: dict[str, Any]) -> dict[str, list[str]]:
    found = {}
    for name, svc in services(compose).items():
        if "command" in svc and argv(svc["command"])[:1] == ["dagrelay"]:
            found[name] = argv(svc["command"])
    return found


def parse(args: list[str]) -> Any:
    """Parse `dagrelay ARGS` with the real app, as the console script would, without
    running it; returns the command's context (its `params`).

    Raises:
        UsageError (click's, as Typer ships it): an unknown command or option, a
        missing or bad value.
    """
    root = typer.main.get_command(app)
    ctx = root.make_context("dagrelay", list(args[:1]), resilient_parsing=False)
    sub = root.get_command(ctx, args[0])  # type: ignore[attr-defined]
    if sub is None:
        ctx.fail(f"no such command {args[0]!r}")
    return sub.make_context(args[0], list(args[1:]), parent=ctx, resilient_parsing=False)


def parse_error(args: list[str]) -> str | None:
    """Why `dagrelay ARGS` does not parse, or None if it does."""
    try:
        parse(args)
    except Exception as exc:
        if not hasattr(exc, "format_message"):  # not a usage error: a bug, show it
            raise
        return str(exc.format_message())
    return None


def option(args: list[str], flag: str) -> str | None:
    """The value given to `flag` (`--flag value` or `--flag=value`), or None."""
    for i, a in enumerate(args):
        if a == flag and i + 1 < len(args):
            return args[i + 1]
        if a.startswith(flag + "="):
            return a.split("=", 1)[1]
    return None


def env_of(svc: dict[str, Any]) -> dict[str, str]:
    env = svc.get("environment") or {}
    if isinstance(env, list):  # ["KEY=value", ...]
        return dict(item.split("=", 1) if "=" in item else (item, "") for item in env)
    return {str(k): "" if v is None else str(v) for k, v in env.items()}


# The checks --------------------------------------------------------------------------
def test_the_parse_check_catches_bad_flags() -> None:
    """The helper really parses: an unknown flag, a bad value or command fails."""
    assert parse_error(["worker", "--tools", "examples.tools", "--processes", "2"]) is None
    assert "--no-such-flag" in str(parse_error(["worker", "--tools", "x", "--no-such-flag"]))
    assert parse_error(["worker", "--processes", "many"]) is not None
    assert parse_error(["no-such-command"]) is not None
    assert parse_error(["run"]) is not None  # FLOW is required


def test_dagrelay_commands_parse_with_the_real_cli(compose: dict[str, Any]) -> None:
    commands = dagrelay_commands(compose)
    assert "worker" in commands and "client" in commands, commands
    for name, args in commands.items():
        error = parse_error(args[1:])
        assert error is None, f"compose service {name!r}: `{shlex.join(args)}`: {error}"


def test_the_worker_runs_workers_of_a_tools_module_that_imports(
    compose: dict[str, Any],
) -> None:
    args = dagrelay_commands(compose)["worker"]
    assert args[1] == "worker"
    tools = option(args, "--tools") or env_of(services(compose)["worker"]).get("DAGRELAY_TOOLS")
    assert tools, "the worker service names no tools module"
    importlib.import_module(tools)
    # The image must contain it: the Dockerfile copies the module's top-level package.
    assert re.search(rf"^COPY\s+{tools.split('.')[0]}\b", DOCKERFILE.read_text(), re.M)


def test_the_client_runs_a_flow_that_exists(compose: dict[str, Any]) -> None:
    args = dagrelay_commands(compose)["client"]
    ctx = parse(args[1:])
    flow = ctx.params["flow"]
    assert (ROOT / flow).is_file(), flow
    dockerfile = DOCKERFILE.read_text()
    assert re.search(rf"^COPY\s+{Path(flow).parts[0]}\b", dockerfile, re.M), flow
    assert re.search(r"^WORKDIR\s+\S+", dockerfile, re.M)  # relative paths resolve there
    tools = ctx.params.get("tools")
    if tools:
        importlib.import_module(tools)
    # It runs on the workers: through Redis, from the flag or the environment.
    redis = ctx.params.get("redis") or env_of(services(compose)["client"]).get("DAGRELAY_REDIS_URL")
    assert redis and redis.startswith("redis://redis:"), redis


def test_environment_variables_are_ones_the_code_reads(compose: dict[str, Any]) -> None:
    source = "\n".join(p.read_text(encoding="utf-8") for p in SETTINGS_SOURCES)
    used = {
        (name, var)
        for name, svc in services(compose).items()
        for var in env_of(svc)
        if var.startswith("DAGRELAY_")
    }
    assert used, "no DAGRELAY_* settings in compose.yaml"
    for name, var in sorted(used):
        assert re.search(rf"[\"']{var}[\"']", source), f"service {name!r}: {var} is read nowhere"


def test_services_reach_redis_by_its_service_name(compose: dict[str, Any]) -> None:
    for name, svc in services(compose).items():
        url = env_of(svc).get("DAGRELAY_REDIS_URL")
        if url:
            host = re.match(r"rediss?://(?:[^@/]*@)?([^:/]+)", url)
            assert host and host.group(1) in services(compose), (name, url)
            depends = svc.get("depends_on") or {}
            assert host.group(1) in depends, f"{name} does not wait for {host.group(1)}"
            if isinstance(depends, dict):
                assert depends[host.group(1)].get("condition") == "service_healthy"


def test_redis_keeps_its_data_and_has_a_healthcheck(compose: dict[str, Any]) -> None:
    redis = services(compose)["redis"]
    args = argv(redis["command"])
    assert args[0] == "redis-server"
    assert option(args, "--appendonly") == "yes", args
    check = redis.get("healthcheck") or {}
    assert check.get("test"), "redis has no healthcheck"
    assert "ping" in " ".join(argv(check["test"])).lower()
    assert any(str(v).split(":")[-1] == "/data" for v in redis.get("volumes") or []), (
        "redis's /data (the AOF) is not on a volume"
    )


def test_the_worker_service_can_be_scaled(compose: dict[str, Any]) -> None:
    worker = services(compose)["worker"]
    assert "container_name" not in worker, "a fixed container_name prevents --scale"
    for port in worker.get("ports") or []:
        # "8000:8000" or {published: 8000} binds one host port: a second replica fails.
        if isinstance(port, dict):
            published = port.get("published")
        else:
            published = str(port).rpartition(":")[0] or None
        assert not published, f"worker binds a host port: {port}"
    # Stopping must leave time for Dramatiq's graceful shutdown of running steps.
    grace = str(worker.get("stop_grace_period", "10s"))
    assert re.fullmatch(r"\d+s", grace) and int(grace[:-1]) >= 30, grace


def test_readme_deployment_section_matches(compose: dict[str, Any]) -> None:
    text = README.read_text(encoding="utf-8") if README.exists() else ""
    if "docker compose up" not in text:
        pytest.skip("README has no deployment section yet")
    assert re.search(r"docker compose up\b.*--scale worker=\d+", text), (
        "README's deployment section should show `docker compose up --scale worker=N`"
    )
    for service in re.findall(r"docker compose run (?:--rm )?(\w+)", text):
        assert service in services(compose), f"README runs service {service!r}"
