"""/stagehold start | status | hold | rollback | ledger | help, as signed slash commands."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from tests import ledger_spec
from tests.slack.conftest import (
    CHANGE,
    CHANNEL,
    INITIATOR,
    OPERATOR,
    OUTSIDER,
    RELEASERS,
    RESPONDER,
    BotFactory,
    Harness,
    card_text,
)


def command(h: Harness, text: str, user: str) -> dict[str, object]:
    """The answer on the response_url, with ``shown``: everything the person sees, as one string."""
    response, name = h.slash(text, user)
    assert response.status_code == 200 and response.text == ""  # acknowledged empty; answered after
    answer = h.answer(name)
    answer["shown"] = json.dumps(answer.get("blocks"), ensure_ascii=False)
    return answer


def test_help_and_malformed_commands_are_answered_in_the_acknowledgement(harness: Harness) -> None:
    h = harness
    for text in ("help", ""):
        response, _ = h.slash(text, OUTSIDER)
        assert response.status_code == 200
        assert "/stagehold start CHANGE_ID" in response.text and "/stagehold ledger CHANGE_ID" in response.text
    for text, note in (
        ("deploy CHG-2041", "unknown command `deploy`"),
        ("rollback CHG-2041", "needs a reason"),
        ("start <!here>", "needs a change id"),
    ):
        response, _ = h.slash(text, OUTSIDER)
        body = response.json()
        assert note in body["blocks"][0]["text"]["text"], body
        assert "&lt;!here&gt;" in json.dumps(body) or "here" not in text
    assert h.bot.engine.executions() == []


def test_start_finds_validates_and_starts_a_package(harness: Harness, packages: Path) -> None:
    h = harness
    assert "no change package with id CHG-9999" in str(command(h, "start CHG-9999", INITIATOR)["shown"])
    refused = command(h, f"start {CHANGE}", OUTSIDER)
    assert "Not started: U09NOBODY may not start CHG-2041: not in its initiate authority" in str(refused["shown"])
    assert h.bot.engine.executions() == []
    started = command(h, f"start {CHANGE}", INITIATOR)
    assert "Started" in str(started["shown"]) and started["response_type"] == "ephemeral"
    root = h.root()
    assert "CHG-2041" in root.text and root.thread_ts is None
    again = command(h, f"start {CHANGE}", INITIATOR)
    assert "already has an unfinished rehearsal" in str(again["shown"])  # the harness rehearses on one shared sandbox


def test_start_shows_validation_problems(harness: Harness, packages: Path) -> None:
    h = harness
    plan = packages / "chg-2041" / "plan.yaml"
    plan.write_text(plan.read_text().replace("version: 7", "version: 8"))
    answer = command(h, f"start {CHANGE}", INITIATOR)
    assert "does not validate" in str(answer["shown"])
    assert "chg-2041/package.yaml" in str(answer["shown"]) and "plan changed after approval" in str(answer["shown"])
    assert str(packages) not in str(answer["shown"])
    assert h.bot.engine.executions() == []


def test_status_is_private_unless_public(harness: Harness) -> None:
    h = harness
    assert "No execution of `CHG-2041` is known" in str(command(h, f"status {CHANGE}", OUTSIDER)["shown"])
    assert "No execution is in progress" in json.dumps(command(h, "status", OUTSIDER))
    command(h, f"start {CHANGE}", INITIATOR)
    h.hold_card("H1")
    private = command(h, f"status {CHANGE}", OUTSIDER)
    assert private["response_type"] == "ephemeral"
    text = json.dumps(private["blocks"], ensure_ascii=False)
    assert "Open hold H1" in text and "HELD" in text
    public = command(h, f"status {CHANGE} public", OUTSIDER)
    assert public["response_type"] == "in_channel"
    listing = command(h, "status", OUTSIDER)
    assert "CHG-2041" in json.dumps(listing["blocks"]) and "held" in json.dumps(listing["blocks"])


def test_hold_command_is_for_listed_operators(harness: Harness) -> None:
    h = harness
    command(h, f"start {CHANGE}", INITIATOR)
    h.hold_card("H1")
    assert "Refused: U09NOBODY is not listed for CHG-2041" in str(
        command(h, f"hold {CHANGE} just because", OUTSIDER)["shown"]
    )
    already = command(h, f"hold {CHANGE} vault latency", OPERATOR)
    assert "Nothing changed: already held at H1" in str(already["shown"])
    h.click(h.hold_card("H1"), RELEASERS[0])
    h.wait_state(lambda s: s.open_hold is None, what="H1 released")
    held = command(h, f"hold {CHANGE} vault latency looks odd", OPERATOR)
    assert "Held at H2" in str(held["shown"]) or "Hold requested" in str(held["shown"])
    state = h.wait_state(lambda s: s.hold is not None and s.hold.kind == "manual", what="manual hold")
    assert state.hold is not None and "vault latency looks odd" in state.hold.reason
    card = h.hold_card(state.hold.id)
    assert "manual hold by U06SRE" in card_text(card)


def test_rollback_command_needs_rollback_authority(harness: Harness) -> None:
    h = harness
    command(h, f"start {CHANGE}", INITIATOR)
    h.hold_card("H1")
    denied = command(h, f"rollback {CHANGE} no confidence", RELEASERS[0])
    assert "Refused: U01DANA is not a rollback authority for CHG-2041" in str(denied["shown"])
    ordered = command(h, f"rollback {CHANGE} parity drift on settlement", RESPONDER)
    assert "Rollback ordered: `canary-5`" in str(ordered["shown"])
    h.wait_state(lambda s: s.status() == "rolled_back", 20, "rolled back")
    kinds = [e.kind for e in h.bot.engine.entries(h.execution().execution_id)]
    assert kinds.count("rollback.denied") == 1 and kinds.count("rollback.started") == 1


def test_ledger_command_verifies_and_attaches_the_export_to_the_thread(
    harness: Harness, independent_verifier: Callable[[list[str]], tuple[bool, int | None]]
) -> None:
    h = harness
    command(h, f"start {CHANGE}", INITIATOR)
    h.hold_card("H1")
    root = h.root()
    answer = command(h, f"ledger {CHANGE}", OUTSIDER)
    assert "Hash chain verified" in str(answer["shown"]) and "attached" in str(answer["shown"])
    complete = h.fake.wait_for(lambda: h.fake.calls_of("files.completeUploadExternal"), what="upload completed")
    params = complete[0].params
    assert params["channel_id"] == CHANNEL and params["thread_ts"] == root.ts
    assert h.fake.calls_of("files.getUploadURLExternal")
    (export,) = h.fake.uploads.values()
    lines = export.decode().splitlines()
    assert len(lines) == len(h.bot.engine.entries(h.execution().execution_id)) or len(lines) > 3
    assert independent_verifier(lines) == (True, None)
    assert ledger_spec.verify_export(export)[0], "the attachment is a ledger export, line for line"


@pytest.mark.parametrize("fault", ["no-upload-url", "upload-201", "complete-without-files"])
def test_a_failed_attachment_still_answers_with_the_chain_check_and_the_fallback(harness: Harness, fault: str) -> None:
    h = harness
    command(h, f"start {CHANGE}", INITIATOR)
    h.hold_card("H1")
    h.fake.break_upload(fault)
    answer = command(h, f"ledger {CHANGE}", OUTSIDER)
    shown = str(answer["shown"])
    assert "Hash chain verified" in shown
    assert "The export could not be attached; use `stagehold ledger export` on the server." in shown
    assert "could not complete" not in shown
    assert not h.fake.upload_faults  # the fault was met, not skipped


def test_unknown_change_ids_are_answered(make_bot: BotFactory) -> None:
    h = make_bot()
    for verb in ("hold CHG-7 x", "rollback CHG-7 x", "ledger CHG-7"):
        assert "No execution of `CHG-7` is known" in str(command(h, verb, RESPONDER)["shown"])
