"""Reading a SQLite ledger with the standard library's sqlite3, for commands that only read.

Why: importing SQLAlchemy and SQLModel takes several times longer than ``stagehold status`` or
``ledger verify`` take to answer. The SQLModel store (``ledger.sql``) stays the owner of the
schema and the only writer; this module reads the same two tables with the statements that store
runs, and turns rows into entries with the same functions (``ledger.rows``). The contract tests run
both on one database and require equal answers.

The database is opened read-only: a read never creates a file, a table or a lock that a writer
waits on. Anything this module does not read exactly as SQLAlchemy would (another dialect, an
in-memory database, URL options or escapes, a file without the ledger's tables) gets no reader,
and the caller opens the SQLModel store as before.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from ledger import registry
from ledger.chain import parse_ts, verify_canonical
from ledger.entry import Entry
from ledger.rows import canonical_rows, decode_row
from ledger.store import Lease, VerifyResult

_PREFIX = "sqlite:///"
# The statements SqlLedgerStore runs, written out (the tables are LEDGER_TABLE and LEASE_TABLE of
# ledger.rows; a test holds them to it). The verify read takes the body as its stored UTF-8 bytes,
# so the common case hashes without decoding anything.
_CHECK_LEDGER = "SELECT execution_id, seq, ts, kind, actor, body, prev_hash, hash FROM stagehold_ledger LIMIT 0"
_CHECK_LEASE = "SELECT execution_id, owner, epoch, expires_at FROM stagehold_lease LIMIT 0"
_READ = (
    "SELECT execution_id, seq, ts, kind, actor, body, prev_hash, hash FROM stagehold_ledger "
    "WHERE execution_id = ? AND seq > ? ORDER BY seq"
)
_VERIFY = (
    "SELECT seq, ts, kind, actor, CAST(body AS BLOB), prev_hash, hash FROM stagehold_ledger "
    "WHERE execution_id = ? ORDER BY seq"
)
_HEAD = "SELECT seq, hash FROM stagehold_ledger WHERE execution_id = ? ORDER BY seq DESC LIMIT 1"
_LEASE = "SELECT execution_id, owner, epoch, expires_at FROM stagehold_lease WHERE execution_id = ?"
_LEASES = "SELECT execution_id, owner, epoch, expires_at FROM stagehold_lease"
STATEMENTS = (_CHECK_LEDGER, _CHECK_LEASE, _READ, _VERIFY, _HEAD, _LEASE, _LEASES)
# Listing executions: the registry's statements where its trigger is installed, else the ledger's
# (``ledger.registry``; the same choice the store makes).


def sqlite_file(url: str) -> Path | None:
    """The file named by a plain ``sqlite:///PATH`` URL, or None for any other URL.

    Example: ``sqlite:////var/lib/stagehold/ledger.db`` -> ``/var/lib/stagehold/ledger.db``;
    ``sqlite:///ledger.db`` -> ``ledger.db`` (relative, as SQLAlchemy reads it); ``postgresql://...``,
    ``sqlite://``, ``sqlite:///:memory:``, ``sqlite:///x.db?mode=ro`` and ``sqlite:///a%20b.db`` -> None.
    """
    if not url.startswith(_PREFIX):
        return None
    path = url[len(_PREFIX) :]
    if not path or path == ":memory:" or path.startswith("file:") or any(c in path for c in "?#%"):
        return None
    return Path(path)


class SqliteLedgerReader:
    """The read side of ``SqlLedgerStore`` on one SQLite file: read, verify, head, executions, leases."""

    def __init__(self, path: Path) -> None:
        # Read-only and autocommit: each statement reads one snapshot and holds no lock after it.
        self._conn = sqlite3.connect(
            f"{path.resolve().as_uri()}?mode=ro", uri=True, timeout=30, isolation_level=None, check_same_thread=False
        )
        try:
            # Both tables with every column read below, or no reader: the caller falls back.
            self._conn.execute(_CHECK_LEDGER).fetchall()
            self._conn.execute(_CHECK_LEASE).fetchall()
            self._registered = self._conn.execute(registry.SQLITE_INSTALLED).fetchone() is not None
        except sqlite3.Error:
            self._conn.close()
            raise

    def close(self) -> None:
        self._conn.close()

    def read(self, execution_id: str, after_seq: int = 0) -> list[Entry]:
        rows = self._conn.execute(_READ, (execution_id, after_seq)).fetchall()
        return [decode_row(*row) for row in rows]

    def verify(self, execution_id: str, head: tuple[int, str] | None = None) -> VerifyResult:
        """``verify_chain`` of one execution, streamed in constant memory (as ``SqlLedgerStore.verify``)."""
        rows = self._conn.execute(_VERIFY, (execution_id,))
        try:
            return verify_canonical(
                canonical_rows(execution_id, rows), execution_id, head, lambda row: decode_row(execution_id, *row)
            )
        finally:
            rows.close()

    def head(self, execution_id: str) -> tuple[int, str] | None:
        row = self._conn.execute(_HEAD, (execution_id,)).fetchone()
        return (row[0], row[1]) if row else None

    def executions(self) -> list[str]:
        rows = self._conn.execute(registry.EXECUTIONS if self._registered else registry.LEDGER_EXECUTIONS).fetchall()
        return [r[0] for r in rows]

    def heads(self) -> dict[str, int]:
        rows = self._conn.execute(registry.HEADS if self._registered else registry.LEDGER_HEADS)
        return {eid: int(seq) for eid, seq, _ in rows if seq is not None}

    def lease(self, execution_id: str) -> Lease | None:
        row = self._conn.execute(_LEASE, (execution_id,)).fetchone()
        return _lease(row) if row else None

    def leases(self) -> dict[str, Lease]:
        rows = self._conn.execute(_LEASES).fetchall()
        return {row[0]: _lease(row) for row in rows}


def _lease(row: tuple[str, str, int, str]) -> Lease:
    execution_id, owner, epoch, expires_at = row
    return Lease(execution_id, owner, epoch, parse_ts(expires_at))


def open_reader(url: str) -> SqliteLedgerReader | None:
    """A reader of the SQLite ledger at ``url``, or None when the SQLModel store must open it instead
    (not a plain SQLite file URL, no such file, not a ledger database, or it cannot be read)."""
    path = sqlite_file(url)
    if path is None or not path.is_file():
        return None
    try:
        return SqliteLedgerReader(path)
    except sqlite3.Error:
        return None
