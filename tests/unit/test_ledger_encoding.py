"""docs/ledger-encoding.md is exact: an implementation written from it alone (tests/ledger_spec.py,
no json.dumps, no float repr) produces the same bytes and hashes as the real encoder on generated
entries, and verifies real exports."""

from __future__ import annotations

import math
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from bot.cli import main
from ledger.chain import GENESIS_HASH, canonical_json, export_line, hashed_bytes, seal, string_token
from ledger.entry import NewEntry
from tests import ledger_spec
from tests.fakes import Rig

DOC = Path(__file__).resolve().parents[2] / "docs" / "ledger-encoding.md"

# Characters each rule treats differently: escapes, other controls, characters never escaped,
# the BMP's private and last code points (they sort after non-BMP in UTF-16, not here), non-BMP.
_TRICKY = st.sampled_from(list('"\\/\b\f\n\r\t\x00\x1b\x1f\x7f\u2028\u2029\ue000\uffffé✓\U0001f6a6\U0010ffff'))
_TEXT = st.text(
    alphabet=st.one_of(_TRICKY, st.characters(blacklist_categories=("Cs",)), st.characters(max_codepoint=0x1F)),
    max_size=12,
)
_FLOATS = st.one_of(
    st.floats(allow_nan=False, allow_infinity=False),
    st.floats(allow_nan=False, allow_infinity=False, allow_subnormal=True, min_value=-1e-300, max_value=1e-300),
    st.integers(-(2**60), 2**60).map(float),  # whole floats: 100.0, 1e+16 ...
    st.integers(-(2**53), 2**53).map(lambda n: n / 4),  # exact quarters: ties between shortest candidates
)
_SCALARS = st.one_of(st.none(), st.booleans(), st.integers(), st.integers(-(10**40), 10**40), _FLOATS, _TEXT)
_VALUES = st.recursive(
    _SCALARS,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(_TEXT, inner, max_size=4)),
    max_leaves=20,
)

TRICKY_FLOATS = [
    0.0,
    -0.0,
    0.1,
    1 / 3,
    100.0,
    25.0,
    1e-4,
    1e-5,
    2.5e-7,
    1e15,
    1e16,
    1.5e16,
    123456789012345678.0,
    1e22,
    1e23,
    9.999999999999999e22,
    5e-324,
    2.2250738585072014e-308,
    2.225073858507201e-308,
    1.7976931348623157e308,
    1466320187977394.75,
    2.0**-1074,
    2.0**1023,
    float(2**53 + 2),
    -1e-7,
]


@pytest.mark.parametrize("x", TRICKY_FLOATS, ids=repr)
def test_tricky_floats_follow_the_spec(x: float) -> None:
    assert ledger_spec.encode_float(x) == canonical_json(x).decode()


@settings(max_examples=3000, deadline=None)
@given(st.floats(allow_nan=False, allow_infinity=False))
def test_every_float_follows_the_spec(x: float) -> None:
    assert ledger_spec.encode_float(x) == canonical_json(x).decode()


@settings(max_examples=600, deadline=None)
@given(_VALUES)
@example({"\ue000": 1, "\U0001f6a6": 2, "a": 3, "\x1f": 4, "": 5, "ab": 6})  # code point order, not UTF-16
@example({"x": '\x00\x1b\x7f\u2028 /\\"\t'})
def test_canonical_encoding_follows_the_spec(value: Any) -> None:
    assert ledger_spec.canonical(value).encode("utf-8") == canonical_json(value)


_ENTRIES = st.fixed_dictionaries(
    {
        "execution": _TEXT,
        "seq": st.integers(1, 10**9),
        "ts": st.datetimes(min_value=datetime(1000, 1, 1), max_value=datetime(9999, 12, 30), timezones=st.just(UTC)),
        "kind": _TEXT,
        "actor": _TEXT,
        "body": st.dictionaries(_TEXT, _VALUES, max_size=5),
        "prev": st.sampled_from([GENESIS_HASH, "ab" * 32]),
    }
)


@settings(max_examples=200, deadline=None)
@given(_ENTRIES)
def test_sealed_hashes_and_export_lines_follow_the_spec(e: dict[str, Any]) -> None:
    sealed = seal(e["execution"], e["seq"], NewEntry(e["kind"], e["actor"], e["body"], e["ts"]), e["prev"])
    fields = sealed.to_json()
    assert ledger_spec.TS_PATTERN.fullmatch(fields["ts"])
    assert ledger_spec.entry_hash(fields) == sealed.hash
    assert ledger_spec.export_line(fields) == export_line(sealed)


@settings(max_examples=200, deadline=None)
@given(_ENTRIES)
def test_hashed_bytes_from_stored_text_are_the_canonical_bytes(e: dict[str, Any]) -> None:
    """Verification's shortcut (the hashed bytes spliced from the stored text, no parsing) builds
    exactly the bytes the spec says the hash covers."""
    sealed = seal(e["execution"], e["seq"], NewEntry(e["kind"], e["actor"], e["body"], e["ts"]), e["prev"])
    fields = sealed.to_json()
    spliced = hashed_bytes(
        sealed.seq,
        fields["ts"],
        string_token(sealed.kind),
        string_token(sealed.actor),
        canonical_json(sealed.body),
        string_token(sealed.execution_id),
        sealed.prev_hash,
    )
    assert spliced == ledger_spec.canonical({k: fields[k] for k in ledger_spec.HASHED_KEYS}).encode("utf-8")


def test_a_lone_surrogate_has_no_canonical_form() -> None:
    with pytest.raises(ledger_spec.NoCanonicalForm):
        ledger_spec.canonical({"reason": "a\ud800b"})
    with pytest.raises(TypeError, match="lone surrogate"):
        canonical_json({"reason": "a\ud800b"})
    with pytest.raises(TypeError, match="lone surrogate"):
        canonical_json({"\udfff": 1})


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_nan_and_infinity_have_no_canonical_form_in_the_spec(bad: float) -> None:
    with pytest.raises(ledger_spec.NoCanonicalForm):
        ledger_spec.canonical({"x": [bad]})


def test_reading_an_export_a_fraction_or_exponent_makes_a_float() -> None:
    line = '{"a":1e2,"b":100,"c":1E-5,"d":-0}'
    assert ledger_spec.canonical(ledger_spec.parse_export_line(line)) == '{"a":100.0,"b":100,"c":1e-05,"d":0}'


def _doc_block(after: str) -> str:
    text = DOC.read_text(encoding="utf-8")
    found = re.search(re.escape(after) + r".*?```json\n(.*?)\n```", text, re.S)
    assert found, f"no code block after {after!r} in {DOC.name}"
    return found.group(1)


def test_the_worked_example_in_the_spec_is_what_the_encoder_writes() -> None:
    body = {
        "reason": "tokenizer at 100.0% “p99” ↑\tcheck 🚦",
        "at": "2026-11-28T22:00:00Z",
        "ratio": 0.1,
        "max": 100.0,
        "min": 0.00001,
        "count": 3,
        "Zone": None,
        "ok": True,
    }
    ts = datetime(2026, 11, 28, 22, 0, 5, 123456, tzinfo=UTC)
    sealed = seal("CHG-2041-20261128T220000Z", 1, NewEntry("hold.requested", "U06SRE", body, ts), GENESIS_HASH)
    hashed = _doc_block("Canonical encoding (the hashed bytes")
    fields = sealed.to_json()
    assert ledger_spec.canonical({k: fields[k] for k in ledger_spec.HASHED_KEYS}) == hashed
    assert f"Hash: `{sealed.hash}`" in DOC.read_text(encoding="utf-8")
    assert _doc_block("Export line:") + "\n" == export_line(sealed) == ledger_spec.export_line(fields)


def test_a_real_export_verifies_from_the_spec_alone(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rig = Rig(tmp_path / "ledger.db")
    try:
        rig.start()
        rig.run_to_stage("canary-25")
        rig.engine.hold(rig.eid, "U06SRE", "parity drift “p99” ↑\t🚦 \x1b[0m check")
        rig.run()
        rig.clock.advance(30)
        rig.fake.signals["error_rate"] = 0.3
        rig.engine.rollback(rig.eid, "U03RESP", "parity drift")
        rig.run()
        eid, url = rig.eid, rig.url
    finally:
        rig.close()
    out = tmp_path / "export.jsonl"
    assert main(["ledger", "export", eid, "--db", url, "--out", str(out)]) == 0
    raw = out.read_bytes()
    ok, detail = ledger_spec.verify_export(raw)
    assert ok, detail
    text = raw.decode("utf-8")
    # The export really exercises the rules: whole floats, body times as written, escapes, non-BMP.
    assert '"max_blast_radius":100.0' in text
    assert '"at":"2026-11-27T16:02:00Z"' in text
    assert "\\t🚦 \\u001b[0m" in text
    # A negative control: one changed byte in a body is caught.
    tampered = raw.replace(b'"max_blast_radius":100.0', b'"max_blast_radius":100', 1)
    assert ledger_spec.verify_export(tampered)[0] is False
    assert ledger_spec.verify_export(raw.replace(b"\n", b"\r\n"))[0] is False
    capsys.readouterr()


def test_timestamps_are_utc_with_six_digits() -> None:
    ts = datetime(2026, 11, 28, 23, 0, 0, tzinfo=UTC) + timedelta(microseconds=7)
    sealed = seal("X", 1, NewEntry("k", "a", {}, ts), GENESIS_HASH)
    assert sealed.to_json()["ts"] == "2026-11-28T23:00:00.000007Z"
