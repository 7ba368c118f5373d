"""Shared fixtures: database URLs for SQLite and PostgreSQL, and the ledger store over both.

PostgreSQL tests never skip: a contract suite that silently ran on SQLite only would let a
PostgreSQL-only ordering or locking bug through. If the server is down the tests fail and say how
to start it.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from ledger.sql import SqlLedgerStore
from tests import ledger_spec

PG_HOST = "127.0.0.1"
PG_PORT = 5432
PG_USER = "postgres"
PG_ADMIN_DSN = f"host={PG_HOST} port={PG_PORT} user={PG_USER} dbname=postgres connect_timeout=5"

START_HINT = (
    "start it with: pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start "
    "(PostgreSQL tests never skip)"
)


def _admin_connection() -> psycopg.Connection[tuple[object, ...]]:
    try:
        return psycopg.connect(PG_ADMIN_DSN, autocommit=True)
    except psycopg.OperationalError as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    # Failing outside the except block keeps the report to this one message.
    where = "in CI (CI=true)" if os.environ.get("CI") == "true" else "locally"
    pytest.fail(
        f"PostgreSQL at {PG_HOST}:{PG_PORT} (user {PG_USER}) is unreachable {where}: {reason}; {START_HINT}",
        pytrace=False,
    )


def _drop_database(name: str) -> None:
    with _admin_connection() as conn:
        # Pooled connections left by a failed test must not keep the database alive.
        conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()",
            (name,),
        )
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'ledger.db'}"


@pytest.fixture
def pg_url() -> Iterator[str]:
    name = f"stagehold_test_{secrets.token_hex(6)}"
    with _admin_connection() as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield f"postgresql://{PG_USER}@{PG_HOST}:{PG_PORT}/{name}"
    finally:
        _drop_database(name)


@pytest.fixture(
    params=[
        pytest.param("sqlite", id="sqlite"),
        pytest.param("postgres", id="postgres", marks=pytest.mark.postgres),
    ]
)
def ledger_url(request: pytest.FixtureRequest) -> str:
    """The URL of an empty ledger database, once for SQLite and once for PostgreSQL."""
    name = "sqlite_url" if request.param == "sqlite" else "pg_url"
    url: str = request.getfixturevalue(name)
    return url


@pytest.fixture
def open_store(ledger_url: str) -> Iterator[Callable[[], SqlLedgerStore]]:
    """Open another, independent store (own engine and connections) on the same database."""
    opened: list[SqlLedgerStore] = []

    def _open() -> SqlLedgerStore:
        store = SqlLedgerStore(ledger_url)
        opened.append(store)
        return store

    yield _open
    # Engines are disposed before pg_url drops the database (this fixture tears down first).
    for store in opened:
        store.close()


@pytest.fixture
def store(open_store: Callable[[], SqlLedgerStore]) -> SqlLedgerStore:
    return open_store()


# ---------------------------------------------------------------- independent verifier
#
# Built on tests/ledger_spec.py, written only from docs/ledger-encoding.md with nothing of the
# project (and no json.dumps), so a bug shared by the writer and ledger.chain.verify_chain cannot
# hide itself. It accepts any JSON formatting of an entry, as `ledger verify-file` does;
# ledger_spec.verify_export also checks the exact export line format.


def independent_verify(lines: list[str]) -> tuple[bool, int | None]:
    """(ok, first bad seq) for exported JSON Lines, one entry per line."""
    prev, expected = ledger_spec.GENESIS, 1
    for line in lines:
        e = ledger_spec.parse_export_line(line)
        if e["seq"] != expected or e["prev"] != prev:
            return False, expected
        if ledger_spec.entry_hash(e) != e["hash"]:
            return False, e["seq"]
        prev, expected = e["hash"], expected + 1
    return True, None


@pytest.fixture
def independent_verifier() -> Callable[[list[str]], tuple[bool, int | None]]:
    return independent_verify
