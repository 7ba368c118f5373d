"""Human commands as pure functions: start, release, rollback, hold. Every refusal is an entry."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from dataclasses import replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from execution import commands as cmd
from execution import events as ev
from execution.contract import InvalidChange, load_change
from execution.decide import Decision, Observations, decide
from execution.project import State
from execution.transitions import Phase
from ledger.chain import format_ts, parse_ts
from ledger.entry import Entry, NewEntry
from tests.fakes import (
    EXAMPLES,
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
    upto,
)

OPENS = parse_ts("2026-11-28T22:00:00.000000Z")
CLOSES = parse_ts("2026-11-29T02:00:00.000000Z")


@pytest.fixture(scope="module")
def to_retire(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[Entry]]:
    """An engine run up to the two-person hold before the irreversible retire-legacy stage."""
    rig = Rig(tmp_path_factory.mktemp("commands") / "l.db")
    try:
        rig.start()
        rig.run_to_stage("full")
        state = rig.run()
        assert state.hold is not None and state.hold.stage == "retire-legacy"
        yield rig.entries()
    finally:
        rig.close()


def only(decision: Decision) -> NewEntry:
    entries = decision.append
    assert len(entries) == 1, [e.kind for e in entries]
    return entries[0]


def ts(state: State) -> datetime:
    assert state.last_ts is not None
    return state.last_ts


def held_at_canary_25(to_retire: list[Entry]) -> MemoryLedger:
    return MemoryLedger.of(upto(to_retire, ev.HOLD_OPENED))


# ---------------------------------------------------------------- start


def test_start_inside_the_window_by_the_initiator_records_everything_approved() -> None:
    change = example()
    entry = only(cmd.start(change, INITIATOR, (), OPENS + timedelta(minutes=1)))
    assert entry.kind == ev.EXECUTION_STARTED
    assert entry.actor == INITIATOR
    body = entry.body
    assert body["change_id"] == "CHG-2041"
    assert body["plan_sha256"] == change.plan_sha256
    assert body["mode"] == "live" and body["speed"] == 1.0
    assert body["window"] == {"opens": format_ts(OPENS), "closes": format_ts(CLOSES)}
    assert body["plan"]["version"] == 7
    assert body["initiator"] == INITIATOR


@pytest.mark.parametrize(
    ("now", "message"),
    [
        (OPENS - timedelta(seconds=1), "the change window opens at 2026-11-28T22:00:00.000000Z; not before"),
        (CLOSES, "the change window closed at 2026-11-29T02:00:00.000000Z"),
        (CLOSES + timedelta(days=1), "the change window closed"),
    ],
)
def test_a_live_start_outside_the_window_is_refused(now: datetime, message: str) -> None:
    with pytest.raises(cmd.StartRefused, match=message):
        cmd.start(example(), INITIATOR, (), now)


def test_an_unauthorised_initiator_is_refused_even_inside_the_window() -> None:
    with pytest.raises(cmd.StartRefused, match="U01DANA may not start CHG-2041: not in its initiate authority"):
        cmd.start(example(), "U01DANA", (), OPENS)


def test_an_initiator_may_be_authorised_through_a_group() -> None:
    change = edited(example(), package=lambda p: p["authorities"]["initiate"].update(users=[], groups=["S0OPS"]))
    with pytest.raises(cmd.StartRefused):
        cmd.start(change, "U07NEW", (), OPENS)
    assert only(cmd.start(change, "U07NEW", ("S0OPS",), OPENS)).actor == "U07NEW"


def test_a_live_start_runs_in_real_time_only() -> None:
    with pytest.raises(cmd.StartRefused, match="speed applies to rehearsals only"):
        cmd.start(example(), INITIATOR, (), OPENS, speed=10.0)


def test_a_rehearsal_rebases_the_window_to_now_compressed_by_speed() -> None:
    now = parse_ts("2027-03-01T09:00:00.000000Z")  # long after the approved window
    body = only(cmd.start(example(), INITIATOR, (), now, mode="rehearsal", speed=120.0)).body
    assert body["mode"] == "rehearsal"
    # 4 h of window at x120 is 2 minutes, starting now.
    assert body["window"] == {"opens": format_ts(now), "closes": format_ts(now + timedelta(minutes=2))}


def test_a_plan_changed_after_approval_cannot_even_be_loaded(tmp_path: Path) -> None:
    copy = tmp_path / "payments"
    shutil.copytree(EXAMPLES / "payments-cutover", copy)
    assert load_change(copy / "package.yaml").plan.version == 7
    plan = copy / "plan.yaml"
    plan.write_bytes(plan.read_bytes().replace(b"tokenizer: 5, legacy: 95}}}", b"tokenizer: 50, legacy: 50}}}", 1))
    with pytest.raises(InvalidChange) as caught:
        load_change(copy / "package.yaml")
    problems = [str(p) for p in caught.value.problems]
    assert any("plan changed after approval" in p and "package.yaml:" in p for p in problems), problems


def test_a_plan_that_carries_a_secret_is_refused() -> None:
    def leak(plan: dict[str, Any]) -> None:
        plan["stages"][0]["action"]["http"]["json"]["api_token"] = "s3cr3t-value-123"

    with pytest.raises(cmd.StartRefused, match="look like secrets"):
        cmd.start(edited(example(), plan=leak), INITIATOR, (), OPENS)


# ---------------------------------------------------------------- release


def test_release_by_a_named_authority_releases_that_hold(to_retire: list[Entry]) -> None:
    state = held_at_canary_25(to_retire).state
    out = cmd.release(state, "H1", 1, "U01DANA", (), ts(state))
    assert [e.kind for e in out] == [ev.RELEASE_GRANTED, ev.HOLD_RELEASED]
    assert out[0].body == {"hold": "H1", "evidence_version": 1, "count": 1, "required": 1}
    assert out[1].body == {"hold": "H1", "by": ["U01DANA"], "resume": "enter"}


def test_release_through_a_release_group(to_retire: list[Entry]) -> None:
    state = held_at_canary_25(to_retire).state
    assert only(cmd.release(state, "H1", 1, "U09CAB", (), ts(state))).kind == ev.RELEASE_DENIED
    assert [e.kind for e in cmd.release(state, "H1", 1, "U09CAB", ("S0CAB",), ts(state))][-1] == ev.HOLD_RELEASED


@pytest.mark.parametrize("user", ["U03RESP", "U06SRE", "U99NOBODY"])
def test_someone_without_release_authority_is_denied_and_recorded(to_retire: list[Entry], user: str) -> None:
    ledger = held_at_canary_25(to_retire)
    entry = only(cmd.release(ledger.state, "H1", 1, user, (), ts(ledger.state)))
    assert entry.kind == ev.RELEASE_DENIED
    assert entry.actor == user
    assert entry.body["reason"] == f"{user} is not a release authority for CHG-2041"
    ledger.append([entry])
    assert ledger.state.phase == Phase.HOLDING and ledger.state.hold is not None
    assert ledger.state.hold.releases == ()
    assert ledger.state.denied == 1


def test_the_initiator_cannot_release_under_two_person_control() -> None:
    change = edited(example(), package=lambda p: p["authorities"]["initiate"].update(users=["U01DANA"]))
    ledger = MemoryLedger()
    ledger.append(cmd.start(change, "U01DANA", (), OPENS))
    ledger.append([_manual_hold(ledger.state)])
    entry = only(cmd.release(ledger.state, "H1", 1, "U01DANA", (), OPENS))
    assert entry.kind == ev.RELEASE_DENIED
    assert "initiator cannot release" in entry.body["reason"]
    # The initiator is left out of who may release, too.
    assert ledger.state.hold is not None and "U01DANA" not in ledger.state.hold.releasers["users"]
    # Without two-person control the same person may release.
    solo = edited(change, package=lambda p: p["authorities"].update(two_person=False))
    ledger = MemoryLedger()
    ledger.append(cmd.start(solo, "U01DANA", (), OPENS))
    ledger.append([_manual_hold(ledger.state)])
    assert cmd.release(ledger.state, "H1", 1, "U01DANA", (), OPENS)[-1].kind == ev.HOLD_RELEASED


def _manual_hold(state: State) -> NewEntry:
    return only(cmd.hold(state, "U06SRE", (), "checking", ts(state)))


def test_an_irreversible_stage_needs_two_distinct_releasers(to_retire: list[Entry]) -> None:
    ledger = MemoryLedger.of(to_retire)
    hold = ledger.state.hold
    assert hold is not None and hold.required == 2 and hold.stage == "retire-legacy"
    now = ts(ledger.state)
    first = cmd.release(ledger.state, hold.id, 1, "U01DANA", (), now)
    assert [e.kind for e in first] == [ev.RELEASE_GRANTED]
    assert (first[0].body["count"], first[0].body["required"]) == (1, 2)
    ledger.append(first)
    assert ledger.state.phase == Phase.HOLDING
    # The same person again is a recorded no-op that says how many more are needed.
    again = only(cmd.release(ledger.state, hold.id, 1, "U01DANA", (), now))
    assert again.kind == ev.RELEASE_IGNORED
    assert "U01DANA already released" in again.body["reason"]
    assert "1 more distinct releaser(s) needed" in again.body["reason"]
    ledger.append([again])
    assert ledger.state.phase == Phase.HOLDING
    second = cmd.release(ledger.state, hold.id, 1, "U02LEE", (), now)
    assert [e.kind for e in second] == [ev.RELEASE_GRANTED, ev.HOLD_RELEASED]
    assert second[0].body["count"] == 2
    assert second[1].body["by"] == ["U01DANA", "U02LEE"]
    ledger.append(second)
    assert ledger.state.phase == Phase.READY


def test_a_release_on_an_old_evidence_version_is_a_recorded_no_op(to_retire: list[Entry]) -> None:
    ledger = MemoryLedger.of(to_retire)
    hold = ledger.state.hold
    assert hold is not None and hold.evidence_expires_at is not None
    ledger.append(cmd.release(ledger.state, hold.id, 1, "U01DANA", (), ts(ledger.state)))
    expired = decide(ledger.state, Observations(), hold.evidence_expires_at)
    assert [e.kind for e in expired.append] == [ev.HOLD_EVIDENCE_EXPIRED]
    ledger.append(expired.append)
    stale = only(cmd.release(ledger.state, hold.id, 1, "U02LEE", (), hold.evidence_expires_at))
    assert stale.kind == ev.RELEASE_IGNORED
    assert "went stale since this button was shown (v1 -> v2)" in stale.body["reason"]
    ledger.append([stale])
    assert ledger.state.phase == Phase.HOLDING
    # The release given on v1 no longer counts: on v2 the second releaser is again 1 of 2.
    fresh = cmd.release(ledger.state, hold.id, 2, "U02LEE", (), hold.evidence_expires_at)
    assert [e.kind for e in fresh] == [ev.RELEASE_GRANTED]
    assert fresh[0].body["count"] == 1


def test_a_release_of_an_already_released_hold_says_who_and_when(to_retire: list[Entry]) -> None:
    ledger = held_at_canary_25(to_retire)
    now = ts(ledger.state)
    ledger.append(cmd.release(ledger.state, "H1", 1, "U01DANA", (), now))
    later = now + timedelta(seconds=7)
    entry = only(cmd.release(ledger.state, "H1", 1, "U02LEE", (), later))
    assert entry.kind == ev.RELEASE_IGNORED
    assert entry.body["released_by"] == ["U01DANA"]
    assert entry.body["released_at"] == format_ts(now)
    assert entry.body["reason"] == f"H1 was already released by U01DANA at {format_ts(now)}"


def test_a_window_closed_hold_cannot_be_released() -> None:
    ledger = MemoryLedger()
    ledger.append(cmd.start(example(), INITIATOR, (), OPENS))
    state = ledger.state
    assert state.window_closes is not None
    ledger.append(decide(state, Observations(), state.window_closes).append)
    hold = ledger.state.hold
    assert hold is not None and hold.kind == "window_closed"
    entry = only(cmd.release(ledger.state, hold.id, 1, "U01DANA", (), state.window_closes))
    assert entry.kind == ev.RELEASE_DENIED
    assert "a window_closed hold cannot be released" in entry.body["reason"]


def test_releases_of_unknown_or_closed_holds_are_ignored(to_retire: list[Entry]) -> None:
    ledger = held_at_canary_25(to_retire)
    now = ts(ledger.state)
    unknown = only(cmd.release(ledger.state, "H7", 1, "U01DANA", (), now))
    assert (unknown.kind, unknown.body["reason"]) == (ev.RELEASE_IGNORED, "no hold H7 in this execution")
    ledger.append(cmd.rollback(ledger.state, "U03RESP", (), "abandon", now))
    assert ledger.state.holds["H1"].status == "closed"
    entry = only(cmd.release(ledger.state, "H1", 1, "U01DANA", (), now))
    assert (entry.kind, entry.body["reason"]) == (ev.RELEASE_IGNORED, "H1 was closed")


def test_a_superseded_hold_cannot_be_released(to_retire: list[Entry]) -> None:
    ledger = held_at_canary_25(to_retire)
    now = ts(ledger.state) + timedelta(seconds=1)
    # While H1 is open the live tier fails with the way back broken: H2 supersedes H1.
    readings = _healthy(now)
    bad = dict(readings.evidence)
    bad["error_rate"] = evidence("error_rate", 0.5, now)
    bad["legacy_healthy"] = evidence("legacy_healthy", False, now)
    ledger.append(decide(ledger.state, Observations(bad), now).append)
    assert ledger.state.open_hold == "H2"
    assert ledger.state.holds["H1"].status == "superseded"
    entry = only(cmd.release(ledger.state, "H1", 1, "U01DANA", (), now))
    assert entry.kind == ev.RELEASE_IGNORED
    assert entry.body["reason"] == "H1 was superseded; the current hold is H2"


def test_nothing_is_released_after_the_end(to_retire: list[Entry]) -> None:
    ledger = held_at_canary_25(to_retire)
    now = ts(ledger.state)
    ledger.append(cmd.rollback(ledger.state, "U03RESP", (), "abandon", now))
    ledger.append([NewEntry(ev.EXECUTION_NEEDS_HUMAN, "role:rollback", {"why": "test", "stage": "canary-5"}, now)])
    entry = only(cmd.release(ledger.state, "H1", 1, "U01DANA", (), now))
    assert entry.kind == ev.RELEASE_IGNORED
    assert entry.body["reason"] == "the execution is needs_human"


# ---------------------------------------------------------------- rollback


def test_rollback_authority_is_separate_from_release_authority(to_retire: list[Entry]) -> None:
    state = held_at_canary_25(to_retire).state
    now = ts(state)
    denied = only(cmd.rollback(state, "U01DANA", (), "I release things", now))
    assert denied.kind == ev.ROLLBACK_DENIED
    assert denied.body["reason"] == "U01DANA is not a rollback authority for CHG-2041"
    ordered = only(cmd.rollback(state, "U03RESP", (), "error budget", now))
    assert ordered.kind == ev.ROLLBACK_STARTED
    assert ordered.actor == "U03RESP"
    assert ordered.body["undo"] == ["canary-5"]
    assert ordered.body["trigger"] == "manual"
    assert only(cmd.rollback(state, "U08PAGER", ("S0ONCALL",), "paged", now)).kind == ev.ROLLBACK_STARTED


def test_a_second_rollback_order_is_refused_and_names_the_first(to_retire: list[Entry]) -> None:
    ledger = held_at_canary_25(to_retire)
    now = ts(ledger.state)
    ledger.append(cmd.rollback(ledger.state, "U03RESP", (), "first", now))
    entry = only(cmd.rollback(ledger.state, "U08PAGER", ("S0ONCALL",), "second", now))
    assert entry.kind == ev.ROLLBACK_DENIED
    assert "already in progress (ordered by U03RESP)" in entry.body["reason"]


def test_rollback_after_an_irreversible_stage_needs_a_human(to_retire: list[Entry]) -> None:
    ledger = MemoryLedger.of(to_retire)
    now = ts(ledger.state)
    ledger.append(cmd.release(ledger.state, "H3", 1, "U01DANA", (), now))
    ledger.append(cmd.release(ledger.state, "H3", 1, "U02LEE", (), now))
    ledger.append(decide(ledger.state, _healthy(now), now).append)  # retire-legacy intended
    pending = ledger.state.pending
    assert pending is not None and pending.stage == "retire-legacy"
    ledger.append(
        [
            NewEntry(
                ev.ACTION_CONFIRMED,
                "role:executor",
                {"stage": pending.stage, "index": 3, "direction": "apply", "key": pending.key, "observed": {}},
                now,
            )
        ]
    )
    assert ledger.state.fallback_retired
    entry = only(cmd.rollback(ledger.state, "U03RESP", (), "too late", now))
    assert entry.kind == ev.EXECUTION_NEEDS_HUMAN
    assert "stage 'retire-legacy' is irreversible" in entry.body["why"]


def _healthy(now: datetime) -> Observations:
    return Observations({name: evidence(name, value, now) for name, value in PAYMENTS_HEALTHY.items()})


def test_rollback_to_stops_at_the_named_stage(to_retire: list[Entry]) -> None:
    change = edited(example(), plan=lambda p: p.update(rollback_to="canary-5"))
    ledger = MemoryLedger.of(to_retire)
    # Same history, but the plan in the started entry says where the way back stops.
    first = to_retire[0]
    body = dict(first.body)
    body["plan"] = change.plan_data()
    ledger = MemoryLedger(first.execution_id)
    ledger.append([NewEntry(first.kind, first.actor, body, first.ts)])
    ledger.append([NewEntry(e.kind, e.actor, e.body, e.ts) for e in to_retire[1:]])
    entry = only(cmd.rollback(ledger.state, "U03RESP", (), "stop", ts(ledger.state)))
    assert entry.body["undo"] == ["full", "canary-25"]


def test_rollback_of_an_execution_that_is_over_is_refused(to_retire: list[Entry]) -> None:
    ledger = held_at_canary_25(to_retire)
    now = ts(ledger.state)
    ledger.append([NewEntry(ev.EXECUTION_NEEDS_HUMAN, "role:rollback", {"why": "x", "stage": "canary-5"}, now)])
    entry = only(cmd.rollback(ledger.state, "U03RESP", (), "late", now))
    assert entry.kind == ev.ROLLBACK_DENIED
    assert entry.body["reason"] == "the execution is already needs_human"


# ---------------------------------------------------------------- manual hold


@pytest.mark.parametrize("user", ["U05OPS", "U06SRE", "U01DANA", "U03RESP"])
def test_any_listed_person_may_hold_when_ready(user: str) -> None:
    ledger = MemoryLedger()
    ledger.append(cmd.start(example(), INITIATOR, (), OPENS))
    entry = only(cmd.hold(ledger.state, user, (), "wait for finance", OPENS))
    assert entry.kind == ev.HOLD_OPENED
    assert entry.actor == user
    assert entry.body["kind"] == "manual"
    assert entry.body["reason"] == f"manual hold by {user}: wait for finance"
    assert entry.body["resume_phase"] == "ready"
    ledger.append([entry])
    assert ledger.state.phase == Phase.HOLDING


def test_a_hold_while_verifying_resumes_verification_from_scratch(to_retire: list[Entry]) -> None:
    ledger = MemoryLedger.of(upto(to_retire, ev.VERIFICATION_SAMPLED, 9))
    assert ledger.state.phase == Phase.VERIFYING and ledger.state.stages[0].consecutive == 9
    now = ts(ledger.state)
    ledger.append(cmd.hold(ledger.state, "U06SRE", (), "odd graphs", now))
    assert ledger.state.hold is not None and ledger.state.hold.resume_phase == "verifying"
    ledger.append(cmd.release(ledger.state, "H1", 1, "U02LEE", (), now))
    assert ledger.state.phase == Phase.VERIFYING
    assert ledger.state.stages[0].consecutive == 0


def test_a_hold_while_an_action_resolves_is_requested_and_opens_right_after(to_retire: list[Entry]) -> None:
    ledger = MemoryLedger.of(upto(to_retire, ev.ACTION_INTENDED))
    assert ledger.state.phase == Phase.APPLYING
    now = ts(ledger.state)
    entry = only(cmd.hold(ledger.state, "U06SRE", (), "stop after this", now))
    assert entry.kind == ev.HOLD_REQUESTED
    ledger.append([entry])
    assert ledger.state.phase == Phase.APPLYING
    assert ledger.state.hold_requested == ("U06SRE", "stop after this")


def test_someone_not_listed_cannot_hold_and_is_recorded() -> None:
    ledger = MemoryLedger()
    ledger.append(cmd.start(example(), INITIATOR, (), OPENS))
    entry = only(cmd.hold(ledger.state, "U99NOBODY", (), "prank", OPENS))
    assert entry.kind == ev.HOLD_DENIED
    assert entry.body["reason"] == "U99NOBODY is not listed for CHG-2041"
    ledger.append([entry])
    assert ledger.state.phase == Phase.READY


def test_a_hold_is_ignored_when_already_held_rolling_back_or_over(to_retire: list[Entry]) -> None:
    ledger = held_at_canary_25(to_retire)
    now = ts(ledger.state)
    assert "already held at H1" in only(cmd.hold(ledger.state, "U06SRE", (), "x", now)).body["reason"]
    ledger.append(cmd.rollback(ledger.state, "U03RESP", (), "abandon", now))
    rolling = only(cmd.hold(ledger.state, "U06SRE", (), "x", now))
    assert rolling.kind == ev.HOLD_IGNORED
    assert rolling.body["reason"] == "a rollback in progress is finished, not held"
    ledger.append([NewEntry(ev.EXECUTION_NEEDS_HUMAN, "role:rollback", {"why": "x", "stage": "canary-5"}, now)])
    assert only(cmd.hold(ledger.state, "U06SRE", (), "x", now)).body["reason"] == "the execution is already needs_human"


def test_commands_on_an_unknown_execution_are_recorded_refusals() -> None:
    nothing = State("CHG-NONE")
    now = FakeClock()()
    assert only(cmd.release(nothing, "H1", 1, "U01DANA", (), now)).kind == ev.RELEASE_IGNORED
    assert only(cmd.rollback(nothing, "U03RESP", (), "", now)).kind == ev.ROLLBACK_DENIED
    assert only(cmd.hold(nothing, "U06SRE", (), "", now)).kind == ev.HOLD_DENIED


# ---------------------------------------------------------------- abandon


def test_abandon_ends_a_held_rehearsal_with_its_reason_and_frees_the_change(tmp_path: Path) -> None:
    rig = Rig(tmp_path / "l.db")
    try:
        rig.start(mode="rehearsal", speed=60.0)
        held = rig.run()
        assert held.phase == Phase.HOLDING and held.open_hold == "H1"
        outcome = rig.engine.abandon(rig.eid, "U05OPS", "sandbox torn down; nobody will finish this")
        assert outcome.kinds == (ev.EXECUTION_ABANDONED,)
        entry = outcome.entries[0]
        assert entry.actor == "U05OPS"
        assert entry.body == {"reason": "sandbox torn down; nobody will finish this", "phase": "holding", "hold": "H1"}
        state = rig.state
        assert state.phase == Phase.ABANDONED and state.terminal and state.status() == "abandoned"
        assert state.holds["H1"].status == "closed" and state.open_hold is None
        assert state.outcome_reason == "abandoned by U05OPS: sandbox torn down; nobody will finish this"
        # Nothing drives it again, and nothing is undone.
        assert rig.tick() is None and rig.kinds(after=entry.seq) == []
        # The change is free: a new rehearsal of it may start on the same shared sandbox.
        second = rig.engine.start(rig.change, "U05OPS", (), mode="rehearsal", speed=60.0)
        assert second.execution_id != rig.eid
    finally:
        rig.close()


def test_an_unfinished_rehearsal_blocks_a_new_one_until_abandoned(tmp_path: Path) -> None:
    rig = Rig(tmp_path / "l.db")
    try:
        rig.start(mode="rehearsal", speed=60.0)
        rig.run()
        with pytest.raises(cmd.StartRefused, match="an unfinished rehearsal"):
            rig.engine.start(rig.change, "U05OPS", (), mode="rehearsal", speed=60.0)
        rig.engine.abandon(rig.eid, "U03RESP", "replaced by a new rehearsal")
        rig.engine.start(rig.change, "U05OPS", (), mode="rehearsal", speed=60.0)
    finally:
        rig.close()


@pytest.mark.parametrize(
    ("user", "groups", "reason", "why"),
    [
        ("U01DANA", (), "x", "only its initiate or rollback authority may"),  # a releaser only
        ("U06SRE", (), "x", "only its initiate or rollback authority may"),  # an operator only
        ("U05OPS", (), "   ", "a reason is required"),
    ],
)
def test_abandon_refusals_are_recorded_and_change_nothing(
    user: str, groups: tuple[str, ...], reason: str, why: str
) -> None:
    ledger = MemoryLedger()
    clock = FakeClock()
    ledger.append(cmd.start(example(), INITIATOR, (), clock(), mode="rehearsal", speed=60.0))
    before = ledger.state.phase
    entry = only(cmd.abandon(ledger.state, user, groups, reason, clock()))
    assert entry.kind == ev.ABANDON_DENIED and why in entry.body["reason"]
    ledger.append([entry])
    assert ledger.state.phase == before and ledger.state.denied == 1


def test_a_member_of_the_rollback_group_may_abandon_and_a_finished_execution_is_not_abandoned() -> None:
    ledger = MemoryLedger()
    clock = FakeClock()
    ledger.append(cmd.start(example(), INITIATOR, (), clock(), mode="rehearsal", speed=60.0))
    ledger.append(cmd.abandon(ledger.state, "U0SOMEONE", ("S0ONCALL",), "stuck", clock()))
    assert ledger.state.phase == Phase.ABANDONED
    again = only(cmd.abandon(ledger.state, "U05OPS", (), "again", clock()))
    assert again.kind == ev.ABANDON_DENIED and again.body["reason"] == "the execution is already abandoned"


def test_a_button_binds_only_to_its_hold_at_its_stage() -> None:
    held = given(hold_opened("H1", "canary-25", 1, ev.HoldKind.PROTECTED, ev.Resume.ENTER)).state
    assert cmd.button_binds(held, "H1", "canary-25")
    assert not cmd.button_binds(held, "H1", "full"), "H1 at another stage was not written by stagehold"
    assert cmd.button_binds(held, "H7", "full"), "a hold the ledger lacks is the release's to refuse, and record"
    assert not cmd.button_binds(State("CHG-NONE"), "H1", "canary-25"), "no such execution: nothing to record it in"


def test_one_live_execution_per_change_is_a_rule_of_the_core() -> None:
    running = given().state
    rehearsing = replace(given().state, execution_id="CHG-2041-rehearsal", mode="rehearsal")
    with pytest.raises(cmd.StartRefused, match="already has a running execution: CHG-T-1"):
        cmd.start(example(), INITIATOR, (), OPENS, others=[running])
    with pytest.raises(cmd.StartRefused, match="already has an unfinished rehearsal: CHG-2041-rehearsal"):
        cmd.start(example(), INITIATOR, (), OPENS, mode="rehearsal", speed=10.0, others=[rehearsing])
    # Rehearsals never block a live execution, nor the reverse; a finished one blocks nothing.
    assert only(cmd.start(example(), INITIATOR, (), OPENS, others=[rehearsing])).kind == ev.EXECUTION_STARTED
    done = given((ev.ExecutionAbandoned(reason="postponed", phase="ready"), INITIATOR)).state
    assert done.terminal
    assert only(cmd.start(example(), INITIATOR, (), OPENS, others=[done])).kind == ev.EXECUTION_STARTED
