"""The append hot path of ``SqlLedgerStore``: each append is decided by one INSERT.

Why it is built this way (an append is the ledger's most frequent write, and its cost should be
the database's durable commit, not the Python around it):

* One statement decides. The first entry of an append is written by an INSERT ... SELECT that
  writes it only if the entry before it is in the chain with the hash it links to (or it is seq 1)
  and, with a fence, the writer's lease row still names that owner at that epoch. Zero rows
  written means one of those no longer holds; the primary key (execution_id, seq) refuses a racing
  writer at the same seq. Nothing has to be read inside the transaction, so a single entry is one
  statement in its own transaction: one round trip to PostgreSQL, no advisory lock.
* The fence cannot go stale between check and commit. PostgreSQL: the lease row is read FOR
  SHARE, so a takeover (an UPDATE of that row) waits until the append commits, and an append that
  waited for a takeover re-checks the updated row and writes nothing. SQLite: the INSERT holds the
  database's single write lock, which taking a lease needs too.
* Rows become visible in seq order: an entry is only written once the entry before it is
  committed (the link check sees committed rows only), and a batch commits whole.
* The last (seq, hash) this process wrote to each execution is remembered, so the usual append (a
  driver writing the next entry of its own execution) reads nothing first. A stale memory costs
  one refused INSERT and a re-read of the head, never a wrong link: the INSERT checks the link.
* Statements are Core constructs compiled once for the engine's dialect and run on the engine's
  pooled connections, a few of them kept checked out between appends: no compilation, pool
  checkout, ping or reset on return per append. A kept connection that the server dropped
  meanwhile is replaced and the append retried once (nothing was written on a dead connection;
  and if it had been, the retry's INSERT is refused by the primary key).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from operator import itemgetter
from typing import Any, TypeVar

from sqlalchemy import Table, and_, bindparam, exists, insert, literal_column, or_
from sqlalchemy import select as sa_select
from sqlalchemy.engine import Engine

from ledger.chain import GENESIS_HASH, seal_texts
from ledger.entry import Entry, NewEntry
from ledger.store import AppendConflict, FencedOut, Lease

_KEEP = 4  # connections kept checked out for appends; more concurrent appenders borrow from the pool
_REMEMBER = 20_000  # executions whose head is remembered; forgetting one only costs a read
_T = TypeVar("_T")


class Compiled:
    """A Core statement compiled once for one dialect, run straight on a DB-API cursor."""

    def __init__(self, statement: Any, engine: Engine) -> None:
        compiled = statement.compile(dialect=engine.dialect)
        self.sql: str = compiled.string
        self._defaults = {k: v for k, v in compiled.params.items() if v is not None}
        order: list[str] | None = compiled.positiontup  # qmark (SQLite); None for named styles
        self._pick = None if order is None else lambda params: tuple(params[k] for k in order)
        if order is not None and len(order) > 1:
            self._pick = itemgetter(*order)  # the same tuple, built in C

    def args(self, params: dict[str, Any]) -> Any:
        if self._defaults:
            params = {**self._defaults, **params}
        return params if self._pick is None else self._pick(params)


def fenced_out(fence: Lease) -> FencedOut:
    return FencedOut(f"{fence.execution_id}: lease epoch {fence.epoch} of {fence.owner} is no longer current")


class Appender:
    def __init__(self, engine: Engine, ledger: Table, lease: Table) -> None:
        self.engine = engine
        self._postgres = engine.dialect.name == "postgresql"
        self._dbapi = engine.dialect.loaded_dbapi
        values = [bindparam(c.key, type_=c.type) for c in ledger.columns]
        columns = [c.key for c in ledger.columns]
        execution = bindparam("execution_id", type_=ledger.c.execution_id.type)
        prev_seq = bindparam("prev_seq", type_=ledger.c.seq.type)
        # The entry's prev_hash is, by definition, the hash of the entry at prev_seq.
        linked = or_(
            prev_seq == literal_column("0"),
            exists().where(
                ledger.c.execution_id == execution,
                ledger.c.seq == prev_seq,
                ledger.c.hash == bindparam("prev_hash", type_=ledger.c.hash.type),
            ),
        )
        holder = and_(
            lease.c.execution_id == execution,
            lease.c.owner == bindparam("owner", type_=lease.c.owner.type),
            lease.c.epoch == bindparam("epoch", type_=lease.c.epoch.type),
        )
        self._linked = Compiled(insert(ledger).from_select(columns, sa_select(*values).where(linked)), engine)
        fenced = sa_select(*values).select_from(lease).where(holder, linked).with_for_update(read=True)
        self._fenced = Compiled(insert(ledger).from_select(columns, fenced), engine)
        self._rest = Compiled(insert(ledger), engine)
        head = sa_select(ledger.c.seq, ledger.c.hash).where(ledger.c.execution_id == execution)
        self._head = Compiled(head.order_by(ledger.c.seq.desc()).limit(1), engine)
        self._holds = Compiled(sa_select(lease.c.epoch).where(holder), engine)
        self._begin = "BEGIN" if self._postgres else "BEGIN IMMEDIATE"
        self._heads: dict[str, tuple[int, str]] = {}
        self._idle: list[Any] = []
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ connections

    def _checkout(self) -> tuple[Any, Any, bool]:
        """A kept (connection, cursor), or a new pair from the pool; and whether it was kept."""
        with self._lock:
            if self._idle:
                return (*self._idle.pop(), True)
        conn: Any = self.engine.raw_connection()  # pre-pinged by the pool where the engine asks for it
        if self._postgres:
            conn.driver_connection.autocommit = True  # a lone statement is its own transaction
        return conn, conn.dbapi_connection.cursor(), False

    def _checkin(self, conn: Any, cursor: Any) -> None:
        with self._lock:
            if len(self._idle) < _KEEP:
                self._idle.append((conn, cursor))
                return
        self._give_back(conn, cursor)

    def _give_back(self, conn: Any, cursor: Any) -> None:
        cursor.close()
        if self._postgres:
            conn.driver_connection.autocommit = False  # as the pool's other users expect it
        conn.close()

    def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
        for conn, cursor in idle:
            self._give_back(conn, cursor)

    def _run(self, work: Callable[[Any], _T]) -> _T:
        """``work(cursor)`` on a kept connection; retried once on a fresh one if the kept one was dropped."""
        for attempt in range(2):
            conn, cursor, kept = self._checkout()
            try:
                result = work(cursor)
            except self._dbapi.Error as exc:
                if self.engine.dialect.is_disconnect(exc, conn.dbapi_connection, None):
                    conn.invalidate()
                    if kept and attempt == 0:
                        continue
                    raise
                self._abandon(conn, cursor)
                raise
            except BaseException:
                self._abandon(conn, cursor)
                raise
            self._checkin(conn, cursor)
            return result
        raise AssertionError("unreachable")  # pragma: no cover

    def _abandon(self, conn: Any, cursor: Any) -> None:
        """After a failure: roll back what the connection may hold open, and keep it if that works."""
        try:
            conn.dbapi_connection.rollback()
        except self._dbapi.Error:
            conn.invalidate()
            return
        self._checkin(conn, cursor)

    # ------------------------------------------------------------------ appending

    def append(
        self, execution_id: str, expected_seq: int, entries: Sequence[NewEntry], fence: Lease | None
    ) -> list[Entry]:
        remembered = self._heads.pop(execution_id, None)
        if remembered is not None and remembered[0] + 1 == expected_seq:
            sealed = self._seal(execution_id, expected_seq, entries, remembered[1])
            if self._run(lambda cursor: self._write(cursor, sealed, fence)):
                return self._remember(sealed)
        # Not remembered, or the memory is stale: read the head, then write as above.
        return self._run(lambda cursor: self._append_at_head(cursor, execution_id, expected_seq, entries, fence))

    def _append_at_head(
        self, cursor: Any, execution_id: str, expected_seq: int, entries: Sequence[NewEntry], fence: Lease | None
    ) -> list[Entry]:
        last_seq, prev = self._read_head(cursor, execution_id)
        if last_seq + 1 == expected_seq:
            sealed = self._seal(execution_id, expected_seq, entries, prev)
            if self._write(cursor, sealed, fence):
                return self._remember(sealed)
            last_seq, _ = self._read_head(cursor, execution_id)
        if fence is not None and not self._still_holds(cursor, fence):
            raise fenced_out(fence)  # a writer that lost its lease hears that first
        raise AppendConflict(execution_id, expected_seq, last_seq + 1)

    def _seal(
        self, execution_id: str, seq: int, entries: Sequence[NewEntry], prev: str
    ) -> list[tuple[Entry, str, str]]:
        sealed = []
        for offset, new in enumerate(entries):
            sealed.append(seal_texts(execution_id, seq + offset, new, prev))
            prev = sealed[-1][0].hash
        return sealed

    def _remember(self, sealed: list[tuple[Entry, str, str]]) -> list[Entry]:
        last = sealed[-1][0]
        if len(self._heads) >= _REMEMBER:
            self._heads.clear()
        self._heads[last.execution_id] = (last.seq, last.hash)
        return [entry for entry, _, _ in sealed]

    def _write(self, cursor: Any, sealed: list[tuple[Entry, str, str]], fence: Lease | None) -> bool:
        """Insert the sealed entries; False when the first one's INSERT wrote nothing (its link or
        its fence does not hold). A racing writer at the same seq raises ``AppendConflict``."""
        rows = [_row(entry, ts, body) for entry, ts, body in sealed]
        first = dict(rows[0], prev_seq=rows[0]["seq"] - 1)
        statement = self._linked
        if fence is not None:
            first = dict(first, owner=fence.owner, epoch=fence.epoch)
            statement = self._fenced
        entry = sealed[0][0]
        try:
            if len(rows) == 1:
                cursor.execute(statement.sql, statement.args(first))
                return bool(cursor.rowcount == 1)
            cursor.execute(self._begin)
            cursor.execute(statement.sql, statement.args(first))
            if cursor.rowcount != 1:
                cursor.execute("ROLLBACK")
                return False
            cursor.executemany(self._rest.sql, [self._rest.args(row) for row in rows[1:]])
            cursor.execute("COMMIT")
            return True
        except self._dbapi.IntegrityError as exc:
            # The (execution_id, seq) key is the last line of defence against a racing writer.
            cursor.connection.rollback()
            raise AppendConflict(entry.execution_id, entry.seq, -1) from exc
        except self._dbapi.OperationalError as exc:
            if "locked" in str(exc).lower():  # SQLite's write lock stayed taken past the busy timeout
                cursor.connection.rollback()
                raise AppendConflict(entry.execution_id, entry.seq, -1) from exc
            raise

    def _read_head(self, cursor: Any, execution_id: str) -> tuple[int, str]:
        cursor.execute(self._head.sql, self._head.args({"execution_id": execution_id}))
        row = cursor.fetchone()
        return (row[0], row[1]) if row is not None else (0, GENESIS_HASH)

    def _still_holds(self, cursor: Any, fence: Lease) -> bool:
        params = {"execution_id": fence.execution_id, "owner": fence.owner, "epoch": fence.epoch}
        cursor.execute(self._holds.sql, self._holds.args(params))
        return cursor.fetchone() is not None


def _row(entry: Entry, ts_text: str, body_text: str) -> dict[str, Any]:
    return {
        "execution_id": entry.execution_id,
        "seq": entry.seq,
        "ts": ts_text,
        "kind": entry.kind,
        "actor": entry.actor,
        "body": body_text,
        "prev_hash": entry.prev_hash,
        "hash": entry.hash,
    }
