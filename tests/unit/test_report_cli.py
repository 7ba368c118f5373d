"""``stagehold report`` through ``bot.cli.main``: options, outputs, exit codes, Slack card times.

The ledger holds two ceremonial runs written by the real engine (see ``test_review``): eight
releases, six of them within a minute of their card, every transition linked.
"""

from __future__ import annotations

import json
import shutil
import sqlite3
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from bot import exits
from bot.cli import main
from bot.commands.report import parse_since
from bot.settings import SettingsError, load_settings
from execution import events as ev
from handlers.storage import SlackStore
from ledger.sql import SqlLedgerStore
from tests.fakes import FakeClock, Rig
from tests.unit.test_review import CEREMONY, released_run

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def written(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[str]]:
    path = tmp_path_factory.mktemp("report") / "ledger.db"
    ids = []
    for start in (datetime(2026, 11, 16, 9, 0, tzinfo=UTC), datetime(2026, 11, 27, 9, 0, tzinfo=UTC)):
        rig = Rig(path, clock=FakeClock(start))
        try:
            rig.start(mode="rehearsal")
            released_run(rig, CEREMONY)
            ids.append(rig.eid)
        finally:
            rig.close()
    return path, ids


@pytest.fixture
def ledger(written: tuple[Path, list[str]], tmp_path: Path) -> tuple[str, Path, list[str]]:
    """A copy of the written ledger that this test may change."""
    path = tmp_path / "ledger.db"
    shutil.copyfile(written[0], path)
    return f"sqlite:///{path}", path, written[1]


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_markdown_on_standard_output(capsys: pytest.CaptureFixture[str], ledger: tuple[str, Path, list[str]]) -> None:
    url, _, ids = ledger
    code, out, err = run(capsys, "report", "--db", url)
    assert code == exits.OK, err
    assert out.startswith("# Checkpoint review\n")
    assert "**2** executions (0 live, 2 rehearsals)" in out
    assert "- Possibly unreviewed (released within 1 min of the card): **6** of 8 (75%)" in out
    assert "| U01DANA | 6 | 75% | 5.0 s · 8.0 s | 6 | 0 |" in out
    assert "Lineage: **8 of 8** transitions (100.0%; target 100%)" in out
    assert "Time in hold (ended holds): median **5.0 s**, p90 **6 min 48 s**" in out
    assert f"| `{ids[0]}` | H1 | `canary-25` | protected | U01DANA | 3.0 s | hold opened |" in out
    assert "![" not in out  # charts are linked only from the files --out writes


def test_json_since_and_change(capsys: pytest.CaptureFixture[str], ledger: tuple[str, Path, list[str]]) -> None:
    url, _, ids = ledger
    code, out, _ = run(capsys, "report", "--db", url, "--json", "--since", "2026-11-20")
    assert code == exits.OK
    data = json.loads(out)
    assert [x["execution"] for x in data["executions"]["items"]] == [ids[1]]
    assert data["filters"]["since"] == "2026-11-20T00:00:00.000000Z"
    assert data["releases"]["fast"] == 3 and data["evidence"]["lineage_pct"] == 100.0
    code, out, _ = run(capsys, "report", "--db", url, "--json", "--change", "TRS-*")
    assert code == exits.OK and json.loads(out)["executions"]["total"] == 0
    code, out, _ = run(capsys, "report", "--db", url, "--json", "--change", "CHG-2041", "--fast-release", "4")
    assert json.loads(out)["releases"]["fast"] == 2


def test_the_fast_release_default_is_the_setting(
    capsys: pytest.CaptureFixture[str], ledger: tuple[str, Path, list[str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    url, _, _ = ledger
    monkeypatch.setenv("STAGEHOLD_REPORT_FAST_RELEASE", "600")
    code, out, _ = run(capsys, "report", "--db", url, "--json")
    assert code == exits.OK and json.loads(out)["releases"]["fast"] == 8
    monkeypatch.setenv("STAGEHOLD_REPORT_FAST_RELEASE", "soon")
    code, _, err = run(capsys, "report", "--db", url)
    assert code == exits.INVALID and "STAGEHOLD_REPORT_FAST_RELEASE" in err


def test_out_writes_markdown_json_and_charts(
    capsys: pytest.CaptureFixture[str], ledger: tuple[str, Path, list[str]], tmp_path: Path
) -> None:
    url, _, _ = ledger
    out_dir = tmp_path / "review"
    code, out, err = run(capsys, "report", "--db", url, "--out", str(out_dir))
    assert code == exits.OK, err
    md = (out_dir / "report.md").read_text(encoding="utf-8")
    for name in ("outcomes-per-week", "time-in-hold", "release-latency"):
        png = out_dir / "charts" / f"{name}.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000
        assert f"](charts/{name}.png)" in md
    assert json.loads((out_dir / "report.json").read_text(encoding="utf-8"))["releases"]["total"] == 8
    assert "wrote " in err and str(out_dir / "report.md") in err
    assert out.startswith("# Checkpoint review")


def test_the_hold_cards_slack_delivery_time_is_used(
    capsys: pytest.CaptureFixture[str], ledger: tuple[str, Path, list[str]]
) -> None:
    url, _, ids = ledger
    store = SqlLedgerStore(url)
    try:
        opened = next(e.ts for e in store.read(ids[0]) if e.kind == ev.HOLD_OPENED and e.body["hold"] == "H1")
        slack = SlackStore(store.engine)
        slack.create_thread(ids[0], "C0CHANGES")
        delivered = opened + timedelta(seconds=1)
        slack.save_message(ids[0], "hold:H1", "C0CHANGES", f"{delivered.timestamp():.6f}", None)
    finally:
        store.close()
    code, out, _ = run(capsys, "report", "--db", url, "--json")
    assert code == exits.OK
    data = json.loads(out)
    h1 = next(x for x in data["releases"]["items"] if x["execution"] == ids[0] and x["hold"] == "H1")
    assert (h1["basis"], h1["latency_s"]) == ("slack", 2.0)
    assert data["releases"]["shown_basis"] == {"slack": 1, "opened": 7}


def test_an_execution_whose_chain_does_not_verify_is_left_out_with_exit_1(
    capsys: pytest.CaptureFixture[str], ledger: tuple[str, Path, list[str]]
) -> None:
    url, path, ids = ledger
    with sqlite3.connect(path) as conn:
        conn.execute(
            "UPDATE stagehold_ledger SET actor = 'U99EVIL' WHERE execution_id = ? AND kind = ?",
            (ids[0], ev.RELEASE_GRANTED),
        )
    conn.close()
    code, out, err = run(capsys, "report", "--db", url, "--json")
    assert code == exits.TAMPERED
    data = json.loads(out)
    assert [x["execution"] for x in data["executions"]["items"]] == [ids[1]]
    assert data["executions"]["excluded"][0]["execution"] == ids[0]
    assert "chain does not verify at seq" in data["executions"]["excluded"][0]["reason"]
    assert f"left out {ids[0]}" in err
    assert "U99EVIL" not in json.dumps(data["releases"])


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--since", "last tuesday"], "--since: expected YYYY-MM-DD, an ISO 8601 time or a duration such as 7d"),
        (["--fast-release", "-1"], "--fast-release: expected a number of seconds (0 or more)"),
        (["--fast-release", "nan"], "--fast-release: expected a number of seconds"),
        (["--change", " "], "--change: give a change id or a shell pattern"),
    ],
)
def test_bad_options_exit_2(
    capsys: pytest.CaptureFixture[str], ledger: tuple[str, Path, list[str]], argv: list[str], message: str
) -> None:
    url, _, _ = ledger
    code, out, err = run(capsys, "report", "--db", url, *argv)
    assert code == exits.INVALID and out == ""
    assert message in err and "Traceback" not in err


def test_a_missing_database_or_unwritable_output_exits_2(
    capsys: pytest.CaptureFixture[str], ledger: tuple[str, Path, list[str]], tmp_path: Path
) -> None:
    code, _, err = run(capsys, "report", "--db", f"sqlite:///{tmp_path / 'nope.db'}")
    assert code == exits.INVALID and "database file not found" in err
    blocker = tmp_path / "file"
    blocker.write_text("x")
    code, _, err = run(capsys, "report", "--db", ledger[0], "--out", str(blocker / "sub"))
    assert code == exits.INVALID and "cannot write" in err


def test_since_accepts_dates_times_and_durations() -> None:
    now = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
    assert parse_since("2026-11-23", now) == datetime(2026, 11, 23, tzinfo=UTC)
    assert parse_since("2026-11-23T09:30:00Z", now) == datetime(2026, 11, 23, 9, 30, tzinfo=UTC)
    assert parse_since("2026-11-23T10:30:00+01:00", now) == datetime(2026, 11, 23, 9, 30, tzinfo=UTC)
    assert parse_since("2026-11-23T09:30:00", now) == datetime(2026, 11, 23, 9, 30, tzinfo=UTC)
    assert parse_since("7d", now) == datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
    assert parse_since("12h", now) == datetime(2026, 11, 30, 0, 0, tzinfo=UTC)


def test_the_command_line_starts_without_matplotlib_or_slack(ledger: tuple[str, Path, list[str]]) -> None:
    script = (
        "import sys\n"
        "from bot.cli import main\n"
        f"code = main(['report', '--db', {ledger[0]!r}, '--json'])\n"
        "loaded = [m for m in ('matplotlib', 'slack_sdk', 'slack_bolt') if m in sys.modules]\n"
        "print('LOADED', loaded, code, file=sys.stderr)\n"
    )
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert "LOADED [] 0" in done.stderr, done.stderr


def test_report_settings_are_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STAGEHOLD_REPORT_PERIOD", "24h")
    assert load_settings().report_period_s == 86400.0
    for bad in ("soon", "0d"):
        monkeypatch.setenv("STAGEHOLD_REPORT_PERIOD", bad)
        with pytest.raises(SettingsError, match="STAGEHOLD_REPORT_PERIOD"):
            load_settings()
