"""What one execution's thread says, from start to completion; reminders and escalations."""

from __future__ import annotations

from pathlib import Path

from tests.slack.conftest import (
    CHANGE,
    CHANNEL,
    INITIATOR,
    RELEASERS,
    BotFactory,
    Harness,
    card_text,
    write_package,
)


def start(h: Harness) -> None:
    response, name = h.slash(f"start {CHANGE}", INITIATOR)
    assert response.status_code == 200
    h.answer(name)


def test_one_thread_from_start_to_completion(harness: Harness) -> None:
    h = harness
    start(h)
    for hold in ("H1", "H2"):
        h.click(h.hold_card(hold), RELEASERS[0])
    h3 = h.hold_card("H3")
    for user in RELEASERS:
        h.click(h3, user)
    h.wait_state(lambda s: s.status() == "completed", 30, "completion")
    assert h.bot.notifier.wait_idle(20)

    root = h.root()
    assert len(h.fake.roots(CHANNEL)) == 1
    assert "COMPLETED" in card_text(h.fake.message(CHANNEL, root.ts))
    thread = [m.text for m in h.fake.thread(CHANNEL, root.ts)]
    expected_in_order = [
        "preflight canary-5: pass",
        "canary-5 is live",
        "checkpoint canary-5 passed",
        "Hold H1 at canary-25",
        "<@U01DANA> released H1 (1 of 1)",
        "preflight canary-25: pass",  # the re-check after the release, before anything moves
        "canary-25 is live",
        "checkpoint canary-25 passed",
        "Hold H2 at full",
        "Hold H3 at retire-legacy",
        "<@U01DANA> released H3 (1 of 2) — 1 more distinct releaser(s) needed",
        "<@U02LEE> released H3 (2 of 2)",
        "retire-legacy is live",
        "checkpoint retire-legacy passed",
        "CHG-2041: completed",
    ]
    position = 0
    for expected in expected_in_order:
        while position < len(thread) and expected not in thread[position]:
            position += 1
        assert position < len(thread), f"{expected!r} missing or out of order in {thread}"
    # Passing samples are not posted one by one; evidence folded into a hold card is not repeated.
    assert not any(t.startswith("verification ") for t in thread)
    assert sum("preflight canary-25" in t for t in thread) == 1
    # Every hold card ends showing its outcome instead of buttons.
    for m in h.fake.thread(CHANNEL, root.ts):
        if m.text.startswith("Hold "):
            assert not any(b["type"] == "actions" for b in m.blocks)
            assert "Released by" in card_text(m)
    posts = h.fake.calls_of("chat.postMessage")
    assert all(c.params.get("unfurl_links") is False and c.params.get("unfurl_media") is False for c in posts)


def test_reminders_and_escalations_mention_who_may_act(make_bot: BotFactory, packages: Path) -> None:
    write_package(packages, expiry="60s", remind="30s")  # at speed 20: remind after 1.5 s, expire at 3 s
    h = make_bot()
    start(h)
    card = h.hold_card("H1")
    root = h.root()

    def said(fragment: str) -> bool:
        return any(fragment in m.text for m in h.fake.thread(CHANNEL, root.ts))

    h.fake.wait_for(lambda: said("Reminder: hold H1 is waiting"), 15, "the reminder")
    reminder = next(m.text for m in h.fake.thread(CHANNEL, root.ts) if "Reminder" in m.text)
    assert "<@U01DANA>, <@U02LEE>, <!subteam^S0CAB> may release" in reminder
    assert "<@U03RESP>, <!subteam^S0ONCALL> may roll back" in reminder
    h.fake.wait_for(lambda: said("expired"), 15, "the escalation")
    escalation = next(m.text for m in h.fake.thread(CHANNEL, root.ts) if "expired" in m.text)
    assert "stays held; escalating to <@U03RESP>, <!subteam^S0ONCALL>" in escalation
    h.fake.wait_for(lambda: said("Intervention packet CHG-2041"), 15, "the packet")
    # Expiry never releases: the hold is still open and its card still offers the buttons.
    assert h.execution().open_hold == "H1"
    assert any(b["type"] == "actions" for b in h.fake.message(CHANNEL, card.ts).blocks)
