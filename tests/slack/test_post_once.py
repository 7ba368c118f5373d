"""The root card and every reply are posted once, even when Slack's answer is lost after it
posted: the intent is recorded first and the channel is read back (metadata) before posting again."""

from __future__ import annotations

from tests.slack.conftest import CHANGE, CHANNEL, INITIATOR, BotFactory
from tests.slack.fake_slack import FakeSlack


def refs(fake: FakeSlack) -> list[str]:
    return [m.metadata["event_payload"]["ref"] for m in fake.messages.values() if m.metadata]


def test_a_root_card_whose_answer_was_lost_is_found_in_the_channel_not_posted_again(
    make_bot: BotFactory, fake_slack: FakeSlack
) -> None:
    fake_slack.wall_clock_ts = True
    fake_slack.lose_answer("chat.postMessage", times=1)  # the first post is the root card
    h = make_bot()
    response, name = h.slash(f"start {CHANGE}", INITIATOR)
    assert response.status_code == 200
    h.answer(name)
    h.hold_card("H1")
    assert h.bot.notifier.wait_idle(20)
    roots = fake_slack.roots(CHANNEL)
    assert len(roots) == 1, [m.text for m in roots]
    history = fake_slack.calls_of("conversations.history")
    assert history and history[0].params["channel"] == CHANNEL
    assert str(history[0].params["include_all_metadata"]).lower() in ("1", "true")
    # The card found is the one kept current, and the thread hangs under it.
    assert fake_slack.message(CHANNEL, roots[0].ts).history, "the root card found was not kept current"
    assert fake_slack.thread(CHANNEL, roots[0].ts)
    assert len(refs(fake_slack)) == len(set(refs(fake_slack)))


def test_a_reply_whose_answer_was_lost_is_found_in_the_thread_not_posted_again(
    make_bot: BotFactory, fake_slack: FakeSlack
) -> None:
    fake_slack.wall_clock_ts = True
    h = make_bot()
    response, name = h.slash(f"start {CHANGE}", INITIATOR)
    assert response.status_code == 200
    h.answer(name)
    h.root()
    fake_slack.lose_answer("chat.postMessage", times=2)  # the next two posts, in the thread
    h.hold_card("H1")
    assert h.bot.notifier.wait_idle(20)
    assert len(fake_slack.roots(CHANNEL)) == 1
    assert fake_slack.calls_of("conversations.replies")
    assert len(fake_slack.calls_of("chat.postMessage", ok=False)) == 2
    posted = refs(fake_slack)
    assert len(posted) == len(set(posted)), sorted(posted)


def test_without_the_read_back_the_lost_answer_would_have_posted_twice(
    make_bot: BotFactory, fake_slack: FakeSlack
) -> None:
    # The control: Slack refuses the history read (no scope); the bot posts anyway, never losing the card.
    fake_slack.wall_clock_ts = True
    fake_slack.lose_answer("chat.postMessage", times=1)
    fake_slack.refuse("conversations.history", "missing_scope")
    h = make_bot()
    response, name = h.slash(f"start {CHANGE}", INITIATOR)
    assert response.status_code == 200
    h.answer(name)
    h.wait_state(lambda s: s.open_hold == "H1", 30, "hold H1")
    assert h.bot.notifier.wait_idle(20)
    assert len(fake_slack.roots(CHANNEL)) == 2
