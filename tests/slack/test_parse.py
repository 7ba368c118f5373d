"""Pure parsing: /stagehold text, button values, click and modal payloads."""

from __future__ import annotations

import json
from typing import Any

import pytest

from handlers import ids
from handlers.parse import (
    MAX_REASON,
    Help,
    HoldCommand,
    LedgerCommand,
    MalformedPayload,
    RollbackCommand,
    StartCommand,
    StatusCommand,
    parse_click,
    parse_command,
    parse_rollback_submission,
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("start CHG-2041", StartCommand("CHG-2041")),
        ("  START   CHG-2041  ", StartCommand("CHG-2041")),
        ("status", StatusCommand(None, False)),
        ("status public", StatusCommand(None, True)),
        ("status CHG-2041", StatusCommand("CHG-2041", False)),
        ("status CHG-2041 PUBLIC", StatusCommand("CHG-2041", True)),
        ("hold CHG-2041 vault latency is odd", HoldCommand("CHG-2041", "vault latency is odd")),
        ("rollback CHG-2041 parity drift", RollbackCommand("CHG-2041", "parity drift")),
        ("ledger CHG-2041", LedgerCommand("CHG-2041")),
        ("help", Help()),
        ("", Help()),
    ],
)
def test_commands_parse(text: str, expected: object) -> None:
    assert parse_command(text) == expected


@pytest.mark.parametrize(
    ("text", "note"),
    [
        ("launch CHG-2041", "unknown command `launch`"),
        ("start", "usage: `/stagehold start CHANGE_ID`"),
        ("start CHG-2041 now", "usage: `/stagehold start CHANGE_ID`"),
        ("start <!channel>", "needs a change id"),
        ("status a b", "usage: `/stagehold status [CHANGE_ID] [public]`"),
        ("hold CHG-2041", "needs a reason"),
        ("rollback", "usage: `/stagehold rollback CHANGE_ID REASON`"),
        ("rollback CHG-2041   ", "needs a reason"),
        ("ledger", "usage: `/stagehold ledger CHANGE_ID`"),
        ("rollback CHG-2041 " + "x" * (MAX_REASON + 1), "keep it under"),
    ],
)
def test_malformed_commands_become_help_with_a_note(text: str, note: str) -> None:
    parsed = parse_command(text)
    assert isinstance(parsed, Help)
    assert parsed.note is not None and note in parsed.note


def test_button_values_round_trip_and_are_compact() -> None:
    ref = ids.HoldRef("CHG-2041-20261128T220000Z", "canary-25", "H2", 3)
    value = ref.encode()
    assert value == '{"e":"CHG-2041-20261128T220000Z","h":"H2","s":"canary-25","v":3}'
    assert ids.decode(value) == ref
    assert ids.decode(ids.HoldRef("X-1", None, "H1", 1).encode()).stage is None


@pytest.mark.parametrize(
    "value",
    [
        None,
        "",
        "not json",
        "[]",
        '{"e":"X","h":"H1","s":"a","v":1,"extra":1}',
        '{"e":"X","h":"H1","s":"a"}',
        '{"e":"<!channel>","h":"H1","s":"a","v":1}',
        '{"e":"X","h":"H0","s":"a","v":1}',
        '{"e":"X","h":"hold1","s":"a","v":1}',
        '{"e":"X","h":"H1","s":"a b","v":1}',
        '{"e":"X","h":"H1","s":"a","v":true}',
        '{"e":"X","h":"H1","s":"a","v":"1"}',
        '{"e":"X","h":"H1","s":"a","v":0}',
        '{"e":"X","h":"H1","s":"a","v":1.5}',
        '{"e":"' + "X" * 3000 + '","h":"H1","s":"a","v":1}',
    ],
)
def test_forged_button_values_are_refused(value: Any) -> None:
    with pytest.raises(ids.InvalidButton):
        ids.decode(value)


def _click(action_id: str, value: Any, **extra: Any) -> dict[str, Any]:
    return {
        "type": "block_actions",
        "user": {"id": "U01DANA"},
        "channel": {"id": "C0CHANGES"},
        "container": {"type": "message", "message_ts": "1.000200", "thread_ts": "1.000100"},
        "trigger_id": "t1",
        "response_url": "https://hooks.example/r",
        "actions": [{"action_id": action_id, "value": value}],
        **extra,
    }


def test_click_payloads_parse() -> None:
    value = ids.HoldRef("E1", "full", "H3", 2).encode()
    click = parse_click(_click(ids.RELEASE_ACTION, value))
    assert (click.action, click.user, click.channel) == ("release", "U01DANA", "C0CHANGES")
    assert click.ref == ids.HoldRef("E1", "full", "H3", 2)
    assert (click.thread_ts, click.message_ts, click.trigger_id) == ("1.000100", "1.000200", "t1")
    assert parse_click(_click(ids.ROLLBACK_ACTION, value)).action == "rollback"


def test_a_bad_click_keeps_who_to_answer() -> None:
    click = parse_click(_click(ids.RELEASE_ACTION, '{"e":1}'))
    assert click.ref is None and click.problem and click.user == "U01DANA" and click.channel == "C0CHANGES"
    other = parse_click(_click("someone_elses_button", "x"))
    assert other.ref is None and other.problem == "this is not a stagehold button"
    with pytest.raises(MalformedPayload):
        parse_click({"actions": []})


def _submission(reason: Any, metadata: str) -> dict[str, Any]:
    return {
        "type": "view_submission",
        "user": {"id": "U03RESP"},
        "view": {
            "callback_id": ids.ROLLBACK_MODAL,
            "private_metadata": metadata,
            "state": {"values": {ids.REASON_BLOCK: {ids.REASON_INPUT: {"type": "plain_text_input", "value": reason}}}},
        },
    }


def test_rollback_submissions_parse() -> None:
    ctx = ids.ModalContext(ids.HoldRef("E1", "full", "H3", 2), "C0CHANGES", "1.000100")
    request = parse_rollback_submission(_submission("  parity drift  ", ctx.encode()))
    assert request.problem is None and request.reason == "parity drift" and request.context == ctx
    assert parse_rollback_submission(_submission("", ctx.encode())).problem == "a rollback needs a reason"
    assert parse_rollback_submission(_submission(None, ctx.encode())).problem == "a rollback needs a reason"
    forged = json.loads(ctx.encode())
    forged["c"] = "not a channel"
    assert parse_rollback_submission(_submission("why", json.dumps(forged))).context is None
    assert parse_rollback_submission(_submission("why", "garbage")).problem is not None
