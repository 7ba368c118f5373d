"""A process starting on a ledger with a long history: how long until it knows what to drive?

``serve`` (and every replica that takes over) starts by finding the unfinished executions
(``Engine.active``). Before the execution registry recorded closing entries, that meant folding
every execution ever recorded. The ledger here holds copies of one real rehearsal (run first with
``stagehold rehearse --auto-release``): many finished, one cut before its end and so still open.
Each measurement runs in a fresh process; the baseline folds every execution, as a start did.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench import Row, Size
from bench.measure import ROOT, child, peak_rss_mib

TITLE = "finding the executions to drive when a process starts on a long history"
PACKAGE = ROOT / "examples" / "payments-cutover" / "package.yaml"


def build(url: str, seed_url: str, finished: int) -> int:
    """``finished`` copies of the seed's completed execution and one copy cut before its end; the
    number of entries written."""
    from ledger.entry import NewEntry
    from ledger.sql import SqlLedgerStore

    seed = SqlLedgerStore(seed_url)
    try:
        (execution,) = seed.executions()
        entries = [NewEntry(ts=e.ts, kind=e.kind, actor=e.actor, body=e.body) for e in seed.read(execution)]
    finally:
        seed.close()
    store = SqlLedgerStore(url)
    try:
        for i in range(finished):
            store.append(f"{execution}-copy{i:05d}", 1, entries)
        store.append(f"{execution}-open", 1, entries[: len(entries) // 2])
    finally:
        store.close()
    return finished * len(entries) + len(entries) // 2


def _child(argv: list[str]) -> int:
    from bot.bootstrap import build_engine
    from ledger.sql import SqlLedgerStore

    how, url = argv
    wall, cpu = time.perf_counter(), time.process_time()
    store = SqlLedgerStore(url)
    engine = build_engine(store, lambda state: None, owner="bench")  # type: ignore[arg-type, return-value]
    if how == "registry":
        found = engine.active()
    else:  # every execution folded, as a process did before the registry knew which had closed
        found = [e for e in store.executions() if not engine.load(e).terminal]
    figures = {
        "seconds": time.perf_counter() - wall,
        "cpu": time.process_time() - cpu,
        "found": len(found),
        "rss_mib": peak_rss_mib(),
    }
    store.close()
    print(json.dumps(figures))
    return 0


def run(size: Size) -> list[Row]:
    finished = size.pick(smoke=40, full=2_000)
    with tempfile.TemporaryDirectory(prefix="stagehold-bench-startup-") as tmp:
        seed_url, url = f"sqlite:///{Path(tmp) / 'seed.db'}", f"sqlite:///{Path(tmp) / 'ledger.db'}"
        rehearse = ["rehearse", str(PACKAGE), "--auto-release", "--speed", "1200", "--db", seed_url, "--quiet"]
        subprocess.run(
            [sys.executable, "-m", "bot.cli", *rehearse],
            cwd=tmp,
            check=True,
            capture_output=True,
        )
        t0 = time.monotonic()
        entries = build(url, seed_url, finished)
        print(f"   built {finished + 1:,} executions, {entries:,} entries in {time.monotonic() - t0:.0f} s", flush=True)
        mine, folded = [], []
        for _ in range(size.repeats):
            mine.append(child("bench.startup", "--child", "registry", url))
            folded.append(child("bench.startup", "--child", "fold", url))
    assert all(r["found"] == 1 for r in [*mine, *folded]), (mine, folded)
    rss_mine = statistics.median(r["rss_mib"] for r in mine)
    rss_folded = statistics.median(r["rss_mib"] for r in folded)
    return [
        Row(
            figure=f"a process finding what to drive, SQLite, {finished:,} finished executions + 1 open "
            f"({entries:,} entries)",
            unit="s",
            stagehold=[r["seconds"] for r in mine],
            baseline=[r["seconds"] for r in folded],
            baseline_name="folding every execution to find the open one (as a start did before the registry "
            "recorded closing entries), same process start",
            goal="reads only the open executions: ≤ 1 s whatever the history",
            met=statistics.median(r["seconds"] for r in mine) <= 1.0,
            note=f"peak resident memory {rss_mine:.0f} MiB against {rss_folded:.0f} MiB; includes opening the "
            "store and building the engine. The sweep that re-checks active executions every 15 s, and serve's "
            "lease poll, skip closed executions the same way.",
        )
    ]


if __name__ == "__main__":
    sys.exit(_child(sys.argv[2:]) if sys.argv[1:2] == ["--child"] else 2)
