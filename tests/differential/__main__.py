"""The soak: `python -m tests.differential --count 1000 --backend embedded|distributed`.

Generates `--count` flows from `--start` on, runs each on the reference, the embedded
backend and (with `--backend distributed`) a real redis-server with two worker
processes per worker mode (`--mode threads|async|both`), and prints, per backend and
check, how many flows broke it and the first seeds that did. `--seed N` / `--case NAME`
replay one case and print everything about it (`--dump`). Exit code 1 when a check
outside the known (backend, check) pairs failed (default: `test_differential.KNOWN`;
`--known a,b` names checks known on every backend), 0 otherwise.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import time
from collections import defaultdict
from typing import Any

from .checks import CHECKS
from .generator import generate, pinned
from .runner import Backend, Distributed, Embedded, dump, explain, run_case, timing


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tests.differential", description=__doc__)
    p.add_argument("--count", type=int, default=100, help="flows to generate")
    p.add_argument("--start", type=int, default=1000, help="first seed")
    p.add_argument("--seed", type=int, action="append", help="replay this seed (repeat)")
    p.add_argument("--case", action="append", help="replay this hand-written case")
    p.add_argument("--backend", choices=["embedded", "distributed"], default="embedded")
    p.add_argument("--mode", choices=["threads", "async", "both"], default="both")
    p.add_argument("--dump", action="store_true", help="print flows, expectations, results")
    p.add_argument("--json", help="write the summary here")
    p.add_argument(
        "--known",
        default=None,
        help="comma-separated checks that do not fail the soak (default: test_differential's)",
    )
    args = p.parse_args(argv)

    from .test_differential import KNOWN, KNOWN_RARE

    names = ["embedded", "distributed-threads", "distributed-async"]
    known: set[tuple[str, str]] = (
        {(b, c) for b in names for c in args.known.split(",") if c}
        if args.known is not None
        else set(KNOWN) | set(KNOWN_RARE)
    )
    if args.seed or args.case:
        cases = [generate(s) for s in args.seed or []] + [pinned(n) for n in args.case or []]
    else:
        cases = [generate(s) for s in range(args.start, args.start + args.count)]

    # A soak stopped by SIGTERM (a CI timeout, `kill`) still stops its servers and workers.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    backends: dict[str, Backend] = {}
    try:
        if args.backend == "distributed":
            modes = ["threads", "async"] if args.mode == "both" else [args.mode]
            for m in modes:
                d = Distributed(async_steps=(m == "async"))
                backends[d.name] = d
            url = next(iter(backends.values())).url  # type: ignore[attr-defined]
            backends = {"embedded": Embedded(url), **backends}
        else:
            backends["embedded"] = Embedded()
        return _soak(cases, backends, known, args)
    finally:
        for b in backends.values():
            b.close()


def _soak(
    cases: list[Any], backends: dict[str, Backend], known: set[tuple[str, str]], args: Any
) -> int:
    t = timing()
    broken: dict[tuple[str, str], list[str]] = defaultdict(list)
    wall: dict[str, float] = defaultdict(float)
    t0 = time.monotonic()
    bad = 0
    for i, case in enumerate(cases, 1):
        cr = run_case(case, backends, t)
        for name, report in cr.reports.items():
            wall[name] += report.wall
            for check in report.violations:
                broken[(name, check)].append(case.name)
            unknown = [c for c in report.violations if (name, c) not in known] or report.crashed
            if unknown or args.dump or args.seed or args.case:
                print(explain(cr, name), flush=True)
                if args.dump:
                    print(dump(cr, name), flush=True)
            if unknown:
                bad += 1
        if i % 25 == 0:
            print(f"... {i}/{len(cases)} flows, {time.monotonic() - t0:.0f}s", flush=True)
    print(f"\n{len(cases)} flows in {time.monotonic() - t0:.0f}s; wall per backend:")
    for name, w in wall.items():
        print(f"  {name}: {w:.1f}s")
    print("checks that failed (flows, first seeds):")
    summary: dict[str, Any] = {"flows": len(cases), "backends": list(backends), "broken": {}}
    for (name, check), names in sorted(broken.items()):
        tag = "known" if (name, check) in known else "NEW"
        print(f"  {name:20} {check:38} {len(names):5}  {tag}  {', '.join(names[:5])}")
        summary["broken"][f"{name}/{check}"] = {"count": len(names), "cases": names[:50]}
    clean = [c for c in CHECKS if not any(k[1] == c for k in broken)]
    print(f"checks with no failure: {', '.join(clean) or '-'}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(summary, f, indent=2)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
