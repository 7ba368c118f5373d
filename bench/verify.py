"""Chain verification: entries per second and peak memory, beside SHA-256 of the same bytes.

Each measurement runs in a fresh process (``python -m bench.verify --child ...``) so its peak
resident memory is its own. The baseline hashes the very bytes each entry's hash covers, already
in memory, with ``hashlib`` in a loop: the bound on verifying in Python at all.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import io
import json
import secrets
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from bench import Row, Size
from bench.measure import child, peak_rss_mib

TITLE = "chain verification: entries per second and peak memory, against SHA-256 of the same bytes"
EXECUTION = "CHG-BENCH-VERIFY"
SHORT = "CHG-BENCH-VERIFY-SHORT"
GOAL_RATE = 300_000
PG_ADMIN = "host=127.0.0.1 port=5432 user=postgres dbname=postgres connect_timeout=5"
T0 = datetime(2026, 11, 28, 22, 0, tzinfo=UTC)


def _body(i: int) -> dict[str, Any]:
    """A verification sample as the engine writes one: readings, series labels, a verdict (~450 bytes)."""
    return {
        "stage": "canary",
        "sample": i,
        "evidence_version": 3,
        "readings": {
            "error_rate": {
                "value": 0.0042 + i * 1e-9,
                "sampled_at": "2026-11-28T22:00:05Z",
                "series": [{"labels": {"svc": "tokenizer", "zone": "eu-1"}, "value": 0.0042}],
            },
            "parity": {"value": 0, "ok": True},
        },
        "verdict": "pass",
        "note": "tokenizer at 5% “p99” ↑",
    }


def build(url: str, execution: str, entries: int, export_to: Path | None = None) -> None:
    """Append ``entries`` sealed entries through the store, in batches (one transaction each), and
    optionally write them as ``ledger export`` does."""
    from ledger.chain import export_line
    from ledger.entry import NewEntry
    from ledger.sql import SqlLedgerStore

    store = SqlLedgerStore(url)
    try:
        with contextlib.ExitStack() as stack:
            out = stack.enter_context(export_to.open("w", encoding="utf-8", newline="\n")) if export_to else None
            seq = 1
            while seq <= entries:
                batch = [
                    NewEntry("verification.sampled", "role:executor", _body(i), T0 + timedelta(seconds=i))
                    for i in range(seq, min(seq + 2000, entries + 1))
                ]
                sealed = store.append(execution, seq, batch)
                if out is not None:
                    out.writelines(export_line(e) for e in sealed)
                seq += len(batch)
    finally:
        store.close()


# ---------------------------------------------------------------- children (one figure per process)


def _child_store(url: str, execution: str) -> dict[str, float]:
    from ledger.sql import SqlLedgerStore

    store = SqlLedgerStore(url)
    t0 = time.perf_counter()
    result = store.verify(execution)
    seconds = time.perf_counter() - t0
    store.close()
    if not result.ok:
        raise SystemExit(f"{execution}: {result.reason} at {result.first_bad_seq}")
    return {"entries": result.checked, "seconds": seconds, "rss_mib": peak_rss_mib()}


def _child_file(path: str) -> dict[str, float]:
    from bot.cli import main

    out = io.StringIO()
    t0 = time.perf_counter()
    with contextlib.redirect_stdout(out):
        code = main(["ledger", "verify-file", path])
    seconds = time.perf_counter() - t0
    if code != 0:
        raise SystemExit(f"verify-file exited {code}: {out.getvalue()}")
    entries = int(out.getvalue().split(" entries")[0].rsplit(" ", 1)[1])
    return {"entries": entries, "seconds": seconds, "rss_mib": peak_rss_mib()}


def _child_hashing(path: str) -> dict[str, float]:
    """SHA-256 over each entry's canonical bytes, held in memory: hashing and nothing else."""
    from ledger.chain import canonical_json

    payloads = []
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            data = json.loads(line)
            del data["hash"]
            payloads.append(canonical_json(data))
    sha256 = hashlib.sha256
    t0 = time.perf_counter()
    for payload in payloads:
        sha256(payload).hexdigest()
    seconds = time.perf_counter() - t0
    return {"entries": len(payloads), "seconds": seconds, "rss_mib": peak_rss_mib()}


def _child_parse_and_hash(path: str) -> dict[str, float]:
    """The least any verification of an export does that checks the form of what it hashes: read
    each line, parse it as JSON and hash its bytes, checking nothing."""
    sha256 = hashlib.sha256
    loads = json.loads
    t0 = time.perf_counter()
    count = 0
    with open(path, "rb") as fh:
        for line in fh:
            loads(line)
            sha256(line).hexdigest()
            count += 1
    seconds = time.perf_counter() - t0
    return {"entries": count, "seconds": seconds, "rss_mib": peak_rss_mib()}


def _child_read_and_hash(url: str, execution: str) -> dict[str, float]:
    """The least any exact verification from SQLite does: step through the same rows with the bare
    sqlite3 module, prove each body canonical (decoded and encoded again by json's C halves) and
    hash the entry's canonical bytes, checking nothing else."""
    import sqlite3

    from ledger.chain import hashed_bytes, is_canonical_json, string_token

    conn = sqlite3.connect(url.removeprefix("sqlite:///"))
    sha256 = hashlib.sha256
    token = string_token(execution)
    t0 = time.perf_counter()
    count = 0
    for seq, ts, kind, actor, body, prev in conn.execute(
        "SELECT seq, ts, kind, actor, CAST(body AS BLOB), prev_hash FROM stagehold_ledger "
        "WHERE execution_id = ? ORDER BY seq",
        (execution,),
    ):
        is_canonical_json(body)
        sha256(hashed_bytes(seq, ts, string_token(kind), string_token(actor), body, token, prev) or b"").hexdigest()
        count += 1
    seconds = time.perf_counter() - t0
    conn.close()
    return {"entries": count, "seconds": seconds, "rss_mib": peak_rss_mib()}


def _child_pg_read_and_hash(url: str, execution: str) -> dict[str, float]:
    """The least any exact verification from PostgreSQL does: bare psycopg stepping through the same
    rows (a server-side cursor, binary rows, fetched in batches), proving each body canonical and
    hashing each entry, checking nothing else."""
    import psycopg

    from ledger.chain import hashed_bytes, is_canonical_json, string_token

    sha256 = hashlib.sha256
    token = string_token(execution)
    t0 = time.perf_counter()
    count = 0
    with psycopg.connect(url) as conn, conn.transaction(), conn.cursor("bare", binary=True) as cursor:
        cursor.execute(
            "SELECT seq, ts, kind, actor, convert_to(body, 'UTF8'), prev_hash FROM stagehold_ledger "
            "WHERE execution_id = %s ORDER BY seq",
            (execution,),
        )
        while rows := cursor.fetchmany(2000):
            for seq, ts, kind, actor, body, prev in rows:
                is_canonical_json(body)
                canonical = hashed_bytes(seq, ts, string_token(kind), string_token(actor), body, token, prev)
                sha256(canonical or b"").hexdigest()
                count += 1
    seconds = time.perf_counter() - t0
    return {"entries": count, "seconds": seconds, "rss_mib": peak_rss_mib()}


def _child(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.verify")
    ap.add_argument(
        "--child",
        choices=["store", "file", "hashing", "read-and-hash", "pg-read-and-hash", "parse-and-hash"],
        required=True,
    )
    ap.add_argument("target")
    ap.add_argument("--execution", default=EXECUTION)
    args = ap.parse_args(argv)
    if args.child == "store":
        figures = _child_store(args.target, args.execution)
    elif args.child == "file":
        figures = _child_file(args.target)
    elif args.child == "read-and-hash":
        figures = _child_read_and_hash(args.target, args.execution)
    elif args.child == "pg-read-and-hash":
        figures = _child_pg_read_and_hash(args.target, args.execution)
    elif args.child == "parse-and-hash":
        figures = _child_parse_and_hash(args.target)
    else:
        figures = _child_hashing(args.target)
    print(json.dumps(figures))
    return 0


# ---------------------------------------------------------------- the part


def _rate(figures: dict[str, float]) -> float:
    return figures["entries"] / figures["seconds"]


def _rate_row(figure: str, mine: list[float], hashing: list[float], measured_bound: list[float]) -> Row:
    """The rate against hashing alone; the goal is met at 300,000/s or within 1.5× of the measured
    bound of an exact verification from the same source (the row after it), whichever is lower."""
    median, bound = statistics.median(mine), statistics.median(measured_bound)
    return Row(
        figure=figure,
        unit="entries/s",
        stagehold=mine,
        baseline=hashing,
        baseline_name="SHA-256 of the same canonical bytes, in memory",
        lower_is_better=False,
        goal=f"≥ {GOAL_RATE:,}/s, or within 1.5× of the measured bound (next row)",
        met=median >= GOAL_RATE or bound / median <= 1.5,
    )


def _bare_row(figure: str, mine: list[float], bare: list[float], name: str, note: str) -> Row:
    return Row(
        figure=figure,
        unit="entries/s",
        stagehold=mine,
        baseline=bare,
        baseline_name=name,
        lower_is_better=False,
        goal="within 1.5× of the bare baseline",
        met=statistics.median(bare) / statistics.median(mine) <= 1.5,
        note=note,
    )


def run(size: Size) -> list[Row]:
    import psycopg  # here, not at the top: the measured children must not carry it
    from psycopg import sql

    entries = size.pick(smoke=2_000, full=200_000)
    short = entries // 4
    with tempfile.TemporaryDirectory(prefix="stagehold-bench-verify-") as tmp:
        sqlite_url = f"sqlite:///{Path(tmp) / 'ledger.db'}"
        export_path = Path(tmp) / "ledger.jsonl"
        pg_db = f"stagehold_bench_{secrets.token_hex(4)}"
        pg_url = f"postgresql://postgres@127.0.0.1:5432/{pg_db}"
        with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(pg_db)))
        try:
            t0 = time.monotonic()
            build(sqlite_url, EXECUTION, entries, export_to=export_path)
            build(sqlite_url, SHORT, short)
            build(pg_url, EXECUTION, entries)
            print(f"   built {entries:,} + {short:,} entries in {time.monotonic() - t0:.0f} s", flush=True)
            hashing, from_sqlite, from_pg, from_file, rss_long, rss_short = [], [], [], [], [], []
            bare, bare_pg, bare_file = [], [], []
            for _ in range(size.repeats):
                hashing.append(_rate(child("bench.verify", "--child", "hashing", str(export_path))))
                bare.append(_rate(child("bench.verify", "--child", "read-and-hash", sqlite_url)))
                long_run = child("bench.verify", "--child", "store", sqlite_url)
                from_sqlite.append(_rate(long_run))
                rss_long.append(long_run["rss_mib"])
                rss_short.append(child("bench.verify", "--child", "store", sqlite_url, "--execution", SHORT)["rss_mib"])
                bare_pg.append(_rate(child("bench.verify", "--child", "pg-read-and-hash", pg_url)))
                from_pg.append(_rate(child("bench.verify", "--child", "store", pg_url)))
                bare_file.append(_rate(child("bench.verify", "--child", "parse-and-hash", str(export_path))))
                from_file.append(_rate(child("bench.verify", "--child", "file", str(export_path))))
        finally:
            with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
                conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(pg_db)))
    growth = statistics.median(rss_long) / statistics.median(rss_short)
    return [
        _rate_row(f"`ledger verify`, {entries:,} entries, SQLite", from_sqlite, hashing, bare),
        _bare_row(
            f"`ledger verify`, {entries:,} entries, SQLite, against reading the rows and hashing them",
            from_sqlite,
            bare,
            "bare sqlite3 stepping through the same rows, proving each body canonical and hashing each entry, "
            "no other checks",
            "the measured bound: no exact verification reading SQLite from Python is faster than this baseline "
            "(an entry's hash covers its canonical encoding, so a body in any other spelling must be caught)",
        ),
        _rate_row(f"`ledger verify`, {entries:,} entries, PostgreSQL", from_pg, hashing, bare_pg),
        _bare_row(
            f"`ledger verify`, {entries:,} entries, PostgreSQL, against reading the rows and hashing them",
            from_pg,
            bare_pg,
            "bare psycopg stepping through the same rows (server-side cursor, binary), proving each body "
            "canonical and hashing each entry, no other checks",
            "the measured bound: no exact verification reading PostgreSQL from Python is faster than this baseline",
        ),
        _rate_row(f"`ledger verify-file`, {entries:,} entries", from_file, hashing, bare_file),
        _bare_row(
            f"`ledger verify-file`, {entries:,} entries, against reading, parsing and hashing each line",
            from_file,
            bare_file,
            "read each line, json.loads it and hash its bytes, no checks",
            "verify-file also proves each line canonical before hashing its bytes (its body decoded and "
            "encoded again), as the specification's parse-and-re-encode would refuse a line that is not",
        ),
        Row(
            figure=f"peak resident memory of `ledger verify`, {entries:,} entries (SQLite)",
            unit="MiB",
            stagehold=rss_long,
            baseline=rss_short,
            baseline_name=f"the same at {short:,} entries",
            goal="independent of chain length (≤ 1.1×)",
            met=growth <= 1.1,
            note="each verification runs in a fresh process; the figure is its peak resident set (getrusage)",
        ),
    ]


if __name__ == "__main__":
    sys.exit(_child(sys.argv[1:]))
