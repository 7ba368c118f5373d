"""``stagehold db init``: the owner creates the tables, the runtime role gets exactly what it needs.

On PostgreSQL the runtime role runs a real rehearsal and keeps Slack thread positions, and the
database itself refuses it UPDATE, DELETE and TRUNCATE on the ledger. A role without the grants
gets one line and exit 2, not an internal error.
"""

from __future__ import annotations

import logging
import secrets
import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from bot import exits
from bot.cli import main
from bot.commands.db import Grant, grants_for
from handlers.channels import ChannelLeases
from handlers.storage import SlackStore
from ledger.sql import SqlLedgerStore, make_engine
from tests.conftest import PG_HOST, PG_PORT, PG_USER
from tests.fakes import EXAMPLES

PAYMENTS = EXAMPLES / "payments-cutover" / "package.yaml"
TABLES = [
    "stagehold_execution",
    "stagehold_ledger",
    "stagehold_lease",
    "stagehold_slack_channel",
    "stagehold_slack_intent",
    "stagehold_slack_message",
    "stagehold_slack_thread",
]


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_the_ledger_gets_select_and_insert_only() -> None:
    assert grants_for(["stagehold_ledger", "stagehold_lease"], ["stagehold_x_id_seq"]) == [
        Grant("TABLE", "stagehold_ledger", ("SELECT", "INSERT")),
        Grant("TABLE", "stagehold_lease", ("SELECT", "INSERT", "UPDATE")),
        Grant("SEQUENCE", "stagehold_x_id_seq", ("USAGE", "SELECT")),
    ]


def test_sqlite_gets_its_tables_and_no_roles(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'fresh.db'}"
    code, out, err = run(capsys, "db", "init", "--db", url)
    assert (code, err) == (0, "")
    assert "(7 created, 0 already there)" in out
    with sqlite3.connect(tmp_path / "fresh.db") as conn:
        names = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    conn.close()
    assert set(TABLES) <= names
    code, out, _ = run(capsys, "db", "init", "--db", url)
    assert code == 0 and "(0 created, 7 already there)" in out
    code, out, err = run(capsys, "db", "init", "--db", url, "--runtime-role", "stagehold")
    assert code == exits.INVALID and out == ""
    assert err.count("\n") == 1 and "SQLite has no roles" in err


# ---------------------------------------------------------------- PostgreSQL


def _as(url: str, role: str) -> str:
    """The same database, connecting as ``role`` (the test server trusts loopback)."""
    return f"postgresql://{role}@{PG_HOST}:{PG_PORT}/{url.rsplit('/', 1)[1]}"


def _admin(url: str) -> psycopg.Connection[tuple[object, ...]]:
    return psycopg.connect(
        f"host={PG_HOST} port={PG_PORT} user={PG_USER} dbname={url.rsplit('/', 1)[1]}", autocommit=True
    )


@pytest.fixture
def make_role(pg_url: str) -> Iterator[Callable[[], str]]:
    """Login roles that exist for one test (dropped before the test database is)."""
    made: list[str] = []

    def make() -> str:
        name = f"stagehold_rt_{secrets.token_hex(4)}"
        with _admin(pg_url) as conn:
            conn.execute(sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(name)))
        made.append(name)
        return name

    yield make
    with _admin(pg_url) as conn:
        for name in made:
            conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = %s", (name,))
            conn.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(name)))
            conn.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(name)))


def _privileges(pg_url: str, role: str) -> dict[str, set[str]]:
    with _admin(pg_url) as conn:
        rows = conn.execute(
            "SELECT table_name, privilege_type FROM information_schema.role_table_grants WHERE grantee = %s",
            (role,),
        ).fetchall()
    out: dict[str, set[str]] = {}
    for table, privilege in rows:
        out.setdefault(str(table), set()).add(str(privilege))
    return out


@pytest.mark.postgres
def test_the_runtime_role_rehearses_and_cannot_rewrite_history(
    capsys: pytest.CaptureFixture[str], pg_url: str, make_role: Callable[[], str]
) -> None:
    role = make_role()
    code, out, err = run(capsys, "db", "init", "--db", pg_url, "--runtime-role", role)
    assert (code, err) == (0, ""), err
    assert "(7 created, 0 already there)" in out
    assert f"role {role}: stagehold_ledger SELECT, INSERT (history: no UPDATE, DELETE or TRUNCATE)" in out
    with _admin(pg_url) as conn:  # whatever it held before, a second db init leaves exactly the list
        conn.execute(sql.SQL("GRANT ALL ON stagehold_ledger TO {}").format(sql.Identifier(role)))
    code, out, _ = run(capsys, "db", "init", "--db", pg_url, "--runtime-role", role)
    assert code == 0 and "(0 created, 7 already there)" in out
    assert _privileges(pg_url, role) == {
        "stagehold_execution": {"SELECT"},  # its trigger writes it with the owner's rights
        "stagehold_ledger": {"SELECT", "INSERT"},
        "stagehold_lease": {"SELECT", "INSERT", "UPDATE"},
        "stagehold_slack_channel": {"SELECT", "INSERT", "UPDATE"},
        "stagehold_slack_intent": {"SELECT", "INSERT", "DELETE"},
        "stagehold_slack_message": {"SELECT", "INSERT", "UPDATE"},
        "stagehold_slack_thread": {"SELECT", "INSERT", "UPDATE"},
    }

    # A rehearsal as the runtime role: ledger appends, lease takes and renewals, reads.
    runtime_url = _as(pg_url, role)
    code, out, err = run(
        capsys, "rehearse", str(PAYMENTS), "--db", runtime_url, "--quiet", "--fault", "dependency-down@canary-25"
    )
    assert code == exits.HELD, err
    execution = out.split(": HELD")[0].split()[-1]
    code, out, _ = run(capsys, "ledger", "verify", execution, "--db", runtime_url)
    assert code == 0 and ": ok," in out
    with psycopg.connect(runtime_url, autocommit=True) as conn:  # registered by the owner's trigger
        assert conn.execute("SELECT execution_id FROM stagehold_execution").fetchall() == [(execution,)]

    # The Slack bookkeeping it keeps as the same role.
    engine = make_engine(runtime_url)
    try:
        slack = SlackStore(engine)
        slack.create_thread(execution, "C0CHANGES")
        slack.set_root(execution, "1700000000.000100", 3)
        slack.intend(execution, "hold:H1", "C0CHANGES", "1700000000.000100", 1700000000.0)
        slack.save_message(execution, "hold:H1", "C0CHANGES", "1700000000.000200", 5)  # removes the intent
        assert slack.intent(execution, "hold:H1") is None
        slack.advance(execution, 9)
        assert slack.threads() == {execution: 9}
        channels = ChannelLeases(engine, "replica-a")
        assert channels.take("C0CHANGES", 1700000000.0, 10.0) == 0.0
        channels.paced("C0CHANGES", 1700000001.0)
        channels.release("C0CHANGES")
    finally:
        engine.dispose()

    # History: the database itself refuses the runtime role every rewrite.
    with psycopg.connect(runtime_url, autocommit=True) as conn:
        assert conn.execute("SELECT count(*) FROM stagehold_ledger").fetchone() != (0,)
        for statement in (
            "UPDATE stagehold_ledger SET actor = 'U0MALLORY'",
            "DELETE FROM stagehold_ledger",
            "TRUNCATE stagehold_ledger",
            "DELETE FROM stagehold_execution",
            "INSERT INTO stagehold_execution VALUES ('CHG-FORGED', '2026-01-01T00:00:00.000000Z')",
        ):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute(statement)


@pytest.mark.postgres
def test_a_runtime_role_on_a_database_without_the_registry_still_runs_and_says_what_to_do(
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
    pg_url: str,
    make_role: Callable[[], str],
) -> None:
    role = make_role()
    assert run(capsys, "db", "init", "--db", pg_url, "--runtime-role", role)[0] == 0
    with _admin(pg_url) as conn:  # as the db init of a stagehold before the registry left it
        conn.execute("DROP TRIGGER stagehold_ledger_registers ON stagehold_ledger")
        conn.execute("DROP FUNCTION stagehold_register_execution()")
        conn.execute("DROP TABLE stagehold_execution")
    runtime_url = _as(pg_url, role)
    code, out, err = run(capsys, "rehearse", str(PAYMENTS), "--db", runtime_url, "--quiet")
    assert code == exits.HELD, err  # at its first hold, as every rehearsal of this example
    execution = out.split(": HELD")[0].split()[-1]
    with caplog.at_level(logging.WARNING, logger="stagehold.ledger"):
        store = SqlLedgerStore(runtime_url)
    try:
        assert not store.registered  # the runtime role may not create it: the ledger is read instead
        assert store.executions() == [execution]
        assert "the execution registry could not be installed (permission denied" in caplog.text
        assert "until the tables' owner runs stagehold db init" in caplog.text
    finally:
        store.close()
    # The owner's db init installs it and registers what is already there.
    code, out, _ = run(capsys, "db", "init", "--db", pg_url, "--runtime-role", role)
    assert code == 0 and "(1 created, 6 already there)" in out
    store = SqlLedgerStore(runtime_url)
    try:
        assert store.registered and store.executions() == [execution]
    finally:
        store.close()


@pytest.mark.postgres
def test_a_role_without_grants_gets_one_line_and_exit_2(
    capsys: pytest.CaptureFixture[str], pg_url: str, make_role: Callable[[], str]
) -> None:
    runtime, bare = make_role(), make_role()
    assert run(capsys, "db", "init", "--db", pg_url, "--runtime-role", runtime)[0] == 0
    code, _, err = run(capsys, "rehearse", str(PAYMENTS), "--db", _as(pg_url, bare), "--quiet")
    assert code == exits.INVALID, err
    assert err.count("\n") == 1, err
    assert "permission denied for table stagehold_" in err
    assert "stagehold db init --runtime-role" in err
    assert "internal error" not in err


@pytest.mark.postgres
def test_db_init_refuses_a_role_that_would_bypass_the_grants(
    capsys: pytest.CaptureFixture[str], pg_url: str, make_role: Callable[[], str]
) -> None:
    code, _, err = run(capsys, "db", "init", "--db", pg_url, "--runtime-role", "no_such_role_here")
    assert code == exits.INVALID and "does not exist" in err and err.count("\n") == 1
    code, _, err = run(capsys, "db", "init", "--db", pg_url, "--runtime-role", PG_USER)
    assert code == exits.INVALID and "superuser" in err
    owner = make_role()
    with _admin(pg_url) as conn:
        conn.execute(sql.SQL("CREATE TABLE stagehold_lease (execution_id varchar(200) PRIMARY KEY)"))
        conn.execute(sql.SQL("ALTER TABLE stagehold_lease OWNER TO {}").format(sql.Identifier(owner)))
    code, _, err = run(capsys, "db", "init", "--db", pg_url, "--runtime-role", owner)
    assert code == exits.INVALID and "owns stagehold_lease" in err
    # Nothing was half-done: the failed init created no table (one transaction).
    with _admin(pg_url) as conn:
        rows = conn.execute("SELECT tablename FROM pg_tables WHERE tablename LIKE 'stagehold%'").fetchall()
    assert [r[0] for r in rows] == ["stagehold_lease"]
