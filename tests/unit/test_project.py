"""The fold: state is computed from ledger entries alone, the same way every time."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from datetime import timedelta
from typing import Any

import pytest

from execution import commands as cmd
from execution import events as ev
from execution.decide import Observations, decide
from execution.project import State, apply, project
from execution.transitions import Phase
from ledger.entry import Entry, NewEntry
from tests.fakes import (
    INITIATOR,
    PAYMENTS_HEALTHY,
    FakeClock,
    MemoryLedger,
    Rig,
    edited,
    evidence,
    example,
    given,
    hold_opened,
    stage_of,
    upto,
)


@pytest.fixture(scope="module")
def run_entries(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[Entry]]:
    rig = Rig(tmp_path_factory.mktemp("project") / "l.db")
    try:
        rig.start()
        rig.run_to_stage("canary-25")
        yield rig.entries()
    finally:
        rig.close()


def add(ledger: MemoryLedger, kind: str, actor: str = "role:executor", **body: Any) -> State:
    ts = ledger.entries[-1].ts if ledger.entries else FakeClock()()
    ledger.append([NewEntry(kind, actor, body, ts)])
    return ledger.state


APPLY, ROLLBACK = ev.Direction.APPLY, ev.Direction.ROLLBACK


def reconcile_hold(hold: str) -> ev.HoldOpened:
    """A hold the scheduler opens on resume (it releases back to verifying)."""
    return hold_opened(hold, "canary-5", 0, ev.HoldKind.RECONCILE_MISMATCH, ev.Resume.RESUME, "verifying")


def healthy(ledger: MemoryLedger) -> Observations:
    now = ledger.entries[-1].ts
    return Observations({n: evidence(n, v, now) for n, v in PAYMENTS_HEALTHY.items()})


def test_the_same_entries_always_fold_to_the_same_state(run_entries: list[Entry]) -> None:
    assert project("x", []) == State("x")
    a = project(run_entries[0].execution_id, run_entries)
    b = project(run_entries[0].execution_id, list(run_entries))
    assert a == b
    # Folding incrementally from a cached prefix gives the same state as one full fold.
    cached = project(a.execution_id, run_entries[:7])
    for entry in run_entries[7:]:
        cached = apply(cached, entry)
    assert cached == a
    assert a.seq == len(run_entries)


def test_started_records_package_plan_window_and_stages() -> None:
    ledger = MemoryLedger()
    ledger.append(cmd.start(example(), INITIATOR, (), FakeClock()()))
    state = ledger.state
    assert state.phase == Phase.READY
    assert state.package is not None and state.package.id == "CHG-2041"
    assert state.plan is not None and state.plan.version == 7
    assert state.initiator == INITIATOR
    assert [s.id for s in state.stages] == ["canary-5", "canary-25", "full", "retire-legacy"]
    assert all(s.status == "pending" for s in state.stages)
    assert state.current == 0
    assert state.window_closes is not None and state.window_opens is not None
    assert state.status() == "running"


def test_an_engine_run_folds_to_where_the_execution_is(run_entries: list[Entry]) -> None:
    state = project(run_entries[0].execution_id, run_entries)
    assert state.phase == Phase.VERIFYING
    assert state.current == 1
    c5, c25 = state.stages[0], state.stages[1]
    assert (c5.status, c5.passed_basis, c5.consecutive) == ("passed", "verified", 10)
    assert (c25.status, c25.attempts, c25.entry_hold) == ("live", 1, "H1")
    assert c25.checkpoint == {"tokenizer": 25, "legacy": 75}
    assert state.holds["H1"].status == "released"
    assert state.holds["H1"].released_by == ("U01DANA",)
    assert state.last_confirmed == (1, "apply")
    assert state.blast_radius_reached() == 25
    assert state.pending is None


def test_intent_send_and_read_back_track_the_pending_action(run_entries: list[Entry]) -> None:
    ledger = MemoryLedger.of(upto(run_entries, ev.ACTION_INTENDED))
    p = ledger.state.pending
    assert p is not None
    assert (p.stage, p.direction, p.attempt, p.sends, p.readback, p.last_send) == (
        "canary-5",
        "apply",
        1,
        1,
        "none",
        None,
    )
    assert ledger.state.stages[0].status == "applying"
    # Results for another key are not this action's and change nothing.
    before = ledger.state
    ledger.record(
        ev.ActionSent(key="other", outcome=ev.SendOutcome.OK, stage="canary-5", direction=APPLY),
        ev.ActionReadBack(key="other", matches=True, stage="canary-5", direction=APPLY),
    )
    assert ledger.state.pending == before.pending
    sent = ledger.record(ev.ActionSent(key=p.key, outcome=ev.SendOutcome.AMBIGUOUS, stage="canary-5", direction=APPLY))
    assert sent.pending is not None and sent.pending.last_send == "ambiguous"
    read = ledger.record(ev.ActionReadBack(key=p.key, matches=False, observed={"tokenizer": 0}, stage="canary-5"))
    assert read.pending is not None and read.pending.readback == "mismatch"
    q = ledger.record(ev.ActionResendIntended(key=p.key, reason="once", stage="canary-5", direction=APPLY)).pending
    assert q is not None
    assert (q.sends, q.ambiguous_resends, q.readback, q.last_send) == (2, 1, "none", None)
    failed = ledger.record(ev.ActionReadBack(key=p.key, matches=None, stage="canary-5", direction=APPLY))
    assert failed.pending is not None and failed.pending.readback == "failed"


def test_a_resend_after_an_unrecorded_send_is_not_charged_as_ambiguous() -> None:
    q = given(
        ev.ActionIntended(stage="canary-5", index=0, direction=APPLY, attempt=1, key="k"),
        ev.ActionReadBack(stage="canary-5", direction=APPLY, key="k", matches=False),
        ev.ActionResendIntended(stage="canary-5", direction=APPLY, key="k", reason="interrupted"),
    ).state.pending
    assert q is not None and (q.sends, q.ambiguous_resends) == (2, 0)


def test_release_resume_routes(run_entries: list[Entry]) -> None:
    held = MemoryLedger.of(upto(run_entries, ev.HOLD_OPENED))
    now = held.entries[-1].ts
    hold = held.state.hold
    assert hold is not None and hold.resume == "enter"
    held.append(cmd.release(held.state, hold.id, 1, "U02LEE", (), now))
    assert held.state.phase == Phase.READY
    assert held.state.stages[1].entry_hold == hold.id
    assert held.state.open_hold is None
    held.record((ev.ReleaseNotCarried(hold=hold.id, why="x"), "role:preflight"))
    assert held.state.stages[1].entry_hold is None


def test_opening_a_hold_supersedes_the_open_one_and_clears_a_requested_hold(run_entries: list[Entry]) -> None:
    ledger = MemoryLedger.of(upto(run_entries, ev.ACTION_INTENDED))
    now = ledger.entries[-1].ts
    ledger.append(cmd.hold(ledger.state, "U06SRE", (), "after this", now))
    assert ledger.state.hold_requested == ("U06SRE", "after this")
    key = ledger.state.pending.key if ledger.state.pending else ""
    ledger.record(
        ev.ActionSent(key=key, outcome=ev.SendOutcome.OK, stage="canary-5", direction=APPLY),
        ev.ActionReadBack(key=key, matches=True, stage="canary-5", direction=APPLY),
    )
    ledger.append(decide(ledger.state, Observations(), now).append)  # confirmed
    assert ledger.state.phase == Phase.VERIFYING and ledger.state.hold_requested is not None
    ledger.append(decide(ledger.state, healthy(ledger), now).append)  # the requested manual hold
    assert ledger.state.phase == Phase.HOLDING
    assert ledger.state.hold_requested is None
    first = ledger.state.open_hold
    ledger.record((reconcile_hold("H9"), "role:scheduler"))
    assert ledger.state.open_hold == "H9"
    assert first is not None and ledger.state.holds[first].status == "superseded"


def test_confirmed_rollbacks_mark_stages_undone_and_the_end_is_terminal(run_entries: list[Entry]) -> None:
    ledger = MemoryLedger.of(run_entries)
    now = ledger.entries[-1].ts
    ledger.append(cmd.rollback(ledger.state, "U03RESP", (), "stop", now))
    state = ledger.state
    assert state.phase == Phase.ROLLING_BACK
    assert state.rollback is not None and state.rollback.undo == ("canary-25", "canary-5")
    for name, index in (("canary-25", 1), ("canary-5", 0)):
        intent = decide(ledger.state, Observations(), now)
        ledger.append(intent.append)
        assert ledger.state.stages[index].status == "rolling_back"
        assert ledger.state.phase == Phase.ROLLING_BACK
        key = f"{ledger.execution_id}:{name}:rollback:1"
        ledger.record((ev.ActionConfirmed(stage=name, index=index, direction=ROLLBACK, key=key), "role:rollback"))
        assert ledger.state.stages[index].status == "rolled_back"
        assert ledger.state.last_confirmed == (index, "rollback")
    assert ledger.state.rollback is not None and ledger.state.rollback.done == ("canary-25", "canary-5")
    ledger.append(decide(ledger.state, Observations(), now).append)
    assert ledger.state.phase == Phase.ROLLED_BACK
    assert ledger.state.status() == "rolled_back"
    assert ledger.state.terminal


def test_rollback_started_closes_the_hold_and_abandons_a_pending_forward_action(run_entries: list[Entry]) -> None:
    ledger = MemoryLedger.of(upto(run_entries, ev.ACTION_INTENDED, 2))
    assert ledger.state.pending is not None and ledger.state.pending.stage == "canary-25"
    now = ledger.entries[-1].ts
    ledger.append(cmd.rollback(ledger.state, "U03RESP", (), "abort", now))
    state = ledger.state
    assert state.pending is None
    assert state.rollback is not None and state.rollback.undo == ("canary-25", "canary-5")
    assert state.rollback.requested_by == "U03RESP"


def test_needs_human_closes_the_hold_and_keeps_why() -> None:
    state = given(
        ev.ActionIntended(stage="canary-5", index=0, direction=APPLY, attempt=1, key="k"),
        ev.ActionConfirmed(stage="canary-5", index=0, direction=APPLY, key="k", observed={}),
        reconcile_hold("H1"),
        (ev.ExecutionNeedsHuman(why="rollback failed: 500", stage="canary-5"), "role:rollback"),
    ).state
    assert state.status() == "needs_human"
    assert state.outcome_reason == "rollback failed: 500"
    assert state.open_hold is None and state.holds["H1"].status == "closed"


def test_narrowing_leaves_the_execution_held_at_the_undone_stage() -> None:
    change = edited(example(), plan=lambda p: stage_of(p, "canary-5")["verify"]["on"].update(fail="narrow"))
    ledger = MemoryLedger()
    ledger.append(cmd.start(change, INITIATOR, (), FakeClock()()))
    now = ledger.entries[-1].ts
    ledger.append(decide(ledger.state, healthy(ledger), now).append)
    p = ledger.state.pending
    assert p is not None
    ledger.record(ev.ActionConfirmed(stage=p.stage, index=0, direction=APPLY, key=p.key, observed={}))
    bad = dict(healthy(ledger).evidence)
    bad["error_rate"] = evidence("error_rate", 0.5, now)
    ledger.append(decide(ledger.state, Observations(bad), now).append)
    assert ledger.state.rollback is not None and ledger.state.rollback.scope == "narrow"
    ledger.append(decide(ledger.state, Observations(), now).append)  # rollback intended
    key = ledger.state.pending.key if ledger.state.pending else ""
    ledger.record((ev.ActionConfirmed(stage="canary-5", index=0, direction=ROLLBACK, key=key), "role:rollback"))
    ledger.append(decide(ledger.state, Observations(), now).append)  # narrowed hold
    state = ledger.state
    assert state.phase == Phase.HOLDING
    assert state.hold is not None and state.hold.kind == "narrowed"
    assert state.status() == "narrowed"
    assert state.rollback is None and state.current == 0 and state.narrowed
    ledger.append(cmd.release(state, state.hold.id, 1, "U01DANA", (), now + timedelta(seconds=1)))
    assert ledger.state.phase == Phase.READY and ledger.state.status() == "running"
    # Re-entering the undone stage ends the narrowing.
    later = now + timedelta(seconds=2)
    ledger.append(
        decide(
            ledger.state, Observations({n: evidence(n, v, later) for n, v in PAYMENTS_HEALTHY.items()}), later
        ).append
    )
    assert ledger.state.phase == Phase.APPLYING and not ledger.state.narrowed
    assert ledger.state.stages[0].attempts == 2


def test_status_names(run_entries: list[Entry]) -> None:
    assert project("e", upto(run_entries, ev.HOLD_OPENED)).status() == "held"
    assert project("e", run_entries).status() == "running"


def test_kinds_the_engine_does_not_interpret_are_history_only(run_entries: list[Entry]) -> None:
    ledger = MemoryLedger.of(run_entries)
    before = ledger.state
    add(ledger, "slack.posted", "role:notifier", ts="1234.5")
    after = ledger.state
    assert after.seq == before.seq + 1
    assert replace(after, seq=before.seq, last_ts=before.last_ts) == before
