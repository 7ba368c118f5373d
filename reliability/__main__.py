"""``python -m reliability [--smoke|--full] [--family NAME]...``: run trial families, rewrite the report.

Exit status: 0 when every family held (and every negative control found violations), 1 otherwise.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

from reliability import FAMILIES, run_families
from reliability.harness import REPORT, FamilyResult, RunHeader, Size, merge_partial, now_text, render


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m reliability", description=__doc__)
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--smoke", action="store_true", help="small runs, as CI does (default)")
    size.add_argument("--full", action="store_true", help="the published sizes")
    parser.add_argument(
        "--family", action="append", choices=[f.name for f in FAMILIES], help="run only this family (repeatable)"
    )
    parser.add_argument("--report", type=Path, default=REPORT, help=f"where to write the table (default {REPORT})")
    parser.add_argument("--no-report", action="store_true", help="print the results only")
    parser.add_argument("--seed", type=int, default=Size("smoke").seed, help="seed of every random choice")
    parser.add_argument("--workdir", type=Path, help="keep trial files here (default: a temporary directory)")
    args = parser.parse_args(argv)

    chosen = Size("full" if args.full else "smoke", seed=args.seed)
    names = args.family or [f.name for f in FAMILIES]
    started_text = now_text()
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="stagehold-reliability-") as tmp:
        workdir = args.workdir or Path(tmp)
        results = run_families(chosen, names, workdir, progress=lambda line: print(line, flush=True))
    seconds = time.monotonic() - started
    for r in results:
        mark = "ok" if r.ok else "FAILED"
        print(
            f"{r.family:<18} {r.trials:>8,} {r.unit:<14} {len(r.violations):>5} violation(s)  {r.seconds:6.0f}s  {mark}"
        )
        if not r.ok:
            for v in r.violations[:10]:
                print(f"    {v}")
    print(f"total {seconds:.0f}s")
    if not args.no_report:
        header = RunHeader(started_text, seconds, load)
        merged: list[FamilyResult] = results
        if args.family:
            header, merged = merge_partial(args.report, results, [f.name for f in FAMILIES], header)
        args.report.parent.mkdir(parents=True, exist_ok=True)
        args.report.write_text(render(merged, header), encoding="utf-8")
        print(f"wrote {args.report}")
    return 0 if all(r.ok for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
