"""The execution registry: listing executions and their heads without reading the whole ledger,
with the same answers as reading it, on SQLite and PostgreSQL.

A database written before the registry existed is registered when a store opens it; a first entry
written by something that knows nothing of the registry (a plain INSERT) is registered by the
database's trigger; two stores opening one database at once install it once.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
from sqlalchemy import text

from ledger import registry
from ledger.entry import NewEntry
from ledger.sql import SqlLedgerStore
from ledger.sqlite_reader import open_reader

T0 = datetime(2026, 11, 30, 8, 0, 0, 250000, tzinfo=UTC)


def new(i: int, minute: int = 0, kind: str = "stage.entered") -> NewEntry:
    ts = T0.replace(minute=minute, second=i % 60)
    return NewEntry(ts=ts, kind=kind, actor="role:executor", body={"i": i})


def fill(store: SqlLedgerStore, execution: str, n: int, minute: int = 0) -> None:
    """``n`` entries, the first at ``minute`` past the hour (executions are listed oldest first)."""
    for seq in range(1, n + 1):
        store.append(execution, seq, [new(seq, minute)])


def by_reading_the_ledger(store: SqlLedgerStore) -> tuple[list[str], dict[str, int]]:
    with store.engine.connect() as conn:
        executions = [r[0] for r in conn.exec_driver_sql(registry.LEDGER_EXECUTIONS)]
        heads = {r[0]: int(r[1]) for r in conn.exec_driver_sql(registry.LEDGER_HEADS)}
    return executions, heads


def registered(store: SqlLedgerStore) -> list[str]:
    with store.engine.connect() as conn:
        return sorted(r[0] for r in conn.exec_driver_sql("SELECT execution_id FROM stagehold_execution"))


def uninstall(store: SqlLedgerStore) -> None:
    """Make the database look as it did before the registry existed."""
    with store.engine.begin() as conn:
        conn.exec_driver_sql(
            "DROP TRIGGER stagehold_ledger_registers" + (" ON stagehold_ledger" if store.is_postgres else "")
        )
        if store.is_postgres:
            conn.exec_driver_sql("DROP FUNCTION stagehold_register_execution()")
        conn.exec_driver_sql("DROP TABLE stagehold_execution")


@pytest.fixture
def store(ledger_url: str) -> Iterator[SqlLedgerStore]:
    opened = SqlLedgerStore(ledger_url)
    yield opened
    opened.close()


def test_heads_and_executions_answer_as_reading_the_whole_ledger(store: SqlLedgerStore) -> None:
    assert store.registered
    fill(store, "CHG-B-r1", 3, minute=1)
    fill(store, "CHG-A-r1", 5, minute=2)
    store.append("CHG-C-r1", 1, [new(1, 3), new(2, 3)])
    assert store.executions() == ["CHG-B-r1", "CHG-A-r1", "CHG-C-r1"]  # oldest first
    assert store.heads() == {"CHG-B-r1": 3, "CHG-A-r1": 5, "CHG-C-r1": 2}
    assert (store.executions(), store.heads()) == by_reading_the_ledger(store)


def test_a_ledger_written_before_the_registry_is_registered_when_a_store_opens_it(
    store: SqlLedgerStore, ledger_url: str
) -> None:
    fill(store, "CHG-OLD-r1", 4)
    uninstall(store)
    fill(store, "CHG-OLD-r2", 2)  # written while there is no registry
    reopened = SqlLedgerStore(ledger_url)
    try:
        assert reopened.registered
        assert registered(reopened) == ["CHG-OLD-r1", "CHG-OLD-r2"]
        assert reopened.heads() == {"CHG-OLD-r1": 4, "CHG-OLD-r2": 2}
        assert (reopened.executions(), reopened.heads()) == by_reading_the_ledger(reopened)
    finally:
        reopened.close()


def close(store: SqlLedgerStore, execution: str, head: int, kind: str = "execution.completed") -> None:
    store.append(execution, head + 1, [new(head + 1, kind=kind)])


@pytest.mark.parametrize("kind", registry.CLOSING_KINDS)
def test_an_execution_closed_by_any_closing_entry_is_left_out_of_the_open_ones(
    store: SqlLedgerStore, kind: str
) -> None:
    fill(store, "CHG-DONE-r1", 3, minute=1)
    fill(store, "CHG-LIVE-r1", 2, minute=2)
    close(store, "CHG-DONE-r1", 3, kind)
    store.append("CHG-DONE-r1", 5, [new(5, kind="release.ignored")])  # entries may follow the closing one
    assert store.open_executions() == ["CHG-LIVE-r1"]
    assert store.open_heads() == {"CHG-LIVE-r1": 2}
    assert store.executions() == ["CHG-DONE-r1", "CHG-LIVE-r1"]
    assert store.heads() == {"CHG-DONE-r1": 5, "CHG-LIVE-r1": 2}
    with store.engine.connect() as conn:
        assert conn.exec_driver_sql(
            "SELECT closed_seq FROM stagehold_execution WHERE execution_id = 'CHG-DONE-r1'"
        ).all() == [(4,)]


def test_closing_entries_written_before_the_registry_are_found_when_a_store_opens_it(
    store: SqlLedgerStore, ledger_url: str
) -> None:
    fill(store, "CHG-DONE-r1", 3, minute=1)
    fill(store, "CHG-LIVE-r1", 2, minute=2)
    uninstall(store)
    close(store, "CHG-DONE-r1", 3, "execution.rolled_back")  # while there is no registry
    reopened = SqlLedgerStore(ledger_url)
    try:
        assert reopened.open_executions() == ["CHG-LIVE-r1"]
        assert reopened.open_heads() == {"CHG-LIVE-r1": 2}
    finally:
        reopened.close()


def test_a_first_entry_written_by_a_plain_insert_is_registered_by_the_database(store: SqlLedgerStore) -> None:
    # An older stagehold during a rolling upgrade, or a restore, writes rows without knowing.
    with store.engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO stagehold_ledger (execution_id, seq, ts, kind, actor, body, prev_hash, hash) "
                "VALUES ('CHG-PLAIN-r1', 1, '2026-11-30T08:00:00.000000Z', 'k', 'a', '{}', 'p', 'h'), "
                "('CHG-PLAIN-r1', 2, '2026-11-30T08:00:01.000000Z', 'k', 'a', '{}', 'h', 'h2')"
            )
        )
    assert registered(store) == ["CHG-PLAIN-r1"]
    assert store.executions() == store.open_executions() == ["CHG-PLAIN-r1"]
    assert store.heads() == {"CHG-PLAIN-r1": 2}
    with store.engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO stagehold_ledger (execution_id, seq, ts, kind, actor, body, prev_hash, hash) "
                "VALUES ('CHG-PLAIN-r1', 3, '2026-11-30T08:00:02.000000Z', 'execution.abandoned', 'a', '{}', 'h2', 'h3')"
            )
        )
    assert store.open_executions() == [] and store.open_heads() == {}


def test_an_execution_whose_entries_are_all_gone_is_not_listed(store: SqlLedgerStore) -> None:
    fill(store, "CHG-KEPT-r1", 2)
    fill(store, "CHG-GONE-r1", 2)
    with store.engine.begin() as conn:  # tampering behind the store's back
        conn.exec_driver_sql("DELETE FROM stagehold_ledger WHERE execution_id = 'CHG-GONE-r1'")
    assert store.executions() == ["CHG-KEPT-r1"]
    assert store.heads() == {"CHG-KEPT-r1": 2}
    assert (store.executions(), store.heads()) == by_reading_the_ledger(store)


def test_stores_opening_one_old_database_at_once_install_the_registry_once(
    store: SqlLedgerStore, ledger_url: str
) -> None:
    fill(store, "CHG-RACE-r1", 3)
    uninstall(store)
    opened: list[SqlLedgerStore] = []
    failures: list[BaseException] = []
    start = threading.Barrier(4)

    def open_one() -> None:
        start.wait()
        try:
            opened.append(SqlLedgerStore(ledger_url))
        except BaseException as exc:
            failures.append(exc)

    threads = [threading.Thread(target=open_one) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    try:
        assert failures == [] and len(opened) == 4
        assert all(s.registered for s in opened)
        assert registered(store) == ["CHG-RACE-r1"]
        fill(opened[0], "CHG-RACE-r2", 1)
        assert opened[1].heads() == {"CHG-RACE-r1": 3, "CHG-RACE-r2": 1}
    finally:
        for s in opened:
            s.close()


def test_the_sqlite_reader_uses_the_registry_and_answers_as_the_store(sqlite_url: str) -> None:
    store = SqlLedgerStore(sqlite_url)
    try:
        fill(store, "CHG-R-r1", 3)
        fill(store, "CHG-R-r2", 1)
        reader = open_reader(sqlite_url)
        assert reader is not None
        try:
            assert reader.executions() == store.executions() == ["CHG-R-r1", "CHG-R-r2"]
            assert reader.heads() == store.heads() == {"CHG-R-r1": 3, "CHG-R-r2": 1}
        finally:
            reader.close()
        uninstall(store)  # a database no new store has opened yet: the reader reads the ledger
        reader = open_reader(sqlite_url)
        assert reader is not None
        try:
            assert reader.executions() == ["CHG-R-r1", "CHG-R-r2"]
            assert reader.heads() == {"CHG-R-r1": 3, "CHG-R-r2": 1}
        finally:
            reader.close()
    finally:
        store.close()


def test_every_statement_names_exactly_the_closing_kinds() -> None:
    # The trigger's SQL spells the kinds out; CLOSING_KINDS is what the rest of the code reads.
    for statement in (*registry.SQLITE_INSTALL, *registry.postgres_install('"public"')):
        for listed in re.findall(r"IN \(('execution\.[^)]*)\)", statement):
            assert re.findall(r"'([^']+)'", listed) == list(registry.CLOSING_KINDS), statement
    assert sum("closed_seq" in s for s in registry.SQLITE_INSTALL) == 2
