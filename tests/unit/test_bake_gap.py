"""A bake's consecutive passes do not survive a gap: a sample taken longer than the interval plus
the stated tolerance after the previous one starts a new streak, and the gap is in the evidence
(the ledger body, the thread card, the packet and the state record)."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import timedelta
from typing import Any

import pytest

from execution import events as ev
from execution.decide import decide
from execution.outputs import intervention_packet, state_record
from execution.project import State
from execution.protocol import streak_gap_limit
from handlers.cards import packet_card
from handlers.notifier import Reply, Timeline
from templates import render
from tests.fakes import MemoryLedger, Rig, evidence, upto
from tests.unit import test_decide
from tests.unit.test_decide import body, obs

run_entries = test_decide.run_entries  # the decision tests' module-scoped engine run, as a fixture here


def bake_of(state: State) -> int:
    return state.stages[0].consecutive


def three_passes(entries: list[Any]) -> tuple[MemoryLedger, Any]:
    """canary-5 live with three passes 30 s apart; returns the ledger and the last sample time."""
    ledger = MemoryLedger.of(upto(entries, ev.ACTION_CONFIRMED))
    assert ledger.state.last_ts is not None
    now = ledger.state.last_ts
    for _ in range(3):
        ledger.append(decide(ledger.state, obs(now), now).append)
        now += timedelta(seconds=30)
    assert bake_of(ledger.state) == 3
    return ledger, now - timedelta(seconds=30)


def test_the_gap_limit_is_one_interval_plus_one_interval_of_tolerance() -> None:
    live = State("x", speed=1.0)
    assert streak_gap_limit(live, "30s") == 60.0
    # Compressed: 30 s at x120 is 0.25 s, and the tolerance is never below 1 s of real time...
    assert streak_gap_limit(replace(live, speed=120.0), "30s") == pytest.approx(1.25)
    # ...unless the plan's own interval is shorter.
    assert streak_gap_limit(replace(live, speed=120.0), "250ms") == pytest.approx(0.25 / 120 + 0.25)


def test_a_late_sample_keeps_the_streak(run_entries: list[Any]) -> None:
    ledger, last = three_passes(run_entries)
    now = last + timedelta(seconds=60)  # a whole interval late: no sample was missed
    sampled = body(decide(ledger.state, obs(now), now), ev.VERIFICATION_SAMPLED)
    assert sampled["consecutive"] == 4
    assert "gap" not in sampled


def test_a_sample_after_a_gap_starts_a_new_streak_and_records_the_gap(run_entries: list[Any]) -> None:
    ledger, last = three_passes(run_entries)
    now = last + timedelta(seconds=64)
    sampled = body(decide(ledger.state, obs(now), now), ev.VERIFICATION_SAMPLED)
    assert sampled["consecutive"] == 1
    assert sampled["gap"] == {"since_previous_s": 64.0, "limit_s": 60.0}


def test_a_failing_sample_after_a_gap_still_records_the_gap(run_entries: list[Any]) -> None:
    ledger, last = three_passes(run_entries)
    now = last + timedelta(seconds=300)
    readings = obs(now, error_rate=evidence("error_rate", 0.015, now))
    sampled = body(decide(ledger.state, readings, now), ev.VERIFICATION_SAMPLED)
    assert sampled["consecutive"] == 0
    assert sampled["gap"]["since_previous_s"] == 300.0


def test_an_engine_down_for_longer_than_the_gap_limit_restarts_the_bake(rig: Rig) -> None:
    rig.start()
    state = rig.run(until=lambda s: bake_of(s) == 4)
    assert bake_of(state) == 4
    last = state.stages[0].last_sample_at
    assert last is not None
    rig.clock.now = last + timedelta(seconds=128)  # the process was down; it comes back and ticks
    rig.tick()
    gap_entry = rig.of_kind(ev.VERIFICATION_SAMPLED)[-1]
    assert gap_entry.body["consecutive"] == 1
    assert gap_entry.body["gap"] == {"since_previous_s": 128.0, "limit_s": 60.0}
    assert bake_of(rig.state) == 1

    # The thread shows it: a passing sample is normally silent, this one is posted.
    entries = rig.entries()
    timeline = Timeline(rig.eid, lambda upto: [e for e in entries if e.seq <= upto])
    posted = []
    for i, entry in enumerate(entries):
        steps = timeline.advance(entry, entries[i + 1] if i + 1 < len(entries) else None)
        posted += [json.dumps(s.card.blocks) for s in steps if isinstance(s, Reply)]
    gap_cards = [c for c in posted if "streak restarted" in c]
    assert len(gap_cards) == 1
    assert "128.0 s since the previous sample (longer than 60 s)" in gap_cards[0]

    # A person stops it here: the packet and the state record carry the gap.
    rig.engine.hold(rig.eid, "U06SRE", "checking the outage")
    rig.run()
    entries = rig.entries()
    state = rig.state
    packet = intervention_packet(state, entries)
    assert packet is not None
    at = gap_entry.ts
    assert packet["bake"] == {
        "stage": "canary-5",
        "consecutive": 1,
        "required": 10,
        "gaps": [{"at": packet["bake"]["gaps"][0]["at"], "since_previous_s": 128.0, "limit_s": 60.0}],
    }
    assert packet["bake"]["gaps"][0]["at"].startswith(at.strftime("%Y-%m-%dT%H:%M:%S"))
    text = render("packet.md.j2", packet=packet)
    assert "- Bake of `canary-5`: 1 of 10 consecutive passes" in text
    assert "streak restarted: 128.0 s since the previous sample (longer than 60 s)" in text
    assert "streak restarted" in json.dumps(packet_card(packet).blocks)
    record = state_record(state, entries)
    assert record["stages"][0]["bake_gaps"][0]["since_previous_s"] == 128.0
