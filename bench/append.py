"""Durable appends: one entry at a time, fenced by the writer's lease, beside what the disk and the
database need for the same durability.

SQLite (WAL, ``synchronous=FULL``) against ``os.write`` + ``fsync`` of 512 bytes in the same
directory, and against plain ``sqlite3`` running the same statement (one INSERT ... SELECT that writes
only if the lease row and the previous entry match, in its own transaction); PostgreSQL (one chain) against a raw ``INSERT`` + ``COMMIT`` on its own
psycopg connection. The measurements are interleaved one by one, so a busy moment on the machine
hits stagehold and its baselines alike.
"""

from __future__ import annotations

import os
import secrets
import sqlite3
import statistics
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

from bench import Row, Size

TITLE = "durable appends, one entry each, fenced: p50 against fsync and the bare database"
PG_ADMIN = "host=127.0.0.1 port=5432 user=postgres dbname=postgres connect_timeout=5"
EXECUTION = "CHG-BENCH-APPEND"
BODY = {"hold": "h-canary-1", "by": "U01DANA", "evidence_version": 3, "note": "released after review"}
ROW = ("x" * 64, "2026-11-28T22:00:05.123456Z", "hold.released", "U01DANA", '{"hold":"h-canary-1"}' + " " * 100)


def _p50(samples: list[float]) -> float:
    return statistics.median(samples) * 1000


def _interleaved(rounds: int, **steps: Callable[[int], object]) -> dict[str, float]:
    """Run each step once per round, in turn; the p50 of each, in milliseconds."""
    times: dict[str, list[float]] = {name: [] for name in steps}
    for i in range(rounds):
        for name, step in steps.items():
            t0 = time.perf_counter()
            step(i)
            times[name].append(time.perf_counter() - t0)
    return {name: _p50(values) for name, values in times.items()}


def _sqlite_round(directory: Path, rounds: int) -> dict[str, float]:
    from ledger.entry import NewEntry
    from ledger.sql import SqlLedgerStore

    store = SqlLedgerStore(f"sqlite:///{directory / 'stagehold.db'}")
    now = datetime.now(UTC)
    lease = store.acquire_lease(EXECUTION, "bench", now, 3600)
    assert lease is not None
    plain = sqlite3.connect(directory / "plain.db", isolation_level=None)
    plain.execute("PRAGMA journal_mode=WAL")
    plain.execute("PRAGMA synchronous=FULL")
    plain.execute(
        "CREATE TABLE ledger (execution_id TEXT, seq INTEGER, hash TEXT, ts TEXT, kind TEXT, actor TEXT, body TEXT, "
        "prev_hash TEXT, PRIMARY KEY (execution_id, seq))"
    )
    plain.execute("CREATE TABLE lease (execution_id TEXT PRIMARY KEY, owner TEXT, epoch INTEGER, expires_at TEXT)")
    plain.execute("INSERT INTO lease VALUES (?, 'bench', 1, '2099-01-01T00:00:00.000000Z')", (EXECUTION,))
    fd = os.open(directory / "raw.log", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    record = b"x" * 511 + b"\n"

    def stagehold(i: int) -> None:
        store.append(EXECUTION, i + 1, [NewEntry("hold.released", "U01DANA", BODY, now + timedelta(seconds=i))], lease)

    def bare_sqlite(i: int) -> None:
        # The hash column doubles as each row's prev_hash here, so every row links to the one before.
        plain.execute(
            "INSERT INTO ledger SELECT ?, ?, ?, ?, ?, ?, ?, ? FROM lease WHERE execution_id = ? AND owner = 'bench' "
            "AND epoch = 1 AND (? = 0 OR EXISTS (SELECT 1 FROM ledger WHERE execution_id = ? AND seq = ? AND hash = ?))",
            (EXECUTION, i + 1, *ROW, ROW[0], EXECUTION, i, EXECUTION, i, ROW[0]),
        )

    def fsync(_: int) -> None:
        os.write(fd, record)
        os.fsync(fd)

    try:
        return _interleaved(rounds, stagehold=stagehold, sqlite3=bare_sqlite, fsync=fsync)
    finally:
        os.close(fd)
        plain.close()
        store.close()


def _postgres_round(rounds: int) -> dict[str, float]:
    import psycopg
    from psycopg import sql

    from ledger.entry import NewEntry
    from ledger.sql import SqlLedgerStore

    name = f"stagehold_bench_{secrets.token_hex(4)}"
    with psycopg.connect(PG_ADMIN, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        store = SqlLedgerStore(f"postgresql://postgres@127.0.0.1:5432/{name}")
        raw = psycopg.connect(f"host=127.0.0.1 port=5432 user=postgres dbname={name}")
        raw.execute(
            "CREATE TABLE ledger (execution_id VARCHAR(200), seq INTEGER, hash VARCHAR(64), ts VARCHAR(32), "
            "kind VARCHAR(100), actor VARCHAR(200), body TEXT, prev_hash VARCHAR(64), PRIMARY KEY (execution_id, seq))"
        )
        raw.commit()
        now = datetime.now(UTC)
        lease = store.acquire_lease(EXECUTION, "bench", now, 3600)
        assert lease is not None

        def stagehold(i: int) -> None:
            store.append(
                EXECUTION, i + 1, [NewEntry("hold.released", "U01DANA", BODY, now + timedelta(seconds=i))], lease
            )

        def insert_commit(i: int) -> None:
            raw.execute(
                "INSERT INTO ledger VALUES (%s, %s, %s, %s, %s, %s, %s, %s)", (EXECUTION, i + 1, *ROW, "p" * 64)
            )
            raw.commit()

        try:
            return _interleaved(rounds, stagehold=stagehold, raw=insert_commit)
        finally:
            raw.close()
            store.close()
    finally:
        with psycopg.connect(PG_ADMIN, autocommit=True) as admin:
            admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def run(size: Size) -> list[Row]:
    rounds = size.pick(smoke=30, full=600)
    lite: list[dict[str, float]] = []
    pg: list[dict[str, float]] = []
    for _ in range(size.repeats):
        with tempfile.TemporaryDirectory(prefix="stagehold-bench-append-") as tmp:
            lite.append(_sqlite_round(Path(tmp), rounds))
        pg.append(_postgres_round(rounds))

    def column(runs: list[dict[str, float]], key: str) -> list[float]:
        return [r[key] for r in runs]

    mine, fsync = column(lite, "stagehold"), column(lite, "fsync")
    pg_mine, pg_raw = column(pg, "stagehold"), column(pg, "raw")
    rate = 1000 / statistics.median(pg_mine)
    return [
        Row(
            figure=f"durable append p50, SQLite WAL + synchronous=FULL, fenced ({rounds} appends)",
            unit="ms",
            stagehold=mine,
            baseline=fsync,
            baseline_name="os.write + fsync of 512 bytes, same directory",
            goal="≤ 2× the fsync",
            met=statistics.median(mine) <= 2 * statistics.median(fsync),
        ),
        Row(
            figure="durable append p50, SQLite, against the bare database",
            unit="ms",
            stagehold=mine,
            baseline=column(lite, "sqlite3"),
            baseline_name="plain sqlite3, the same fenced and linked INSERT, WAL, FULL",
            note=f"plain sqlite3 / fsync: {statistics.median(column(lite, 'sqlite3')) / statistics.median(fsync):.2f}×",
        ),
        Row(
            figure=f"durable append p50, PostgreSQL, one chain, fenced ({rounds} appends)",
            unit="ms",
            stagehold=pg_mine,
            baseline=pg_raw,
            baseline_name="raw INSERT + COMMIT (psycopg)",
            goal="≤ 2× the raw INSERT + COMMIT",
            met=statistics.median(pg_mine) <= 2 * statistics.median(pg_raw),
            note=f"{rate:,.0f} appends/s per chain at the median",
        ),
    ]
