"""Canonical encoding, hashing and chain verification (pure, in memory)."""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable, Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ledger.chain import (
    GENESIS_HASH,
    canonical_json,
    entry_hash,
    format_ts,
    hashed_bytes,
    parse_ts,
    seal,
    string_token,
    verify_canonical,
    verify_chain,
)
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


# ---------------------------------------------------------------- streamed verification


def _items(entries: list[Entry]) -> list[tuple[str, int, str, str, bytes | None, Entry]]:
    return [
        (
            e.execution_id,
            e.seq,
            e.prev_hash,
            e.hash,
            hashed_bytes(
                e.seq,
                format_ts(e.ts),
                string_token(e.kind),
                string_token(e.actor),
                canonical_json(dict(e.body)),
                string_token(e.execution_id),
                e.prev_hash,
            ),
            e,
        )
        for e in entries
    ]


def _never(source: object) -> Entry:
    raise AssertionError(f"decoded {source!r}: the stored text should have been enough")


def test_stored_text_that_matches_is_not_decoded() -> None:
    entries = chain(5)
    result = verify_canonical(_items(entries), EXEC, (3, entries[2].hash), _never)
    assert (result.ok, result.checked, result.head_hash) == (True, 5, entries[-1].hash)


def test_stored_text_that_does_not_match_is_decided_by_the_entry() -> None:
    entries = chain(4)
    items = _items(entries)
    decoded: list[int] = []

    def decode(entry: Entry) -> Entry:
        decoded.append(entry.seq)
        return entry

    # Text spliced differently (as a non-canonical spelling would be): the decoded entry decides, and passes.
    items[1] = (*items[1][:4], b"{}", items[1][5])
    assert verify_canonical(items, EXEC, None, decode).ok
    assert decoded == [2]
    # A body changed behind the hash fails on the decoded entry, with verify_chain's reason.
    forged = replace(entries[2], body={"n": 99})
    items[2] = (*items[2][:4], None, forged)
    result = verify_canonical(items, EXEC, None, decode)
    assert (result.ok, result.first_bad_seq, result.reason) == (False, 3, "hash does not match content")


def test_verification_streams_and_stops_at_the_first_bad_entry() -> None:
    """Entries are taken one at a time: a chain that never ends is still judged at its first fault."""
    good = _items(chain(3))

    def endless() -> Iterator[tuple[str, int, str, str, bytes | None, Entry]]:
        yield from good
        while True:  # past seq 3 every entry is out of sequence
            yield good[0]

    result = verify_canonical(endless(), EXEC, None, _never)
    assert (result.ok, result.first_bad_seq, result.checked) == (False, 4, 3)


@settings(max_examples=300, deadline=None)
@given(
    st.datetimes(
        min_value=datetime(1001, 1, 1),  # strftime writes earlier years without four digits
        max_value=datetime(9999, 12, 30),
        timezones=st.sampled_from([UTC, timezone(timedelta(hours=5, minutes=30))]),
    )
)
def test_timestamps_read_and_write_as_strptime_and_strftime_do(ts: datetime) -> None:
    utc = ts.astimezone(UTC)
    text = format_ts(ts)
    assert text == utc.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    assert parse_ts(text) == datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC) == utc


@pytest.mark.parametrize(
    "text",
    [
        "2026-02-30T00:00:00.000000Z",
        "2026-13-01T00:00:00.000000Z",
        "2026-01-01T24:00:00.000000Z",
        "2026-01-01T00:00:60.000000Z",
        "0000-01-01T00:00:00.000000Z",
        "2026-1-5T1:2:3.5Z",
        "2026-01-01T00:00:00Z",
        "2026-01-01 00:00:00.000000Z",
    ],
)
def test_odd_timestamps_are_read_or_refused_as_strptime_does(text: str) -> None:
    try:
        expected: datetime | None = datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)
    except ValueError:
        expected = None
    try:
        got: datetime | None = parse_ts(text)
    except ValueError:
        got = None
    assert got == expected
