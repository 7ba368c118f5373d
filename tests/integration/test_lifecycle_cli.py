"""``stagehold status | list | watch | abandon`` on real rehearsals (SQLite ledger, sandbox over HTTP).

What each test guards: status never says COMPLETED (or anything) about a ledger that does not
verify; an expired hold is shown expired; a released rehearsal nobody drives is PAUSED, not
RUNNING, with the next step; watch follows a run driven by another thread and exits with its code;
abandon is recorded, reasoned, frees the change, and is refused for live or driven executions.
"""

from __future__ import annotations

import io
import json
import sqlite3
import threading
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from bot import exits
from bot.cli import main
from bot.clock import utc_now
from bot.commands import observe
from execution import events as ev
from execution.sandbox import Sandbox
from ledger.sql import SqlLedgerStore
from tests.fakes import Rig


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    try:
        code = main(list(argv))
    except SystemExit as usage:  # argparse refuses the arguments before any command runs
        code = int(usage.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


def rehearse(capsys: pytest.CaptureFixture[str], package: Path, db: str, *args: str) -> tuple[int, str]:
    code = main(["rehearse", str(package), "--db", db, "--quiet", *args])
    capsys.readouterr()
    store = SqlLedgerStore(db)
    try:
        return code, store.executions()[-1]
    finally:
        store.close()


def count(db_path: Path, execution: str) -> int:
    with sqlite3.connect(db_path) as conn:
        found = conn.execute("SELECT count(*) FROM stagehold_ledger WHERE execution_id = ?", (execution,)).fetchone()
    return int(found[0])


def kinds(db: str, execution: str) -> list[str]:
    store = SqlLedgerStore(db)
    try:
        return [e.kind for e in store.read(execution)]
    finally:
        store.close()


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "ledger.db"


@pytest.fixture
def db(db_path: Path) -> str:
    return f"sqlite:///{db_path}"


# ---------------------------------------------------------------- status on a tampered ledger


def test_status_says_tampered_and_exits_1_instead_of_completed(
    quick: Path, db: str, db_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, eid = rehearse(capsys, quick, db, "--auto-release")
    assert code == exits.OK
    code, out, _ = run(capsys, "status", eid, "--db", db)
    assert code == exits.OK and " · COMPLETED · " in out.splitlines()[0]
    # Someone edits what the read-back of canary-25 saw, after the fact.
    with sqlite3.connect(db_path) as conn:
        conn.execute(
            "UPDATE stagehold_ledger SET body = replace(body, '\"tokenizer\":25', '\"tokenizer\":30') "
            "WHERE execution_id = ? AND kind = 'action.confirmed'",
            (eid,),
        )
    before = count(db_path, eid)
    code, out, _ = run(capsys, "status", eid, "--db", db)
    assert code == exits.TAMPERED
    assert "COMPLETED" not in out
    assert out.splitlines()[0].startswith(f"{eid}  TAMPERED: the ledger does not verify at seq ")
    assert "hash does not match content" in out and "next: do not act on" in out
    code, out, _ = run(capsys, "status", eid, "--json", "--db", db)
    assert code == exits.TAMPERED
    assert json.loads(out)["standing"]["word"] == "TAMPERED"
    code, out, _ = run(capsys, "list", "--db", db)
    assert code == exits.TAMPERED and "TAMPERED" in out
    assert run(capsys, "packet", eid, "--db", db)[0] == exits.TAMPERED
    code, _, err = run(capsys, "abandon", eid, "--as", "U05OPS", "--reason", "x", "--db", db)
    assert code == exits.TAMPERED and "does not verify" in err
    assert count(db_path, eid) == before, "nothing is appended to a chain that does not verify"


# ---------------------------------------------------------------- expired holds


def test_an_expired_hold_shows_as_expired_not_as_open(
    quick: Path, db: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    code, eid = rehearse(capsys, quick, db)  # stops at the protected hold H1; the process ends
    assert code == exits.HELD
    record = json.loads(run(capsys, "status", eid, "--json", "--db", db)[1])
    expires = datetime.fromisoformat(record["holds"][0]["expires_at"].replace("Z", "+00:00"))
    code, out, _ = run(capsys, "status", eid, "--db", db)
    assert "expires " in out and "EXPIRED" not in out
    monkeypatch.setattr(observe, "utc_now", lambda: expires + timedelta(minutes=5))
    code, out, _ = run(capsys, "status", eid, "--db", db)
    assert code == exits.OK
    assert f"EXPIRED {expires.strftime('%Y-%m-%d %H:%M:%S')} UTC (5m00s ago)" in out
    assert "not escalated: nothing has driven this execution since; it stays held" in out
    assert "driver: nobody is driving it" in out
    standing = json.loads(run(capsys, "status", eid, "--json", "--db", db)[1])["standing"]
    assert standing["word"] == "HELD" and any("EXPIRED" in line for line in standing["hold"])


def test_an_escalated_hold_says_who_it_was_escalated_to(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    rig = Rig(tmp_path / "l.db")
    try:
        rig.start()
        held = rig.run()
        assert held.hold is not None
        rig.clock.now = held.hold.expires_at + timedelta(seconds=1)
        rig.tick()
        assert ev.HOLD_ESCALATED in rig.kinds()
        monkeypatch.setattr(observe, "utc_now", lambda: rig.clock.now + timedelta(seconds=30))
        code, out, _ = run(capsys, "status", rig.eid, "--db", rig.url)
        assert code == exits.OK
        assert "escalated to the rollback authority (U03RESP, S0ONCALL); it stays held" in out
        assert "from the hold card in Slack (C0CHANGES)" in out  # a live execution: release from Slack
    finally:
        rig.close()


# ---------------------------------------------------------------- paused: released, nobody drives it


def test_a_released_rehearsal_nobody_drives_is_paused_with_the_next_step(
    quick: Path, db: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, eid = rehearse(capsys, quick, db)
    assert code == exits.HELD
    code, out, _ = run(capsys, "release", eid, "--as", "U01DANA", "--db", db)
    assert code == exits.OK
    assert "now: PAUSED — nobody is driving it" in out
    assert f"next: drive it on against the sandbox it ran on: stagehold resume {eid} --sandbox URL" in out
    code, out, _ = run(capsys, "status", eid, "--db", db)
    assert code == exits.OK
    first = out.splitlines()[0]
    assert " · PAUSED · " in first and "RUNNING" not in out
    assert out.splitlines()[-2].startswith("  next: drive it on") and f"stagehold abandon {eid}" in out
    assert out.splitlines()[-1] == "  who:  resume: anyone with the ledger · abandon: U05OPS, U03RESP, S0ONCALL"
    listed = json.loads(run(capsys, "list", "--db", db, "--json")[1])
    assert [(r["execution"], r["state"], r["stage"]) for r in listed] == [(eid, "PAUSED", "canary-25")]
    # A process that takes the lease is driving it: then, and only then, it is RUNNING.
    store = SqlLedgerStore(db)
    try:
        lease = store.acquire_lease(eid, "driver-b", utc_now(), 60.0)
        assert lease is not None
        code, out, _ = run(capsys, "status", eid, "--db", db)
        assert " · RUNNING · " in out.splitlines()[0] and "driver: driven by driver-b" in out
        store.release_lease(lease)
    finally:
        store.close()
    assert " · PAUSED · " in run(capsys, "status", eid, "--db", db)[1].splitlines()[0]


def test_list_shows_state_stage_and_age_and_active_leaves_out_the_ended(
    quick: Path, db: str, capsys: pytest.CaptureFixture[str]
) -> None:
    done_code, done = rehearse(capsys, quick, db, "--auto-release")
    held_code, held = rehearse(capsys, quick, db)
    assert (done_code, held_code) == (exits.OK, exits.HELD)
    code, out, _ = run(capsys, "list", "--db", db)
    assert code == exits.OK
    header, *lines = out.splitlines()
    assert header.split() == ["EXECUTION", "CHANGE", "MODE", "STATE", "STAGE", "AGE", "UPDATED"]
    by_id = {line.split()[0]: line.split() for line in lines}
    assert by_id[done][1:5] == ["CHG-2041", "rehearsal", "COMPLETED", "retire-legacy"]
    assert by_id[held][1:6] == ["CHG-2041", "rehearsal", "HELD", "H1", "canary-25"]
    assert by_id[held][-1] == "ago"
    code, out, _ = run(capsys, "list", "--active", "--db", db)
    assert [line.split()[0] for line in out.splitlines()[1:]] == [held]


# ---------------------------------------------------------------- watch


def test_watch_follows_a_rehearsal_driven_elsewhere_and_exits_with_its_code(
    quick: Path, db: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with Sandbox(port=0) as box:
        code, eid = rehearse(capsys, quick, db, "--sandbox", box.url)
        assert code == exits.HELD
        assert main(["release", eid, "--as", "U02LEE", "--db", db]) == exits.OK
        capsys.readouterr()
        driver_code: list[int] = []
        driver = threading.Thread(
            target=lambda: driver_code.append(
                main(["resume", eid, "--sandbox", box.url, "--auto-release", "--db", db, "--quiet"])
            )
        )
        out = io.StringIO()
        store = SqlLedgerStore(db)
        try:
            driver.start()
            code = observe.watch(store, eid, timeout_s=120.0, interval_s=0.1, out=out)
        finally:
            driver.join(timeout=120)
            store.close()
    assert driver_code == [exits.OK]
    assert code == exits.OK
    text = out.getvalue()
    for stage in ("canary-5", "canary-25", "full", "retire-legacy"):
        assert any(line.split()[1:3] == [stage, "passed"] for line in text.splitlines()), (stage, text)
    for hold in ("H1", "H2", "H3"):
        assert f"HOLD {hold} at " in text
    assert text.count("         why: protected stage") == 3
    assert "baking 1/1 [##########]" in text
    assert text.rstrip().splitlines()[-3] == f"{eid}: COMPLETED (exit 0)"


def test_watch_exits_3_at_a_hold_124_at_its_deadline_and_6_when_abandoned(
    quick: Path, db: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(observe, "SETTLE_S", 0.2)
    code, eid = rehearse(capsys, quick, db)
    assert code == exits.HELD
    code, out, _ = run(capsys, "watch", eid, "--db", db, "--interval", "0.05")
    assert code == exits.HELD
    assert f"{eid}: HELD (exit 3)" in out and "next: release H1" in out
    assert "why: protected stage 'canary-25'" in out
    code, out, _ = run(capsys, "watch", eid, "--db", db, "--through-holds", "--timeout", "300ms", "--interval", "0.05")
    assert code == exits.TIMED_OUT
    assert out.rstrip().splitlines()[-1] == f"{eid}: still HELD at canary-25 after 0s (exit 124)"
    # Released from the command line and nothing drives it: watch says so rather than waiting forever.
    assert main(["release", eid, "--as", "U01DANA", "--db", db]) == exits.OK
    code, out, _ = run(capsys, "watch", eid, "--db", db, "--interval", "0.05")
    assert code == exits.HELD and f"{eid}: PAUSED (exit 3)" in out and "stagehold resume" in out
    assert main(["abandon", eid, "--as", "U05OPS", "--reason", "done with this one", "--db", db]) == exits.OK
    code, out, _ = run(capsys, "watch", eid, "--db", db)
    assert code == exits.ABANDONED and "ABANDONED by U05OPS: done with this one" in out


def test_watch_refuses_bad_arguments(capsys: pytest.CaptureFixture[str], db: str) -> None:
    for argv in (["--timeout", "soon"], ["--timeout", "0s"], ["--interval", "-1"]):
        code, _, err = run(capsys, "watch", "X", "--db", db, *argv)
        assert code == exits.INVALID and "stagehold: argument" in err
    code, _, err = run(capsys, "watch", "NOPE", "--db", db)
    assert code == exits.INVALID and "no execution 'NOPE'" in err


# ---------------------------------------------------------------- abandon


def test_abandon_records_the_reason_and_frees_the_change_for_a_new_rehearsal(
    quick: Path, db: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with Sandbox(port=0) as box:  # a shared sandbox: one unfinished rehearsal per change
        code, eid = rehearse(capsys, quick, db, "--sandbox", box.url)
        assert code == exits.HELD
        code, _, err = run(capsys, "rehearse", str(quick), "--db", db, "--sandbox", box.url, "--quiet")
        assert code == exits.INVALID and f"already has an unfinished rehearsal: {eid}" in err
        # A releaser alone may not abandon; the refusal is recorded and changes nothing.
        code, out, _ = run(capsys, "abandon", eid, "--as", "U01DANA", "--reason", "x", "--db", db)
        assert code == exits.INVALID and "abandon.denied by U01DANA" in out
        code, out, _ = run(capsys, "abandon", eid, "--as", "U05OPS", "--reason", "sandbox rebuilt", "--db", db)
        assert code == exits.OK
        assert out.splitlines()[:2] == ["execution.abandoned by U05OPS: sandbox rebuilt", "now: ABANDONED"]
        assert kinds(db, eid)[-2:] == [ev.ABANDON_DENIED, ev.EXECUTION_ABANDONED]
        code, out, _ = run(capsys, "status", eid, "--db", db)
        assert " · ABANDONED · " in out.splitlines()[0] and "abandoned by U05OPS: sandbox rebuilt" in out
        assert "next: nothing: a new rehearsal of CHG-2041 may start" in out
        record = json.loads(run(capsys, "status", eid, "--json", "--db", db)[1])
        assert record["status"] == "abandoned" and record["holds"][0]["status"] == "closed"
        code, _ = rehearse(capsys, quick, db, "--sandbox", box.url)
        assert code == exits.HELD, "the change is free again"


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--as", "U05OPS"], "the following arguments are required: --reason"),
        (["--as", "U05OPS", "--reason", "   "], "expected one line of text"),
        (["--as", "U05 OPS", "--reason", "x"], "expected a user id such as U01DANA"),
        (["--as", "U05OPS", "--reason", "line\nbreak"], "expected one line of text"),
    ],
)
def test_abandon_needs_a_person_and_a_reason(
    quick: Path, db: str, db_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    code, eid = rehearse(capsys, quick, db)
    before = count(db_path, eid)
    code, _, err = run(capsys, "abandon", eid, "--db", db, *argv)
    assert code == exits.INVALID and message in err
    assert count(db_path, eid) == before


def test_abandon_is_refused_for_live_executions_and_while_driven(
    tmp_path: Path, quick: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rig = Rig(tmp_path / "live.db")
    try:
        rig.start()  # a live execution, held before canary-25
        rig.run()
        before = rig.state.seq
        code, _, err = run(capsys, "abandon", rig.eid, "--as", "U05OPS", "--reason", "x", "--db", rig.url)
        assert code == exits.INVALID
        assert "the command line cannot prove who is typing" in err
        assert "abandoning leaves the live system exactly as it is" in err
        assert rig.state.seq == before
    finally:
        rig.close()
    db = f"sqlite:///{tmp_path / 'r.db'}"
    code, eid = rehearse(capsys, quick, db)
    store = SqlLedgerStore(db)
    try:
        lease = store.acquire_lease(eid, "driver-c", utc_now(), 60.0)
        assert lease is not None
        code, _, err = run(capsys, "abandon", eid, "--as", "U05OPS", "--reason", "x", "--db", db)
        assert code == exits.INVALID and "is driven by driver-c now; stop that process first" in err
        assert ev.EXECUTION_ABANDONED not in kinds(db, eid)
    finally:
        store.close()
