"""Family 4: tampering — every modification of stored ledger rows is detected.

Three real ledgers (a completed rehearsal, one rolled back, one held) are written by the engine to
SQLite and to PostgreSQL; a head checkpoint ``(seq, hash)`` of each is saved, as ``stagehold
ledger head`` does. Each trial then opens a transaction, changes the stored rows at random, reads
them back through the store's own ``read`` inside that transaction, verifies the affected chains
against their saved heads (what ``stagehold ledger verify EXECUTION --head FILE`` does) and rolls
the transaction back. Kinds of change:

* modify one field of one row: the body (a value changed, a key added or removed, raw bytes
  flipped), the time, kind, actor, previous hash, own hash, sequence number or execution;
* delete a row; swap two rows (reorder); insert a forged row (correctly hashed, linked to its
  predecessor); truncate the tail; rewrite a row and re-hash every later row, as a forger who
  knows the algorithm would.

A trial is a violation when the verification does not report the change. Inserting a correctly
hashed row *after* the saved head is an ordinary append and is not a tampering trial.
"""

from __future__ import annotations

import json
import multiprocessing
import random
import secrets
import time
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import text
from sqlalchemy.engine import Connection

from bot.bootstrap import http_client
from execution.sandbox import Sandbox
from ledger.chain import GENESIS_HASH, canonical_json, entry_hash, verify_chain
from ledger.sql import SqlLedgerStore
from ledger.store import CorruptEntry
from reliability import plans, rig
from reliability.harness import FamilyResult, Recorder, Size, Violation

PG_ADMIN = "host=127.0.0.1 port=5432 user=postgres dbname=postgres connect_timeout=5"
PG_URL = "postgresql://postgres@127.0.0.1:5432/{name}"

INVARIANTS = [
    "every modification, deletion, reordering, insertion and truncation detected (verify against the saved head)",
    "no false alarm on the untouched ledger",
]

SCENARIOS = {"T-COMPLETED": (), "T-ROLLED-BACK": ("error-rate-high@s2",), "T-HELD": ("error-rate-degraded@s3",)}
COLUMNS = ("ts", "kind", "actor", "body", "prev_hash", "hash")


@dataclass
class Row:
    execution_id: str
    seq: int
    ts: str
    kind: str
    actor: str
    body: str
    prev_hash: str
    hash: str

    def sealed(self) -> Row:
        """This row with the hash a forger would compute for its content (prev kept as is)."""
        body = json.loads(self.body)
        digest = entry_hash(self.execution_id, self.seq, self.ts, self.kind, self.actor, body, self.prev_hash)
        return Row(self.execution_id, self.seq, self.ts, self.kind, self.actor, self.body, self.prev_hash, digest)


class _InTransaction(SqlLedgerStore):
    """The store's own read path over a connection whose transaction holds the tampering."""

    def __init__(self, conn: Connection, is_postgres: bool) -> None:
        self.url = "in-transaction"
        self.engine = conn  # type: ignore[assignment]  # a Session on a Connection joins its transaction
        self.is_postgres = is_postgres


# ---------------------------------------------------------------- building the ledgers


def _build(url: str, workdir: Path) -> dict[str, list[Row]]:
    change = plans.write_and_load(workdir / "change", plans.package("CHG-TAMPER"), plans.crash_drill())
    store = SqlLedgerStore(url)
    client = http_client(10.0)
    try:
        for eid, faults in SCENARIOS.items():
            with Sandbox() as sandbox:
                rig.rehearse(store, change, sandbox, client, execution_id=eid, faults=faults)
        with store.engine.connect() as conn:
            out: dict[str, list[Row]] = {}
            for eid in SCENARIOS:
                rows = conn.execute(
                    text(
                        "SELECT execution_id, seq, ts, kind, actor, body, prev_hash, hash FROM stagehold_ledger "
                        "WHERE execution_id = :e ORDER BY seq"
                    ),
                    {"e": eid},
                ).all()
                out[eid] = [Row(*r) for r in rows]
        return out
    finally:
        client.close()
        store.close()


# ---------------------------------------------------------------- changes


_KINDS = (
    "gate.checked",
    "hold.opened",
    "release.granted",
    "hold.released",
    "action.intended",
    "action.sent",
    "action.confirmed",
    "verification.sampled",
    "stage.passed",
    "rollback.started",
    "execution.completed",
)
_ACTORS = ("U01DANA", "U02LEE", "U05OPS", "U03RESP", "role:executor", "role:verifier", "role:rollback", "U0MALLORY")


def _leaves(value: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    if isinstance(value, dict):
        return [p for k, v in value.items() for p in _leaves(v, (*path, k))] or [path]
    if isinstance(value, list):
        return [p for i, v in enumerate(value) for p in _leaves(v, (*path, i))] or [path]
    return [path]


def _changed(value: Any, rng: random.Random) -> Any:
    if isinstance(value, bool):
        return not value
    if isinstance(value, int):
        return value + rng.choice([-1, 1, 10, 1000])
    if isinstance(value, float):
        return value * 2 + 0.5
    if isinstance(value, str):
        if value and rng.random() < 0.5:
            i = rng.randrange(len(value))
            return value[:i] + chr((ord(value[i]) + 1) % 0x7F or 0x41) + value[i + 1 :]
        return value + rng.choice(["x", " ", "0", "é"])
    if value is None:
        return rng.choice(["x", 0, False])
    return None


def _set(doc: Any, path: tuple[Any, ...], value: Any) -> Any:
    if not path:
        return value
    doc[path[0]] = _set(doc[path[0]], path[1:], value)
    return doc


def _edit_body(body: str, rng: random.Random) -> tuple[str, str]:
    doc = json.loads(body)
    how = rng.choice(["value", "value", "add-key", "drop-key", "bytes"])
    if how == "bytes":
        raw = bytearray(body.encode())
        i = rng.randrange(len(raw))
        op = rng.choice(["flip", "insert", "delete"])
        if op == "flip":
            raw[i] = (raw[i] + rng.randint(1, 94)) % 95 + 32
        elif op == "insert":
            raw.insert(i, rng.randint(32, 126))
        else:
            del raw[i]
        return raw.decode(errors="replace"), "body bytes " + op
    if how == "add-key" and isinstance(doc, dict):
        doc["note" + secrets.token_hex(2)] = rng.choice(["approved", 1, True, None])
        return _dumps(doc), "body key added"
    if how == "drop-key" and isinstance(doc, dict) and doc:
        del doc[rng.choice(sorted(doc))]
        return _dumps(doc), "body key removed"
    path = rng.choice(_leaves(doc))
    value = doc
    for p in path:
        value = value[p]
    return _dumps(_set(doc, path, _changed(value, rng))), "body value changed"


def _dumps(doc: Any) -> str:
    return json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def _semantic(a: str, b: str) -> bool:
    """Whether two stored bodies mean different things (the hash covers meaning, not spacing)."""
    try:
        return canonical_json(json.loads(a)) != canonical_json(json.loads(b))
    except (ValueError, TypeError):
        return True


def _hexflip(h: str, rng: random.Random) -> str:
    i = rng.randrange(len(h))
    return h[:i] + rng.choice([c for c in "0123456789abcdef" if c != h[i]]) + h[i + 1 :]


def _ts_changed(ts: str, rng: random.Random) -> str:
    if rng.random() < 0.2:
        return rng.choice(["yesterday", ts.replace("T", " "), ts[:-1], ""])
    micro = int(ts[20:26])
    return ts[:20] + f"{(micro + rng.randint(1, 999_999)) % 1_000_000:06d}" + "Z"


@dataclass(frozen=True)
class Change:
    kind: str
    what: str
    statements: tuple[tuple[str, dict[str, Any]], ...]
    execs: tuple[str, ...]


_UPDATE = "UPDATE stagehold_ledger SET {col} = :v WHERE execution_id = :e AND seq = :s"
_DELETE = "DELETE FROM stagehold_ledger WHERE execution_id = :e AND seq = :s"
_INSERT = (
    "INSERT INTO stagehold_ledger (execution_id, seq, ts, kind, actor, body, prev_hash, hash) "
    "VALUES (:execution_id, :seq, :ts, :kind, :actor, :body, :prev_hash, :hash)"
)


def _rowdict(r: Row) -> dict[str, Any]:
    return dict(r.__dict__)


def _rewrite(rows: Sequence[Row], start: int) -> list[tuple[str, dict[str, Any]]]:
    """Re-hash rows[start:] in order with correct links, as a forger would after editing rows[start]."""
    out = []
    prev = rows[start - 1].hash if start > 0 else GENESIS_HASH
    for r in rows[start:]:
        forged = Row(r.execution_id, r.seq, r.ts, r.kind, r.actor, r.body, prev, "").sealed()
        out.append((_DELETE, {"e": r.execution_id, "s": r.seq}))
        out.append((_INSERT, _rowdict(forged)))
        prev = forged.hash
    return out


def make_change(ledgers: dict[str, list[Row]], rng: random.Random) -> Change:
    eid = rng.choice(sorted(ledgers))
    rows = ledgers[eid]
    n = len(rows)
    kind = rng.choices(
        ["modify", "delete", "reorder", "insert", "truncate", "rewrite"], weights=[40, 12, 12, 12, 12, 12]
    )[0]
    if kind == "modify":
        r = rows[rng.randrange(n)]
        col = rng.choice([*COLUMNS, "body", "body", "seq", "execution_id"])
        key = {"e": eid, "s": r.seq}
        if col == "body":
            for _ in range(20):
                new, how = _edit_body(r.body, rng)
                if _semantic(new, r.body):
                    break
            return Change("modify: " + how, how, ((_UPDATE.format(col="body"), {**key, "v": new}),), (eid,))
        if col == "ts":
            return Change(
                "modify: time",
                "time changed",
                ((_UPDATE.format(col="ts"), {**key, "v": _ts_changed(r.ts, rng)}),),
                (eid,),
            )
        if col == "kind":
            v = rng.choice([k for k in _KINDS if k != r.kind])
            return Change("modify: kind", "kind changed", ((_UPDATE.format(col="kind"), {**key, "v": v}),), (eid,))
        if col == "actor":
            v = rng.choice([a for a in _ACTORS if a != r.actor])
            return Change("modify: actor", "actor changed", ((_UPDATE.format(col="actor"), {**key, "v": v}),), (eid,))
        if col in ("prev_hash", "hash"):
            return Change(
                f"modify: {col}",
                f"{col} changed",
                ((_UPDATE.format(col=col), {**key, "v": _hexflip(getattr(r, col), rng)}),),
                (eid,),
            )
        if col == "seq":
            moved_to = n + rng.randint(1, 50)
            update = (_UPDATE.format(col="seq"), {**key, "v": moved_to})
            return Change("modify: seq", "seq changed", (update,), (eid,))
        other = rng.choice([e for e in ledgers if e != eid])
        move = "UPDATE stagehold_ledger SET execution_id = :o, seq = :n WHERE execution_id = :e AND seq = :s"
        return Change(
            "modify: execution",
            "row moved to another execution",
            ((move, {**key, "o": other, "n": len(ledgers[other]) + 1}),),
            (eid, other),
        )
    if kind == "delete":
        r = rows[rng.randrange(n)]
        return Change(
            "delete",
            "row deleted" + (" (the last)" if r.seq == n else ""),
            ((_DELETE, {"e": eid, "s": r.seq}),),
            (eid,),
        )
    if kind == "reorder":
        i, j = rng.sample(range(n), 2)
        a, b = rows[i], rows[j]
        stmts = []
        for dst, src in ((a, b), (b, a)):
            stmts.append(
                (
                    "UPDATE stagehold_ledger SET ts = :ts, kind = :kind, actor = :actor, body = :body, "
                    "prev_hash = :prev_hash, hash = :hash WHERE execution_id = :e AND seq = :s",
                    {
                        "e": eid,
                        "s": dst.seq,
                        "ts": src.ts,
                        "kind": src.kind,
                        "actor": src.actor,
                        "body": src.body,
                        "prev_hash": src.prev_hash,
                        "hash": src.hash,
                    },
                )
            )
        return Change("reorder", f"rows {a.seq} and {b.seq} swapped", tuple(stmts), (eid,))
    if kind == "insert":
        k = rng.randint(1, n)  # before the head: the forged row takes seq k, later rows move up
        template = rows[rng.randrange(n)]
        prev = rows[k - 2].hash if k >= 2 else GENESIS_HASH
        body = json.loads(template.body)
        if isinstance(body, dict) and rng.random() < 0.5:
            body["reason"] = "forged"
        forged = Row(eid, k, rows[k - 1].ts, template.kind, template.actor, _dumps(body), prev, "").sealed()
        shift: list[tuple[str, dict[str, Any]]] = [
            (
                "UPDATE stagehold_ledger SET seq = seq + 100000 WHERE execution_id = :e AND seq >= :k",
                {"e": eid, "k": k},
            ),
            ("UPDATE stagehold_ledger SET seq = seq - 99999 WHERE execution_id = :e AND seq >= 100000", {"e": eid}),
            (_INSERT, _rowdict(forged)),
        ]
        return Change("insert", f"forged row inserted at seq {k}", tuple(shift), (eid,))
    if kind == "truncate":
        t = rng.randint(1, n) if rng.random() < 0.1 else rng.randint(1, min(5, n))
        cut = "DELETE FROM stagehold_ledger WHERE execution_id = :e AND seq > :k"
        return Change("truncate", f"last {t} row(s) truncated", ((cut, {"e": eid, "k": n - t}),), (eid,))
    # rewrite: edit one row's body, then re-hash it and everything after it
    start = rng.randrange(n)
    edited = list(rows)
    for _ in range(20):
        new, _how = _edit_body(rows[start].body, rng)
        try:
            json.loads(new)
        except ValueError:
            continue
        if _semantic(new, rows[start].body):
            break
    r = rows[start]
    edited[start] = Row(r.execution_id, r.seq, r.ts, r.kind, r.actor, new, r.prev_hash, r.hash)
    return Change(
        "rewrite and re-hash",
        f"row {r.seq} rewritten and {n - start} row(s) re-hashed",
        tuple(_rewrite(edited, start)),
        (eid,),
    )


# ---------------------------------------------------------------- verifying


def _detects(view: SqlLedgerStore, execs: Sequence[str], heads: dict[str, tuple[int, str]]) -> tuple[bool, bool]:
    """(caught against the saved heads, caught by the chain alone), as ``ledger verify`` would see it."""
    caught = False
    for eid in execs:
        try:
            entries = view.read(eid)
        except CorruptEntry:
            return True, True
        result = verify_chain(entries, eid, heads[eid])
        if result.ok:
            continue
        if "head" not in result.reason and not result.reason.startswith("truncated"):
            return True, True  # a broken link, gap or hash: the chain alone shows it
        caught = True
        if not verify_chain(entries, eid).ok:
            return True, True
    return caught, False


def _backend(
    backend: str, url: str, workdir: Path, count: int, seed: int
) -> tuple[list[Violation], int, dict[str, int], dict[str, int]]:
    ledgers = _build(url, workdir)
    heads = {eid: (rows[-1].seq, rows[-1].hash) for eid, rows in ledgers.items()}
    rng = random.Random(f"{seed}-{backend}")
    rec = Recorder()
    kinds: Counter[str] = Counter()
    figures: Counter[str] = Counter()
    store = SqlLedgerStore(url)
    is_pg = store.is_postgres
    try:
        with store.engine.connect() as conn:
            for n in range(count):
                change = make_change(ledgers, rng)
                trans = conn.begin()
                try:
                    for sql, params in change.statements:
                        conn.execute(text(sql), params)
                    view = _InTransaction(conn, is_pg)
                    caught, alone = _detects(view, change.execs, heads)
                    if alone:
                        figures["caught without the head"] += 1
                finally:
                    trans.rollback()
                rec.trial_done()
                kinds[change.kind] += 1
                if not caught:
                    rec.add(
                        f"{backend}-{n + 1}", "tampering detected", f"{change.what} in {change.execs[0]} went unnoticed"
                    )
                if n % 250 == 0:
                    clean = _InTransaction(conn, is_pg)
                    with conn.begin():
                        if _detects(clean, sorted(ledgers), heads)[0]:
                            rec.add(f"{backend}-{n + 1}", "no false alarm", "the untouched ledger fails verification")
    finally:
        store.close()
    return rec.violations, rec.trials, dict(kinds), dict(figures)


def _pg_database() -> tuple[str, Callable[[], None]]:
    import psycopg
    from psycopg import sql

    name = f"stagehold_reliability_{secrets.token_hex(4)}"
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))

    def drop() -> None:
        with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))

    return PG_URL.format(name=name), drop


def run(size: Size, workdir: Path) -> list[FamilyResult]:
    started = time.monotonic()
    workdir.mkdir(parents=True, exist_ok=True)
    per_backend = size.pick(300, 5_000)
    rec = Recorder()
    kinds: Counter[str] = Counter()
    figures: Counter[str] = Counter()
    trials = 0
    pg_url, drop = _pg_database()
    backends = {"sqlite": f"sqlite:///{workdir / 'ledger.db'}", "postgresql": pg_url}
    try:
        with ProcessPoolExecutor(max_workers=2, mp_context=multiprocessing.get_context("spawn")) as pool:
            futures = {
                name: pool.submit(_backend, name, url, workdir / name, per_backend, size.seed)
                for name, url in backends.items()
            }
            done: dict[str, int] = {}
            for name, future in futures.items():
                violations, n, k, f = future.result()
                for v in violations:
                    rec.add(v.trial, v.invariant, v.detail)
                trials += n
                done[name] = n
                kinds.update(k)
                figures.update(f)
    finally:
        drop()
    notes = [
        "per backend: " + ", ".join(f"{name} {n:,}" for name, n in done.items()),
        "changes: " + ", ".join(f"{k} {n:,}" for k, n in sorted(kinds.items())),
        f"{figures.get('caught without the head', 0):,} caught by the chain alone; the rest (truncations, "
        "re-hashed rewrites, a deleted last row) only against the saved head",
    ]
    notes.append(
        f"ledgers: {', '.join(SCENARIOS)} (rehearsals of the crash drill), each with a saved head; every change is "
        "made inside a transaction that is rolled back, and the untouched ledgers are re-verified every 250 changes"
    )
    return [rec.result("tamper", "Ledger tampering", "modifications", INVARIANTS, notes, size, started, trials=trials)]
