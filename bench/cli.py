"""A command line that answers at once: wall time of whole ``stagehold`` processes, beside the
time Python itself takes to start and exit (``python -c pass``), interleaved run by run.

Measured: ``stagehold --help``, ``validate`` of the first-change example, ``status`` of an
execution and ``ledger verify`` of a one-entry chain (SQLite). Each repetition's figure is the
median of its runs.
"""

from __future__ import annotations

import shutil
import statistics
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path

from bench import Row, Size
from bench.measure import ROOT, wall_ms

TITLE = "CLI start-up: whole-process wall time of stagehold commands against `python -c pass`"
GOAL_MS = 150.0
EXECUTION = "CHG-BENCH-CLI"


def _one_entry_ledger(directory: Path) -> str:
    """A SQLite ledger holding one execution's first entry (a real start of the example)."""
    from execution.commands import start
    from execution.contract import load_change
    from ledger.sql import SqlLedgerStore

    url = f"sqlite:///{directory / 'ledger.db'}"
    change = load_change(directory / "package.yaml")
    store = SqlLedgerStore(url)
    try:
        inside_window = datetime(2027, 3, 2, 10, 0, tzinfo=UTC)
        store.append(EXECUTION, 1, start(change, "U08OPS", (), inside_window, mode="rehearsal").append)
    finally:
        store.close()
    return url


def run(size: Size) -> list[Row]:
    runs = size.pick(smoke=2, full=10)
    stagehold = str(Path(sys.executable).with_name("stagehold"))
    with tempfile.TemporaryDirectory(prefix="stagehold-bench-cli-") as tmp:
        directory = Path(tmp)
        for name in ("package.yaml", "plan.yaml"):
            shutil.copy(ROOT / "examples" / "first-change" / name, directory / name)
        url = _one_entry_ledger(directory)
        # Each command beside the imports it cannot do without: Python itself for --help; the
        # contract models for validate; SQLModel (SQLAlchemy + pydantic) for a ledger read; both for status.
        floors = {
            "bare": [sys.executable, "-c", "pass"],
            "contract": [sys.executable, "-c", "import execution.contract"],
            "store": [sys.executable, "-c", "import ledger.sql"],
            "both": [sys.executable, "-c", "import execution.contract, ledger.sql"],
        }
        commands = {
            "`stagehold --help`": ([stagehold, "--help"], "bare"),
            "`stagehold validate` (first-change example)": (
                [stagehold, "validate", str(directory / "package.yaml")],
                "contract",
            ),
            "`stagehold status` (one execution, SQLite)": ([stagehold, "status", EXECUTION, "--db", url], "both"),
            "`stagehold ledger verify` (one entry, SQLite)": (
                [stagehold, "ledger", "verify", EXECUTION, "--db", url],
                "store",
            ),
        }
        mine: dict[str, list[float]] = {name: [] for name in commands}
        floor: dict[str, list[float]] = {name: [] for name in floors}
        for _ in range(size.repeats):
            times: dict[str, list[float]] = {name: [] for name in [*commands, *floors]}
            for _ in range(runs):
                for name, (argv, _floor) in commands.items():
                    times[name].append(wall_ms(argv, cwd=ROOT))
                for name, argv in floors.items():
                    times[name].append(wall_ms(argv, cwd=ROOT))
            for name in commands:
                mine[name].append(statistics.median(times[name]))
            for name in floors:
                floor[name].append(statistics.median(times[name]))
    bare = statistics.median(floor["bare"])
    labels = {
        "bare": "`python -c pass`",
        "contract": "`python -c 'import execution.contract'` (the package models)",
        "store": "`python -c 'import ledger.sql'` (SQLModel: SQLAlchemy and pydantic)",
        "both": "`python -c 'import execution.contract, ledger.sql'`",
    }
    return [
        Row(
            figure=f"{name}, wall",
            unit="ms",
            stagehold=mine[name],
            baseline=floor[kind],
            baseline_name=labels[kind],
            goal=f"≤ {GOAL_MS:.0f} ms",
            met=statistics.median(mine[name]) <= GOAL_MS,
            note=(
                f"Python's own start and exit (`python -c pass`): {bare:.0f} ms; the imports this command cannot "
                f"do without take {statistics.median(floor[kind]) - bare:.0f} ms of that baseline"
                if kind != "bare"
                else ""
            ),
        )
        for name, (_argv, kind) in commands.items()
    ]
