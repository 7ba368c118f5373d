"""``python -m bench [--smoke] [--part NAME]... [--report FILE | --no-report]``: measure, print, publish.

Full size (the default) rewrites docs/performance.md; ``--smoke`` is the small size CI runs, which
prints only. Exit status: 0 when every part ran (a goal not met is a figure, not a failure), 1 when
a part failed to measure.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import time
import traceback
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench import PARTS, Row, Size
from bench.report import REPORT, line, published, render


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--smoke", action="store_true", help="small sizes, one repetition, no report (as CI runs)")
    parser.add_argument("--part", action="append", choices=PARTS, help="run only this part (repeatable)")
    parser.add_argument("--report", type=Path, help=f"write the table here (default at full size: {REPORT})")
    parser.add_argument("--no-report", action="store_true", help="print the figures only")
    args = parser.parse_args(argv)

    size = Size("smoke" if args.smoke else "full")
    names = args.part or list(PARTS)
    load = os.getloadavg()
    started = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    t0 = time.monotonic()
    print(f"bench: {size.name} size, {size.repeats} repetition(s), load average {load[0]:.2f}", flush=True)
    rows: list[Row] = []
    failed: list[str] = []
    for name in names:
        module = importlib.import_module(f"bench.{name}")
        print(f"== {name}: {module.TITLE}", flush=True)
        part_t0 = time.monotonic()
        try:
            produced = module.run(size)
        except Exception:  # one broken part must not hide the others' figures
            traceback.print_exc()
            failed.append(name)
            continue
        for row in produced:
            row = Row.from_json(row.to_json() | {"part": name})
            rows.append(row)
            print(line(row), flush=True)
        print(f"   ({time.monotonic() - part_t0:.0f} s)", flush=True)
    minutes = (time.monotonic() - t0) / 60
    print(f"total {minutes:.1f} min")
    report = args.report or (None if size.smoke else REPORT)
    if report is not None and not args.no_report and not failed:
        header: dict[str, Any] = {"started": started, "minutes": minutes, "load": list(load), "remeasured": []}
        last = published(report) if args.part else None
        if last is not None:
            kept = [r for r in map(Row.from_json, last["rows"]) if r.part not in names]
            order = {name: i for i, name in enumerate(PARTS)}
            rows = sorted([*kept, *rows], key=lambda r: order.get(r.part, len(order)))
            # The header keeps describing the last whole run; this run is listed beside it.
            this = [{"part": n, "started": started, "minutes": minutes, "load": list(load)} for n in names]
            earlier = [r for r in last.get("remeasured", []) if r["part"] not in names]
            header = {k: last[k] for k in ("started", "minutes", "load")} | {"remeasured": earlier + this}
        report.parent.mkdir(parents=True, exist_ok=True)
        report.write_text(render(rows, **header), encoding="utf-8")
        print(f"wrote {report}")
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
