"""The one phase table: every legal change allowed, every other change refused, and the fold obeys it."""

from __future__ import annotations

import dataclasses
import itertools
from datetime import timedelta
from pathlib import Path

import pytest

from bot.commands.schema import readme_with_phases
from execution import commands as cmd
from execution import events as ev
from execution.project import project
from execution.transitions import (
    TABLE,
    TERMINAL,
    TRANSITIONS,
    IllegalTransition,
    Phase,
    Via,
    diagram,
    next_phase,
    transition,
)
from ledger.chain import GENESIS_HASH, seal
from ledger.entry import Entry, NewEntry
from tests.fakes import INITIATOR, FakeClock, MemoryLedger, Rig, example

LEGAL = {
    (Phase.NEW, Phase.READY),
    (Phase.READY, Phase.APPLYING),
    (Phase.READY, Phase.HOLDING),
    (Phase.READY, Phase.COMPLETED),
    (Phase.READY, Phase.ROLLING_BACK),
    (Phase.READY, Phase.NEEDS_HUMAN),
    (Phase.APPLYING, Phase.VERIFYING),
    (Phase.APPLYING, Phase.HOLDING),
    (Phase.APPLYING, Phase.ROLLING_BACK),
    (Phase.APPLYING, Phase.NEEDS_HUMAN),
    (Phase.VERIFYING, Phase.READY),
    (Phase.VERIFYING, Phase.HOLDING),
    (Phase.VERIFYING, Phase.ROLLING_BACK),
    (Phase.VERIFYING, Phase.NEEDS_HUMAN),
    (Phase.HOLDING, Phase.HOLDING),
    (Phase.HOLDING, Phase.READY),
    (Phase.HOLDING, Phase.APPLYING),
    (Phase.HOLDING, Phase.VERIFYING),
    (Phase.HOLDING, Phase.ROLLING_BACK),
    (Phase.HOLDING, Phase.NEEDS_HUMAN),
    (Phase.ROLLING_BACK, Phase.ROLLED_BACK),
    (Phase.ROLLING_BACK, Phase.HOLDING),
    (Phase.ROLLING_BACK, Phase.NEEDS_HUMAN),
    # A person may abandon an execution nobody will finish from any phase after its start.
    (Phase.READY, Phase.ABANDONED),
    (Phase.APPLYING, Phase.ABANDONED),
    (Phase.VERIFYING, Phase.ABANDONED),
    (Phase.HOLDING, Phase.ABANDONED),
    (Phase.ROLLING_BACK, Phase.ABANDONED),
}
ALL_PAIRS = list(itertools.product(Phase, Phase))


def test_the_table_is_exactly_the_documented_set() -> None:
    table = {(a, b) for a, targets in TRANSITIONS.items() for b in targets}
    assert table == LEGAL
    assert set(TRANSITIONS) == set(Phase)


@pytest.mark.parametrize(("current", "target"), sorted(LEGAL))
def test_every_legal_change_is_allowed(current: Phase, target: Phase) -> None:
    assert transition(current, target, "test") is target


@pytest.mark.parametrize(("current", "target"), [p for p in ALL_PAIRS if p not in LEGAL])
def test_every_other_change_raises_and_names_both_phases(current: Phase, target: Phase) -> None:
    with pytest.raises(IllegalTransition) as caught:
        transition(current, target, "forged")
    assert caught.value.current is current
    assert caught.value.target is target
    assert f"{current} -> {target}" in str(caught.value)
    assert "forged" in str(caught.value)


@pytest.mark.parametrize("phase", sorted(TERMINAL))
def test_terminal_phases_have_no_exits(phase: Phase) -> None:
    assert TRANSITIONS[phase] == frozenset()
    for target in Phase:
        with pytest.raises(IllegalTransition):
            transition(phase, target, "after the end")


def test_terminal_set_is_completed_rolled_back_needs_human_and_abandoned() -> None:
    assert frozenset({Phase.COMPLETED, Phase.ROLLED_BACK, Phase.NEEDS_HUMAN, Phase.ABANDONED}) == TERMINAL


def test_a_rollback_in_progress_is_finished_not_resumed_forward() -> None:
    for target in (Phase.READY, Phase.APPLYING, Phase.VERIFYING, Phase.COMPLETED):
        with pytest.raises(IllegalTransition):
            transition(Phase.ROLLING_BACK, target, "forward during rollback")


def test_nothing_skips_verification_or_enters_without_an_intent() -> None:
    with pytest.raises(IllegalTransition):
        transition(Phase.APPLYING, Phase.READY, "skip verification")
    with pytest.raises(IllegalTransition):
        transition(Phase.READY, Phase.VERIFYING, "verify without an action")
    with pytest.raises(IllegalTransition):
        transition(Phase.VERIFYING, Phase.COMPLETED, "complete without passing")


# ---------------------------------------------------------------- the fold routes every change through the table


def _started_ledger() -> MemoryLedger:
    clock = FakeClock()
    ledger = MemoryLedger()
    ledger.append(cmd.start(example(), INITIATOR, (), clock()))
    return ledger


def _forge(ledger: MemoryLedger, kind: str, body: dict[str, object]) -> Entry:
    prev = ledger.entries[-1].hash if ledger.entries else GENESIS_HASH
    ts = ledger.entries[-1].ts + timedelta(seconds=1)
    return seal(ledger.execution_id, len(ledger.entries) + 1, NewEntry(kind, "U9FORGER", body, ts), prev)


def test_a_forged_confirmation_while_ready_raises_on_fold_and_changes_nothing() -> None:
    ledger = _started_ledger()
    before = ledger.state
    assert before.phase == Phase.READY
    forged = _forge(
        ledger,
        ev.ACTION_CONFIRMED,
        {"stage": "canary-5", "index": 0, "direction": "apply", "key": "k", "observed": {}},
    )
    with pytest.raises(IllegalTransition) as caught:
        project(ledger.execution_id, [*ledger.entries, forged])
    assert (caught.value.current, caught.value.target) == (Phase.READY, Phase.VERIFYING)
    # The state already folded is untouched: a failed fold yields nothing to use.
    assert ledger.state == before


@pytest.mark.parametrize(
    ("kind", "body"),
    [
        (ev.STAGE_PASSED, {"stage": "canary-5", "index": 0, "basis": "verified", "consecutive": 10}),
        (ev.EXECUTION_ROLLED_BACK, {"undone": []}),
        (ev.EXECUTION_STARTED, None),
    ],
)
def test_forged_phase_changes_from_ready_raise(kind: str, body: dict[str, object] | None) -> None:
    ledger = _started_ledger()
    forged_body = body if body is not None else dict(ledger.entries[0].body)
    forged = _forge(ledger, kind, forged_body)
    with pytest.raises(IllegalTransition):
        project(ledger.execution_id, [*ledger.entries, forged])


def test_nothing_folds_after_a_terminal_entry(tmp_path: Path) -> None:
    rig = Rig(tmp_path / "l.db")
    try:
        rig.start()
        rig.run()
        rig.engine.rollback(rig.eid, "U03RESP", "abandon")
        state = rig.run()
        assert state.phase == Phase.ROLLED_BACK
        entries = rig.entries()
        ledger = MemoryLedger(rig.eid)
        ledger.entries = list(entries)
        ledger.state = project(rig.eid, entries)
        forged = _forge(ledger, ev.EXECUTION_COMPLETED, {"stages": []})
        with pytest.raises(IllegalTransition) as caught:
            project(rig.eid, [*entries, forged])
        assert caught.value.current == Phase.ROLLED_BACK
    finally:
        rig.close()


def test_an_entry_out_of_sequence_is_refused_by_the_fold() -> None:
    ledger = _started_ledger()
    forged = _forge(ledger, "note", {})
    gap = seal(ledger.execution_id, forged.seq + 1, NewEntry("note", "x", {}, forged.ts), forged.hash)
    with pytest.raises(ValueError, match="does not follow"):
        project(ledger.execution_id, [*ledger.entries, gap])


def test_attempt_only_entries_never_change_the_phase() -> None:
    ledger = _started_ledger()
    phase = ledger.state.phase
    for kind in sorted(ev.NO_OP_KINDS):
        ledger.append([NewEntry(kind, "U9ANY", {"hold": "H9", "reason": "denied"}, ledger.entries[-1].ts)])
        assert ledger.state.phase == phase
    assert ledger.state.denied == len(ev.NO_OP_KINDS)


# ---------------------------------------------------------------- the table is keyed by event


def test_the_readme_phase_diagram_is_generated_from_the_table() -> None:
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")
    assert readme_with_phases(readme) == readme, "README phases are stale: run `.venv/bin/stagehold schema docs`"
    assert diagram() in readme


def _example(event_type: type[ev.Event]) -> ev.Event:
    """Some ``event_type``: the table looks at the class (and ``via``), never at the fields."""
    fields = dataclasses.fields(event_type)
    required = {
        f.name: None for f in fields if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    }
    return event_type(**required)


@pytest.mark.parametrize(("key", "target"), sorted(TABLE.items(), key=str), ids=str)
def test_every_row_moves_its_phase_where_the_table_says(key: tuple[Phase, type[ev.Event], Via], target: Phase) -> None:
    phase, event_type, via = key
    assert next_phase(phase, _example(event_type), via) is target


@pytest.mark.parametrize("phase", list(Phase))
def test_an_event_that_moves_the_phase_elsewhere_but_not_from_here_raises(phase: Phase) -> None:
    movers = {(event_type, via) for (_, event_type, via) in TABLE}
    for event_type, via in movers:
        if (phase, event_type, via) in TABLE:
            continue
        with pytest.raises(IllegalTransition) as caught:
            next_phase(phase, _example(event_type), via)
        assert caught.value.current is phase


def test_events_without_a_row_never_change_the_phase() -> None:
    movers = {event_type for (_, event_type, _) in TABLE}
    for event_type in ev.EVENT_TYPES:
        if event_type in movers:
            continue
        for phase in Phase:
            assert next_phase(phase, _example(event_type)) is phase
    # A rollback step's intent and confirmation leave the phase at ROLLING_BACK.
    for event_type in (ev.ActionIntended, ev.ActionConfirmed):
        assert next_phase(Phase.ROLLING_BACK, _example(event_type), ev.Direction.ROLLBACK) is Phase.ROLLING_BACK


def test_the_ledger_registry_closes_an_execution_on_exactly_the_events_that_lead_to_a_terminal_phase() -> None:
    # ledger.registry names these kinds itself (the ledger imports nothing of the engine); a new
    # terminal event the registry does not know would leave finished executions counted open
    # (harmless, slower), and a registry kind that is not terminal would hide a live one.
    from execution.transitions import TABLE, TERMINAL
    from ledger.registry import CLOSING_KINDS

    into_terminal = {event.kind for (_, event, _), target in TABLE.items() if target in TERMINAL}
    assert set(CLOSING_KINDS) == into_terminal
    assert all(target in TERMINAL for (_, event, _), target in TABLE.items() if event.kind in CLOSING_KINDS)
