"""What a person reads is readable: JSON not Python reprs, times to the second, every hold kind
explained, preflight and readiness rows told apart, and values that agree with their outcomes."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from bot.cli import main
from execution.hold_kinds import MEANING, meaning
from handlers import cards
from ledger.sql import SqlLedgerStore
from templates import evidence_value, format_time, outcome_word, render

ENGINE = Path(__file__).resolve().parents[2] / "execution"
MICROSECONDS = re.compile(r"\d\d:\d\d:\d\d\.\d{3,}")
PY_REPR = re.compile(r"\{'\w+': |\['|\bNone\b|\bTrue\b|\bFalse\b")


def _rehearse(capsys: pytest.CaptureFixture[str], package: Path, tmp: Path, *faults: str) -> tuple[str, str, str]:
    db = f"sqlite:///{tmp / 'l.db'}"
    args = [a for f in faults for a in ("--fault", f)]
    main(["rehearse", str(package), "--db", db, "--out", str(tmp / "out"), "--auto-release", *args])
    log = capsys.readouterr().out
    store = SqlLedgerStore(db)
    try:
        eid = store.executions()[-1]
    finally:
        store.close()
    return log, db, eid


@pytest.mark.parametrize(
    "faults",
    [("error-rate-degraded@canary-25",), ("no-data@canary-5",), ("readback-fail@canary-5",), ("snapshot-stale",)],
    ids=lambda f: f[0],
)
def test_the_run_log_status_and_packet_read_like_prose(
    quick: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], faults: tuple[str, ...]
) -> None:
    log, db, eid = _rehearse(capsys, quick, tmp_path, *faults)
    main(["status", eid, "--db", db])
    status = capsys.readouterr().out
    packet = (tmp_path / "out" / "packet.md").read_text(encoding="utf-8")
    for name, text in (("run log", log), ("status", status), ("packet", packet)):
        assert not MICROSECONDS.search(text), f"{name}: a time with fractions of a second"
        assert not re.search(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d+Z", text), f"{name}: a raw ledger timestamp"
        assert not PY_REPR.search(text), f"{name}: a Python repr: {PY_REPR.search(text)}"
        assert "no_data" not in text, f"{name}: an outcome written as an identifier"
    entries = [line for line in log.splitlines() if re.match(r"\d\d:\d\d:\d\d #", line)]
    assert entries, log
    for line in log.splitlines():
        opened = re.search(r"HOLD (H\d+) opened \((\w+): (.+)\)$", line)
        if opened:
            assert opened.group(3) == meaning(opened.group(2)) and opened.group(2) in MEANING
    assert "HOLD H" in log
    # Evidence rows say which are preflight and which are the way back.
    gate_rows = [line.split()[0] for line in log.splitlines() if line.startswith("      ")]
    assert {"preflight", "readiness"} <= set(gate_rows)
    assert any(line.startswith("  │   preflight ") for line in log.splitlines()) or "protected" not in log


def test_every_hold_kind_the_engine_opens_is_explained() -> None:
    source = "\n".join(p.read_text(encoding="utf-8") for p in ENGINE.glob("*.py"))
    opened = set(re.findall(r'kind="([a-z_]+)"', source)) | set(re.findall(r'kind, resume = "([a-z_]+)"', source))
    opened |= {"no_data", "stale", "error", "conflicting", "preflight", "readiness_lost", "ambiguous", "not_applied"}
    missing = sorted(k for k in opened if k not in MEANING and k not in ("check", "readiness"))
    assert missing == []
    assert all(8 < len(phrase) <= 90 for phrase in MEANING.values())


@pytest.mark.parametrize(
    ("row", "value", "outcome"),
    [
        ({"outcome": "error", "value": None, "detail": "HTTP 503"}, "error", "error"),
        ({"outcome": "no_data", "value": None}, "no data", "no data"),
        ({"outcome": "no_data", "value": 0.004, "samples": 3}, "0.004", "no data"),
        ({"outcome": "pass", "value": True}, "true", "pass"),
    ],
)
def test_values_agree_with_outcomes_on_cards(row: dict[str, object], value: str, outcome: str) -> None:
    assert evidence_value(row) == value
    assert outcome_word(row["outcome"]) == outcome
    full = {"signal": "error_rate", "kind": "readiness", "condition": "< 0.01", **row}
    fields, _ = cards.evidence_rows([full])
    text = " ".join(fields[0])
    assert f"`{value}`" in text and f"*{outcome.upper()}*" in text
    assert "rollback readiness" in text
    card = render(
        "hold.txt.j2",
        hold={
            "id": "H1",
            "kind": "preflight",
            "stage": "canary-5",
            "reason": "r",
            "results": [{**full, "hold_band": None, "age_s": None, "samples": None}],
            "rollback_path": "undo",
            "required": 1,
            "releasers": {"users": ["U1"], "groups": []},
            "releasable": True,
            "expires_at": "2026-11-29T02:00:00.123456Z",
        },
        meaning=meaning("preflight"),
    )
    assert f"readiness error_rate             {value:<10}" in card
    assert f"→ {outcome}" in card and "expires 2026-11-29 02:00:00 UTC" in card
    assert meaning("preflight") in card


def test_format_time_drops_fractions_and_says_utc() -> None:
    assert format_time("2026-11-29T21:56:01.087354Z") == "2026-11-29 21:56:01 UTC"
    assert format_time("earlier") == "earlier"
