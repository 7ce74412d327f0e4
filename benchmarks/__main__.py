"""`make bench`: every figure a median over repeated runs, with its limit or peer beside it.

Prints a table and writes `bench-results.json`. The figures come in sections, each run
on its own clusters (one system at a time: dagrelay's workers, then each peer's):

  embedded  the in-process figures (no Redis)
  chain     embedded chain of 1,000 sync no-ops vs Dask's threaded scheduler
  core      Redis PING, hop, fan-out throughput vs raw Dramatiq, efficiency, memory, idle CPU
            (2 worker processes x 8 threads)
  cpu       8 CPU-bound leaves, 2 processes x 4 threads, vs Dask, Celery, raw Dramatiq
  map       a map of 1,000 x 10 ms sync sleeps, 2 processes x 4 threads, vs Dask
  io        500 x 50 ms async sleeps, 2 processes x 64 threads (and --async-steps 1000)
  sleeps    500 x 50 ms sync sleeps, 2 processes x 64 threads, vs Dask, Celery, raw Dramatiq

`--only cpu,sleeps` runs some sections, `--skip core`, `--quick` fewer repeats,
`--no-peers` dagrelay only, `--embedded` the sections that need no redis-server.
Beside every distributed figure: the steps each worker process ran, busiest first,
for each measured run (`8+0` = one process ran all 8; `52/48 %` for many steps).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table


@dataclass
class Row:
    name: str
    value: float
    unit: str
    beside: str = ""  # its limit or its peers, measured in the same run
    per_process: str = ""  # steps each worker process ran, each measured run
    target: str = ""
    data: dict[str, Any] = field(default_factory=dict)  # raw numbers, for the JSON


@dataclass
class Ctx:
    quick: bool
    peers: bool

    def reps(self, full: int, quick: int) -> int:
        return quick if self.quick else full


def _x(a: float, b: float) -> str:
    return f"{a / b:.2f}×"


# ---------------------------------------------------------------- embedded


def embedded_rows(ctx: Ctx) -> list[Row]:
    from benchmarks import embedded as e

    r = ctx.reps(9, 3)
    chain = e.chain_overhead_us(200, "noop", r)
    chain_sync = e.chain_overhead_us(200, "noop_sync", r)
    fan = e.fan_out(10_000, ctx.reps(3, 1))
    return [
        Row(
            "embedded: overhead per step, 200-step chain (async no-op)",
            chain,
            "µs",
            "",
            "",
            "≤ 30 (≤ 20)",
        ),
        Row(
            "embedded: overhead per step, 200-step chain (sync no-op, thread hop)", chain_sync, "µs"
        ),
        Row("embedded: 10,000-step fan-out", fan["seconds"], "s", target="≤ 1.5"),
        Row("embedded: peak RSS of the 10,000-step run", fan["peak_mb"], "MB", target="≤ 300"),
        Row(
            "embedded: efficiency, uneven DAG",
            e.efficiency("uneven", r),
            "ratio",
            target="≥ 0.95 (≥ 0.97)",
        ),
        Row(
            "embedded: efficiency, 10×10 lattice",
            e.efficiency("lattice", r),
            "ratio",
            target="≥ 0.97",
        ),
        Row(
            "embedded: 500 × 50 ms I/O steps, wall / 50 ms",
            e.io_wall_ratio(500, 0.05, r),
            "ratio",
            target="≤ 1.3",
        ),
    ]


def chain_rows(ctx: Ctx) -> list[Row]:
    from benchmarks import embedded as e

    r = ctx.reps(9, 3)
    ours = e.chain_call_us(1000, "noop_sync", r)
    rows = [
        Row(
            "embedded: chain of 1,000 sync no-ops, µs a step (timed around run())",
            ours["call_us"],
            "µs",
            f"by wall_time {ours['wall_time_us']:.0f} µs",
            target="≤ Dask",
            data=ours,
        )
    ]
    if ctx.peers:
        from benchmarks import peers

        dask = peers.dask_threaded_chain_us(1000, r)
        vs = _x(ours["call_us"], dask["get_us"])
        rows[0].beside = f"Dask threaded get {dask['get_us']:.0f} µs (dagrelay {vs}); "
        rows[0].beside += f"dagrelay by wall_time {ours['wall_time_us']:.0f} µs"
        rows[0].data["dask"] = dask
        rows += [
            Row(
                "  peer: Dask threaded scheduler, dask.threaded.get on the built graph",
                dask["get_us"],
                "µs",
            ),
            Row(
                "  peer: Dask, dask.delayed chain built and computed (scheduler='threads')",
                dask["delayed_us"],
                "µs",
            ),
        ]
    return rows


# ---------------------------------------------------------------- distributed: 2 × 8

#: The core figures run on what users run: two worker processes (of 8 threads each).
CORE_PROCS = 2


def core_rows(ctx: Ctx) -> list[Row]:
    from benchmarks import distributed as d
    from benchmarks import peers
    from benchmarks.spread import fmt_runs

    r = ctx.reps(7, 3)
    raw = None
    if ctx.peers:  # first, alone: then dagrelay's cluster, alone
        rd = peers.RawDramatiq(processes=CORE_PROCS, threads=8)
        try:
            raw = rd.hop_and_fan(repeats=ctx.reps(5, 2))
        finally:
            rd.close()
    cl = d.Cluster(threads=8, processes=CORE_PROCS)
    try:
        rt = d.round_trips(cl.server.url)
        hop = d.hop_latency_ms(cl, 50, r)
        fan = d.fan_out(cl, 1000, ctx.reps(3, 2))
        uneven = d.efficiency(cl, "uneven", r)
        lattice = d.efficiency(cl, "lattice", ctx.reps(3, 2))
        mem = d.redis_memory_per_1000(cl)
        idle = d.idle_cpu_percent(cl, 3.0 if ctx.quick else 10.0)
    finally:
        cl.close()
    ping = rt["ping_ms"]
    hop_ms = hop["hop_ms"]
    shape = f"({CORE_PROCS} × 8)"
    hop_beside = f"dagrelay {hop_ms / ping:.1f}× PING"
    fan_beside = ""
    if raw:
        hop_beside = (
            f"raw Dramatiq pipeline {raw['hop_ms']:.2f} ms = {raw['hop_ms'] / ping:.0f}× PING; "
            + hop_beside
        )
        fan_beside = (
            f"raw Dramatiq {raw['msgs_per_s']:.0f} msgs/s "
            f"({100 * fan['steps_per_s'] / raw['msgs_per_s']:.0f} %)"
        )
    return [
        Row("redis: PING round trip p50 (fresh client process)", ping, "ms", "the limit"),
        Row(
            "redis: EVALSHA round trip p50 (fresh client process)",
            rt["evalsha_ms"],
            "ms",
            "the limit",
        ),
        Row(
            f"distributed: per-hop latency, 50-step chain {shape}",
            hop_ms,
            "ms",
            hop_beside,
            fmt_runs(hop["per_process"]),
            "≤ 4× PING",
            {**hop, "raw": raw},
        ),
        Row("distributed: hop / PING", hop_ms / ping, "×", "", "", "≤ 4.0×"),
        Row(
            f"distributed: fan-out throughput, 1,000 leaves + join {shape}",
            fan["steps_per_s"],
            "steps/s",
            fan_beside,
            fmt_runs(fan["per_process"]),
            "≥ 400 % of raw",
            {**fan, "raw": raw},
        ),
        Row(
            "distributed: worker CPU per step in the fan-out",
            fan["worker_cpu_us"],
            "µs",
            f"one core: at most {1e6 / fan['worker_cpu_us']:,.0f} steps/s per worker process",
        ),
        Row(
            "distributed: Redis CPU per step in the fan-out",
            fan["redis_cpu_us"],
            "µs",
            f"one core: at most {1e6 / fan['redis_cpu_us']:,.0f} steps/s per Redis",
        ),
        Row("distributed: queue_wait p50 in the fan-out", fan["queue_wait_p50_ms"], "ms"),
        Row("distributed: queue_wait p99 in the fan-out", fan["queue_wait_p99_ms"], "ms"),
        Row(
            f"distributed: efficiency, uneven DAG {shape}",
            uneven["ratio"],
            "ratio",
            "",
            fmt_runs(uneven["per_process"]),
            "≥ 0.93",
        ),
        Row(
            f"distributed: efficiency, 10×10 lattice {shape}",
            lattice["ratio"],
            "ratio",
            "",
            fmt_runs(lattice["per_process"]),
            "≥ 0.93",
        ),
        Row("distributed: idle worker CPU, per process", idle, "% core", target="≤ 1"),
        Row("distributed: Redis memory per 1,000 finished steps", mem, "KiB"),
    ]


# ---------------------------------------------------------------- distributed: 2 processes


def _peer_rows(
    label: str,
    kind: str,
    arg: float,
    count: int,
    procs: int,
    threads: int,
    reps: int,
    score: Callable[[Any], float],
    unit: str,
    ctx: Ctx,
    after_each: Callable[[Any], None] = lambda m: None,
) -> list[tuple[str, Any]]:
    """Dask, Celery and raw Dramatiq on the same fan-out: (name, Measured) each.

    Each gets a warm-up run of the same work first (Dask learns task durations from it,
    as it would in service); `after_each(measured)` runs once a peer has stopped."""
    from benchmarks import peers

    out: list[tuple[str, Any]] = []
    if not ctx.peers:
        return out
    for name, make in (
        (f"Dask (LocalCluster {procs} workers × {threads} threads)", peers.DaskCluster),
        (f"Celery ({procs} workers × threads pool {threads}, Redis)", peers.CeleryWorkers),
        (f"raw Dramatiq ({procs} processes × {threads} threads)", peers.RawDramatiq),
    ):
        system = make(procs, threads)
        try:
            out.append((name, system.fan(kind, arg, count, reps)))
        finally:
            system.close()
        after_each(out[-1][1])
        print(f"  {label}: {name} {score(out[-1][1]):.3g} {unit}", file=sys.stderr)
    return out


def cpu_rows(ctx: Ctx) -> list[Row]:
    from benchmarks import distributed as d
    from benchmarks import work

    leaves, procs, threads = 8, 2, 4
    turns = work.calibrate(0.4)
    serial: list[float] = []

    def baseline(m: Any = None) -> None:
        """The same 8 steps one after another, here, with no cluster running: before the
        first system and after each, so each system's ratio uses the two around it."""
        t0 = time.perf_counter()
        for _ in range(leaves):
            work.burn(turns)
        serial.append(time.perf_counter() - t0)
        if m is not None:
            m.cpu_work = statistics.mean(serial[-2:])

    def ratio(m: Any) -> float:
        return float(m.wall / (m.cpu_work / procs))

    reps = ctx.reps(3, 2)
    baseline()
    cl = d.Cluster(threads=threads, processes=procs)
    try:
        ours = d.cpu_fan(cl, leaves, turns, reps)
    finally:
        cl.close()
    baseline(ours)
    peer = _peer_rows(
        "cpu",
        "burn",
        turns,
        leaves,
        procs,
        threads,
        reps,
        ratio,
        "× ideal",
        ctx,
        baseline,
    )
    ideal = statistics.median(serial) / procs
    beside = " · ".join(f"{n.split(' (')[0]} {ratio(m):.2f} ({m.shares})" for n, m in peer)
    rows = [
        Row(
            f"distributed: CPU fan-out {leaves} × ~0.4 s, {procs} proc × {threads} threads: "
            "wall / (CPU work / 2)",
            ratio(ours),
            "ratio",
            beside,
            f"{ours.shares_peak} (of {leaves})",
            "≤ 1.15, each process 3-5 of the 8",
            {
                **ours.as_dict(),
                "turns": turns,
                "serial_s": serial,
                "ideal_s": ideal,
                "peers": {n: m.as_dict() for n, m in peer},
            },
        ),
        Row(
            "  the CPU work: the 8 steps one after another in the bench process (median)",
            statistics.median(serial),
            "s",
            "samples, one before the first system and one after each: "
            + " ".join(f"{s:.2f}" for s in serial),
        ),
        Row("  dagrelay wall", ours.wall, "s", f"CPU work / 2 around it {ours.cpu_work / 2:.2f} s"),
    ]
    rows += [
        Row(
            f"  peer: {n}",
            ratio(m),
            "ratio",
            f"wall {m.wall:.2f} s, CPU work / 2 around it {m.cpu_work / 2:.2f} s",
            m.shares_peak,
        )
        for n, m in peer
    ]
    return rows


def map_rows(ctx: Ctx) -> list[Row]:
    from benchmarks import distributed as d

    items, secs, procs, threads = 1000, 0.01, 2, 4
    ideal = math.ceil(items / (procs * threads)) * secs
    reps = ctx.reps(3, 2)
    cl = d.Cluster(threads=threads, processes=procs)
    try:
        ours = d.map_sleep(cl, items, secs, reps)
    finally:
        cl.close()
    dask = None
    if ctx.peers:
        from benchmarks import peers

        dc = peers.DaskCluster(procs, threads)
        try:
            dask = dc.map_sleep(items, secs, reps)
        finally:
            dc.close()
    beside = f"ideal {ideal:.2f} s ({items} / {procs * threads} slots × 10 ms; below 1: more "
    beside += "at once than slots)"
    if dask:
        beside += f" · Dask client.map {dask.wall / ideal:.2f} ({dask.shares})"
    rows = [
        Row(
            f"distributed: map of {items:,} × 10 ms sync sleeps, {procs} proc × {threads} "
            "threads: wall / ideal",
            ours.wall / ideal,
            "ratio",
            beside,
            ours.shares_peak,
            "≤ 1.5",
            {**ours.as_dict(), "ideal_s": ideal, "dask": dask.as_dict() if dask else None},
        ),
        Row(
            "  share of the items the busiest process ran",
            100 * ours.busiest,
            "%",
            f"Dask {100 * dask.busiest:.0f} %" if dask else "",
            ours.shares,
            "≤ 60 %",
        ),
    ]
    if dask:
        rows.append(
            Row(
                f"  peer: Dask client.map (LocalCluster {procs} × {threads})",
                dask.wall / ideal,
                "ratio",
                f"wall {dask.wall:.2f} s",
                dask.shares_peak,
            )
        )
    return rows


def io_rows(ctx: Ctx) -> list[Row]:
    from benchmarks import distributed as d
    from benchmarks.spread import fmt_runs

    reps = ctx.reps(3, 2)
    out = {}
    for async_steps in (0, 1000):
        cl = d.Cluster(threads=64, processes=2, async_steps=async_steps)
        try:
            out[async_steps] = d.io_wall_ratio(cl, 500, 0.05, reps)
        finally:
            cl.close()
    return [
        Row(
            "distributed: 500 × 50 ms I/O steps (2 proc × 64 threads), wall / 50 ms",
            out[0]["ratio"],
            "ratio",
            "",
            f"{fmt_runs(out[0]['per_process'])}; ≤ {out[0]['peak']} at once",
            "≤ 1.5",
            out[0],
        ),
        Row(
            "distributed: same, with --async-steps 1000",
            out[1000]["ratio"],
            "ratio",
            "",
            f"{fmt_runs(out[1000]['per_process'])}; ≤ {out[1000]['peak']} at once",
            "≤ 1.5",
            out[1000],
        ),
    ]


def sleeps_rows(ctx: Ctx) -> list[Row]:
    from benchmarks import distributed as d

    n, secs, procs, threads = 500, 0.05, 2, 64
    ideal = math.ceil(n / (procs * threads)) * secs
    reps = ctx.reps(5, 3)
    cl = d.Cluster(threads=threads, processes=procs)
    try:
        ours = d.sync_sleeps(cl, n, secs, reps)
    finally:
        cl.close()

    def wall(m: Any) -> float:
        return float(m.wall)

    peer = _peer_rows("sleeps", "sleep_sync", secs, n, procs, threads, reps, wall, "s", ctx)
    dask = next((m for name, m in peer if name.startswith("Dask")), None)
    parts = [f"{name.split(' (')[0]} {m.wall:.2f} s ({m.shares})" for name, m in peer]
    rows = [
        Row(
            f"distributed: {n} × 50 ms sync sleeps, {procs} proc × {threads} threads: wall",
            ours.wall,
            "s",
            " · ".join([*parts, f"ideal {ideal:.2f} s"]),
            ours.shares_peak,
            "",
            {**ours.as_dict(), "ideal_s": ideal, "peers": {k: m.as_dict() for k, m in peer}},
        )
    ]
    if dask:
        rows.append(
            Row("  dagrelay wall / Dask wall", ours.wall / dask.wall, "×", "", "", "≤ 1.0× Dask")
        )
    rows += [Row(f"  peer: {k}", m.wall, "s", "", m.shares_peak) for k, m in peer]
    return rows


SECTIONS: dict[str, tuple[Callable[[Ctx], list[Row]], bool]] = {  # name: (rows, needs Redis)
    "embedded": (embedded_rows, False),
    "chain": (chain_rows, False),
    "core": (core_rows, True),
    "cpu": (cpu_rows, True),
    "map": (map_rows, True),
    "io": (io_rows, True),
    "sleeps": (sleeps_rows, True),
}


def background_cpu(seconds: float = 1.0) -> float:
    """Percent of the machine's cores busy while this bench runs nothing (other jobs):
    sampled before each section, the noise its figures were taken in."""

    def busy_idle() -> tuple[int, int]:
        fields = [int(x) for x in Path("/proc/stat").read_text().split("\n")[0].split()[1:]]
        idle = fields[3] + fields[4]  # idle + iowait
        return sum(fields[:8]) - idle, idle

    b0, i0 = busy_idle()
    time.sleep(seconds)
    b1, i1 = busy_idle()
    return 100 * (b1 - b0) / max(1, (b1 - b0) + (i1 - i0))


def _names(text: str) -> list[str]:
    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in SECTIONS]
    if unknown:
        raise SystemExit(f"unknown section(s) {unknown}: choose from {', '.join(SECTIONS)}")
    return names


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--quick", action="store_true", help="fewer repeats")
    parser.add_argument("--only", default="", help="comma-separated sections to run")
    parser.add_argument("--skip", default="", help="comma-separated sections to leave out")
    parser.add_argument(
        "--no-peers", action="store_true", help="dagrelay only: no Dask, Celery or raw Dramatiq"
    )
    parser.add_argument(
        "--embedded", action="store_true", help="only the sections that need no redis-server"
    )
    parser.add_argument("-o", "--output", default="bench-results.json")
    args = parser.parse_args(argv)
    chosen = _names(args.only) if args.only else list(SECTIONS)
    chosen = [n for n in chosen if n not in _names(args.skip)]
    if args.embedded:
        chosen = [n for n in chosen if not SECTIONS[n][1]]
    ctx = Ctx(quick=args.quick, peers=not args.no_peers)
    if ctx.peers:
        try:
            import celery  # noqa: F401
            import distributed  # noqa: F401
        except ImportError as e:
            raise SystemExit(
                f"{e}: the peers come from the `bench` extra (`make bench` installs it, or "
                "pip install -e '.[dev,bench]'); --no-peers runs dagrelay alone"
            ) from None
    t0 = time.monotonic()
    load0 = os.getloadavg()
    rows: list[Row] = []
    took: dict[str, float] = {}
    background: dict[str, float] = {}
    for name in chosen:
        background[name] = background_cpu()
        ts = time.monotonic()
        print(
            f"{name}: ... (other jobs keep {background[name]:.0f} % of the cores busy)",
            file=sys.stderr,
        )
        rows += SECTIONS[name][0](ctx)
        took[name] = time.monotonic() - ts
        print(f"{name}: {took[name]:.0f} s", file=sys.stderr)
    load1 = os.getloadavg()
    noise = ", ".join(f"{k} {v:.0f}" for k, v in background.items())
    table = Table(
        title=f"dagrelay benchmarks ({platform.node()}, Python {platform.python_version()}, "
        f"{os.cpu_count()} cores, load {load0[0]:.1f} → {load1[0]:.1f}; % of the cores other "
        f"jobs kept busy before each section: {noise})"
    )
    for col in ("figure", "value", "unit", "beside it (same run)", "per process", "target"):
        table.add_column(col, justify="right" if col == "value" else "left")
    for r in rows:
        value = f"{r.value:.3g}" if abs(r.value) < 100 else f"{r.value:,.0f}"
        table.add_row(r.name, value, r.unit, r.beside, r.per_process, r.target)
    Console(width=240).print(table)
    out: dict[str, Any] = {
        "when": datetime.now(UTC).isoformat(),
        "python": sys.version.split()[0],
        "quick": args.quick,
        "sections": took,
        "loadavg_start": load0,
        "loadavg_end": load1,
        "background_cpu_percent": background,
        "seconds": time.monotonic() - t0,
        "figures": [asdict(r) for r in rows],
    }
    Path(args.output).write_text(json.dumps(out, indent=2, default=str))
    print(f"wrote {args.output} in {out['seconds']:.0f}s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
