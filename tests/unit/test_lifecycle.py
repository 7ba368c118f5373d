"""Where an execution stands (pure): driven or not from its lease, and the word each phase shows."""

from __future__ import annotations

from datetime import timedelta

import pytest

from bot import exits
from bot.lifecycle import DRIVER_SLACK_S, driver, view
from execution import commands as cmd
from execution.project import State
from ledger.store import Lease
from tests.fakes import INITIATOR, FakeClock, MemoryLedger, example

CLOCK = FakeClock()
NOW = CLOCK()


def started(mode: str = "rehearsal", speed: float = 60.0) -> MemoryLedger:
    ledger = MemoryLedger()
    ledger.append(cmd.start(example(), INITIATOR, (), NOW, mode=mode, speed=speed))
    return ledger


def lease(expires_in_s: float) -> Lease:
    return Lease("CHG-T-1", "host:1:ab", 3, NOW + timedelta(seconds=expires_in_s))


# canary-5 samples every 30 s; at x60 the engine waits 0.5 s between its ticks.
@pytest.mark.parametrize(
    ("held", "driven", "says"),
    [
        (None, False, "no process has taken it over"),
        (lease(20), True, "driven by host:1:ab"),
        (lease(-(DRIVER_SLACK_S - 1)), True, "between ticks"),
        (lease(-(DRIVER_SLACK_S + 5)), False, "lapsed 20s ago"),
        (lease(-3650 * 86400), False, "host:1:ab let it go"),
    ],
)
def test_driven_only_while_a_lease_is_held_or_between_two_ticks(held: Lease | None, driven: bool, says: str) -> None:
    state = started().state
    got = driver(state, held, NOW)
    assert got.driven is driven and says in got.detail


def test_a_live_execution_waits_longer_between_ticks_than_a_compressed_rehearsal() -> None:
    live = started(mode="live", speed=1.0).state
    lapsed = lease(-40)  # less than canary-5's 30 s interval plus the slack
    assert driver(live, lapsed, NOW).driven
    assert not driver(started().state, lapsed, NOW).driven


@pytest.mark.parametrize(("held", "word"), [(lease(20), "RUNNING"), (None, "PAUSED")])
def test_ready_is_running_only_when_driven(held: Lease | None, word: str) -> None:
    seen = view(started().state, held, NOW)
    assert seen.word == word
    assert seen.code == (None if word == "RUNNING" else exits.HELD)
    assert seen.next_step and seen.who


def test_abandoned_is_its_own_word_and_code() -> None:
    ledger = started()
    ledger.append(cmd.abandon(ledger.state, INITIATOR, (), "replaced", NOW))
    seen = view(ledger.state, lease(20), NOW)
    assert (seen.word, seen.code) == ("ABANDONED", exits.ABANDONED)
    assert seen.driver is None and "may start" in seen.next_step


def test_a_state_without_a_hold_has_no_hold_lines() -> None:
    state: State = started().state
    assert view(state, None, NOW).hold_lines == ()
