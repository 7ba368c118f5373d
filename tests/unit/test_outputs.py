"""The state record and the intervention packet, built from the ledger alone.

Every output here is computed from entries read back from an export (JSON Lines), never from the
engine's memory, so what a responder gets after a restart is what the ledger proves.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from execution.outputs import intervention_packet, state_record
from execution.project import project
from handlers.cards import packet_card
from ledger.entry import Entry
from templates import render
from tests.fakes import Rig, edited, example, from_export, stage_of


def exported(rig: Rig) -> list[Entry]:
    lines = [json.dumps(e.to_json(), sort_keys=True) for e in rig.entries()]
    return from_export(lines)


def outputs(rig: Rig) -> tuple[dict[str, Any], dict[str, Any] | None]:
    entries = exported(rig)
    state = project(rig.eid, entries)
    return state_record(state, entries), intervention_packet(state, entries)


def test_outputs_from_an_export_equal_outputs_from_the_store(rig: Rig) -> None:
    rig.start()
    rig.run()
    live_entries = rig.entries()
    live_state = rig.state
    record, packet = outputs(rig)
    assert record == state_record(live_state, live_entries)
    assert packet == intervention_packet(live_state, live_entries)
    assert record["ledger"] == {"entries": len(live_entries), "head": live_entries[-1].hash}


def test_completed_record_names_who_released_each_hold_and_has_no_packet(rig: Rig) -> None:
    rig.start()
    for _ in range(6):
        state = rig.run()
        if state.terminal:
            break
        rig.release_protected()
    record, packet = outputs(rig)
    assert packet is None
    assert record["status"] == "completed"
    assert record["fallback_retired"] is True
    assert record["blast_radius_reached"] == 100
    stages = {s["id"]: s for s in record["stages"]}
    assert stages["canary-5"]["entered_on_release"] is None
    assert stages["canary-25"]["entered_on_release"] == {"hold": "H1", "released_by": ["U01DANA"]}
    assert stages["retire-legacy"]["entered_on_release"] == {"hold": "H3", "released_by": ["U01DANA", "U02LEE"]}
    assert stages["full"]["live_state_confirmed"]["observed"] == {"tokenizer": 100, "legacy": 0}
    assert all(s["status"] == "passed" and s["passed_basis"] == "verified" for s in record["stages"])
    holds = {h["id"]: h for h in record["holds"]}
    assert holds["H3"]["required_releases"] == 2
    assert [r["user"] for r in holds["H3"]["releases"]] == ["U01DANA", "U02LEE"]
    assert holds["H3"]["status"] == "released"
    assert record["rollback"] is None


def test_held_packet_says_why_what_is_live_the_way_back_and_what_to_confirm(rig: Rig) -> None:
    rig.start()
    rig.run()
    rig.release("U06SRE")  # a denied attempt is part of the record
    record, packet = outputs(rig)
    assert record["status"] == "held"
    assert packet is not None
    assert packet["status"] == "held"
    assert packet["stage"] == "canary-25"
    assert "protected stage 'canary-25'" in packet["why"]
    assert packet["hold"]["kind"] == "protected"
    assert packet["hold"]["releases"] == "0 of 1"
    assert packet["hold"]["who_may_release"] == {"users": ["U01DANA", "U02LEE"], "groups": ["S0CAB"]}
    assert packet["live_now"]["stages_live"] == ["canary-5"]
    assert packet["live_now"]["last_confirmed"]["stage"] == "canary-5"
    assert packet["live_now"]["last_confirmed"]["observed"] == {"tokenizer": 5, "legacy": 95}
    assert packet["rollback_path"] == "undo canary-5 (rollback authority: U03RESP, S0ONCALL)"
    assert packet["who_may_roll_back"] == {"users": ["U03RESP"], "groups": ["S0ONCALL"]}
    assert packet["confirm_next"].startswith("Review the evidence for entering 'canary-25'")
    assert {r["signal"] for r in packet["evidence"]} == {"vault_healthy", "legacy_healthy", "snapshot_age_s"}
    denied = record["denied_or_ignored_attempts"]
    assert [(d["kind"], d["actor"]) for d in denied] == [("release.denied", "U06SRE")]


def test_rolled_back_record_and_packet(rig: Rig) -> None:
    rig.start()
    rig.run_to_stage("canary-25")
    rig.fake.signals["error_rate"] = 0.3
    rig.run()
    record, packet = outputs(rig)
    assert record["status"] == "rolled_back"
    assert record["rollback"]["outcome"] == "completed"
    assert record["rollback"]["trigger"] == "verification"
    assert record["rollback"]["requested_by"] == "role:rollback"
    assert record["rollback"]["undone"] == ["canary-5", "canary-25"]
    stages = {s["id"]: s for s in record["stages"]}
    assert stages["canary-25"]["rollback_confirmed"]["observed"] == {"tokenizer": 5, "legacy": 95}
    assert packet is not None
    assert packet["status"] == "rolled_back"
    assert packet["why"].startswith("rolled back: error_rate fail")
    assert packet["rollback_path"] == "already rolled back"
    assert packet["confirm_next"].startswith("Confirm the restored state")
    assert any(r["signal"] == "error_rate" and r["outcome"] == "fail" for r in packet["evidence"])


def test_needs_human_packet_says_automation_stopped(rig: Rig) -> None:
    rig.start()
    rig.run_to_stage("canary-25")
    rig.fake.reject_rollback = True
    rig.fake.signals["error_rate"] = 0.3
    rig.run()
    record, packet = outputs(rig)
    assert record["status"] == "needs_human"
    assert record["rollback"]["outcome"] == "failed"
    assert packet is not None
    assert packet["status"] == "needs_human"
    assert packet["why"].startswith("rollback failed")
    assert "automation has stopped" in packet["confirm_next"]
    # The rollback step that failed is named, with what its read-back proved: it did not take effect.
    assert packet["live_now"]["action_in_doubt"] is None
    not_applied = packet["live_now"]["action_not_applied"]
    assert {k: not_applied[k] for k in ("stage", "direction", "key", "observed")} == {
        "stage": "canary-25",
        "direction": "rollback",
        "key": f"{rig.eid}:canary-25:rollback:1",
        "observed": {"tokenizer": 25, "legacy": 75},
    }
    assert packet["rollback_path"].startswith("undo canary-25 -> canary-5")
    # Rule 12: the read-back proved tokenizer=25 is still served, so 25% is live, not 5%.
    assert record["blast_radius_reached"] == 25
    assert packet["stage"] == "canary-25"
    assert packet["live_now"]["stages_live"] == ["canary-5", "canary-25"]
    assert packet["live_now"]["blast_radius"] == 25
    text = render("packet.md.j2", packet=packet)
    assert "Stages live: canary-5, canary-25" in text
    assert "Blast radius: 25" in text
    assert "Outcome unknown" not in text
    assert "**Did not take effect**: the rollback of `canary-25`" in text
    assert '"tokenizer": 25' in text


def test_a_rejected_rollback_while_held_leaves_the_undone_stage_live(rig: Rig) -> None:
    # Held before canary-25; the live canary-5 fails, its rollback is refused: 5% is still live.
    rig.start()
    rig.run()
    assert rig.state.hold is not None and rig.state.hold.kind == "protected"
    rig.fake.reject_rollback = True
    rig.fake.signals["error_rate"] = 0.3
    rig.run()
    record, packet = outputs(rig)
    assert record["status"] == "needs_human"
    assert record["blast_radius_reached"] == 5
    assert packet is not None
    assert packet["stage"] == "canary-5"
    assert packet["live_now"]["stages_live"] == ["canary-5"]
    assert packet["live_now"]["blast_radius"] == 5
    assert packet["live_now"]["action_in_doubt"] is None
    assert packet["live_now"]["action_not_applied"]["observed"] == {"tokenizer": 5, "legacy": 95}
    fields = json.dumps(packet_card(packet).blocks)
    assert "Did not take effect" in fields and "Outcome unknown" not in fields


def test_narrowed_packet(tmp_path: Path) -> None:
    change = edited(example(), plan=lambda p: stage_of(p, "canary-25")["verify"]["on"].update(fail="narrow"))
    rig = Rig(tmp_path / "l.db", change=change)

    def recover(key: str, role: object) -> None:
        if ":rollback:" in key:
            rig.fake.signals["error_rate"] = 0.002

    try:
        rig.start()
        rig.run_to_stage("canary-25")
        rig.fake.on_apply = recover
        rig.fake.signals["error_rate"] = 0.3
        rig.run()
        record, packet = outputs(rig)
        assert record["status"] == "narrowed"
        assert packet is not None and packet["status"] == "narrowed"
        assert packet["hold"]["kind"] == "narrowed"
        assert packet["live_now"]["stages_live"] == ["canary-5"]
        assert packet["live_now"]["last_confirmed"] == {
            "stage": "canary-25",
            "direction": "rollback",
            "observed": {"tokenizer": 5, "legacy": 95},
            "at": packet["live_now"]["last_confirmed"]["at"],
        }
        assert "narrowed back" in packet["confirm_next"]
        assert packet["rollback_path"].startswith("undo canary-5")
    finally:
        rig.close()


def test_after_the_irreversible_stage_the_packet_says_there_is_no_automated_way_back(rig: Rig) -> None:
    rig.start()
    rig.run_to_stage("retire-legacy")
    rig.engine.hold(rig.eid, "U06SRE", "settlement call")
    rig.run()
    _, packet = outputs(rig)
    assert packet is not None
    assert packet["rollback_path"] == "no automated rollback: stage 'retire-legacy' retired the fallback"
    assert packet["live_now"]["fallback_retired"] is True
    assert packet["confirm_next"] == "A person placed this hold: confirm with them before releasing."


def test_an_action_in_doubt_is_named_in_the_packet(rig: Rig) -> None:
    rig.fake.readback_fails = True
    rig.start()
    rig.run()
    _, packet = outputs(rig)
    assert packet is not None
    assert packet["hold"]["kind"] == "ambiguous"
    assert packet["live_now"]["action_in_doubt"] == {
        "stage": "canary-5",
        "direction": "apply",
        "key": f"{rig.eid}:canary-5:apply:1",
    }
    assert "outcome is unknown" in packet["confirm_next"]


def test_secrets_never_reach_the_ledger_or_the_outputs(rig: Rig) -> None:
    rig.fake.signals["vault_healthy"] = "password=hunter2-very-secret"
    rig.start()
    rig.run()
    rig.engine.hold(rig.eid, "U06SRE", "customer card 4111-1111-1111-1111 and xoxb-123456789012-abcdefghij")
    record, packet = outputs(rig)
    text = json.dumps([e.to_json() for e in rig.entries()]) + json.dumps(record) + json.dumps(packet)
    for secret in ("hunter2-very-secret", "4111-1111-1111-1111", "xoxb-123456789012-abcdefghij"):
        assert secret not in text
    assert packet is not None and "***" in packet["why"]
