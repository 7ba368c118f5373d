"""Every documented exit code, produced the way an operator's script meets it.

One case per code in ``bot.exits`` (the README's table; ``test_cli_reference`` keeps the two in
agreement): the case runs the real command against a real rehearsal and checks the code and the
line that explains it.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from bot import exits
from bot.cli import main
from bot.commands import observe
from ledger.sql import SqlLedgerStore

REPO = Path(__file__).resolve().parents[2]

Case = Callable[[Path, Path, pytest.CaptureFixture[str], pytest.MonkeyPatch], tuple[int, str]]


def _cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out + err


def _rehearse(package: Path, tmp: Path, capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    db = f"sqlite:///{tmp / 'ledger.db'}"
    code, text = _cli(capsys, "rehearse", str(package), "--db", db, "--out", str(tmp / "out"), "--quiet", *args)
    store = SqlLedgerStore(db)
    try:
        return code, text, store.executions()[-1]
    finally:
        store.close()


def completed(quick: Path, tmp: Path, capsys: pytest.CaptureFixture[str], mp: pytest.MonkeyPatch) -> tuple[int, str]:
    code, text, _ = _rehearse(quick, tmp, capsys, "--auto-release")
    return code, text


def export_cut_mid_line(
    quick: Path, tmp: Path, capsys: pytest.CaptureFixture[str], mp: pytest.MonkeyPatch
) -> tuple[int, str]:
    _rehearse(quick, tmp, capsys, "--auto-release")
    export = (tmp / "out" / "ledger.jsonl").read_bytes()
    cut = tmp / "cut.jsonl"
    cut.write_bytes(export[: export.index(b"\n", 2000) + 120])  # a few entries, then half of the next
    return _cli(capsys, "ledger", "verify-file", str(cut))


def as_not_utf8(quick: Path, tmp: Path, capsys: pytest.CaptureFixture[str], mp: pytest.MonkeyPatch) -> tuple[int, str]:
    _, _, eid = _rehearse(quick, tmp, capsys)
    db = f"sqlite:///{tmp / 'ledger.db'}"
    # The real process: bytes that are not UTF-8 on the command line, as a terminal would pass them.
    done = subprocess.run(
        [sys.executable, "-m", "bot.cli", "release", eid, "--db", db, "--as", b"U01\xffDANA"],
        cwd=REPO,
        capture_output=True,
        timeout=120,
    )
    return done.returncode, done.stderr.decode("utf-8", "replace")


def outcome_unknown(
    quick: Path, tmp: Path, capsys: pytest.CaptureFixture[str], mp: pytest.MonkeyPatch
) -> tuple[int, str]:
    code, text, _ = _rehearse(quick, tmp, capsys, "--fault", "readback-fail@canary-5")
    return code, text + (tmp / "out" / "packet.json").read_text(encoding="utf-8")


def rolled_back(quick: Path, tmp: Path, capsys: pytest.CaptureFixture[str], mp: pytest.MonkeyPatch) -> tuple[int, str]:
    code, text, _ = _rehearse(quick, tmp, capsys, "--auto-release", "--fault", "error-rate-high@canary-25")
    return code, text


def rollback_failed(
    quick: Path, tmp: Path, capsys: pytest.CaptureFixture[str], mp: pytest.MonkeyPatch
) -> tuple[int, str]:
    faults = ("--fault", "rollback-fail", "--fault", "error-rate-high@canary-25")
    code, text, _ = _rehearse(quick, tmp, capsys, "--auto-release", *faults)
    return code, text


def abandoned(quick: Path, tmp: Path, capsys: pytest.CaptureFixture[str], mp: pytest.MonkeyPatch) -> tuple[int, str]:
    _, _, eid = _rehearse(quick, tmp, capsys)
    db = f"sqlite:///{tmp / 'ledger.db'}"
    assert _cli(capsys, "abandon", eid, "--as", "U05OPS", "--reason", "nobody will finish it", "--db", db)[0] == 0
    return _cli(capsys, "watch", eid, "--db", db)


def internal(quick: Path, tmp: Path, capsys: pytest.CaptureFixture[str], mp: pytest.MonkeyPatch) -> tuple[int, str]:
    def broken(args: argparse.Namespace) -> int:
        raise RuntimeError("token=abc123 went missing")

    mp.setattr(observe, "cmd_list", broken)
    return _cli(capsys, "list", "--db", f"sqlite:///{tmp / 'ledger.db'}")


def deadline(quick: Path, tmp: Path, capsys: pytest.CaptureFixture[str], mp: pytest.MonkeyPatch) -> tuple[int, str]:
    _, _, eid = _rehearse(quick, tmp, capsys)
    db = f"sqlite:///{tmp / 'ledger.db'}"
    return _cli(capsys, "watch", eid, "--db", db, "--through-holds", "--timeout", "200ms", "--interval", "0.05")


def interrupted(quick: Path, tmp: Path, capsys: pytest.CaptureFixture[str], mp: pytest.MonkeyPatch) -> tuple[int, str]:
    def ctrl_c(args: argparse.Namespace) -> int:
        raise KeyboardInterrupt

    mp.setattr(observe, "cmd_list", ctrl_c)
    return _cli(capsys, "list", "--db", f"sqlite:///{tmp / 'ledger.db'}")


CASES: dict[int, tuple[Case, str]] = {
    exits.OK: (completed, ": COMPLETED (exit 0)"),
    exits.TAMPERED: (export_cut_mid_line, "truncated: the last line ends mid-entry"),
    exits.INVALID: (as_not_utf8, "argument 6 (after --as) is not UTF-8 text: b'U01\\xffDANA'"),
    exits.HELD: (outcome_unknown, '"kind": "ambiguous"'),
    exits.ROLLED_BACK: (rolled_back, ": ROLLED_BACK (exit 4)"),
    exits.NEEDS_HUMAN: (rollback_failed, ": NEEDS_HUMAN (exit 5)"),
    exits.ABANDONED: (abandoned, ": ABANDONED (exit 6)"),
    exits.INTERNAL: (internal, "internal error: RuntimeError: token=*** went missing"),
    exits.TIMED_OUT: (deadline, "(exit 124)"),
    exits.INTERRUPTED: (interrupted, "stagehold: interrupted"),
}


def test_every_documented_code_has_a_case() -> None:
    assert set(CASES) == set(exits.ALL)


@pytest.mark.parametrize("code", sorted(CASES), ids=lambda c: f"{c}-{exits.ALL[c]}")
def test_exit_code(
    code: int, quick: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    case, says = CASES[code]
    got, text = case(quick, tmp_path, capsys, monkeypatch)
    assert got == code, text
    assert says in text, text
