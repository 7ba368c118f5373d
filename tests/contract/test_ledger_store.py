"""One contract suite for the ledger store, run against SQLite, PostgreSQL and the in-memory store.

Every test here must pass on each; a difference between them is a bug in a store. The tamper
tests edit the database behind the store's back, so they run on the SQL stores only.
"""

from __future__ import annotations

import ast
import hashlib
import itertools
import math
import re
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, text

import ledger.sql
import ledger.sqlite_reader
from ledger.chain import GENESIS_HASH, entry_hash, format_ts, hashed_bytes, string_token, verify_chain
from ledger.entry import Entry, NewEntry
from ledger.memory import MemoryLedgerStore
from ledger.sql import SqlLedgerStore, normalise_url
from ledger.sqlite_reader import open_reader
from ledger.store import AppendConflict, CorruptEntry, FencedOut, Lease, LedgerReader, LedgerStore, VerifyResult

T0 = datetime(2026, 11, 28, 22, 0, 0, 123456, tzinfo=UTC)
EXEC = "CHG-2041-r1"
LEDGER_DIR = Path(__file__).resolve().parents[2] / "ledger"


@pytest.fixture(
    params=[
        pytest.param("sqlite", id="sqlite"),
        pytest.param("postgres", id="postgres", marks=pytest.mark.postgres),
        pytest.param("memory", id="memory"),
    ]
)
def open_store(request: pytest.FixtureRequest) -> Iterator[Callable[[], LedgerStore]]:
    """Open another store on the same ledger: for SQL, its own engine and connections on the same
    database; in memory, the one store every "instance" shares (as a database is shared)."""
    if request.param == "memory":
        shared = MemoryLedgerStore()
        yield lambda: shared
        return
    url: str = request.getfixturevalue("sqlite_url" if request.param == "sqlite" else "pg_url")
    opened: list[SqlLedgerStore] = []

    def _open() -> SqlLedgerStore:
        opened.append(SqlLedgerStore(url))
        return opened[-1]

    yield _open
    for store in opened:
        store.close()


@pytest.fixture
def store(open_store: Callable[[], LedgerStore]) -> LedgerStore:
    return open_store()


@pytest.fixture
def sql_store(ledger_url: str) -> Iterator[SqlLedgerStore]:
    """A SQL store on ``ledger_url``, for the tests that edit its database directly."""
    store = SqlLedgerStore(ledger_url)
    yield store
    store.close()


def new(i: int, body: Any = None, kind: str = "stage.entered", actor: str = "role:executor") -> NewEntry:
    return NewEntry(kind=kind, actor=actor, body=body if body is not None else {"n": i}, ts=T0 + timedelta(seconds=i))


def fill(store: SqlLedgerStore, n: int, execution: str = EXEC) -> list[Entry]:
    return store.append(execution, 1, [new(i) for i in range(1, n + 1)])


def raw_sql(url: str, statement: str, **params: Any) -> None:
    """Edit the database behind the store's back, as an attacker or a careless admin would."""
    engine = create_engine(normalise_url(url))
    try:
        with engine.begin() as conn:
            conn.execute(text(statement), params)
    finally:
        engine.dispose()


def row(url: str, seq: int, execution: str = EXEC) -> dict[str, Any]:
    engine = create_engine(normalise_url(url))
    try:
        with engine.connect() as conn:
            found = conn.execute(
                text("SELECT * FROM stagehold_ledger WHERE execution_id = :e AND seq = :s"), {"e": execution, "s": seq}
            ).mappings()
            return dict(found.one())
    finally:
        engine.dispose()


# ---------------------------------------------------------------- appending and reading


def test_first_append_is_seq_1_and_links_to_genesis(store: SqlLedgerStore) -> None:
    [first] = store.append(EXEC, 1, [new(1)])
    assert (first.seq, first.prev_hash) == (1, GENESIS_HASH)
    assert store.head(EXEC) == (1, first.hash)


@pytest.mark.parametrize("wrong", [0, 2, 5])
def test_first_append_at_another_seq_conflicts(store: SqlLedgerStore, wrong: int) -> None:
    with pytest.raises(AppendConflict) as caught:
        store.append(EXEC, wrong, [new(1)])
    assert (caught.value.expected, caught.value.actual) == (wrong, 1)
    assert store.read(EXEC) == []


def test_appends_are_contiguous_and_chained(store: SqlLedgerStore) -> None:
    written = fill(store, 3)
    written += store.append(EXEC, 4, [new(4)])
    written += store.append(EXEC, 5, [new(5), new(6)])
    assert [e.seq for e in written] == [1, 2, 3, 4, 5, 6]
    for before, after in itertools.pairwise(written):
        assert after.prev_hash == before.hash
    assert store.read(EXEC) == written
    assert verify_chain(store.read(EXEC), EXEC).ok


def test_read_after_a_seq_returns_the_rest_in_order(store: SqlLedgerStore) -> None:
    fill(store, 5)
    assert [e.seq for e in store.read(EXEC, after_seq=2)] == [3, 4, 5]
    assert store.read(EXEC, after_seq=5) == []
    assert store.read("no-such-execution") == []


def test_stale_expected_seq_conflicts_and_writes_nothing(store: SqlLedgerStore) -> None:
    fill(store, 3)
    for stale in (1, 3, 5):
        with pytest.raises(AppendConflict) as caught:
            store.append(EXEC, stale, [new(9), new(10)])
        assert caught.value.actual == 4
    assert [e.seq for e in store.read(EXEC)] == [1, 2, 3]


def test_executions_are_kept_apart(store: SqlLedgerStore) -> None:
    fill(store, 2, "exec-b")
    fill(store, 3, "exec-a")
    assert sorted(store.executions()) == ["exec-a", "exec-b"]
    assert [e.seq for e in store.read("exec-a")] == [1, 2, 3]
    assert verify_chain(store.read("exec-b"), "exec-b").ok


@pytest.mark.parametrize(
    "kind", ["execution.completed", "execution.rolled_back", "execution.needs_human", "execution.abandoned"]
)
def test_open_executions_leave_out_those_with_a_closing_entry(store: SqlLedgerStore, kind: str) -> None:
    fill(store, 2, "exec-done")
    fill(store, 2, "exec-open")
    store.append("exec-done", 3, [new(3, kind=kind)])
    store.append("exec-open", 3, [new(3, kind="execution.resumed")])
    assert store.open_executions() == ["exec-open"]
    assert sorted(store.executions()) == ["exec-done", "exec-open"]


def test_stored_entry_equals_sealed_entry(store: SqlLedgerStore) -> None:
    body = {
        "text": 'Zoë → tokenizer ✓ "quoted" \\ back',
        "ratio": 0.1,
        "tiny": 1e-300,
        "big": 2**62,
        "neg": -7,
        "flags": [True, False, None],
        "nested": {"z": 1, "a": {"b": [1.5, "x"]}},
        "empty": {},
    }
    [sealed] = store.append(EXEC, 1, [new(1, body)])
    [read] = store.read(EXEC)
    assert read == sealed
    assert read.body == body
    assert read.ts == T0 + timedelta(seconds=1)
    assert verify_chain([read], EXEC).ok


# ---------------------------------------------------------------- atomicity


@pytest.mark.parametrize(
    "bad_body",
    [
        pytest.param({"ratio": math.nan}, id="nan"),
        pytest.param({"ratio": math.inf}, id="infinity"),
        pytest.param({"when": object()}, id="non-json-object"),
        pytest.param({1: "int key"}, id="non-string-key"),
    ],
)
def test_multi_entry_append_is_all_or_nothing(store: SqlLedgerStore, bad_body: dict[Any, Any]) -> None:
    fill(store, 1)
    with pytest.raises((TypeError, ValueError)):
        store.append(EXEC, 2, [new(2, {"fine": True}), new(3, bad_body)])
    assert [e.seq for e in store.read(EXEC)] == [1], "the first entry of the failed batch must not land"
    # The position is still free for a correct writer.
    assert [e.seq for e in store.append(EXEC, 2, [new(2)])] == [2]


# ---------------------------------------------------------------- concurrent writers


def _race(stores: list[SqlLedgerStore], execution: str, expected: int) -> list[object]:
    barrier = threading.Barrier(len(stores))
    results: list[object] = [None] * len(stores)

    def write(i: int) -> None:
        barrier.wait()
        try:
            results[i] = stores[i].append(execution, expected, [new(expected, {"writer": i})])
        except Exception as exc:
            results[i] = exc

    threads = [threading.Thread(target=write, args=(i,)) for i in range(len(stores))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    return results


def test_two_writers_at_the_same_seq_exactly_one_wins(open_store: Callable[[], SqlLedgerStore]) -> None:
    a, b = open_store(), open_store()
    for round_no in range(50):
        expected = round_no + 1
        results = _race([a, b], EXEC, expected)
        wins = [r for r in results if isinstance(r, list)]
        conflicts = [r for r in results if isinstance(r, AppendConflict)]
        assert len(wins) == 1 and len(conflicts) == 1, f"round {round_no}: {results!r}"
        assert wins[0][0].seq == expected
    entries = a.read(EXEC)
    assert [e.seq for e in entries] == list(range(1, 51))
    assert verify_chain(entries, EXEC).ok
    assert b.read(EXEC) == entries


def test_retrying_writers_and_a_tailing_reader_see_one_contiguous_chain(
    open_store: Callable[[], SqlLedgerStore],
) -> None:
    writers = [open_store() for _ in range(3)]
    reader = open_store()
    per_writer = 8
    total = per_writer * len(writers)
    errors: list[BaseException] = []
    seen: list[int] = []
    start = threading.Barrier(len(writers) + 1)

    def write(store: SqlLedgerStore, who: int) -> None:
        start.wait()
        done = 0
        while done < per_writer:
            head = store.head(EXEC)
            try:
                store.append(EXEC, (head[0] if head else 0) + 1, [new(done, {"who": who, "n": done})])
                done += 1
            except AppendConflict:
                continue  # re-read and re-decide, as the engine does
            except BaseException as exc:  # pragma: no cover - reported below
                errors.append(exc)
                return

    def tail() -> None:
        start.wait()
        last = 0
        deadline = datetime.now(UTC) + timedelta(seconds=60)
        while last < total and datetime.now(UTC) < deadline:
            for entry in reader.read(EXEC, after_seq=last):
                # A reader tailing by seq must never see seq N+1 before seq N.
                if entry.seq != last + 1:
                    errors.append(AssertionError(f"reader saw seq {entry.seq} after {last}"))
                    return
                seen.append(entry.seq)
                last = entry.seq

    threads = [threading.Thread(target=write, args=(s, i)) for i, s in enumerate(writers)]
    threads.append(threading.Thread(target=tail))
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=90)
    assert not errors, errors
    assert seen == list(range(1, total + 1))
    assert verify_chain(reader.read(EXEC), EXEC).ok


# ---------------------------------------------------------------- leases and fencing


def test_lease_lifecycle_and_fencing(store: SqlLedgerStore) -> None:
    a = store.acquire_lease(EXEC, "replica-a", T0, 30)
    assert a is not None and (a.owner, a.epoch) == ("replica-a", 1)
    assert a.expires_at == T0 + timedelta(seconds=30)

    renewed = store.acquire_lease(EXEC, "replica-a", T0 + timedelta(seconds=20), 30)
    assert renewed is not None and renewed.epoch == 1
    assert renewed.expires_at == T0 + timedelta(seconds=50)

    assert store.acquire_lease(EXEC, "replica-b", T0 + timedelta(seconds=49), 30) is None, "refused before expiry"

    fill(store, 1)
    assert [e.seq for e in store.append(EXEC, 2, [new(2)], fence=a)] == [2]

    b = store.acquire_lease(EXEC, "replica-b", T0 + timedelta(seconds=50), 30)
    assert b is not None and (b.owner, b.epoch) == ("replica-b", 2), "takeover after expiry gets a higher epoch"

    with pytest.raises(FencedOut):
        store.append(EXEC, 3, [new(3)], fence=a)
    assert [e.seq for e in store.read(EXEC)] == [1, 2], "a fenced-out writer leaves no trace"
    assert [e.seq for e in store.append(EXEC, 3, [new(3)], fence=b)] == [3]

    # The old owner cannot renew its way back in while b holds the lease.
    assert store.acquire_lease(EXEC, "replica-a", T0 + timedelta(seconds=60), 30) is None


def test_fence_without_any_lease_is_refused(store: SqlLedgerStore) -> None:
    # replica-a holds a lease on another execution only; its fence means nothing here.
    assert store.acquire_lease("another-exec", "replica-a", T0, 30) is not None
    with pytest.raises(FencedOut):
        store.append(EXEC, 1, [new(1)], fence=Lease(EXEC, "replica-a", 1, T0 + timedelta(seconds=30)))
    assert store.read(EXEC) == []


def test_fenced_batch_lands_whole_or_not_at_all(store: SqlLedgerStore) -> None:
    a = store.acquire_lease(EXEC, "replica-a", T0, 30)
    assert a is not None
    assert [e.seq for e in store.append(EXEC, 1, [new(1), new(2), new(3)], fence=a)] == [1, 2, 3]
    assert store.acquire_lease(EXEC, "replica-b", T0 + timedelta(seconds=31), 30) is not None
    with pytest.raises(FencedOut):
        store.append(EXEC, 4, [new(4), new(5)], fence=a)
    assert [e.seq for e in store.read(EXEC)] == [1, 2, 3]
    assert verify_chain(store.read(EXEC), EXEC).ok


def test_a_fenced_out_writer_hears_so_even_when_its_seq_is_stale(store: SqlLedgerStore) -> None:
    """Losing the lease is the news that matters: a stale seq from a fenced-out writer is FencedOut,
    not a conflict that would send it to re-read and try again."""
    a = store.acquire_lease(EXEC, "replica-a", T0, 30)
    assert a is not None
    fill(store, 2)
    b = store.acquire_lease(EXEC, "replica-b", T0 + timedelta(seconds=31), 30)
    assert b is not None
    with pytest.raises(FencedOut):
        store.append(EXEC, 2, [new(2)], fence=a)
    with pytest.raises(AppendConflict):
        store.append(EXEC, 2, [new(2)], fence=b)


def test_a_takeover_during_an_append_fences_it_in_the_insert(sql_store: SqlLedgerStore, ledger_url: str) -> None:
    """The fence is checked by the INSERT that writes, against the lease as it stands when that
    INSERT runs: an append that meets a takeover in progress waits for it and then writes nothing.
    A lease read before the write (or without a lock) would see the old owner and let it through."""
    a = sql_store.acquire_lease(EXEC, "replica-a", T0, 30)
    assert a is not None
    fill(sql_store, 1)
    assert [e.seq for e in sql_store.append(EXEC, 2, [new(2)], fence=a)] == [2]
    outcome: list[object] = []

    def stale_append() -> None:
        try:
            outcome.append(sql_store.append(EXEC, 3, [new(3)], fence=a))
        except Exception as exc:
            outcome.append(exc)

    takeover = create_engine(normalise_url(ledger_url))
    try:
        with takeover.connect() as conn:
            txn = conn.begin()
            conn.execute(
                text("UPDATE stagehold_lease SET owner = 'replica-b', epoch = 2 WHERE execution_id = :e"), {"e": EXEC}
            )
            writer = threading.Thread(target=stale_append)
            writer.start()
            writer.join(timeout=0.5)
            assert writer.is_alive() and not outcome, f"the append did not wait for the takeover: {outcome!r}"
            txn.commit()
        writer.join(timeout=60)
    finally:
        takeover.dispose()
    assert len(outcome) == 1 and isinstance(outcome[0], FencedOut), outcome
    assert "lease epoch 1 of replica-a is no longer current" in str(outcome[0])
    assert [e.seq for e in sql_store.read(EXEC)] == [1, 2], "a fenced-out writer leaves no trace"


def test_an_append_never_links_to_an_entry_it_did_not_read(sql_store: SqlLedgerStore, ledger_url: str) -> None:
    """The store remembers the head it last wrote, so its next append need not read it. When the
    chain changed behind its back, the INSERT's own link check refuses the entry instead of
    writing one that points at a hash the chain does not hold."""
    fill(sql_store, 2)
    engine = create_engine(normalise_url(ledger_url))
    try:
        with engine.begin() as conn:
            conn.execute(text("DELETE FROM stagehold_ledger WHERE execution_id = :e AND seq = 2"), {"e": EXEC})
    finally:
        engine.dispose()
    with pytest.raises(AppendConflict, match="expected to append at seq 3, next free is 2"):
        sql_store.append(EXEC, 3, [new(3)])
    assert [e.seq for e in sql_store.read(EXEC)] == [1]
    assert [e.seq for e in sql_store.append(EXEC, 2, [new(2)])] == [2]
    assert verify_chain(sql_store.read(EXEC), EXEC).ok


def test_leases_renewed_in_one_round_only_where_still_held(store: LedgerStore) -> None:
    """A batch renewal extends each lease held at its epoch, and leaves alone (and leaves out of
    its answer) one another replica has taken over since."""
    held = [store.acquire_lease(f"{EXEC}-{i}", "replica-a", T0, 30) for i in range(250)]
    assert all(lease is not None for lease in held)
    leases = [lease for lease in held if lease is not None]
    taken = store.acquire_lease(f"{EXEC}-7", "replica-b", T0 + timedelta(seconds=31), 30)
    assert taken is not None and taken.epoch == 2
    later = T0 + timedelta(seconds=40)
    renewed = store.renew_leases("replica-a", leases, later, 30)
    assert sorted(renewed) == sorted(lease.execution_id for lease in leases if lease.execution_id != f"{EXEC}-7")
    assert all(r.owner == "replica-a" and r.expires_at == later + timedelta(seconds=30) for r in renewed.values())
    # Renewed for real: still refused to another replica past the first lease's expiry ...
    assert store.acquire_lease(f"{EXEC}-3", "replica-b", T0 + timedelta(seconds=60), 30) is None
    # ... and replica-b's lease untouched, so replica-a's stale fence is refused.
    with pytest.raises(FencedOut):
        store.append(f"{EXEC}-7", 1, [new(1)], fence=leases[7])
    assert store.renew_leases("replica-a", [], later, 30) == {}


def test_released_lease_can_be_taken_at_once(store: SqlLedgerStore) -> None:
    a = store.acquire_lease(EXEC, "replica-a", T0, 300)
    assert a is not None
    store.release_lease(a)
    b = store.acquire_lease(EXEC, "replica-b", T0 + timedelta(seconds=1), 300)
    assert b is not None and b.epoch == 2


def _race_for_lease(stores: list[SqlLedgerStore], execution: str, now: datetime) -> list[object]:
    barrier = threading.Barrier(len(stores))
    results: list[object] = [None] * len(stores)

    def take(i: int) -> None:
        barrier.wait()
        try:
            results[i] = stores[i].acquire_lease(execution, f"replica-{i}", now, 30)
        except Exception as exc:
            results[i] = exc

    threads = [threading.Thread(target=take, args=(i,)) for i in range(len(stores))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    return results


def test_racing_replicas_never_both_hold_a_lease(open_store: Callable[[], SqlLedgerStore]) -> None:
    """Two replicas that both believe they hold the lease at the same epoch is split brain."""
    stores = [open_store() for _ in range(3)]
    for round_no in range(15):
        execution = f"lease-race-{round_no}"
        first = _race_for_lease(stores, execution, T0)
        assert not [r for r in first if isinstance(r, Exception)], first
        winners = [r for r in first if isinstance(r, Lease)]
        assert len(winners) == 1 and winners[0].epoch == 1, first
        # Once it has expired, the takeover is a race too: exactly one new holder, one epoch higher.
        later = _race_for_lease(stores, execution, T0 + timedelta(seconds=31))
        assert not [r for r in later if isinstance(r, Exception)], later
        holders = [r for r in later if isinstance(r, Lease)]
        assert len(holders) == 1, later
        assert holders[0].epoch == (1 if holders[0].owner == winners[0].owner else 2)


def test_lease_seen_from_a_second_store_instance(open_store: Callable[[], SqlLedgerStore]) -> None:
    one, two = open_store(), open_store()
    assert one.acquire_lease(EXEC, "replica-a", T0, 30) is not None
    assert two.acquire_lease(EXEC, "replica-b", T0 + timedelta(seconds=5), 30) is None


# ---------------------------------------------------------------- tamper detection with direct SQL


def _verify(store: SqlLedgerStore, head: tuple[int, str] | None = None) -> tuple[bool, int | None, str]:
    """What ``ledger verify`` runs (the chain streamed from the database, checked on its stored
    text first) must say exactly what ``verify_chain`` says over the decoded entries."""
    streamed = store.verify(EXEC, head)
    try:
        listed = verify_chain(store.read(EXEC), EXEC, head)
    except CorruptEntry as exc:
        listed = VerifyResult(False, exc.seq, exc.reason, 0, "")
    assert (streamed.ok, streamed.first_bad_seq, streamed.reason) == (listed.ok, listed.first_bad_seq, listed.reason)
    if streamed.ok:
        assert (streamed.checked, streamed.head_hash) == (listed.checked, listed.head_hash)
    if (
        isinstance(store, SqlLedgerStore) and not store.is_postgres
    ):  # the sqlite3 reader of `status` and `ledger verify` says the same, to the letter
        reader = open_reader(store.url)
        assert reader is not None
        try:
            assert reader.verify(EXEC, head) == streamed
            assert _read_or_corrupt(reader, EXEC) == _read_or_corrupt(store, EXEC)
        finally:
            reader.close()
    return streamed.ok, streamed.first_bad_seq, streamed.reason


def _read_or_corrupt(store: LedgerReader, execution: str) -> list[Entry] | tuple[int, str]:
    try:
        return store.read(execution)
    except CorruptEntry as exc:
        return exc.seq, exc.reason


def test_untouched_chain_verifies(store: SqlLedgerStore) -> None:
    fill(store, 5)
    assert _verify(store) == (True, None, "ok")


def test_updated_body_is_named(sql_store: SqlLedgerStore, ledger_url: str) -> None:
    fill(sql_store, 5)
    raw_sql(
        ledger_url, "UPDATE stagehold_ledger SET body = :b WHERE execution_id = :e AND seq = 3", b='{"n":33}', e=EXEC
    )
    assert _verify(sql_store) == (False, 3, "hash does not match content")


@pytest.mark.parametrize("column", ["kind", "actor", "ts"])
def test_updated_metadata_is_named(sql_store: SqlLedgerStore, ledger_url: str, column: str) -> None:
    fill(sql_store, 5)
    value = format_ts(T0 - timedelta(days=1)) if column == "ts" else "role:someone-else"
    raw_sql(
        ledger_url, f"UPDATE stagehold_ledger SET {column} = :v WHERE execution_id = :e AND seq = 2", v=value, e=EXEC
    )
    assert _verify(sql_store) == (False, 2, "hash does not match content")


@pytest.mark.parametrize(("body", "why"), [("not json {", "body"), ('{"x": NaN}', "canonical")])
def test_undecodable_body_is_named(sql_store: SqlLedgerStore, ledger_url: str, body: str, why: str) -> None:
    fill(sql_store, 5)
    raw_sql(ledger_url, "UPDATE stagehold_ledger SET body = :b WHERE execution_id = :e AND seq = 4", b=body, e=EXEC)
    try:
        ok, seq, reason = _verify(sql_store)
    except CorruptEntry as exc:
        ok, seq, reason = False, exc.seq, exc.reason
    assert (ok, seq) == (False, 4)
    assert why in reason


@pytest.mark.parametrize(
    ("column", "value"),
    [
        ("body", '{ "n" : 3 }'),  # the same values, spelled with whitespace
        ("body", '{"\\u006e":3}'),  # a key spelled with an escape
        ("ts", "2026-11-28T22:00:03.123456+00:00"),  # not the canonical form: read, then normalised
    ],
)
def test_the_same_values_in_another_spelling_verify_as_before(
    sql_store: SqlLedgerStore, ledger_url: str, column: str, value: str
) -> None:
    """Text that is not canonical is decided by decoding it, as verify_chain always has."""
    fill(sql_store, 5)
    raw_sql(
        ledger_url, f"UPDATE stagehold_ledger SET {column} = :v WHERE execution_id = :e AND seq = 3", v=value, e=EXEC
    )
    _verify(sql_store)  # agreement is the assertion; the verdict is whatever decoding the values gives


@pytest.mark.parametrize(
    ("body", "why"),
    [
        ('{"n":NaN}', "no canonical form"),
        ('{ "n" : 33 }', "hash does not match content"),
        ('{"n":33,"a":1}', "hash does not match content"),  # keys out of order
        ('{"n":3.30}', "hash does not match content"),  # a float not in its shortest form
    ],
)
def test_a_row_rehashed_over_a_non_canonical_spelling_is_tampering(
    sql_store: SqlLedgerStore, ledger_url: str, body: str, why: str
) -> None:
    """Someone who edits a body and recomputes the hash over the stored text, as the streamed check
    splices it, must not pass: an entry's hash covers its canonical encoding, which this is not."""
    fill(sql_store, 5)
    three = row(ledger_url, 3)
    forged = hashed_bytes(
        3,
        three["ts"],
        string_token(three["kind"]),
        string_token(three["actor"]),
        body.encode(),
        string_token(EXEC),
        three["prev_hash"],
    )
    assert forged is not None
    raw_sql(
        ledger_url,
        "UPDATE stagehold_ledger SET body = :b, hash = :h WHERE execution_id = :e AND seq = 3",
        b=body,
        h=hashlib.sha256(forged).hexdigest(),
        e=EXEC,
    )
    ok, seq, reason = _verify(sql_store)
    assert (ok, seq) == (False, 3)
    assert why in reason


def test_tricky_text_in_every_field_verifies_streamed(
    sql_store: SqlLedgerStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    tricky = 'q"b\\s/\b\f\n\r\t\x1f\x7f\u2028é✓🚦'
    sql_store.append(
        EXEC,
        1,
        [
            # PostgreSQL text holds no NUL, so kind and actor go without it; the body's JSON escapes it.
            new(
                1,
                body={"x": tricky + "\x00", tricky: [1.0, 1e-05, 10**30, None, True]},
                kind="k" + tricky,
                actor="a" + tricky,
            ),
            new(2, body={}),
        ],
    )
    assert _verify(sql_store) == (True, None, "ok")
    # The stored text alone settled every entry: nothing needed decoding.
    monkeypatch.setattr(ledger.sql, "decode_row", _must_not_decode)
    monkeypatch.setattr(ledger.sqlite_reader, "decode_row", _must_not_decode)
    assert sql_store.verify(EXEC).ok
    reader = open_reader(sql_store.url)  # None on PostgreSQL
    if reader is not None:
        assert reader.verify(EXEC).ok
        reader.close()


def _must_not_decode(*row: Any) -> Entry:
    raise AssertionError(f"decoded {row!r}")


def test_deleted_middle_row_is_named(sql_store: SqlLedgerStore, ledger_url: str) -> None:
    fill(sql_store, 5)
    raw_sql(ledger_url, "DELETE FROM stagehold_ledger WHERE execution_id = :e AND seq = 3", e=EXEC)
    ok, seq, reason = _verify(sql_store)
    assert (ok, seq) == (False, 3)
    assert "sequence gap" in reason


def test_swapped_bodies_and_hashes_are_named(sql_store: SqlLedgerStore, ledger_url: str) -> None:
    fill(sql_store, 5)
    two, four = row(ledger_url, 2), row(ledger_url, 4)
    for target, source in ((2, four), (4, two)):
        raw_sql(
            ledger_url,
            "UPDATE stagehold_ledger SET body = :b, hash = :h WHERE execution_id = :e AND seq = :s",
            b=source["body"],
            h=source["hash"],
            e=EXEC,
            s=target,
        )
    ok, seq, _ = _verify(sql_store)
    assert (ok, seq) == (False, 2)


def test_swapped_whole_rows_are_named(sql_store: SqlLedgerStore, ledger_url: str) -> None:
    fill(sql_store, 5)
    two, three = row(ledger_url, 2), row(ledger_url, 3)
    for target, source in ((2, three), (3, two)):
        raw_sql(
            ledger_url,
            "UPDATE stagehold_ledger SET body = :b, hash = :h, prev_hash = :p, ts = :t "
            "WHERE execution_id = :e AND seq = :s",
            b=source["body"],
            h=source["hash"],
            p=source["prev_hash"],
            t=source["ts"],
            e=EXEC,
            s=target,
        )
    ok, seq, reason = _verify(sql_store)
    assert (ok, seq, reason) == (False, 2, "previous-hash link broken")


def test_forged_row_with_wrong_prev_is_named(sql_store: SqlLedgerStore, ledger_url: str) -> None:
    fill(sql_store, 5)
    ts = format_ts(T0 + timedelta(minutes=5))
    wrong_prev = "f" * 64
    # The forger even computes a correct hash over its own (wrong) link.
    forged_hash = entry_hash(EXEC, 6, ts, "release.granted", "U01DANA", {"hold": "h1"}, wrong_prev)
    raw_sql(
        ledger_url,
        "INSERT INTO stagehold_ledger (execution_id, seq, ts, kind, actor, body, prev_hash, hash) "
        "VALUES (:e, 6, :t, 'release.granted', 'U01DANA', :b, :p, :h)",
        e=EXEC,
        t=ts,
        b='{"hold":"h1"}',
        p=wrong_prev,
        h=forged_hash,
    )
    assert _verify(sql_store) == (False, 6, "previous-hash link broken")


def test_forged_row_past_a_gap_is_named(sql_store: SqlLedgerStore, ledger_url: str) -> None:
    entries = fill(sql_store, 3)
    raw_sql(
        ledger_url,
        "INSERT INTO stagehold_ledger (execution_id, seq, ts, kind, actor, body, prev_hash, hash) "
        "VALUES (:e, 9, :t, 'k', 'a', '{}', :p, :h)",
        e=EXEC,
        t=format_ts(T0),
        p=entries[-1].hash,
        h="0" * 64,
    )
    ok, seq, reason = _verify(sql_store)
    assert (ok, seq) == (False, 4)
    assert "expected 4, found 9" in reason


def test_truncated_tail_is_caught_against_a_saved_head(sql_store: SqlLedgerStore, ledger_url: str) -> None:
    fill(sql_store, 5)
    head = sql_store.head(EXEC)
    assert head is not None and head[0] == 5
    assert _verify(sql_store, head) == (True, None, "ok")
    raw_sql(ledger_url, "DELETE FROM stagehold_ledger WHERE execution_id = :e AND seq >= 4", e=EXEC)
    assert _verify(sql_store)[0], "without a checkpoint a clean truncation is indistinguishable from a short chain"
    ok, seq, reason = _verify(sql_store, head)
    assert (ok, seq) == (False, 4)
    assert "truncated" in reason


def test_consistent_rewrite_is_caught_against_a_saved_head(sql_store: SqlLedgerStore, ledger_url: str) -> None:
    original = fill(sql_store, 4)
    head = sql_store.head(EXEC)
    assert head is not None
    # Rewrite seq 2 and re-chain everything after it, hashes and all.
    prev = original[0].hash
    for e in original[1:]:
        body = {"n": 222} if e.seq == 2 else dict(e.body)
        digest = entry_hash(EXEC, e.seq, format_ts(e.ts), e.kind, e.actor, body, prev)
        raw_sql(
            ledger_url,
            "UPDATE stagehold_ledger SET body = :b, prev_hash = :p, hash = :h WHERE execution_id = :e AND seq = :s",
            b=f'{{"n":{body["n"]}}}',
            p=prev,
            h=digest,
            e=EXEC,
            s=e.seq,
        )
        prev = digest
    assert _verify(sql_store)[0], "a full re-chain is self-consistent"
    assert _verify(sql_store, head) == (False, 4, "differs from the saved head checkpoint")


# ---------------------------------------------------------------- no update or delete path


# The execution registry (coordination data, like the lease table) records an execution's closing
# seq: the one other UPDATE in the ledger's code, and only of that column.
_REGISTRY_CLOSES = re.compile(r"\bUPDATE (@S\.)?stagehold_execution (r )?SET closed_seq = ")
_WRITES_HISTORY = re.compile(r"\b(UPDATE|DELETE|TRUNCATE|REPLACE|DROP|ALTER)\b|\bdelete\s+from\b", re.IGNORECASE)


def _docstrings(tree: ast.AST) -> set[int]:
    ids: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                ids.add(id(first.value))
    return ids


def test_ledger_code_has_no_update_or_delete_path() -> None:
    sources = sorted(LEDGER_DIR.glob("*.py"))
    assert sources, LEDGER_DIR
    offences: list[str] = []
    for path in sources:
        tree = ast.parse(path.read_text(encoding="utf-8"))
        docs = _docstrings(tree)
        for node in ast.walk(tree):
            if isinstance(node, ast.Call):
                func = node.func
                name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
                # The lease table (coordination data, not history) is the one table updated.
                leases = name == "update" and [getattr(a, "id", "") for a in node.args] == ["LeaseRow"]
                if name in {"update", "delete", "bulk_update_mappings", "merge", "truncate"} and not leases:
                    offences.append(f"{path.name}:{node.lineno}: call to {name}()")
            elif (
                isinstance(node, ast.Constant)
                and isinstance(node.value, str)
                and id(node) not in docs
                and _WRITES_HISTORY.search(_REGISTRY_CLOSES.sub("", node.value))
            ):
                offences.append(f"{path.name}:{node.lineno}: SQL text {node.value!r}")
    assert offences == []


def test_the_only_attribute_writes_are_to_the_lease_table() -> None:
    """Ledger rows are only ever constructed; changing a mapped row's attribute is an UPDATE,
    so any function doing that may touch the lease table only."""
    tree = ast.parse((LEDGER_DIR / "sql.py").read_text(encoding="utf-8"))
    writers: list[str] = []
    for fn in ast.walk(tree):
        if not isinstance(fn, ast.FunctionDef):
            continue
        names_used = {n.id for n in ast.walk(fn) if isinstance(n, ast.Name)}
        for node in ast.walk(fn):
            if not isinstance(node, ast.Assign):
                continue
            for target in node.targets:
                for t in target.elts if isinstance(target, ast.Tuple) else [target]:
                    if isinstance(t, ast.Attribute) and isinstance(t.value, ast.Name) and t.value.id == "row":
                        writers.append(fn.name)
                        assert "LeaseRow" in names_used and "LedgerRow" not in names_used, fn.name
    assert sorted(set(writers)) == ["acquire_lease", "release_lease"]


def test_store_offers_no_mutating_method(store: SqlLedgerStore) -> None:
    public = {n for n in dir(store) if not n.startswith("_")}
    assert not {n for n in public if re.search(r"update|delete|remove|truncate|rewrite|edit|set_", n)}


@pytest.mark.postgres
def test_an_append_survives_the_server_dropping_its_kept_connection(pg_url: str) -> None:
    """Appends keep their connections between calls; one the server closed meanwhile (a restart, an
    idle timeout) is replaced, and the append lands once."""
    store = SqlLedgerStore(pg_url)
    try:
        fill(store, 1)
        admin = create_engine(normalise_url(pg_url))
        try:
            with admin.begin() as conn:
                dropped = conn.execute(
                    text(
                        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                        "WHERE datname = current_database() AND pid <> pg_backend_pid()"
                    )
                ).scalar_one()
        finally:
            admin.dispose()
        assert dropped >= 1
        assert [e.seq for e in store.append(EXEC, 2, [new(2)])] == [2]
        assert [e.seq for e in store.read(EXEC)] == [1, 2]
        assert verify_chain(store.read(EXEC), EXEC).ok
    finally:
        store.close()


# ---------------------------------------------------------------- the sqlite3 reader of read-only commands


def test_the_sqlite_reader_answers_as_the_store_on_the_same_database(sqlite_url: str) -> None:
    """Everything a read-only command asks, asked of both on one database: equal answers."""
    store = SqlLedgerStore(sqlite_url)
    try:
        fill(store, 4)
        store.append("CHG-OTHER", 1, [new(i, body={"s": "é✓\n", "f": 1e-05}) for i in range(1, 3)])
        store.acquire_lease(EXEC, "replica-a", T0, 30)
        store.acquire_lease("CHG-OTHER", "replica-b", T0, 30)
        store.acquire_lease("CHG-OTHER", "replica-c", T0 + timedelta(seconds=31), 30)  # epoch 2
        reader = open_reader(sqlite_url)
        assert reader is not None
        try:
            for execution in (EXEC, "CHG-OTHER", "CHG-NONE"):
                assert reader.read(execution) == store.read(execution)
                assert reader.read(execution, after_seq=2) == store.read(execution, after_seq=2)
                assert reader.verify(execution) == store.verify(execution)
                assert reader.head(execution) == store.head(execution)
                assert reader.lease(execution) == store.lease(execution)
            assert reader.executions() == store.executions() == [EXEC, "CHG-OTHER"]
            assert reader.heads() == store.heads() == {EXEC: 4, "CHG-OTHER": 2}
            assert reader.leases() == store.leases()
            assert reader.lease("CHG-OTHER") == Lease("CHG-OTHER", "replica-c", 2, T0 + timedelta(seconds=61))
            saved = store.head(EXEC)
            assert saved is not None
            assert reader.verify(EXEC, saved) == store.verify(EXEC, saved)
            # A chain that grows while the reader is open is seen at once (no snapshot is kept).
            store.append(EXEC, 5, [new(5)])
            assert reader.read(EXEC, after_seq=4) == store.read(EXEC, after_seq=4) != []
        finally:
            reader.close()
    finally:
        store.close()


def test_the_sqlite_reader_reads_the_tables_the_store_defines() -> None:
    """The reader's SQL names the SQLModel tables and their columns, and nothing else."""
    from sqlmodel import SQLModel

    from ledger.sql import LeaseRow, LedgerRow
    from ledger.sqlite_reader import STATEMENTS

    tables = {
        t: set(SQLModel.metadata.tables[t].columns.keys()) for t in (LedgerRow.__tablename__, LeaseRow.__tablename__)
    }
    for statement in STATEMENTS:
        named = re.findall(r"\bFROM (\w+)", statement)
        assert named and all(t in tables for t in named), statement
        words = set(re.findall(r"[a-z_]+", statement.split(" FROM ")[0].removeprefix("SELECT ")))
        assert words - {"cast", "as", "max", "min"} <= tables[named[0]], statement


@pytest.mark.parametrize(
    ("url", "file"),
    [
        ("sqlite:////var/lib/stagehold/ledger.db", "/var/lib/stagehold/ledger.db"),
        ("sqlite:///ledger.db", "ledger.db"),
        ("sqlite://", None),
        ("sqlite:///:memory:", None),
        ("sqlite:///x.db?mode=ro", None),
        ("sqlite:///a%20b.db", None),
        ("sqlite:///file:x.db", None),
        ("sqlite+pysqlite:///x.db", None),
        ("postgresql://postgres@127.0.0.1/stagehold", None),
    ],
)
def test_only_plain_sqlite_file_urls_get_a_reader(url: str, file: str | None) -> None:
    from ledger.sqlite_reader import sqlite_file

    assert sqlite_file(url) == (Path(file) if file else None)


def test_no_reader_where_the_store_must_decide(tmp_path: Path) -> None:
    """A missing file, a file without the ledger's tables or not a database at all: no reader, and
    nothing created or changed (the SQLModel store then reports or creates, as it always has)."""
    missing = tmp_path / "missing.db"
    assert open_reader(f"sqlite:///{missing}") is None
    assert not missing.exists()
    other = tmp_path / "other.db"
    engine = create_engine(f"sqlite:///{other}")
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE stagehold_ledger (execution_id TEXT)"))
    engine.dispose()
    before = other.read_bytes()
    assert open_reader(f"sqlite:///{other}") is None
    assert other.read_bytes() == before
    garbage = tmp_path / "garbage.db"
    garbage.write_bytes(b"not a database" * 100)
    assert open_reader(f"sqlite:///{garbage}") is None
