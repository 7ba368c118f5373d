"""``stagehold rehearse`` and friends, run in-process through ``bot.cli.main`` against the sandbox.

Each fault of interest ends in its documented exit code and writes the three outputs; the ledger
export verifies. Most cases use a quick copy of the payments example whose bakes are one interval
long (re-approved with its new digest), so a full run takes about a second at the default speed;
the case from the README runs on the example itself.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from bot import exits
from bot.cli import main
from bot.clock import utc_now
from bot.driver import drive, releasable_by_rehearsal
from execution import events as ev
from execution.project import project
from execution.sandbox import Sandbox
from execution.transitions import Phase
from ledger.chain import verify_chain
from ledger.sql import SqlLedgerStore
from tests import ledger_spec
from tests.fakes import EXAMPLES, Rig, from_export

PAYMENTS = EXAMPLES / "payments-cutover" / "package.yaml"


def rehearse(package: Path, tmp_path: Path, *args: str) -> tuple[int, Path, str]:
    db = f"sqlite:///{tmp_path / 'ledger.db'}"
    out = tmp_path / "out"
    code = main(["rehearse", str(package), "--db", db, "--out", str(out), "--quiet", *args])
    return code, out, db


def read_outputs(out: Path) -> tuple[dict[str, Any], list[str], dict[str, Any] | None]:
    state = json.loads((out / "state.json").read_text(encoding="utf-8"))
    lines = (out / "ledger.jsonl").read_text(encoding="utf-8").splitlines()
    packet = None
    if (out / "packet.json").exists():
        packet = json.loads((out / "packet.json").read_text(encoding="utf-8"))
        assert (out / "packet.md").read_text(encoding="utf-8").strip()
    else:
        assert not (out / "packet.md").exists()
    return state, lines, packet


CASES = [
    pytest.param([], exits.OK, "completed", None, id="no-fault"),
    pytest.param(["--fault", "error-rate-degraded@canary-25"], exits.HELD, "held", "degraded", id="degraded"),
    pytest.param(
        ["--fault", "rollback-fail", "--fault", "error-rate-high@canary-25"],
        exits.NEEDS_HUMAN,
        "needs_human",
        None,
        id="rollback-fail",
    ),
    pytest.param(["--fault", "dependency-down@canary-25"], exits.HELD, "held", "protected", id="dependency-down"),
    pytest.param(["--fault", "snapshot-stale"], exits.HELD, "held", "readiness_lost", id="snapshot-stale"),
    pytest.param(["--fault", "apply-timeout"], exits.OK, "completed", None, id="apply-timeout"),
    pytest.param(["--fault", "readback-fail@canary-5"], exits.HELD, "held", "ambiguous", id="readback-fail"),
    pytest.param(["--fault", "no-data@canary-5"], exits.HELD, "held", "conflicting", id="no-data"),
]


@pytest.mark.parametrize(("faults", "code", "status", "hold_kind"), CASES)
def test_exit_code_and_outputs_for_each_fault(
    quick: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    faults: list[str],
    code: int,
    status: str,
    hold_kind: str | None,
) -> None:
    got, out, _ = rehearse(quick, tmp_path, "--auto-release", *faults)
    printed = capsys.readouterr().out
    assert got == code, printed
    assert f": {status.upper()} (exit {code})" in printed
    record, lines, packet = read_outputs(out)
    assert record["status"] == status
    # The ledger.jsonl beside the record is a ledger export: it verifies from the spec alone.
    ok, detail = ledger_spec.verify_export((out / "ledger.jsonl").read_bytes())
    assert ok, detail
    entries = from_export(lines)
    result = verify_chain(entries)
    assert result.ok, result.reason
    assert result.checked == len(entries) == record["ledger"]["entries"]
    assert result.head_hash == record["ledger"]["head"]
    # The record on disk is the fold of the exported ledger, not of anything kept in memory.
    assert project(entries[0].execution_id, entries).status() == status
    if status == "completed":
        assert packet is None
        assert [s["status"] for s in record["stages"]] == ["passed"] * 4
    else:
        assert packet is not None and packet["status"] == status
    if hold_kind is not None:
        assert packet is not None and packet["hold"]["kind"] == hold_kind
    kinds = [e.kind for e in entries]
    if "apply-timeout" in faults:
        sent = [e.body["outcome"] for e in entries if e.kind == ev.ACTION_SENT]
        assert sent == ["ambiguous"] * 4
        assert ev.ACTION_RESEND_INTENDED not in kinds
    if "dependency-down@canary-25" in faults:
        assert [e.body["stage"] for e in entries if e.kind == ev.ACTION_INTENDED] == ["canary-5"]


def test_the_readme_case_rolls_back(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = rehearse(PAYMENTS, tmp_path, "--auto-release", "--fault", "error-rate-high@canary-25")
    printed = capsys.readouterr().out
    assert code == exits.ROLLED_BACK, printed
    record, lines, packet = read_outputs(out)
    assert record["status"] == "rolled_back"
    assert packet is not None and packet["rollback_path"] == "already rolled back"
    entries = from_export(lines)
    assert verify_chain(entries).ok
    # The fault starts as canary-5 passes. The live tier is watched while the protected hold before
    # canary-25 waits, so the failure is caught there: canary-5 is undone, canary-25 never entered.
    watched = [e for e in entries if e.kind == ev.VERIFICATION_SAMPLED and e.body.get("during_hold")]
    assert watched and watched[-1].body["reaction"] == "rollback"
    assert record["rollback"]["undone"] == ["canary-5"]
    assert [e.body["stage"] for e in entries if e.kind == ev.ACTION_INTENDED] == ["canary-5", "canary-5"]


def test_release_hold_and_rollback_commands_work_on_a_rehearsal(
    quick: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, db = rehearse(quick, tmp_path)  # no auto-release: stops at the first protected hold
    assert code == exits.HELD
    eid = json.loads((out / "state.json").read_text(encoding="utf-8"))["execution"]
    capsys.readouterr()
    # The initiator may not release under two-person control; the refusal is recorded.
    assert main(["release", eid, "--as", "U05OPS", "--db", db]) == exits.INVALID
    assert "release.denied by U05OPS" in capsys.readouterr().out
    assert main(["release", eid, "--as", "U01DANA", "--db", db]) == exits.OK
    assert "hold.released by U01DANA" in capsys.readouterr().out
    assert main(["hold", eid, "--as", "U06SRE", "--reason", "call with finance", "--db", db]) == exits.OK
    assert main(["rollback", eid, "--as", "U01DANA", "--reason", "x", "--db", db]) == exits.INVALID
    assert main(["rollback", eid, "--as", "U03RESP", "--reason", "abandon", "--db", db]) == exits.OK
    assert "rollback.started by U03RESP" in capsys.readouterr().out
    assert main(["status", eid, "--json", "--db", db]) == exits.OK
    record = json.loads(capsys.readouterr().out)
    assert record["phase"] == "rolling_back"
    assert [a["actor"] for a in record["denied_or_ignored_attempts"]] == ["U05OPS", "U01DANA"]


def test_a_rehearsal_released_from_the_command_line_resumes_against_its_sandbox(
    quick: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with Sandbox(port=0) as box:
        code, out, db = rehearse(quick, tmp_path, "--sandbox", box.url)
        assert code == exits.HELD
        eid = json.loads((out / "state.json").read_text(encoding="utf-8"))["execution"]
        # The finished foreground run handed its lease back: another process may take over now.
        probe_store = SqlLedgerStore(db)
        try:
            probe = probe_store.acquire_lease(eid, "probe", utc_now(), 60.0)
            assert probe is not None and probe.epoch == 2
            probe_store.release_lease(probe)
        finally:
            probe_store.close()
        assert main(["release", eid, "--as", "U02LEE", "--db", db]) == exits.OK
        # A rehearsal resumes only against a running sandbox.
        assert main(["resume", eid, "--db", db, "--quiet"]) == exits.INVALID
        assert "give --sandbox URL" in capsys.readouterr().err
        code = main(["resume", eid, "--db", db, "--sandbox", box.url, "--auto-release", "--out", str(out), "--quiet"])
        assert code == exits.OK, capsys.readouterr().out
        record, lines, packet = read_outputs(out)
        assert record["status"] == "completed" and packet is None
        entries = from_export(lines)
        assert verify_chain(entries).ok
        resumed = [e for e in entries if e.kind == ev.EXECUTION_RESUMED]
        assert len(resumed) == 1 and resumed[0].body["reconcile"]["matches"] is True
        applied = [a["key"] for a in box.applied()]
        assert applied == [e.body["key"] for e in entries if e.kind == ev.ACTION_CONFIRMED]
        assert len(applied) == 4


def test_release_hold_and_rollback_refuse_live_executions(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rig = Rig(tmp_path / "live.db")
    try:
        rig.start()  # a live execution (mode "live"), held before canary-25
        rig.run()
        db = rig.url
        before = rig.state.seq
        for argv in (
            ["release", rig.eid, "--as", "U01DANA", "--db", db],
            ["hold", rig.eid, "--as", "U06SRE", "--reason", "x", "--db", db],
            ["rollback", rig.eid, "--as", "U03RESP", "--reason", "x", "--db", db],
        ):
            assert main(argv) == exits.INVALID
            err = capsys.readouterr().err
            assert "the command line cannot prove who is typing" in err
        assert rig.state.seq == before
        assert rig.state.phase == Phase.HOLDING
    finally:
        rig.close()


def test_an_invalid_package_exits_2_with_file_and_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    directory = tmp_path / "bad"
    shutil.copytree(EXAMPLES / "payments-cutover", directory)
    package = directory / "package.yaml"
    text = package.read_text(encoding="utf-8")
    package.write_text(text.replace("channel: C0CHANGES", "channel: C0CHANGES\nchanel: typo"), encoding="utf-8")
    plan = directory / "plan.yaml"
    plan.write_text(plan.read_text(encoding="utf-8") + "\n# edited after approval\n", encoding="utf-8")
    code = main(["rehearse", str(package), "--db", f"sqlite:///{tmp_path / 'l.db'}", "--quiet"])
    assert code == exits.INVALID
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert any(line.startswith(f"{package}:") and "chanel: unknown field" in line for line in lines), err
    for line in lines:
        where = line.split(": ", 1)[0]
        assert where.rsplit(":", 1)[-1].isdigit(), line


def test_a_tampered_plan_exits_2_and_starts_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    directory = tmp_path / "tampered"
    shutil.copytree(EXAMPLES / "payments-cutover", directory)
    plan = directory / "plan.yaml"
    plan.write_text(
        plan.read_text(encoding="utf-8").replace("tokenizer: 25, legacy: 75}}}", "tokenizer: 60, legacy: 40}}}", 1)
    )
    db = tmp_path / "l.db"
    code = main(["rehearse", str(directory / "package.yaml"), "--db", f"sqlite:///{db}", "--quiet"])
    assert code == exits.INVALID
    err = capsys.readouterr().err
    assert "plan changed after approval" in err
    assert f"{directory / 'package.yaml'}:" in err


def test_an_unknown_fault_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, _ = rehearse(PAYMENTS, tmp_path, "--fault", "meteor-strike")
    assert code == exits.INVALID
    assert "unknown fault 'meteor-strike'" in capsys.readouterr().err
    code, _, _ = rehearse(PAYMENTS, tmp_path, "--fault", "no-data@canary-99")
    assert code == exits.INVALID
    assert "the plan has no stage 'canary-99'" in capsys.readouterr().err


def test_auto_release_goes_on_when_the_shown_evidence_merely_aged(tmp_path: Path) -> None:
    """A routine protected hold whose evidence aged past max_age is still released by a rehearsal.

    The release is bound to the current evidence version and the gate re-reads live evidence
    before entering, so nothing unsafe can follow; stopping instead made fast rehearsals stop at
    random whenever the driver was slower than max_age / speed.
    """
    rig = Rig(tmp_path / "l.db")
    try:
        rig.start()
        state = rig.run()
        hold = state.hold
        assert hold is not None and hold.evidence_expires_at is not None
        rig.clock.now = hold.evidence_expires_at
        rig.tick()
        stale = rig.state.hold
        assert stale is not None and stale.evidence_stale and stale.evidence_version == 2
        assert releasable_by_rehearsal(stale)
        state = drive(rig.engine, rig.eid, auto_release=True, sleep=rig.clock.advance)
        assert state.phase == Phase.COMPLETED
        released = [e for e in rig.entries() if e.kind == ev.RELEASE_GRANTED and e.body["hold"] == "H1"]
        assert [e.body["evidence_version"] for e in released] == [2]
    finally:
        rig.close()


def test_auto_release_never_releases_holds_on_bad_evidence(tmp_path: Path) -> None:
    rig = Rig(tmp_path / "l.db")
    try:
        rig.start()
        rig.run(until=lambda s: s.stages[0].consecutive == 9)
        rig.fake.signals["vault_healthy"] = False
        state = drive(rig.engine, rig.eid, auto_release=True, sleep=rig.clock.advance)
        assert state.phase == Phase.HOLDING
        assert state.hold is not None and not releasable_by_rehearsal(state.hold)
        assert ev.RELEASE_GRANTED not in rig.kinds()
    finally:
        rig.close()
