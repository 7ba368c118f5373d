"""A command line that answers at once: wall time of whole ``stagehold`` processes, beside the
time Python itself takes to start and exit (``python -c pass``), interleaved run by run.

Measured: ``stagehold --help``, ``validate`` of the first-change example, ``status`` of an
execution and ``ledger verify`` of a one-entry chain (SQLite). Each repetition's figure is the
median of its runs.

Every process runs with its modules' bytecode already compiled, as an installed stagehold has it
(pip compiles on install): ``PYTHONDONTWRITEBYTECODE`` is dropped, the bytecode goes to a
temporary ``PYTHONPYCACHEPREFIX`` (the checkout stays clean), and one untimed run of each command
writes it. Otherwise each run would compile the project's sources again and time the compiler.
"""

from __future__ import annotations

import os
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
        env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
        env["PYTHONPYCACHEPREFIX"] = str(directory / "bytecode")
        # Each command beside the imports it cannot do without: Python itself for --help and for
        # ledger verify (sqlite3 reads the file); for status, the contract models (pydantic and the
        # models' build), which folding a recorded execution validates; for validate, those and
        # the loader (YAML, the checks across package and plan).
        floors = {
            "bare": [sys.executable, "-c", "pass"],
            "models": [sys.executable, "-c", "import execution.contract.models"],
            "loader": [sys.executable, "-c", "import execution.contract.load"],
        }
        commands = {
            "`stagehold --help`": ([stagehold, "--help"], "bare"),
            "`stagehold validate` (first-change example)": (
                [stagehold, "validate", str(directory / "package.yaml")],
                "loader",
            ),
            "`stagehold status` (one execution, SQLite)": ([stagehold, "status", EXECUTION, "--db", url], "models"),
            "`stagehold ledger verify` (one entry, SQLite)": (
                [stagehold, "ledger", "verify", EXECUTION, "--db", url],
                "bare",
            ),
        }
        for argv in [*(argv for argv, _floor in commands.values()), *floors.values()]:
            wall_ms(argv, cwd=directory, env=env)  # compiles and stores the bytecode, untimed
        mine: dict[str, list[float]] = {name: [] for name in commands}
        floor: dict[str, list[float]] = {name: [] for name in floors}
        for _ in range(size.repeats):
            times: dict[str, list[float]] = {name: [] for name in [*commands, *floors]}
            for _ in range(runs):
                for name, (argv, _floor) in commands.items():
                    times[name].append(wall_ms(argv, cwd=directory, env=env))
                for name, argv in floors.items():
                    times[name].append(wall_ms(argv, cwd=directory, env=env))
            for name in commands:
                mine[name].append(statistics.median(times[name]))
            for name in floors:
                floor[name].append(statistics.median(times[name]))
    bare = statistics.median(floor["bare"])
    labels = {
        "bare": "`python -c pass`",
        "models": "`python -c 'import execution.contract.models'` (pydantic and the models' build)",
        "loader": "`python -c 'import execution.contract.load'` (the models, YAML and the checks)",
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
            note=_bound(statistics.median(mine[name]), statistics.median(floor[kind]), bare, kind == "bare"),
        )
        for name, (_argv, kind) in commands.items()
    ]


def _bound(mine: float, floor: float, bare: float, python_only: bool) -> str:
    """The measured bound of a command (its baseline) and what the command adds to it."""
    added = f"the command adds {mine - floor:.0f} ms to it (argument parsing, its own modules and its work)"
    if python_only:
        return f"the bound is Python's own start and exit ({bare:.0f} ms); {added}"
    return (
        f"the bound is the baseline: Python's own start and exit ({bare:.0f} ms) and the imports it cannot "
        f"do without ({floor - bare:.0f} ms); {added}"
    )
