"""`make bench`: every figure a median over repeated runs, with its limit or peer beside it.

Prints a table and writes `bench-results.json`. `--quick` runs fewer repeats;
`--embedded` skips the distributed figures (no redis-server needed).
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

Row = tuple[str, float, str, str, str]  # name, value, unit, beside (peer/limit), target


def embedded_rows(quick: bool) -> list[Row]:
    from benchmarks import embedded as e

    r = 3 if quick else 9
    chain = e.chain_overhead_us(200, "noop", r)
    chain_sync = e.chain_overhead_us(200, "noop_sync", r)
    fan = e.fan_out(10_000, 1 if quick else 3)
    return [
        (
            "embedded: overhead per step, 200-step chain (async no-op)",
            chain,
            "µs",
            "",
            "≤ 30 (≤ 20)",
        ),
        (
            "embedded: overhead per step, 200-step chain (sync no-op, thread hop)",
            chain_sync,
            "µs",
            "",
            "",
        ),
        ("embedded: 10,000-step fan-out", fan["seconds"], "s", "", "≤ 1.5"),
        ("embedded: peak RSS of the 10,000-step run", fan["peak_mb"], "MB", "", "≤ 300"),
        (
            "embedded: efficiency, uneven DAG",
            e.efficiency("uneven", r),
            "ratio",
            "",
            "≥ 0.95 (≥ 0.97)",
        ),
        ("embedded: efficiency, 10×10 lattice", e.efficiency("lattice", r), "ratio", "", "≥ 0.97"),
        (
            "embedded: 500 × 50 ms I/O steps, wall / 50 ms",
            e.io_wall_ratio(500, 0.05, r),
            "ratio",
            "",
            "≤ 1.3",
        ),
    ]


def distributed_rows(quick: bool) -> list[Row]:
    from benchmarks import distributed as d

    r = 3 if quick else 7
    cl = d.Cluster(threads=8)
    try:
        rt = d.round_trips(cl.server.url)
        raw = d.raw_dramatiq(cl.server.url, threads=8, repeats=2 if quick else 5)
        hop = d.hop_latency_ms(cl, 50, r)
        fan = d.fan_out(cl, 1000, 2 if quick else 3)
        uneven = d.efficiency(cl, "uneven", r)
        lattice = d.efficiency(cl, "lattice", 2 if quick else 3)
        mem = d.redis_memory_per_1000(cl)
        idle = d.idle_cpu_percent(cl, 3.0 if quick else 10.0)
    finally:
        cl.close()
    wide = d.Cluster(threads=64)
    try:
        io = d.io_wall_ratio(wide, 500, 0.05, 2 if quick else 3)
    finally:
        wide.close()
    detached = d.Cluster(threads=64, async_steps=1000)
    try:
        io_async = d.io_wall_ratio(detached, 500, 0.05, 2 if quick else 3)
    finally:
        detached.close()
    ping = rt["ping_ms"]
    return [
        ("redis: PING round trip p50", ping, "ms", "the limit", ""),
        ("redis: EVALSHA round trip p50", rt["evalsha_ms"], "ms", "the limit", ""),
        (
            "distributed: per-hop latency, 50-step chain",
            hop,
            "ms",
            f"raw Dramatiq {raw['hop_ms']:.2f} ms = {raw['hop_ms'] / ping:.0f}× PING; "
            f"dagrelay {hop / ping:.1f}× PING",
            "≤ 4× PING",
        ),
        (
            "distributed: fan-out throughput, 1,000 leaves + join",
            fan["steps_per_s"],
            "steps/s",
            f"raw Dramatiq {raw['msgs_per_s']:.0f} msgs/s "
            f"({100 * fan['steps_per_s'] / raw['msgs_per_s']:.0f} %)",
            "≥ 100 % of raw",
        ),
        (
            "distributed: worker CPU per step in the fan-out",
            fan["worker_cpu_us"],
            "µs",
            f"one core: at most {1e6 / fan['worker_cpu_us']:,.0f} steps/s per worker process",
            "",
        ),
        (
            "distributed: Redis CPU per step in the fan-out",
            fan["redis_cpu_us"],
            "µs",
            f"one core: at most {1e6 / fan['redis_cpu_us']:,.0f} steps/s per Redis",
            "",
        ),
        ("distributed: queue_wait p50 in the fan-out", fan["queue_wait_p50_ms"], "ms", "", ""),
        ("distributed: queue_wait p99 in the fan-out", fan["queue_wait_p99_ms"], "ms", "", ""),
        ("distributed: efficiency, uneven DAG", uneven, "ratio", "", "≥ 0.93"),
        ("distributed: efficiency, 10×10 lattice", lattice, "ratio", "", "≥ 0.93"),
        (
            "distributed: 500 × 50 ms I/O steps (--threads 64), wall / 50 ms",
            io,
            "ratio",
            "",
            "≤ 1.3",
        ),
        ("distributed: same, with --async-steps 1000", io_async, "ratio", "", "≤ 1.3"),
        ("distributed: idle worker CPU", idle, "% core", "", "≤ 1"),
        ("distributed: Redis memory per 1,000 finished steps", mem, "KiB", "", ""),
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks")
    parser.add_argument("--quick", action="store_true", help="fewer repeats")
    parser.add_argument("--embedded", action="store_true", help="skip distributed figures")
    parser.add_argument("-o", "--output", default="bench-results.json")
    args = parser.parse_args(argv)
    t0 = time.monotonic()
    rows = embedded_rows(args.quick)
    if not args.embedded:
        rows += distributed_rows(args.quick)
    table = Table(
        title=f"dagrelay benchmarks ({platform.node()}, Python {platform.python_version()})"
    )
    for col in ("figure", "value", "unit", "beside it", "target"):
        table.add_column(col, justify="right" if col == "value" else "left")
    for name, value, unit, beside, target in rows:
        table.add_row(
            name, f"{value:.3g}" if value < 100 else f"{value:,.0f}", unit, beside, target
        )
    Console(width=200).print(table)
    out: dict[str, Any] = {
        "when": datetime.now(UTC).isoformat(),
        "python": sys.version.split()[0],
        "seconds": time.monotonic() - t0,
        "figures": [
            dict(zip(("name", "value", "unit", "beside", "target"), r, strict=True)) for r in rows
        ],
    }
    Path(args.output).write_text(json.dumps(out, indent=2))
    print(f"wrote {args.output} in {out['seconds']:.0f}s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
