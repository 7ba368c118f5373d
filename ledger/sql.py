"""SQLModel ledger store for SQLite (the embedded default) and PostgreSQL.

Why the locking is done this way:

* SQLite: every write transaction takes the database's single write lock up front (``BEGIN
  IMMEDIATE``, or the one INSERT of a single-entry append), so a lease decision or an append
  cannot interleave with another writer. WAL with ``synchronous=FULL`` means an acknowledged append (a release, for
  example) survives a power cut.
* PostgreSQL: taking or renewing a lease takes a transaction-scoped advisory lock keyed by the
  execution id, so racing replicas decide one at a time.
* Appends (``ledger.appender``): one INSERT per append checks the link to the previous entry and
  the writer's fence, so positions stay contiguous and a stale writer writes nothing, without a
  lock or a read inside the transaction; the primary key (execution_id, seq) refuses a racing
  writer at the same seq with ``AppendConflict``.

There is deliberately no update or delete of ledger rows anywhere in this module. The lease table
is coordination data, not history, and is the only table this module writes with UPDATE (the
execution registry's trigger sets a closing seq once). Listing executions and their heads reads
the registry where it is installed (``ledger.registry``).
"""

from __future__ import annotations

import logging
from collections.abc import Generator, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import LargeBinary, Table, bindparam, cast, event, func, literal_column, text, update
from sqlalchemy import select as sa_select
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import DBAPIError
from sqlmodel import Field, Session, SQLModel, col, create_engine, select

from ledger import registry
from ledger.appender import Appender, Compiled
from ledger.chain import format_ts, parse_ts, verify_canonical
from ledger.entry import Entry, NewEntry
from ledger.rows import LEASE_TABLE, LEDGER_TABLE, canonical_rows, decode_row
from ledger.store import Lease, VerifyResult

_log = logging.getLogger("stagehold.ledger")


class LedgerRow(SQLModel, table=True):
    __tablename__ = LEDGER_TABLE

    execution_id: str = Field(primary_key=True, max_length=200)
    seq: int = Field(primary_key=True)
    ts: str = Field(max_length=32)
    kind: str = Field(max_length=100)
    actor: str = Field(max_length=200)
    body: str  # canonical JSON text, exactly what the hash covers
    prev_hash: str = Field(max_length=64)
    hash: str = Field(max_length=64)


class ExecutionRow(SQLModel, table=True):
    """The execution registry (``ledger.registry``): written by a trigger on the ledger; only
    ``closed_seq`` is ever updated, once."""

    __tablename__ = registry.REGISTRY_TABLE

    execution_id: str = Field(primary_key=True, max_length=200)
    started_at: str = Field(max_length=32)  # the ts of the execution's first entry
    closed_seq: int | None = None  # the seq of its closing entry (registry.CLOSING_KINDS), once written


class LeaseRow(SQLModel, table=True):
    __tablename__ = LEASE_TABLE

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
            # Streaming a chain (verify) runs one SELECT on the driver, outside these transactions:
            # its snapshot (WAL) never holds the write lock.
            conn.exec_driver_sql("BEGIN IMMEDIATE")  # errors wrapped: "locked" is a conflict

        return engine
    return create_engine(url, pool_pre_ping=True, pool_size=10, max_overflow=20)


_STREAM_BATCH = 2000  # rows per fetch while streaming a chain: enough to amortise round trips


def execution_heads(engine: Engine, registered: bool, open_only: bool = False) -> dict[str, int]:
    """The last seq of every execution, in one query (``registered``: read the registry).

    ``open_only``: leave out executions the registry knows are closed (without it, none are); they
    are not even probed.
    """
    if registered:
        query = registry.OPEN_HEADS if open_only else registry.HEADS
    else:
        query = registry.LEDGER_HEADS
    return heads_and_closed(engine, query)[0]


def heads_and_closed(engine: Engine, query: str) -> tuple[dict[str, int], frozenset[str]]:
    """The last seq of every execution ``query`` (one of ``registry``'s heads queries) names, and
    those of them the registry knows are closed: one query, one snapshot."""
    with engine.connect() as conn:
        rows = conn.exec_driver_sql(query).all()
    heads = {eid: int(seq) for eid, seq, _ in rows if seq is not None}
    return heads, frozenset(eid for eid, seq, closed in rows if seq is not None and closed is not None)


def registry_installed(conn: Connection) -> bool:
    postgres = conn.dialect.name == "postgresql"
    query = registry.POSTGRES_INSTALLED if postgres else registry.SQLITE_INSTALLED
    return conn.exec_driver_sql(query).first() is not None


def install_registry(engine: Engine) -> bool:
    """Install the execution registry unless it is there; False, with a warning, if it cannot be.

    Without it everything still works, reading the whole ledger to list executions; a role that may
    not create tables or triggers gets it from ``stagehold db init`` run by the tables' owner.
    """
    with engine.connect() as conn:
        if registry_installed(conn):
            return True
    try:
        with engine.begin() as conn:
            install_registry_in(conn)
    except DBAPIError as exc:
        first = str(exc.orig).strip().splitlines()[0] if exc.orig is not None else type(exc).__name__
        _log.warning(
            "the execution registry could not be installed (%s); listing executions reads the whole ledger "
            "until the tables' owner runs stagehold db init",
            first,
        )
        return False
    return True


def install_registry_in(conn: Connection) -> None:
    """Create the registry, its trigger and the rows of executions already there, in ``conn``'s
    transaction (``stagehold db init`` runs it in its own)."""
    postgres = conn.dialect.name == "postgresql"
    if postgres:
        conn.execute(_ADVISORY_LOCK, {"key": "stagehold-schema"})  # two replicas opening at once
    if registry_installed(conn):
        return
    SQLModel.metadata.tables[registry.REGISTRY_TABLE].create(conn, checkfirst=True)
    if postgres:
        schema = conn.exec_driver_sql("SELECT quote_ident(current_schema())").scalar_one()
        statements = registry.postgres_install(schema)
    else:
        statements = registry.SQLITE_INSTALL
    for statement in statements:
        conn.exec_driver_sql(statement)


def _ledger_table() -> Table:
    return SQLModel.metadata.tables[LedgerRow.__tablename__]


_ADVISORY_LOCK = text("SELECT pg_advisory_xact_lock(hashtextextended(:key, 0))")
# The same locks for many executions, in the order of the keys given (sorted by the caller).
_ADVISORY_LOCKS = text("SELECT pg_advisory_xact_lock(hashtextextended(k, 0)) FROM unnest(CAST(:keys AS text[])) AS k")
# Leases renewed per transaction: bounds the advisory locks one PostgreSQL transaction holds.
_RENEW_CHUNK = 200
_RENEW = (
    update(LeaseRow)
    .where(col(LeaseRow.owner) == bindparam("holder"), col(LeaseRow.execution_id).in_(bindparam("ids", expanding=True)))
    .values(expires_at=bindparam("until"))
    .returning(col(LeaseRow.execution_id), col(LeaseRow.epoch))
)


def _to_entry(row: Any) -> Entry:
    return decode_row(row.execution_id, row.seq, row.ts, row.kind, row.actor, row.body, row.prev_hash, row.hash)


class SqlLedgerStore:
    """A ``LedgerStore`` on any SQLAlchemy URL we support (SQLite file or PostgreSQL)."""

    def __init__(self, url: str) -> None:
        self.url = normalise_url(url)
        self.engine = make_engine(self.url)
        self.is_postgres = self.engine.dialect.name == "postgresql"
        tables = [SQLModel.metadata.tables[LedgerRow.__tablename__], SQLModel.metadata.tables[LeaseRow.__tablename__]]
        SQLModel.metadata.create_all(self.engine, tables=tables)
        self.registered = install_registry(self.engine)
        self._appender = Appender(self.engine, *tables)

    def close(self) -> None:
        self._appender.close()
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
        """Seal and insert ``entries`` at ``expected_seq`` in one transaction (see ``ledger.appender``)."""
        if not entries:
            return []
        return self._appender.append(execution_id, expected_seq, entries, fence)

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
            .where(table.c.execution_id == bindparam("execution_id"))
            .order_by(table.c.seq)
        )

        def decode(row: Any) -> Entry:
            return decode_row(execution_id, *row)

        rows = self._stream(Compiled(stmt, self.engine), {"execution_id": execution_id})
        try:
            return verify_canonical(canonical_rows(execution_id, rows), execution_id, head, decode)
        finally:
            rows.close()  # a verdict before the end leaves a server-side cursor open otherwise

    def _stream(self, statement: Compiled, params: dict[str, Any]) -> Generator[tuple[Any, ...], None, None]:
        """The rows of a query as plain tuples, fetched in batches straight from the driver: one
        statement, so one snapshot (on PostgreSQL a server-side cursor, in binary so the body's
        bytes arrive as bytes, not as hex to decode)."""
        conn: Any = self.engine.raw_connection()
        try:
            if self.is_postgres:
                cursor = conn.driver_connection.cursor("stagehold_stream", binary=True)
            else:
                cursor = conn.cursor()
            try:
                cursor.execute(statement.sql, statement.args(params))
                while batch := cursor.fetchmany(_STREAM_BATCH):
                    yield from batch
            finally:
                cursor.close()
        finally:
            conn.close()  # back to the pool, whose reset ends the read transaction

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
        """Execution ids, oldest first (by the time of their first entry)."""
        return self._listed(registry.EXECUTIONS)

    def open_executions(self) -> list[str]:
        """``executions()`` less those whose closing entry is recorded: where the registry is not
        installed, all of them (the caller's fold tells)."""
        return self._listed(registry.OPEN_EXECUTIONS)

    def _listed(self, query: str) -> list[str]:
        with self.engine.connect() as conn:
            rows = conn.exec_driver_sql(query if self.registered else registry.LEDGER_EXECUTIONS)
            return [r[0] for r in rows]

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

    def renew_leases(self, owner: str, held: Sequence[Lease], now: datetime, ttl_seconds: float) -> dict[str, Lease]:
        """Renew many of ``owner``'s leases in few transactions; those still held, by execution.

        A lease is renewed only at the epoch it was held at (one taken over in between is left
        alone and missing from the answer). Per chunk, one transaction: on SQLite its write lock
        covers every row; on PostgreSQL the per-execution advisory locks are taken in one statement,
        in a fixed order, as ``acquire_lease`` takes them one at a time, so neither can interleave.
        """
        expires = format_ts(now + timedelta(seconds=ttl_seconds))
        epochs = {lease.execution_id: lease.epoch for lease in held if lease.owner == owner}
        renewed: dict[str, Lease] = {}
        ids = sorted(epochs)
        for start in range(0, len(ids), _RENEW_CHUNK):
            chunk = ids[start : start + _RENEW_CHUNK]
            with self.engine.begin() as conn:
                if self.is_postgres:
                    conn.execute(_ADVISORY_LOCKS, {"keys": ["stagehold:" + eid for eid in chunk]})
                # One statement per chunk (the ORM would load and flush a row object per lease).
                # A lease of this owner at another epoch (lost and taken back since the caller
                # looked) is extended too, harmlessly: it is ours, but not the lease asked about.
                extended = conn.execute(_RENEW, {"holder": owner, "ids": chunk, "until": expires})
                for execution_id, epoch in extended.all():
                    if epoch == epochs[execution_id]:
                        renewed[execution_id] = Lease(execution_id, owner, epoch, parse_ts(expires))
        return renewed

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
        return execution_heads(self.engine, self.registered)

    def open_heads(self) -> dict[str, int]:
        """``heads()`` of ``open_executions()``."""
        return execution_heads(self.engine, self.registered, open_only=True)

    def release_lease(self, lease: Lease) -> None:
        with self._txn(lease.execution_id) as session:
            row = session.get(LeaseRow, lease.execution_id)
            if row is not None and row.owner == lease.owner and row.epoch == lease.epoch:
                row.expires_at = format_ts(parse_ts(row.expires_at) - timedelta(days=3650))
