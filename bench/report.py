"""The table every part's rows go into: printed while running, and docs/performance.md."""

from __future__ import annotations

import json
import math
import os
import platform
import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench import Row
from bench.measure import ROOT, number

REPORT = ROOT / "docs" / "performance.md"
_DATA_START = "<!-- bench-data"
_DATA_END = "-->"


def spread(values: Sequence[float], unit: str) -> str:
    """``min / median / max unit`` (a single value when there is one)."""
    measured = [v for v in values if math.isfinite(v)]
    missing = (
        f" ({len(values) - len(measured)} of {len(values)} runs gave no value)" if len(measured) < len(values) else ""
    )
    if not measured:
        return "—" + missing
    if len(measured) == 1:
        return f"{number(measured[0])} {unit}{missing}"
    low, mid, high = min(measured), statistics.median(measured), max(measured)
    return f"{number(low)} / {number(mid)} / {number(high)} {unit}{missing}"


def verdict(row: Row) -> str:
    if row.met is None:
        return "—"
    return "met" if row.met else "not met"


def ratio_text(row: Row) -> str:
    ratio = row.ratio
    return "—" if ratio is None else f"{ratio:.2f}×"


def line(row: Row) -> str:
    """One row as plain text for the terminal."""
    base = f"; baseline ({row.baseline_name}) {spread(row.baseline, row.unit)}" if row.baseline else ""
    goal = f"; goal {row.goal}: {verdict(row)}" if row.goal else ""
    note = f"\n    {row.note}" if row.note else ""
    return f"{row.figure}: {spread(row.stagehold, row.unit)}{base}; ratio {ratio_text(row)}{goal}{note}"


def machine() -> str:
    cpu = ""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            cpu = next((ln.split(":", 1)[1].strip() for ln in fh if ln.startswith("model name")), "")
    except OSError:
        pass
    return f"{os.cpu_count()} CPU(s){f' ({cpu})' if cpu else ''}, Python {platform.python_version()}"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def render(
    rows: Sequence[Row],
    *,
    started: str,
    minutes: float,
    load: Sequence[float],
    remeasured: Sequence[dict[str, Any]] = (),
) -> str:
    """``started``/``minutes``/``load`` describe the last whole run; ``remeasured`` lists the parts
    re-measured on their own since (``--part``), each with its own start, length and load."""
    lines = [
        "# Performance",
        "",
        "Every figure here comes from one command, `python -m bench` (it rewrites this file), run on the",
        "machine below. Each figure is measured three times — min / median / max — with its baseline",
        "measured beside it in the same run; the ratio is stagehold's median cost over the baseline's",
        "(1.00× = as fast as the baseline, 2.00× = twice its cost), which is what stays comparable on a",
        "busy machine. `python -m bench --part NAME` re-measures one part and keeps the other rows.",
        "",
        f"Run: {started}, {minutes:.1f} min in total; machine: {machine()}; "
        f"load average at the start {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}.",
        *(
            [
                "Parts re-measured on their own since (`--part`), their rows from those runs: "
                + "; ".join(
                    f"{r['part']} ({r['started']}, {r['minutes']:.1f} min, load {r['load'][0]:.2f})" for r in remeasured
                )
                + "."
            ]
            if remeasured
            else []
        ),
        "",
        "| figure | stagehold (min / median / max) | baseline in the same run | ratio | goal | result |",
        "|---|---|---|---:|---|---|",
    ]
    for row in rows:
        base = f"{_cell(row.baseline_name)}: {spread(row.baseline, row.unit)}" if row.baseline else "—"
        lines.append(
            f"| {_cell(row.figure)} | {spread(row.stagehold, row.unit)} | {base} | {ratio_text(row)} | "
            f"{_cell(row.goal) or '—'} | {verdict(row)} |"
        )
    notes = [row for row in rows if row.note]
    if notes:
        lines += ["", "## Notes", ""]
        lines += [f"- **{_cell(row.figure)}**: {_cell(row.note)}" for row in notes]
    data = {
        "started": started,
        "minutes": minutes,
        "load": list(load),
        "remeasured": list(remeasured),
        "rows": [r.to_json() for r in rows],
    }
    lines += ["", _DATA_START, json.dumps(data, indent=1, ensure_ascii=False), _DATA_END]
    return "\n".join(lines) + "\n"


def published(path: Path = REPORT) -> dict[str, Any] | None:
    """The data of the table published now (header and rows), so that re-measuring one part keeps
    the others and the whole run's header."""
    if not path.is_file():
        return None
    _, found, rest = path.read_text(encoding="utf-8").partition(_DATA_START + "\n")
    if not found:
        return None
    data: dict[str, Any] = json.loads(rest.partition("\n" + _DATA_END)[0])
    return data


def previous(path: Path = REPORT) -> list[Row]:
    """The rows published now."""
    data = published(path)
    return [] if data is None else [Row.from_json(r) for r in data["rows"]]
