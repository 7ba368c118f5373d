"""A person clicking one Release button again and again: decided once, the repeats counted in one entry.

The window rules are checked with a clock and timers in hand; the behaviour end to end through the
real Bolt app, with signed clicks back to back on one kept-alive connection.
"""

from __future__ import annotations

import copy
import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx

from handlers.repeats import ClickKey, RepeatedClicks, Repeats
from tests.slack.conftest import OUTSIDER, RELEASERS, BotFactory, Harness, button_value
from tests.slack.fake_slack import Message
from tests.slack.test_actions import entries_of, start

T0 = datetime(2026, 11, 30, 2, 0, tzinfo=UTC)
KEY = ClickKey("U01DANA", "ex-1", "H1", 1)


class Timers:
    """Timers that fire when the test says so."""

    def __init__(self) -> None:
        self.pending: list[tuple[float, Callable[[], None], threading.Timer]] = []

    def __call__(self, delay: float, run: Callable[[], None]) -> threading.Timer:
        timer = threading.Timer(delay, run)  # never started: fire() runs it
        self.pending.append((delay, run, timer))
        return timer

    def fire(self) -> None:
        pending, self.pending = self.pending, []
        for _, run, _ in pending:
            run()


def collapser(window_s: float = 30.0) -> tuple[RepeatedClicks, list[Repeats], list[datetime], Timers]:
    recorded: list[Repeats] = []
    now = [T0]
    timers = Timers()
    return RepeatedClicks(recorded.append, lambda: now[0], window_s, timers), recorded, now, timers


def test_repeats_after_a_release_are_counted_and_recorded_once_when_the_window_ends() -> None:
    repeats, recorded, now, timers = collapser()
    first = repeats.arrive(KEY)
    assert first is not None
    first.decided(collapsible=True)
    for i in range(1, 6):
        now[0] = T0 + timedelta(seconds=i)
        assert repeats.arrive(KEY) is None
    assert recorded == [] and [d for d, _, _ in timers.pending] == [29.0]  # one timer, to the window's end
    timers.fire()
    assert recorded == [Repeats(KEY, 5, T0 + timedelta(seconds=1), T0 + timedelta(seconds=5))]
    # After the window a click is decided again (and opens a new window).
    now[0] = T0 + timedelta(seconds=31)
    assert repeats.arrive(KEY) is not None


def test_other_people_buttons_and_versions_are_not_collapsed() -> None:
    repeats, _, _, _ = collapser()
    first = repeats.arrive(KEY)
    assert first is not None
    first.decided(collapsible=True)
    for other in (
        ClickKey("U02LEE", "ex-1", "H1", 1),
        ClickKey("U01DANA", "ex-1", "H2", 1),
        ClickKey("U01DANA", "ex-1", "H1", 2),
        ClickKey("U01DANA", "ex-2", "H1", 1),
    ):
        assert repeats.arrive(other) is not None, other


def test_a_denied_or_failed_first_click_collapses_nothing() -> None:
    repeats, recorded, _, timers = collapser()
    first = repeats.arrive(KEY)
    assert first is not None
    first.decided(collapsible=False)  # denied: a failed group lookup is asked again next click
    second = repeats.arrive(KEY)
    assert second is not None
    second.decided(collapsible=True)
    assert repeats.arrive(KEY) is None
    repeats.close()
    assert [r.count for r in recorded] == [1] and timers.pending  # close() recorded it, not the timer
    timers.fire()
    assert [r.count for r in recorded] == [1]  # a window is recorded once


def test_a_click_during_the_first_ones_decision_waits_for_its_outcome() -> None:
    repeats, recorded, _, _ = collapser()
    first = repeats.arrive(KEY)
    assert first is not None
    outcome: list[object] = []
    waiting = threading.Thread(target=lambda: outcome.append(repeats.arrive(KEY)))
    waiting.start()
    first.decided(collapsible=True)
    waiting.join(10)
    assert outcome == [None]
    repeats.close()
    assert [r.count for r in recorded] == [1]


def keep_alive_clicks(h: Harness, user: str, n: int, card: Message | None = None) -> list[int]:
    card = card or h.hold_card("H1")
    value = button_value(card) or ""
    with httpx.Client(timeout=10.0) as http:  # back to back on one connection, each freshly signed
        h.http, saved = http, h.http
        try:
            return [h.post(h.click_body("stagehold_release", value, user, card)).status_code for _ in range(n)]
        finally:
            h.http = saved


def test_a_burst_of_clicks_on_a_released_hold_is_one_release_one_answer_and_one_count(harness: Harness) -> None:
    h = harness
    start(h)
    assert keep_alive_clicks(h, RELEASERS[0], 40) == [200] * 40
    h.settle()
    assert [e["actor"] for e in entries_of(h, "release.granted", "H1")] == [RELEASERS[0]]
    assert len(entries_of(h, "hold.released", "H1")) == 1
    [counted] = entries_of(h, "release.ignored", "H1")
    assert (counted["actor"], counted["repeats"]) == (RELEASERS[0], 39)
    assert "39 repeated click(s) on the same Release button" in str(counted["reason"])
    assert len(h.fake.ephemerals(RELEASERS[0])) == 1


def test_each_denied_click_is_still_decided_and_recorded(harness: Harness) -> None:
    h = harness
    start(h)
    assert keep_alive_clicks(h, OUTSIDER, 3) == [200] * 3
    h.settle()
    assert [e["actor"] for e in entries_of(h, "release.denied", "H1")] == [OUTSIDER] * 3
    assert entries_of(h, "release.ignored", "H1") == []
    assert len(h.fake.ephemerals(OUTSIDER)) == 3
    assert h.execution().open_hold == "H1"


def test_the_window_ends_on_its_own_and_the_next_click_is_answered_again(make_bot: BotFactory, packages: Path) -> None:
    h = make_bot(repeat_window_s=1.0)
    start(h)
    card = copy.deepcopy(h.hold_card("H1"))  # as the person's screen still shows it after the release
    keep_alive_clicks(h, RELEASERS[0], 3, card)
    counted = h.fake.wait_for(lambda: entries_of(h, "release.ignored", "H1"), what="the repeats recorded")
    assert [c["repeats"] for c in counted] == [2]
    keep_alive_clicks(h, RELEASERS[0], 1, card)
    assert "already released" in str(
        h.fake.wait_for(lambda: h.fake.ephemerals(RELEASERS[0])[1:], what="a second answer")[0].params["text"]
    )
