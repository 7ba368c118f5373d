"""Canonical encoding, hashing and chain verification (pure, in memory)."""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import pytest

from ledger.chain import GENESIS_HASH, canonical_json, entry_hash, format_ts, parse_ts, seal, verify_chain
from ledger.entry import Entry, NewEntry

T0 = datetime(2026, 11, 28, 22, 0, 0, tzinfo=UTC)
EXEC = "CHG-2041-r1"

Verifier = Callable[[list[str]], tuple[bool, int | None]]


def chain(n: int, execution: str = EXEC) -> list[Entry]:
    out: list[Entry] = []
    prev = GENESIS_HASH
    for i in range(1, n + 1):
        body = {"n": i, "note": "ünïcode ✓", "ratio": i / 10}
        e = seal(execution, i, NewEntry("stage.entered", "role:executor", body, T0 + timedelta(seconds=i)), prev)
        out.append(e)
        prev = e.hash
    return out


def export_lines(entries: list[Entry]) -> list[str]:
    return [json.dumps(e.to_json(), ensure_ascii=False) for e in entries]


# ---------------------------------------------------------------- canonical encoding


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ({"b": 1, "a": 2}, b'{"a":2,"b":1}'),
        ({"a": [1, 2, {"d": None, "c": True}]}, b'{"a":[1,2,{"c":true,"d":null}]}'),
        ({"B": 1, "a": 2, "_": 3}, b'{"B":1,"_":3,"a":2}'),  # code-point order, not case-folded
        ({"name": "Zoë ✓ 名前"}, '{"name":"Zoë ✓ 名前"}'.encode()),
        ({"q": 'say "hi"\n'}, b'{"q":"say \\"hi\\"\\n"}'),
        ({"x": 0.1}, b'{"x":0.1}'),
        ({"x": 1.0}, b'{"x":1.0}'),
        ({"x": 1e22}, b'{"x":1e+22}'),
        ({"x": 2.5e-7}, b'{"x":2.5e-07}'),
        ({"x": 12345678901234567890}, b'{"x":12345678901234567890}'),
        ({"x": -0}, b'{"x":0}'),
        ({"x": False}, b'{"x":false}'),
        ({"t": (1, 2)}, b'{"t":[1,2]}'),
        ([], b"[]"),
        ("text", b'"text"'),
    ],
)
def test_canonical_encoding(value: Any, expected: bytes) -> None:
    assert canonical_json(value) == expected


def test_floats_are_shortest_round_trip() -> None:
    for x in (0.1, 1 / 3, 2**-1074, 1.7976931348623157e308, 123456.789):
        encoded = canonical_json(x)
        assert float(encoded) == x
        assert encoded == repr(x).encode()


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_nan_and_infinity_refused(bad: float) -> None:
    with pytest.raises(TypeError, match="NaN and infinity"):
        canonical_json({"deep": [{"x": bad}]})


@pytest.mark.parametrize(
    "bad",
    [
        pytest.param({"x": object()}, id="object"),
        pytest.param({"x": {1, 2}}, id="set"),
        pytest.param({"x": b"bytes"}, id="bytes"),
        pytest.param({"x": Decimal("1.5")}, id="decimal"),
        pytest.param({"x": datetime(2026, 1, 1, tzinfo=UTC)}, id="datetime"),
        pytest.param({1: "int key"}, id="int-key"),
        pytest.param({"a": {(1, 2): 3}}, id="tuple-key"),
    ],
)
def test_non_json_refused(bad: Any) -> None:
    with pytest.raises(TypeError):
        canonical_json(bad)


def test_timestamp_format() -> None:
    assert format_ts(T0) == "2026-11-28T22:00:00.000000Z"
    assert format_ts(datetime(2026, 11, 28, 23, 30, 5, 7, tzinfo=timezone(timedelta(hours=1, minutes=30)))) == (
        "2026-11-28T22:00:05.000007Z"
    )
    assert parse_ts("2026-11-28T22:00:00.000000Z") == T0
    with pytest.raises(ValueError, match="timezone-aware"):
        format_ts(datetime(2026, 11, 28, 22, 0))
    with pytest.raises(ValueError):
        parse_ts("2026-11-28 22:00:00")


# ---------------------------------------------------------------- hashing and sealing


def test_hash_is_deterministic_and_documented() -> None:
    args = (EXEC, 1, "2026-11-28T22:00:00.000000Z", "hold.opened", "role:verifier", {"b": 1, "a": [0.5]}, GENESIS_HASH)
    assert entry_hash(*args) == entry_hash(*args)
    payload = (
        b'{"actor":"role:verifier","body":{"a":[0.5],"b":1},"execution":"CHG-2041-r1","kind":"hold.opened",'
        b'"prev":"' + GENESIS_HASH.encode() + b'","seq":1,"ts":"2026-11-28T22:00:00.000000Z"}'
    )
    assert entry_hash(*args) == hashlib.sha256(payload).hexdigest()
    # Key order of the body does not matter; its content does.
    assert entry_hash(EXEC, 1, args[2], args[3], args[4], {"a": [0.5], "b": 1}, GENESIS_HASH) == entry_hash(*args)
    assert entry_hash(EXEC, 1, args[2], args[3], args[4], {"a": [0.5], "b": 2}, GENESIS_HASH) != entry_hash(*args)


def test_every_covered_field_changes_the_hash() -> None:
    base = dict(
        execution_id=EXEC, seq=1, ts="2026-11-28T22:00:00.000000Z", kind="k", actor="a", body={}, prev_hash=GENESIS_HASH
    )
    digest = entry_hash(**base)  # type: ignore[arg-type]
    for field, other in [
        ("execution_id", "other"),
        ("seq", 2),
        ("ts", "2026-11-28T22:00:00.000001Z"),
        ("kind", "k2"),
        ("actor", "b"),
        ("body", {"x": 1}),
        ("prev_hash", "1" * 64),
    ]:
        assert entry_hash(**{**base, field: other}) != digest, field  # type: ignore[arg-type]


def test_seal_truncates_time_and_normalises_body() -> None:
    ts = datetime(2026, 11, 28, 23, 0, 0, 999999, tzinfo=timezone(timedelta(hours=1)))
    e = seal(EXEC, 1, NewEntry("k", "a", {"t": (1, 2)}, ts), GENESIS_HASH)
    assert e.ts == datetime(2026, 11, 28, 22, 0, 0, 999999, tzinfo=UTC)
    assert e.body == {"t": [1, 2]}
    assert e.to_json()["ts"] == "2026-11-28T22:00:00.999999Z"


# ---------------------------------------------------------------- verify_chain


def test_intact_chain_verifies() -> None:
    entries = chain(5)
    result = verify_chain(entries, EXEC)
    assert (result.ok, result.first_bad_seq, result.checked, result.head_hash) == (True, None, 5, entries[-1].hash)
    assert verify_chain([], EXEC).ok


def _damaged(kind: str) -> tuple[list[Entry], int, str]:
    e = chain(5)
    if kind == "body":
        e[2] = replace(e[2], body={"n": 999})
        return e, 3, "hash does not match content"
    if kind == "actor":
        e[1] = replace(e[1], actor="U99EVIL")
        return e, 2, "hash does not match content"
    if kind == "ts":
        e[3] = replace(e[3], ts=e[3].ts + timedelta(microseconds=1))
        return e, 4, "hash does not match content"
    if kind == "hash":
        e[0] = replace(e[0], hash="a" * 64)
        return e, 1, "hash does not match content"
    if kind == "deleted":
        del e[2]
        return e, 3, "sequence gap: expected 3, found 4"
    if kind == "swapped":
        e[1], e[2] = e[2], e[1]
        return e, 2, "sequence gap: expected 2, found 3"
    if kind == "renumbered":
        e[2] = replace(e[2], seq=2)
        return e, 3, "sequence gap: expected 3, found 2"
    if kind == "broken-link":
        forged = seal(EXEC, 6, NewEntry("k", "a", {}, T0), "b" * 64)
        return [*e, forged], 6, "previous-hash link broken"
    if kind == "foreign":
        other = chain(6, "another-execution")
        return [*e, other[5]], 6, "entry belongs to another execution"
    if kind == "starts-late":
        return e[1:], 1, "sequence gap: expected 1, found 2"
    if kind == "nan-body":
        e[4] = replace(e[4], body={"x": math.nan})
        return e, 5, "content has no canonical form"
    raise AssertionError(kind)


@pytest.mark.parametrize(
    "kind",
    [
        "body",
        "actor",
        "ts",
        "hash",
        "deleted",
        "swapped",
        "renumbered",
        "broken-link",
        "foreign",
        "starts-late",
        "nan-body",
    ],
)
def test_verify_names_the_first_bad_seq(kind: str) -> None:
    entries, bad_seq, reason = _damaged(kind)
    result = verify_chain(entries, EXEC)
    assert not result.ok
    assert result.first_bad_seq == bad_seq
    assert reason in result.reason


def test_head_checkpoint() -> None:
    entries = chain(5)
    head = (5, entries[-1].hash)
    assert verify_chain(entries, EXEC, head).ok
    assert verify_chain(chain(7), EXEC, head).ok, "a chain that grew past the checkpoint still verifies"
    # Truncation: the saved head is beyond the end.
    truncated = verify_chain(entries[:3], EXEC, head)
    assert (truncated.ok, truncated.first_bad_seq) == (False, 4)
    assert "truncated" in truncated.reason and "seq 5" in truncated.reason
    # A wholesale, self-consistent rewrite: different content, different head hash at seq 5.
    rewritten = []
    prev = GENESIS_HASH
    for e in entries:
        r = seal(EXEC, e.seq, NewEntry(e.kind, e.actor, {"n": -e.seq}, e.ts), prev)
        rewritten.append(r)
        prev = r.hash
    assert verify_chain(rewritten, EXEC).ok
    result = verify_chain(rewritten, EXEC, head)
    assert (result.ok, result.first_bad_seq, result.reason) == (False, 5, "differs from the saved head checkpoint")
    # Checkpoint at a middle seq.
    assert verify_chain(entries, EXEC, (2, entries[1].hash)).ok
    assert not verify_chain(entries, EXEC, (2, entries[2].hash)).ok


# ---------------------------------------------------------------- independent verifier


def test_independent_verifier_accepts_an_export(independent_verifier: Verifier) -> None:
    lines = export_lines(chain(6))
    assert independent_verifier(lines) == (True, None)


@pytest.mark.parametrize(
    ("edit", "bad_seq"),
    [
        (lambda d: d["body"].update(n=42), 3),
        (lambda d: d.update(actor="U99EVIL"), 3),
        (lambda d: d.update(ts="2026-11-28T22:00:03.000001Z"), 3),
        (lambda d: d.update(prev="0" * 64), 3),
    ],
)
def test_independent_verifier_rejects_a_modified_export(
    independent_verifier: Verifier, edit: Callable[[dict[str, Any]], None], bad_seq: int
) -> None:
    lines = export_lines(chain(5))
    row = json.loads(lines[2])
    edit(row)
    lines[2] = json.dumps(row, ensure_ascii=False)
    assert independent_verifier(lines) == (False, bad_seq)
    result = verify_chain(
        [
            Entry(d["execution"], d["seq"], parse_ts(d["ts"]), d["kind"], d["actor"], d["body"], d["prev"], d["hash"])
            for d in map(json.loads, lines)
        ],
        EXEC,
    )
    assert (result.ok, result.first_bad_seq) == (False, bad_seq), "both verifiers agree"


def test_independent_verifier_rejects_a_dropped_line(independent_verifier: Verifier) -> None:
    lines = export_lines(chain(5))
    del lines[1]
    assert independent_verifier(lines) == (False, 2)
