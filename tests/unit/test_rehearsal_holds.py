"""Compressed time leaves a person time to read a hold card, and stale evidence still never moves
an execution.

At x60 a 30 s max_age is 0.5 s: the card's evidence version used to move on before anyone could
see a v1 button. A hold card's evidence window is now never compressed below
min(max_age, HUMAN_READING_S) of real time; evidence read for a transition is still judged by the
compressed max_age, and a release re-reads it first.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

from execution import events as ev
from execution.project import State
from execution.protocol import HUMAN_READING_S, hold_evidence_window
from execution.transitions import Phase
from tests.fakes import Rig

SPEED = 60.0


def held_at_h1(rig: Rig) -> State:
    rig.start(mode="rehearsal", speed=SPEED)
    state = rig.run()
    assert state.hold is not None and state.hold.kind == "protected"
    return state


def test_the_window_is_compressed_but_never_below_reading_time_nor_beyond_max_age() -> None:
    live = State("x")
    assert hold_evidence_window(live, "30s") == 30.0
    assert hold_evidence_window(replace(live, speed=60.0), "30s") == 30.0
    assert hold_evidence_window(replace(live, speed=120.0), "10m") == HUMAN_READING_S == 60.0
    assert hold_evidence_window(replace(live, speed=2.0), "10m") == 300.0  # compression that leaves enough time
    assert hold_evidence_window(replace(live, speed=60.0), "2s") == 2.0


def test_a_rehearsal_hold_card_stays_current_for_a_person_to_read(rig: Rig) -> None:
    state = held_at_h1(rig)
    hold = state.hold
    assert hold is not None and hold.evidence_expires_at is not None
    # The shortest max_age on the card is 30 s (legacy_healthy): 30 s of real time, not 0.5 s.
    assert hold.evidence_expires_at == hold.opened_at + timedelta(seconds=30)
    rig.clock.now = hold.opened_at + timedelta(seconds=20)  # a person reads the card...
    rig.tick()
    assert rig.of_kind(ev.HOLD_EVIDENCE_EXPIRED) == []
    # ...and the v1 button they see still works.
    assert rig.release("U01DANA", version=1).kinds == (ev.RELEASE_GRANTED, ev.HOLD_RELEASED)
    rig.run(until=lambda s: s.stages[1].status == "live")
    gate = [e for e in rig.of_kind(ev.GATE_CHECKED) if e.body["stage"] == "canary-25"][-1]
    # The gate re-read the evidence after the release: every reading is fresh, none is 20 s old.
    assert gate.ts >= rig.of_kind(ev.HOLD_RELEASED)[-1].ts
    assert all(r["age_s"] is not None and r["age_s"] < 0.5 for r in gate.body["results"])


def test_evidence_older_than_the_compressed_max_age_never_moves_the_execution(rig: Rig) -> None:
    held_at_h1(rig)
    rig.clock.advance(20)
    # The target now answers with samples 5 s old: fine for reading a card, stale for a transition.
    rig.fake.signal_age = {name: 5.0 for name in ("vault_healthy", "legacy_healthy", "snapshot_age_s")}
    assert rig.release("U01DANA", version=1).kinds == (ev.RELEASE_GRANTED, ev.HOLD_RELEASED)
    state = rig.run()
    assert state.phase == Phase.HOLDING and state.open_hold != "H1"
    assert not [e for e in rig.of_kind(ev.ACTION_INTENDED) if e.body["stage"] == "canary-25"]
    gate = [e for e in rig.of_kind(ev.GATE_CHECKED) if e.body["stage"] == "canary-25"][-1]
    assert {r["outcome"] for r in gate.body["results"]} == {"stale"}


def test_the_card_still_goes_stale_when_its_window_has_passed(rig: Rig) -> None:
    state = held_at_h1(rig)
    assert state.hold is not None and state.hold.evidence_expires_at is not None
    rig.clock.now = state.hold.evidence_expires_at
    rig.tick()
    assert [e.body["evidence_version"] for e in rig.of_kind(ev.HOLD_EVIDENCE_EXPIRED)] == [2]
    assert rig.release("U01DANA", version=1).kinds == (ev.RELEASE_IGNORED,)
