"""SQLModel ledger store for SQLite (the embedded default) and PostgreSQL.

Why the locking is done this way:

* SQLite: every write transaction starts with ``BEGIN IMMEDIATE``, which takes the database's
  single write lock up front, so "read the last seq, then insert the next" cannot interleave
  with another writer. WAL with ``synchronous=FULL`` means an acknowledged append (a release, for
  example) survives a power cut.
* PostgreSQL: rows inserted by concurrent transactions become visible in *commit* order, not
  insert order, so a reader tailing by seq could otherwise see seq 8 before seq 7 commits, and
  two writers could both compute "next is 7". Each append therefore takes a transaction-scoped
  advisory lock keyed by the execution id before reading the head; positions are assigned and
  committed one writer at a time per execution. The primary key (execution_id, seq) remains the
  final guard: a second writer at the same seq fails with ``AppendConflict``.
* Fencing: a writer's lease is checked by the INSERT that writes its first entry (INSERT ...
  SELECT ... WHERE EXISTS the lease at that owner and epoch), not by a separate read. Taking or
  renewing a lease holds the same per-execution lock (SQLite: the write lock; PostgreSQL: the
  advisory lock), so the lease cannot change between that check and the commit.
* Appends run Core statements on the engine's pooled connection, no ORM session: an append is
  one read of the head and one INSERT, and little else is on the path to the fsync.

There is deliberately no update or delete of ledger rows anywhere in this module. The lease table
is coordination data, not history, and is the only table written with UPDATE.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import LargeBinary, Table, bindparam, cast, event, exists, func, insert, literal_column, text
from sqlalchemy import select as sa_select
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlmodel import Field, Session, SQLModel, col, create_engine, select

from ledger.chain import (
    GENESIS_HASH,
    Canonical,
    format_ts,
    hashed_bytes,
    parse_ts,
    seal_texts,
    string_token,
    verify_canonical,
)
from ledger.entry import Entry, NewEntry
from ledger.store import AppendConflict, CorruptEntry, FencedOut, Lease, VerifyResult


class LedgerRow(SQLModel, table=True):
    __tablename__ = "stagehold_ledger"

    execution_id: str = Field(primary_key=True, max_length=200)
    seq: int = Field(primary_key=True)
    ts: str = Field(max_length=32)
    kind: str = Field(max_length=100)
    actor: str = Field(max_length=200)
    body: str  # canonical JSON text, exactly what the hash covers
    prev_hash: str = Field(max_length=64)
    hash: str = Field(max_length=64)


class LeaseRow(SQLModel, table=True):
    __tablename__ = "stagehold_lease"

    execution_id: str = Field(primary_key=True, max_length=200)
    owner: str = Field(max_length=200)
    epoch: int
    expires_at: str = Field(max_length=32)


def normalise_url(url: str) -> str:
    """Accept the usual spellings of a database URL and pick the drivers we ship."""
    if url.startswith("postgres://"):
        url = "postgresql://" + url[len("postgres://") :]
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url[len("postgresql://") :]
    return url


def make_engine(url: str) -> Engine:
    url = normalise_url(url)
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})

        @event.listens_for(engine, "connect")
        def _on_connect(dbapi_conn: Any, _record: Any) -> None:
            # Let SQLAlchemy's "begin" event below issue BEGIN itself (pysqlite would defer it).
            dbapi_conn.isolation_level = None
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=FULL")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.close()

        @event.listens_for(engine, "begin")
        def _on_begin(conn: Any) -> None:
            # A reader's snapshot (WAL) must not hold the write lock while it streams a long chain.
            reading = conn.get_execution_options().get(_READ_ONLY, False)
            conn.exec_driver_sql("BEGIN" if reading else "BEGIN IMMEDIATE")  # errors wrapped: "locked" is a conflict

        return engine
    return create_engine(url, pool_pre_ping=True, pool_size=10, max_overflow=20)


_READ_ONLY = "stagehold_read_only"
_STREAM_BATCH = 2000  # rows per fetch while streaming a chain: enough to amortise round trips


def execution_heads(engine: Engine) -> dict[str, int]:
    """The last seq of every execution, in one query."""
    with Session(engine) as session:
        rows = session.exec(
            select(LedgerRow.execution_id, func.max(LedgerRow.seq)).group_by(col(LedgerRow.execution_id))
        ).all()
        return {eid: int(seq) for eid, seq in rows}


def _ledger_table() -> Table:
    return SQLModel.metadata.tables[LedgerRow.__tablename__]


def _statements() -> tuple[Any, Any, Any, Any]:
    """The append path's statements, built once (SQLAlchemy caches their compiled form)."""
    ledger = _ledger_table()
    lease = SQLModel.metadata.tables[LeaseRow.__tablename__]
    head = (
        sa_select(ledger.c.seq, ledger.c.hash)
        .where(ledger.c.execution_id == bindparam("execution_id"))
        .order_by(ledger.c.seq.desc())
        .limit(1)
    )
    holder = (lease.c.execution_id == bindparam("execution_id", type_=lease.c.execution_id.type)) & (
        (lease.c.owner == bindparam("owner", type_=lease.c.owner.type))
        & (lease.c.epoch == bindparam("epoch", type_=lease.c.epoch.type))
    )
    values = [bindparam(c.key, type_=c.type) for c in ledger.columns]
    fenced = (
        insert(ledger)
        .from_select([c.key for c in ledger.columns], sa_select(*values).where(exists().where(holder)))
        .execution_options(preserve_rowcount=True)  # the count of rows written says whether the fence held
    )
    holds = sa_select(lease.c.epoch).where(holder)
    return head, insert(ledger), fenced, holds


_HEAD, _INSERT, _FENCED_INSERT, _HOLDS = _statements()
_ADVISORY_LOCK = text("SELECT pg_advisory_xact_lock(hashtextextended(:key, 0))")


def _holds(conn: Any, fence: Lease) -> bool:
    params = {"execution_id": fence.execution_id, "owner": fence.owner, "epoch": fence.epoch}
    return conn.execute(_HOLDS, params).first() is not None


def _fenced_out(fence: Lease) -> FencedOut:
    return FencedOut(f"{fence.execution_id}: lease epoch {fence.epoch} of {fence.owner} is no longer current")


def _to_entry(row: Any) -> Entry:
    return _decode(row.execution_id, row.seq, row.ts, row.kind, row.actor, row.body, row.prev_hash, row.hash)


def _decode(
    execution_id: str, seq: int, ts: str, kind: str, actor: str, body: str | bytes, prev_hash: str, digest: str
) -> Entry:
    # A row edited outside the store may not decode at all; name its seq instead of failing
    # with a bare JSON error, so verification can say where the chain is damaged.
    try:
        parsed_ts = parse_ts(ts)
    except ValueError:
        raise CorruptEntry(execution_id, seq, "stored timestamp cannot be read") from None
    try:
        parsed_body = json.loads(body.decode("utf-8") if isinstance(body, bytes) else body)
    except ValueError:
        raise CorruptEntry(execution_id, seq, "stored body is not JSON") from None
    return Entry(
        execution_id=execution_id,
        seq=seq,
        ts=parsed_ts,
        kind=kind,
        actor=actor,
        body=parsed_body,
        prev_hash=prev_hash,
        hash=digest,
    )


def _streamed(execution_id: str, rows: Iterable[Any]) -> Iterator[Canonical]:
    """Rows ``(seq, ts, kind, actor, body as UTF-8 bytes, prev_hash, hash)`` as ``verify_canonical`` items."""
    execution = string_token(execution_id)
    tokens: dict[str, bytes] = {}  # kinds and actors repeat: encode each once
    for row in rows:
        seq, ts, kind, actor, body, prev_hash, digest = row
        try:
            kind_token = tokens.get(kind) or tokens.setdefault(kind, string_token(kind))
            actor_token = tokens.get(actor) or tokens.setdefault(actor, string_token(actor))
            canonical = hashed_bytes(seq, ts, kind_token, actor_token, body, execution, prev_hash)
        except (TypeError, ValueError, AttributeError):  # a value edited into another type: the full check decides
            canonical = None
        if len(tokens) > 4096:  # stay constant-size whatever the chain holds
            tokens.clear()
        yield execution_id, seq, prev_hash, digest, canonical, row


class SqlLedgerStore:
    """A ``LedgerStore`` on any SQLAlchemy URL we support (SQLite file or PostgreSQL)."""

    def __init__(self, url: str) -> None:
        self.url = normalise_url(url)
        self.engine = make_engine(self.url)
        self.is_postgres = self.engine.dialect.name == "postgresql"
        tables = [SQLModel.metadata.tables[LedgerRow.__tablename__], SQLModel.metadata.tables[LeaseRow.__tablename__]]
        SQLModel.metadata.create_all(self.engine, tables=tables)

    def close(self) -> None:
        self.engine.dispose()

    @contextmanager
    def _txn(self, execution_id: str) -> Iterator[Session]:
        with Session(self.engine) as session, session.begin():
            if self.is_postgres:
                session.execute(_ADVISORY_LOCK, {"key": "stagehold:" + execution_id})
            yield session

    def append(
        self,
        execution_id: str,
        expected_seq: int,
        entries: Sequence[NewEntry],
        fence: Lease | None = None,
    ) -> list[Entry]:
        """Seal and insert ``entries`` at ``expected_seq`` in one transaction.

        The hot path of every execution: Core statements on the engine's pooled connection, no ORM
        session. With a fence, the first row's INSERT ... SELECT carries the lease check in its
        WHERE clause, so the lease is checked by the statement that writes (no extra round trip).
        """
        if not entries:
            return []
        try:
            with self.engine.begin() as conn:
                if self.is_postgres:
                    conn.execute(_ADVISORY_LOCK, {"key": "stagehold:" + execution_id})
                last = conn.execute(_HEAD, {"execution_id": execution_id}).first()
                last_seq, prev = (last[0], last[1]) if last is not None else (0, GENESIS_HASH)
                if last_seq + 1 != expected_seq:
                    if fence is not None and not _holds(conn, fence):
                        raise _fenced_out(fence)  # a writer that lost its lease hears that first
                    raise AppendConflict(execution_id, expected_seq, last_seq + 1)
                sealed: list[Entry] = []
                rows: list[dict[str, object]] = []
                for offset, new in enumerate(entries):
                    entry, ts_text, body_text = seal_texts(execution_id, expected_seq + offset, new, prev)
                    rows.append(
                        {
                            "execution_id": execution_id,
                            "seq": entry.seq,
                            "ts": ts_text,
                            "kind": entry.kind,
                            "actor": entry.actor,
                            "body": body_text,
                            "prev_hash": entry.prev_hash,
                            "hash": entry.hash,
                        }
                    )
                    sealed.append(entry)
                    prev = entry.hash
                if fence is None:
                    conn.execute(_INSERT, rows)
                else:
                    written = conn.execute(_FENCED_INSERT, {**rows[0], "owner": fence.owner, "epoch": fence.epoch})
                    if written.rowcount != 1:
                        raise _fenced_out(fence)
                    if len(rows) > 1:
                        conn.execute(_INSERT, rows[1:])
            return sealed
        except IntegrityError as exc:
            # The (execution_id, seq) key is the last line of defence against a racing writer.
            raise AppendConflict(execution_id, expected_seq, -1) from exc
        except OperationalError as exc:
            if "locked" in str(exc).lower():
                raise AppendConflict(execution_id, expected_seq, -1) from exc
            raise

    def read(self, execution_id: str, after_seq: int = 0) -> list[Entry]:
        with Session(self.engine) as session:
            table = _ledger_table()
            rows = session.execute(
                sa_select(table)
                .where(table.c.execution_id == execution_id, table.c.seq > after_seq)
                .order_by(table.c.seq)
            ).all()
            return [_to_entry(r) for r in rows]

    def verify(self, execution_id: str, head: tuple[int, str] | None = None) -> VerifyResult:
        """``verify_chain`` of one execution, streamed from the database in constant memory.

        One read-only snapshot (a server-side cursor on PostgreSQL), fetched in batches; the body
        comes back as its stored UTF-8 bytes so the common case hashes without decoding anything.
        """
        table = _ledger_table()
        body = (
            func.convert_to(table.c.body, literal_column("'UTF8'"))
            if self.is_postgres
            else cast(table.c.body, LargeBinary)
        )
        stmt = (
            sa_select(table.c.seq, table.c.ts, table.c.kind, table.c.actor, body, table.c.prev_hash, table.c.hash)
            .where(table.c.execution_id == execution_id)
            .order_by(table.c.seq)
        )

        def decode(row: Any) -> Entry:
            return _decode(execution_id, *row)

        with self.engine.connect() as conn:
            rows = conn.execution_options(yield_per=_STREAM_BATCH, **{_READ_ONLY: True}).execute(stmt)
            try:
                return verify_canonical(_streamed(execution_id, rows), execution_id, head, decode)
            finally:
                rows.close()  # a verdict before the end leaves a server-side cursor open otherwise

    def head(self, execution_id: str) -> tuple[int, str] | None:
        with Session(self.engine) as session:
            row = session.exec(
                select(LedgerRow)
                .where(LedgerRow.execution_id == execution_id)
                .order_by(col(LedgerRow.seq).desc())
                .limit(1)
            ).first()
            return (row.seq, row.hash) if row else None

    def executions(self) -> list[str]:
        with Session(self.engine) as session:
            rows = session.exec(
                select(LedgerRow.execution_id).group_by(col(LedgerRow.execution_id)).order_by(func.min(LedgerRow.ts))
            ).all()
            return list(rows)

    def acquire_lease(self, execution_id: str, owner: str, now: datetime, ttl_seconds: float) -> Lease | None:
        """Take or renew the lease; a new owner gets a higher epoch so stale writers are fenced."""
        expires = format_ts(now + timedelta(seconds=ttl_seconds))
        with self._txn(execution_id) as session:
            row = session.get(LeaseRow, execution_id)
            if row is None:
                row = LeaseRow(execution_id=execution_id, owner=owner, epoch=1, expires_at=expires)
                session.add(row)
            elif row.owner == owner:
                row.expires_at = expires
            elif parse_ts(row.expires_at) <= now:
                row.owner, row.epoch, row.expires_at = owner, row.epoch + 1, expires
            else:
                return None
            session.flush()
            return Lease(execution_id, row.owner, row.epoch, parse_ts(row.expires_at))

    def lease(self, execution_id: str) -> Lease | None:
        """Who holds (or last held) the execution's lease, without taking it: read-only."""
        with Session(self.engine) as session:
            row = session.get(LeaseRow, execution_id)
            return Lease(execution_id, row.owner, row.epoch, parse_ts(row.expires_at)) if row else None

    def leases(self) -> dict[str, Lease]:
        """Every execution's lease, in one read (replicas poll this to find lapsed ones)."""
        with Session(self.engine) as session:
            rows = session.exec(select(LeaseRow)).all()
            return {r.execution_id: Lease(r.execution_id, r.owner, r.epoch, parse_ts(r.expires_at)) for r in rows}

    def heads(self) -> dict[str, int]:
        return execution_heads(self.engine)

    def release_lease(self, lease: Lease) -> None:
        with self._txn(lease.execution_id) as session:
            row = session.get(LeaseRow, lease.execution_id)
            if row is not None and row.owner == lease.owner and row.epoch == lease.epoch:
                row.expires_at = format_ts(parse_ts(row.expires_at) - timedelta(days=3650))
