"""The Block Kit checker reports each documented limit precisely; text helpers never break markup."""

from __future__ import annotations

from typing import Any

import pytest

from handlers import blockkit
from handlers.cards import clip, md, mention, mentions, notice


def section(text: str) -> dict[str, Any]:
    return {"type": "section", "text": {"type": "mrkdwn", "text": text}}


def button(**overrides: Any) -> dict[str, Any]:
    b: dict[str, Any] = {
        "type": "button",
        "action_id": "a",
        "text": {"type": "plain_text", "text": "Release"},
        "value": "v",
    }
    b.update(overrides)
    return b


def problems(blocks: Any, text: str | None = None) -> list[str]:
    return [str(p) for p in blockkit.message_problems(blocks, text)]


def test_a_valid_message_has_no_problems() -> None:
    blocks = [
        {"type": "header", "text": {"type": "plain_text", "text": "Hold H1"}},
        section("why"),
        {"type": "section", "fields": [{"type": "mrkdwn", "text": "x"}] * 10},
        {"type": "context", "elements": [{"type": "mrkdwn", "text": "c"}] * 10},
        {"type": "actions", "block_id": "b", "elements": [button(style="primary")]},
        {"type": "divider"},
    ]
    assert problems(blocks, "fallback") == []


@pytest.mark.parametrize(
    ("blocks", "expected"),
    [
        ([section("x")] * 51, "blocks: has 51 blocks; the limit is 50"),
        ([section("x" * 3001)], "blocks[0].text.text: is 3001 characters; the limit is 3000"),
        ([section("")], "blocks[0].text.text: must not be empty"),
        (
            [{"type": "section", "fields": [{"type": "mrkdwn", "text": "x"}] * 11}],
            "blocks[0].fields: has 11 fields; the limit is 10",
        ),
        (
            [{"type": "section", "fields": [{"type": "mrkdwn", "text": "x" * 2001}]}],
            "blocks[0].fields[0].text: is 2001 characters; the limit is 2000",
        ),
        (
            [{"type": "header", "text": {"type": "plain_text", "text": "h" * 151}}],
            "blocks[0].text.text: is 151 characters; the limit is 150",
        ),
        (
            [{"type": "header", "text": {"type": "mrkdwn", "text": "h"}}],
            "blocks[0].text.type: must be plain_text, not 'mrkdwn'",
        ),
        (
            [{"type": "context", "elements": [{"type": "mrkdwn", "text": "c"}] * 11}],
            "blocks[0].elements: has 11 elements; the limit is 10",
        ),
        (
            [{"type": "actions", "elements": [button(text={"type": "plain_text", "text": "b" * 76})]}],
            "blocks[0].elements[0].text.text: is 76 characters; the limit is 75",
        ),
        (
            [{"type": "actions", "elements": [button(value="v" * 2001)]}],
            "blocks[0].elements[0].value: is 2001 characters; the limit is 2000",
        ),
        (
            [{"type": "actions", "elements": [button(action_id="a" * 256)]}],
            "blocks[0].elements[0].action_id: is 256 characters; the limit is 255",
        ),
        ([{**section("x"), "block_id": "b" * 256}], "blocks[0].block_id: is 256 characters; the limit is 255"),
        (
            [{**section("x"), "block_id": "b"}, {**section("y"), "block_id": "b"}],
            "blocks[1].block_id: 'b' is not unique",
        ),
        (
            [{"type": "actions", "elements": [button(style="green")]}],
            "blocks[0].elements[0].style: must be primary or danger",
        ),
        ([{"type": "image", "image_url": "x"}], "blocks[0].type: block type 'image' is not one stagehold renders"),
    ],
)
def test_each_limit_is_reported_with_its_path(blocks: Any, expected: str) -> None:
    found = problems(blocks)
    assert any(expected in p for p in found), found


def test_confirm_dialog_limits() -> None:
    confirm = {
        "title": {"type": "plain_text", "text": "t" * 101},
        "text": {"type": "plain_text", "text": "x" * 301},
        "confirm": {"type": "plain_text", "text": "c" * 31},
        "deny": {"type": "plain_text", "text": "d" * 31},
    }
    found = problems([{"type": "actions", "elements": [button(confirm=confirm)]}])
    assert "blocks[0].elements[0].confirm.title.text: is 101 characters; the limit is 100" in found
    assert "blocks[0].elements[0].confirm.text.text: is 301 characters; the limit is 300" in found
    assert "blocks[0].elements[0].confirm.confirm.text: is 31 characters; the limit is 30" in found
    assert "blocks[0].elements[0].confirm.deny.text: is 31 characters; the limit is 30" in found


def test_check_raises_with_every_problem_and_views_are_checked() -> None:
    with pytest.raises(blockkit.BlockKitError) as err:
        blockkit.check_message([section("")] * 51)
    assert len(err.value.problems) == 52
    view = {"type": "modal", "title": {"type": "plain_text", "text": "t" * 25}, "callback_id": "c", "blocks": []}
    assert [str(p) for p in blockkit.view_problems(view)] == ["view.title.text: is 25 characters; the limit is 24"]


def test_text_helpers_escape_mask_and_never_split_markup() -> None:
    assert md("<!channel> & <@U1>") == "&lt;!channel&gt; &amp; &lt;@U1&gt;"
    assert "4111111111111111" not in md("card 4111 1111 1111 1111 declined")
    assert "xoxb-" not in md("token xoxb-1234-5678-abcdef leaked")
    assert clip("abc <@U01DANA> def", 8) == "abc…"
    assert clip("a &amp; b", 5) == "a…"
    assert clip("short", 10) == "short"
    assert mention("U01DANA") == "<@U01DANA>" and mention("S0CAB") == "<!subteam^S0CAB>"
    assert mention("role:verifier") == "`role:verifier`"
    assert mentions() == "nobody"
    long = notice("x" * 10_000)
    assert len(long.blocks[0]["text"]["text"]) <= 3000
