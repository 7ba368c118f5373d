"""``python -m bench``: the smoke size CI runs measures every part and prints its rows; the report
round-trips, so re-measuring one part keeps the other parts' published figures.

The figures themselves are not asserted here: speed is measured by the benchmark, on purpose not
by timed tests.
"""

from __future__ import annotations

import importlib
import subprocess
import sys
from pathlib import Path

import pytest

from bench import PARTS, Row
from bench.report import REPORT, previous, render

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.slow


def test_smoke_runs_every_part_and_prints_its_rows() -> None:
    before = REPORT.stat().st_mtime_ns if REPORT.exists() else None
    proc = subprocess.run(
        [sys.executable, "-m", "bench", "--smoke"], cwd=ROOT, capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    for name in PARTS:
        title = importlib.import_module(f"bench.{name}").TITLE
        assert f"== {name}: {title}" in proc.stdout
    rows = [ln for ln in proc.stdout.splitlines() if "; ratio " in ln]
    assert len(rows) >= len(PARTS), proc.stdout
    assert "Traceback" not in proc.stderr, proc.stderr
    # Smoke figures are never published.
    assert (REPORT.stat().st_mtime_ns if REPORT.exists() else None) == before


def test_report_keeps_rows_for_a_partial_rerun(tmp_path: Path) -> None:
    rows = [
        Row("append p50", "ms", [0.5, 0.6, 0.7], [0.3, 0.3, 0.4], "fsync", goal="≤ 2×", met=True, part="append"),
        Row("verify", "entries/s", [3e5, 3.1e5, 3.2e5], [4e5] * 3, "sha-256", lower_is_better=False, part="verify"),
    ]
    path = tmp_path / "performance.md"
    path.write_text(render(rows, started="2026-01-01 00:00 UTC", minutes=1.0, load=(1.0, 1.0, 1.0)), encoding="utf-8")
    text = path.read_text(encoding="utf-8")
    assert "| append p50 | 0.500 / 0.600 / 0.700 ms | fsync: 0.300 / 0.300 / 0.400 ms | 2.00× | ≤ 2× | met |" in text
    assert "| verify | 300,000 / 310,000 / 320,000 entries/s |" in text
    assert "1.29×" in text  # a rate: the baseline's median over stagehold's
    assert previous(path) == rows


def test_a_child_of_a_large_process_reports_its_own_peak_memory() -> None:
    # The verify part's children are started by a process holding the ledger it just built; the
    # figure must be the child's, not that process's (Linux's ru_maxrss keeps it across exec).
    from bench.measure import child

    ballast = bytearray(256 * 1024 * 1024)
    for i in range(0, len(ballast), 4096):
        ballast[i] = 1  # resident, not just reserved
    figures = child("tests.bench.peak_memory_child")
    assert figures["rss_mib"] < 128, figures
    del ballast
