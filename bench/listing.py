"""Listing executions as ``serve`` polls them: does the cost grow with the ledger's length?

``stagehold serve`` reads the head of every execution every few seconds (``SqlLedgerStore.heads``:
lapsed leases, entries another replica wrote, undelivered Slack posts). The same executions are
measured with 20 entries each and again with 200 (every verification sample is an entry, so a
ledger grows by hundreds of entries per execution), through the execution registry, beside the
same question answered by reading the whole ledger (``GROUP BY execution_id``).
"""

from __future__ import annotations

import statistics
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from bench import Row, Size
from bench.measure import scratch_postgres

TITLE = "listing every execution's head as serve polls it, as the ledger grows"
CALLS = 5  # each figure is the median of this many reads
COLUMNS = "execution_id, seq, ts, kind, actor, body, prev_hash, hash"


def _rows(executions: int, first: int, last: int) -> list[tuple[Any, ...]]:
    """Rows seq first..last of every execution (hashes are not checked by a listing)."""
    return [
        (
            f"CHG-BENCH-{e:05d}-r1",
            seq,
            f"2026-11-30T08:{e % 60:02d}:00.000000Z",
            "verify.sampled",
            "role:verifier",
            '{"verdict":"pass"}',
            "p" * 64,
            "h" * 64,
        )
        for e in range(executions)
        for seq in range(first, last + 1)
    ]


def _grow(store: Any, executions: int, first: int, last: int) -> None:
    """Write the rows as a restore would (plain INSERTs, COPY on PostgreSQL): the registry's trigger
    registers each execution at its seq 1 either way."""
    rows = _rows(executions, first, last)
    conn: Any = store.engine.raw_connection()
    try:
        cursor = conn.cursor()
        if store.is_postgres:
            with cursor.copy(f"COPY stagehold_ledger ({COLUMNS}) FROM STDIN") as copy:
                for row in rows:
                    copy.write_row(row)
        else:
            cursor.execute("BEGIN")  # the store's connections run in autocommit: one transaction, not one each
            cursor.executemany(f"INSERT INTO stagehold_ledger ({COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)", rows)
        conn.commit()
    finally:
        conn.close()


def _median_ms(read: Any) -> float:
    times = []
    for _ in range(CALLS):
        t0 = time.perf_counter()
        read()
        times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times)


def _measure(store: Any, expected: int) -> tuple[float, float]:
    """(through the registry, reading the whole ledger), in ms."""
    from ledger import registry

    def whole_ledger() -> dict[str, int]:
        with store.engine.connect() as conn:
            return {r[0]: int(r[1]) for r in conn.exec_driver_sql(registry.LEDGER_HEADS)}

    assert store.registered and len(store.heads()) == expected == len(whole_ledger())
    return _median_ms(store.heads), _median_ms(whole_ledger)


@contextmanager
def _database(kind: str) -> Iterator[str]:
    if kind == "PostgreSQL":
        with scratch_postgres() as url:
            yield url
        return
    with tempfile.TemporaryDirectory(prefix="stagehold-bench-listing-") as tmp:
        yield f"sqlite:///{Path(tmp) / 'ledger.db'}"


def run(size: Size) -> list[Row]:
    from ledger.sql import SqlLedgerStore

    executions = size.pick(smoke=200, full=5_000)
    short, long = 20, size.pick(smoke=50, full=200)
    rows = []
    for kind in ("SQLite", "PostgreSQL"):
        with _database(kind) as url:
            store = SqlLedgerStore(url)
            try:
                _grow(store, executions, 1, short)
                at_short = [_measure(store, executions) for _ in range(size.repeats)]
                _grow(store, executions, short + 1, long)
                at_long = [_measure(store, executions) for _ in range(size.repeats)]
            finally:
                store.close()
        mine_short, mine_long = (statistics.median(r[0] for r in at) for at in (at_short, at_long))
        whole_short, whole_long = (statistics.median(r[1] for r in at) for at in (at_short, at_long))
        rows.append(
            Row(
                figure=f"every execution's head as serve polls it, {kind}, {executions:,} executions × {long} "
                f"entries ({executions * long:,} entries)",
                unit="ms",
                stagehold=[r[0] for r in at_long],
                baseline=[r[1] for r in at_long],
                baseline_name="the same answer read from the whole ledger (GROUP BY execution_id, as before the "
                "execution registry), same database",
                goal="below reading the whole ledger, growing with executions rather than entries",
                met=mine_long < whole_long and mine_long / mine_short < whole_long / whole_short,
                note=f"{long / short:g}× the entries ({executions * short:,} → {executions * long:,}, same executions): "
                f"registry {mine_short:.1f} → {mine_long:.1f} ms ({mine_long / mine_short:.1f}×; one index probe "
                f"per execution), whole ledger {whole_short:.1f} → {whole_long:.1f} ms "
                f"({whole_long / whole_short:.1f}×). serve reads it twice per poll (leases, Slack deliveries).",
            )
        )
        print(f"   {kind}: built and measured", flush=True)
    return rows
