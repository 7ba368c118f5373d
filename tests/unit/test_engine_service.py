"""The shell (``Engine``) over SQLite with a fake clock and a recording fake target.

Each test drives an execution tick by tick and checks both sides: what the ledger says and what
the target saw (reads, sends, roles, keys), so a rule that only holds on paper fails here.
"""

from __future__ import annotations

import json
import threading
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from execution import events as ev
from execution.commands import StartRefused
from execution.decide import SendAction
from execution.model import ActionResult, Role
from execution.project import State
from execution.service import Engine
from execution.transitions import Phase
from ledger.sql import SqlLedgerStore
from ledger.store import AppendConflict
from tests.fakes import (
    INITIATOR,
    PAYMENTS_HEALTHY,
    FakeTarget,
    Rig,
    edited,
    example,
    stage_of,
)

GATE = ("vault_healthy", "legacy_healthy", "snapshot_age_s")


def sends(rig: Rig, stage: str, direction: str = "apply") -> list[str]:
    return [k for k in rig.fake.applies() if f":{stage}:{direction}:" in k]


def hold_kind(state: State) -> str | None:
    return state.hold.kind if state.hold else None


# ---------------------------------------------------------------- gate and preflight freshness


def test_preflight_and_readiness_are_read_right_before_every_stage_is_entered(rig: Rig) -> None:
    rig.start()
    rig.run_to_stage("canary-25")
    calls = rig.fake.calls
    for stage in ("canary-5", "canary-25"):
        i = next(n for n, c in enumerate(calls) if c[0] == "apply" and f":{stage}:apply:" in c[1])
        # Read together, in any order.
        assert sorted(calls[i - 3 : i]) == sorted(("read", name, "role:preflight") for name in GATE), calls[
            i - 6 : i + 1
        ]
        assert calls[i][2] == "role:executor"
    # The ledger has the gate check, at the same instant, right before the intent.
    for intended in rig.of_kind(ev.ACTION_INTENDED):
        gate = rig.entries()[intended.seq - 2]
        assert gate.kind == ev.GATE_CHECKED and gate.ts == intended.ts
        assert gate.body["stage"] == intended.body["stage"] and gate.body["outcome"] == "pass"


def test_the_signals_of_one_step_are_read_at_the_same_time(rig: Rig) -> None:
    # The first gate reads its three signals; each read waits for the other two to be under way.
    # Read one after another, the first would wait alone, the barrier would break, and the gate
    # would hold on errors instead of entering the first stage.
    together = threading.Barrier(len(GATE), timeout=10)
    read = rig.fake.read
    gated: list[str] = []

    def read_together(name: str, signal: Any, role: Role) -> Any:
        if role == Role.PREFLIGHT and len(gated) < len(GATE):
            gated.append(name)
            together.wait()
        return read(name, signal, role)

    rig.fake.read = read_together  # type: ignore[method-assign]
    rig.start()
    state = rig.run(until=lambda s: s.stages[0].status == "live")
    assert sorted(gated) == sorted(GATE)
    assert state.stages[0].status == "live" and state.hold is None


@pytest.mark.parametrize(
    ("setup", "kind"),
    [
        ({"signal_age": {"vault_healthy": 31}}, "preflight"),
        ({"signals": {"vault_healthy": None}}, "preflight"),
        ({"signal_error": {"vault_healthy": "HTTP 503"}}, "preflight"),
        ({"signals": {"vault_healthy": False}}, "preflight"),
        ({"signal_age": {"snapshot_age_s": 61}}, "readiness_lost"),
        ({"signals": {"snapshot_age_s": None}}, "readiness_lost"),
        ({"signals": {"legacy_healthy": False}}, "readiness_lost"),
    ],
    ids=["stale", "no-data", "error", "dependency-down", "snapshot-stale", "snapshot-missing", "fallback-down"],
)
def test_the_first_stage_is_not_entered_on_anything_but_fresh_passing_evidence(
    rig: Rig, setup: dict[str, dict[str, Any]], kind: str
) -> None:
    for attr, values in setup.items():
        getattr(rig.fake, attr).update(values)
    rig.start()
    state = rig.run()
    assert state.phase == Phase.HOLDING and hold_kind(state) == kind
    assert rig.fake.applies() == []
    kinds = rig.kinds()
    assert kinds[:3] == [ev.EXECUTION_STARTED, ev.GATE_CHECKED, ev.HOLD_OPENED]
    # Evidence that was stale when shown is marked stale at once; nothing else happens.
    assert kinds[3:] in ([], [ev.HOLD_EVIDENCE_EXPIRED])


def test_a_degraded_dependency_pauses_before_the_next_tier(rig: Rig) -> None:
    rig.start()
    state = rig.run(until=lambda s: s.stages[0].consecutive == 9)
    rig.fake.signals["vault_healthy"] = False  # the dependency degrades while canary-5 bakes
    state = rig.run()
    assert state.stages[0].status == "passed"
    assert state.phase == Phase.HOLDING and state.hold is not None
    assert state.hold.stage == "canary-25"
    assert state.hold.categories["preflight:vault_healthy"] == "fail"
    assert "vault_healthy fail" in state.hold.reason
    # A release on that evidence does not enter the wider tier.
    rig.release("U01DANA")
    state = rig.run()
    assert state.phase == Phase.HOLDING and state.hold is not None and state.hold.supersedes == "H1"
    assert sends(rig, "canary-25") == []
    assert rig.fake.docs["/weights"] == {"tokenizer": 5, "legacy": 95}


# ---------------------------------------------------------------- rollback readiness


def test_lost_readiness_while_live_holds_even_with_nominal_forward_metrics(rig: Rig) -> None:
    rig.start()
    rig.run(until=lambda s: s.stages[0].consecutive == 3)
    rig.fake.signal_age["snapshot_age_s"] = 3600  # the snapshot reading stops updating
    state = rig.run()
    assert hold_kind(state) == "readiness_lost"
    sampled = rig.of_kind(ev.VERIFICATION_SAMPLED)[-1]
    checks = {r["signal"]: r["outcome"] for r in sampled.body["results"] if r["kind"] == "check"}
    assert checks == {"error_rate": "pass", "settlement_parity": "pass"}
    assert state.stages[0].status == "live"
    assert sends(rig, "canary-25") == []


def test_a_fail_with_the_way_back_broken_holds_instead_of_rolling_back(rig: Rig) -> None:
    rig.start()
    rig.run(until=lambda s: s.stages[0].consecutive == 2)
    rig.fake.signals.update(error_rate=0.3, legacy_healthy=False)
    state = rig.run()
    assert hold_kind(state) == "rollback_unsafe"
    assert "the way back is not ready" in (state.hold.reason if state.hold else "")
    assert sends(rig, "canary-5", "rollback") == []
    assert ev.ROLLBACK_STARTED not in rig.kinds()


# ---------------------------------------------------------------- protected stages and releases


def test_a_release_given_before_the_evidence_went_stale_does_not_carry_forward(rig: Rig) -> None:
    rig.start()
    state = rig.run()
    assert hold_kind(state) == "protected" and state.hold is not None
    shown = state.hold.categories
    rig.fake.signal_age["legacy_healthy"] = 45  # the fallback health reading goes stale
    out = rig.release("U01DANA")
    assert out.kinds == (ev.RELEASE_GRANTED, ev.HOLD_RELEASED)
    state = rig.run()
    not_carried = rig.of_kind(ev.RELEASE_NOT_CARRIED)
    assert len(not_carried) == 1
    assert not_carried[0].body["changes"] == ["readiness:legacy_healthy pass -> stale"]
    assert state.phase == Phase.HOLDING and state.hold is not None
    assert state.hold.id == "H2" and state.hold.supersedes == "H1"
    assert "readiness:legacy_healthy pass -> stale" in state.hold.reason
    assert shown["readiness:legacy_healthy"] == "pass"
    assert sends(rig, "canary-25") == []
    # H2 showed stale evidence; once it is fresh again that release does not carry either: the
    # authority must release on the evidence as it now is (H3), and only then is the stage entered.
    rig.fake.signal_age.clear()
    rig.release("U02LEE")
    state = rig.run()
    assert state.hold is not None and state.hold.id == "H3"
    assert rig.of_kind(ev.RELEASE_NOT_CARRIED)[-1].body["changes"] == ["readiness:legacy_healthy stale -> pass"]
    assert sends(rig, "canary-25") == []
    rig.release("U01DANA")
    rig.run(until=lambda s: s.stages[1].status == "live")
    assert sends(rig, "canary-25") == [f"{rig.eid}:canary-25:apply:1"]


def test_two_releasers_for_the_irreversible_stage_then_it_retires_the_fallback(rig: Rig) -> None:
    rig.start()
    rig.run_to_stage("full")
    state = rig.run()
    assert state.hold is not None and state.hold.stage == "retire-legacy" and state.hold.required == 2
    rig.release("U01DANA")
    assert rig.run().phase == Phase.HOLDING
    assert sends(rig, "retire-legacy") == []
    assert rig.release("U01DANA").kinds == (ev.RELEASE_IGNORED,)
    rig.release("U02LEE")
    state = rig.run()
    assert state.phase == Phase.COMPLETED
    assert state.fallback_retired
    assert rig.fake.docs["/backends/legacy/state"] == {"retired": True}
    # After the fallback is retired, readiness is no longer read (there is nothing to go back to).
    last_samples = rig.of_kind(ev.VERIFICATION_SAMPLED)[-1].body["results"]
    assert {r["kind"] for r in last_samples} == {"check"}


def test_the_initiator_cannot_release_under_two_person_control(tmp_path: Path) -> None:
    change = edited(example(), package=lambda p: p["authorities"]["initiate"].update(users=["U01DANA"]))
    rig = Rig(tmp_path / "l.db", change=change)
    try:
        rig.start("U01DANA")
        rig.run()
        out = rig.release("U01DANA")
        assert out.kinds == (ev.RELEASE_DENIED,) and not out.effective
        assert "initiator cannot release" in out.entries[0].body["reason"]
        assert rig.run().phase == Phase.HOLDING
        assert sends(rig, "canary-25") == []
    finally:
        rig.close()


def test_unauthorised_release_is_denied_recorded_and_changes_nothing(rig: Rig) -> None:
    rig.start()
    before = rig.run()
    out = rig.release("U06SRE")
    assert out.kinds == (ev.RELEASE_DENIED,)
    assert out.entries[0].actor == "U06SRE"
    after = rig.run()
    assert after.phase == Phase.HOLDING and after.open_hold == before.open_hold
    assert after.denied == 1


def test_a_release_on_expired_evidence_is_a_no_op_and_does_not_advance(rig: Rig) -> None:
    rig.start()
    state = rig.run()
    assert state.hold is not None and state.hold.evidence_expires_at is not None
    rig.clock.now = state.hold.evidence_expires_at
    rig.tick()
    assert rig.of_kind(ev.HOLD_EVIDENCE_EXPIRED)[0].body["evidence_version"] == 2
    out = rig.release("U01DANA", version=1)
    assert out.kinds == (ev.RELEASE_IGNORED,)
    assert "went stale" in out.entries[0].body["reason"]
    assert rig.run().phase == Phase.HOLDING
    assert sends(rig, "canary-25") == []
    # The refreshed card carries v2: releasing it re-checks live evidence, which is fresh: enter.
    assert rig.release("U01DANA", version=2).kinds == (ev.RELEASE_GRANTED, ev.HOLD_RELEASED)
    rig.run(until=lambda s: s.stages[1].status == "live")
    assert len(sends(rig, "canary-25")) == 1


def test_hold_expiry_escalates_and_never_releases(rig: Rig) -> None:
    rig.start()
    state = rig.run()
    assert state.hold is not None
    rig.clock.now = state.hold.remind_at
    rig.tick()
    rig.clock.now = state.hold.expires_at + timedelta(hours=6)
    rig.tick()
    kinds = rig.kinds()
    assert kinds.count(ev.HOLD_EVIDENCE_EXPIRED) == 1
    assert kinds.count(ev.HOLD_REMINDED) == 1
    assert kinds.count(ev.HOLD_ESCALATED) == 1
    assert kinds.index(ev.HOLD_REMINDED) < kinds.index(ev.HOLD_ESCALATED)
    state = rig.state
    assert state.phase == Phase.HOLDING and state.open_hold == "H1"
    assert ev.HOLD_RELEASED not in kinds
    assert sends(rig, "canary-25") == []


# ---------------------------------------------------------------- verification


def test_a_degraded_checkpoint_holds_and_a_release_accepts_it_only_on_matching_evidence(rig: Rig) -> None:
    rig.start()
    rig.run(until=lambda s: s.stages[0].consecutive == 4)
    rig.fake.signals["error_rate"] = 0.015
    state = rig.run()
    assert hold_kind(state) == "degraded"
    rig.release("U01DANA")
    state = rig.run()
    passed = rig.of_kind(ev.STAGE_PASSED)
    assert len(passed) == 1 and passed[0].body["basis"] == "released" and passed[0].body["hold"] == "H1"
    assert state.stages[0].passed_basis == "released"
    # The next stop is the protected hold before canary-25, not an action.
    assert hold_kind(state) == "protected"
    assert sends(rig, "canary-25") == []


def test_a_degraded_release_does_not_carry_once_the_evidence_recovers(rig: Rig) -> None:
    rig.start()
    rig.run(until=lambda s: s.stages[0].consecutive == 1)
    rig.fake.signals["error_rate"] = 0.015
    rig.run()
    rig.fake.signals["error_rate"] = 0.002
    rig.release("U01DANA")
    rig.tick()
    not_carried = rig.of_kind(ev.RELEASE_NOT_CARRIED)
    assert [e.body["changes"] for e in not_carried] == [["check:error_rate hold -> pass"]]
    # Verification resumes and must pass the whole bake again.
    state = rig.run()
    assert rig.of_kind(ev.STAGE_PASSED)[0].body["basis"] == "verified"
    assert rig.of_kind(ev.STAGE_PASSED)[0].body["consecutive"] == 10
    assert hold_kind(state) == "protected"


def test_a_fail_rolls_back_automatically_with_the_rollback_role(rig: Rig) -> None:
    rig.start()
    rig.run_to_stage("canary-25")
    rig.fake.signals["error_rate"] = 0.2
    state = rig.run()
    assert state.phase == Phase.ROLLED_BACK
    started = rig.of_kind(ev.ROLLBACK_STARTED)[0]
    assert (started.actor, started.body["trigger"], started.body["undo"]) == (
        "role:rollback",
        "verification",
        ["canary-25", "canary-5"],
    )
    rollbacks = [c for c in rig.fake.calls if c[0] == "apply" and ":rollback:" in c[1]]
    assert [c[1].split(":")[1] for c in rollbacks] == ["canary-25", "canary-5"]
    assert {c[2] for c in rollbacks} == {"role:rollback"}
    # Each undo is read back (with the rollback role) before the next one is sent.
    calls = rig.fake.calls
    for call in rollbacks:
        i = calls.index(call)
        assert calls[i + 1] == ("read_back", "/weights", "role:rollback")
    for entry in rig.entries()[started.seq :]:
        assert entry.actor == "role:rollback"
    assert rig.fake.docs["/weights"] == {"tokenizer": 0, "legacy": 100}
    assert rig.confirmed("rollback") == [f"{rig.eid}:canary-25:rollback:1", f"{rig.eid}:canary-5:rollback:1"]


def test_a_fail_where_the_plan_says_hold_holds(tmp_path: Path) -> None:
    change = edited(example(), plan=lambda p: stage_of(p, "canary-5")["verify"]["on"].update(fail="hold"))
    rig = Rig(tmp_path / "l.db", change=change)
    try:
        rig.start()
        rig.run(until=lambda s: s.stages[0].consecutive == 1)
        rig.fake.signals["error_rate"] = 0.2
        state = rig.run()
        assert hold_kind(state) == "fail"
        assert sends(rig, "canary-5", "rollback") == []
        assert state.stages[0].status == "live"
    finally:
        rig.close()


def test_a_fail_where_the_plan_says_narrow_undoes_only_the_current_stage(tmp_path: Path) -> None:
    change = edited(example(), plan=lambda p: stage_of(p, "canary-25")["verify"]["on"].update(fail="narrow"))
    rig = Rig(tmp_path / "l.db", change=change)

    def recover(key: str, role: Role) -> None:
        if ":rollback:" in key:
            rig.fake.signals["error_rate"] = 0.002  # the narrower tier is healthy again

    try:
        rig.start()
        rig.run_to_stage("canary-25")
        rig.fake.on_apply = recover
        rig.fake.signals["error_rate"] = 0.2
        state = rig.run()
        assert hold_kind(state) == "narrowed"
        assert state.status() == "narrowed"
        assert [s.status for s in state.stages[:2]] == ["passed", "rolled_back"]
        assert rig.fake.docs["/weights"] == {"tokenizer": 5, "legacy": 95}
        assert sends(rig, "canary-5", "rollback") == []
        # Releasing the narrowed hold goes back to the protected gate of the undone stage.
        rig.release("U01DANA")
        state = rig.run()
        assert hold_kind(state) == "protected" and state.hold is not None and state.hold.stage == "canary-25"
        assert len(sends(rig, "canary-25")) == 1
    finally:
        rig.close()


def test_a_failure_that_persists_at_the_narrowed_tier_rolls_back_the_rest(tmp_path: Path) -> None:
    change = edited(example(), plan=lambda p: stage_of(p, "canary-25")["verify"]["on"].update(fail="narrow"))
    rig = Rig(tmp_path / "l.db", change=change)
    try:
        rig.start()
        rig.run_to_stage("canary-25")
        rig.fake.signals["error_rate"] = 0.2
        state = rig.run()
        # The narrowed hold watches canary-5, which fails too: the way back goes all the way.
        assert state.phase == Phase.ROLLED_BACK
        assert [e.body["scope"] for e in rig.of_kind(ev.ROLLBACK_STARTED)] == ["narrow", "full"]
        assert rig.confirmed("rollback") == [f"{rig.eid}:canary-25:rollback:1", f"{rig.eid}:canary-5:rollback:1"]
    finally:
        rig.close()


# ---------------------------------------------------------------- actions: intent, key, read-back


def test_intent_is_durable_before_the_target_is_called(rig: Rig) -> None:
    seen: list[tuple[str, list[str]]] = []

    def check(key: str, role: Role) -> None:
        entries = SqlLedgerStore(rig.url)
        try:
            kinds_for_key = [e.kind for e in entries.read(rig.eid) if e.body.get("key") == key]
        finally:
            entries.close()
        seen.append((key, kinds_for_key))

    rig.fake.on_apply = check
    rig.start()
    rig.run_to_stage("canary-25")
    assert seen == [
        (f"{rig.eid}:canary-5:apply:1", [ev.ACTION_INTENDED]),
        (f"{rig.eid}:canary-25:apply:1", [ev.ACTION_INTENDED]),
    ]


def test_every_send_carries_the_key_and_is_read_back_before_it_counts(rig: Rig) -> None:
    rig.start()
    rig.run_to_stage("canary-25")
    entries = rig.entries()
    for sent in [e for e in entries if e.kind == ev.ACTION_SENT]:
        nxt = entries[sent.seq]  # the entry after it (seq is 1-based)
        assert nxt.kind == ev.ACTION_READ_BACK and nxt.body["key"] == sent.body["key"]
    for confirmed in rig.of_kind(ev.ACTION_CONFIRMED):
        assert entries[confirmed.seq - 2].kind == ev.ACTION_READ_BACK
        assert entries[confirmed.seq - 2].body["matches"] is True
    assert rig.fake.applies() == [f"{rig.eid}:canary-5:apply:1", f"{rig.eid}:canary-25:apply:1"]


def test_an_ambiguous_send_that_landed_is_confirmed_by_read_back_without_a_second_send(rig: Rig) -> None:
    rig.fake.timeout_after_apply = True
    rig.start()
    state = rig.run(until=lambda s: s.phase == Phase.VERIFYING)
    assert state.stages[0].status == "live"
    assert rig.fake.applies() == [f"{rig.eid}:canary-5:apply:1"]
    sent = rig.of_kind(ev.ACTION_SENT)
    assert [e.body["outcome"] for e in sent] == ["ambiguous"]
    assert ev.ACTION_RESEND_INTENDED not in rig.kinds()


def test_an_ambiguous_send_that_did_not_land_is_resent_once_with_the_same_key(rig: Rig) -> None:
    rig.fake.lose_applies = 1
    rig.start()
    state = rig.run(until=lambda s: s.phase == Phase.VERIFYING)
    key = f"{rig.eid}:canary-5:apply:1"
    assert rig.fake.applies() == [key, key]
    assert [a["key"] for a in rig.fake.applied] == [key]
    assert state.stages[0].status == "live"
    assert [e.body["key"] for e in rig.of_kind(ev.ACTION_RESEND_INTENDED)] == [key]


def test_a_second_lost_send_holds_instead_of_retrying_blindly(rig: Rig) -> None:
    rig.fake.lose_applies = 5
    rig.start()
    state = rig.run()
    assert hold_kind(state) == "not_applied"
    assert len(rig.fake.applies()) == 2
    assert rig.fake.applied == []
    # Nothing further is sent while held, however long it waits.
    rig.clock.advance(3600)
    rig.tick()
    assert len(rig.fake.applies()) == 2


def test_a_failed_read_back_holds_saying_the_outcome_is_unknown(rig: Rig) -> None:
    rig.fake.readback_fails = True
    rig.start()
    state = rig.run()
    assert hold_kind(state) == "ambiguous" and state.hold is not None
    assert "outcome unknown" in state.hold.reason
    assert len(rig.fake.applies()) == 1
    # Release re-reads the target; now it answers and the action is confirmed without a new send.
    rig.fake.readback_fails = False
    rig.release("U01DANA")
    state = rig.run(until=lambda s: s.phase == Phase.VERIFYING)
    assert state.stages[0].status == "live"
    assert len(rig.fake.applies()) == 1


def test_a_rejected_send_holds_not_applied(rig: Rig) -> None:
    rig.fake.reject_apply = True
    rig.start()
    state = rig.run()
    assert hold_kind(state) == "not_applied"
    assert "rejected" in (state.hold.reason if state.hold else "")
    assert len(rig.fake.applies()) == 1


# ---------------------------------------------------------------- rollback


def test_a_failing_rollback_step_needs_a_human(rig: Rig) -> None:
    rig.start()
    rig.run_to_stage("canary-25")
    rig.fake.reject_rollback = True
    rig.fake.signals["error_rate"] = 0.2
    state = rig.run()
    assert state.phase == Phase.NEEDS_HUMAN
    assert "rollback failed" in state.outcome_reason
    assert sends(rig, "canary-25", "rollback") == [f"{rig.eid}:canary-25:rollback:1"]
    assert sends(rig, "canary-5", "rollback") == []


def test_manual_rollback_by_the_rollback_authority_only(rig: Rig) -> None:
    rig.start()
    rig.run()
    out = rig.engine.rollback(rig.eid, "U01DANA", "not mine to order")
    assert out.kinds == (ev.ROLLBACK_DENIED,)
    assert rig.run().phase == Phase.HOLDING
    out = rig.engine.rollback(rig.eid, "U03RESP", "finance asked")
    assert out.kinds == (ev.ROLLBACK_STARTED,)
    state = rig.run()
    assert state.phase == Phase.ROLLED_BACK
    assert [a["role"] for a in rig.fake.applied if ":rollback:" in a["key"]] == ["role:rollback"]


def test_rollback_to_stops_at_the_named_stage(tmp_path: Path) -> None:
    change = edited(example(), plan=lambda p: p.update(rollback_to="canary-5"))
    rig = Rig(tmp_path / "l.db", change=change)
    try:
        rig.start()
        rig.run_to_stage("full")
        rig.engine.rollback(rig.eid, "U03RESP", "back to the canary")
        state = rig.run()
        assert state.phase == Phase.ROLLED_BACK
        assert [s.status for s in state.stages] == ["passed", "rolled_back", "rolled_back", "pending"]
        assert rig.fake.docs["/weights"] == {"tokenizer": 5, "legacy": 95}
        assert sends(rig, "canary-5", "rollback") == []
    finally:
        rig.close()


def test_rollback_after_the_irreversible_stage_needs_a_human(rig: Rig) -> None:
    rig.start()
    rig.run_to_stage("retire-legacy")
    out = rig.engine.rollback(rig.eid, "U03RESP", "too late")
    assert out.kinds == (ev.EXECUTION_NEEDS_HUMAN,)
    assert rig.state.phase == Phase.NEEDS_HUMAN
    assert [k for k in rig.fake.applies() if ":rollback:" in k] == []


# ---------------------------------------------------------------- window and manual holds


def test_when_the_window_closes_mid_execution_nothing_expands_further(rig: Rig) -> None:
    rig.start()
    state = rig.run()
    assert state.window_closes is not None
    rig.clock.now = state.window_closes - timedelta(minutes=2)
    rig.release("U01DANA")
    state = rig.run()  # canary-25 bakes past the close
    assert state.stages[1].status == "passed"
    assert hold_kind(state) == "window_closed"
    assert state.hold is not None and not state.hold.releasable
    assert sends(rig, "full") == []
    out = rig.release("U02LEE")
    assert out.kinds == (ev.RELEASE_DENIED,)
    assert rig.run().phase == Phase.HOLDING
    assert sends(rig, "full") == []


def test_a_manual_hold_when_ready_and_while_verifying(rig: Rig) -> None:
    rig.start()
    out = rig.engine.hold(rig.eid, "U06SRE", "before we begin")
    assert out.kinds == (ev.HOLD_OPENED,)
    assert rig.run().phase == Phase.HOLDING
    assert rig.fake.applies() == []
    rig.release("U01DANA")
    rig.run(until=lambda s: s.stages[0].consecutive == 3)
    out = rig.engine.hold(rig.eid, "U05OPS", "finance call")
    assert out.kinds == (ev.HOLD_OPENED,)
    state = rig.run()
    assert hold_kind(state) == "manual" and state.hold is not None and state.hold.resume_phase == "verifying"
    denied = rig.engine.hold(rig.eid, "U99NOBODY", "prank")
    assert denied.kinds == (ev.HOLD_DENIED,)


def test_a_manual_hold_during_an_action_opens_right_after_it_resolves(tmp_path: Path) -> None:
    holder: dict[str, Any] = {}

    def during_send(state: State, action: SendAction) -> None:
        if action.stage == "canary-5":
            holder["out"] = holder["engine"].hold(state.execution_id, "U06SRE", "pause after this")

    rig = Rig(tmp_path / "l.db", before_send=during_send)
    holder["engine"] = rig.engine
    try:
        rig.start()
        state = rig.run()
        assert holder["out"].kinds == (ev.HOLD_REQUESTED,)
        kinds = rig.kinds()
        assert kinds.index(ev.HOLD_REQUESTED) < kinds.index(ev.ACTION_SENT)
        assert kinds[kinds.index(ev.ACTION_CONFIRMED) + 1] == ev.HOLD_OPENED
        assert hold_kind(state) == "manual" and state.hold is not None
        assert state.hold.opened_by == "U06SRE"
        assert ev.VERIFICATION_SAMPLED not in kinds
        assert state.stages[0].status == "live"
    finally:
        rig.close()


def test_a_hold_requested_during_an_action_survives_an_ambiguous_outcome(tmp_path: Path) -> None:
    """The action did not resolve when its read-back failed: the requested hold still opens after it does."""
    holder: dict[str, Any] = {}

    def during_send(state: State, action: SendAction) -> None:
        if "out" not in holder:
            holder["out"] = holder["engine"].hold(state.execution_id, "U06SRE", "pause after this")

    rig = Rig(tmp_path / "l.db", before_send=during_send)
    holder["engine"] = rig.engine
    try:
        rig.fake.readback_fails = True
        rig.start()
        state = rig.run()
        assert holder["out"].kinds == (ev.HOLD_REQUESTED,)
        assert hold_kind(state) == "ambiguous"
        rig.fake.readback_fails = False
        rig.release("U01DANA")
        state = rig.run()
        assert state.stages[0].status == "live"
        assert hold_kind(state) == "manual" and state.hold is not None
        assert state.hold.reason == "manual hold by U06SRE: pause after this"
        assert ev.VERIFICATION_SAMPLED not in rig.kinds()
    finally:
        rig.close()


# ---------------------------------------------------------------- concurrency


def _race(rig: Rig, users: list[str]) -> list[tuple[str, ...]]:
    hold = rig.state.hold
    assert hold is not None
    barrier = threading.Barrier(len(users))
    results: list[tuple[str, ...]] = [()] * len(users)
    errors: list[BaseException] = []

    def release(i: int, user: str) -> None:
        store = SqlLedgerStore(rig.url)
        try:
            engine = Engine(store, lambda s: rig.fake, rig.clock, f"web-{i}")
            engine.load(rig.eid)
            barrier.wait()
            results[i] = engine.release(rig.eid, hold.id, hold.evidence_version, user).kinds
        except BaseException as exc:
            errors.append(exc)
        finally:
            store.close()

    threads = [threading.Thread(target=release, args=(i, u)) for i, u in enumerate(users)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert not errors, errors
    return results


def test_two_authorities_releasing_at_once_release_exactly_once(rig: Rig) -> None:
    rig.start()
    rig.run()
    results = _race(rig, ["U01DANA", "U02LEE"])
    assert sorted(results) == sorted([(ev.RELEASE_GRANTED, ev.HOLD_RELEASED), (ev.RELEASE_IGNORED,)])
    assert rig.kinds().count(ev.HOLD_RELEASED) == 1
    ignored = rig.of_kind(ev.RELEASE_IGNORED)[0]
    assert "was already released by" in ignored.body["reason"]
    rig.run(until=lambda s: s.stages[1].status == "live")
    assert len(sends(rig, "canary-25")) == 1


def test_two_releasers_of_the_irreversible_stage_at_once_count_once_each(rig: Rig) -> None:
    rig.start()
    rig.run_to_stage("full")
    rig.run()
    results = _race(rig, ["U01DANA", "U02LEE"])
    assert sorted(results) == sorted([(ev.RELEASE_GRANTED,), (ev.RELEASE_GRANTED, ev.HOLD_RELEASED)])
    granted = rig.of_kind(ev.RELEASE_GRANTED)
    assert [e.body["count"] for e in granted[-2:]] == [1, 2]
    assert rig.kinds().count(ev.HOLD_RELEASED) == 3  # H1, H2 by the rig; H3 once, by the race


class RacingStore:
    """Delegates to a store; just before the first append of ``kind`` another writer gets in."""

    def __init__(self, inner: SqlLedgerStore, kind: str, intruder: Any) -> None:
        self.inner = inner
        self.kind = kind
        self.intruder = intruder
        self.conflicts = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def append(self, execution_id: str, expected_seq: int, entries: Any, fence: Any = None) -> Any:
        if self.intruder is not None and any(e.kind == self.kind for e in entries):
            intruder, self.intruder = self.intruder, None
            intruder()
        try:
            return self.inner.append(execution_id, expected_seq, entries, fence)
        except AppendConflict:
            self.conflicts += 1
            raise


def test_a_conflicting_append_is_decided_again_on_the_new_state(rig: Rig) -> None:
    rig.start()
    rig.run(until=lambda s: s.stages[0].consecutive == 2)
    other = SqlLedgerStore(rig.url)
    try:
        competitor = Engine(other, lambda s: rig.fake, rig.clock, "web")
        racing = RacingStore(rig.store, ev.VERIFICATION_SAMPLED, lambda: competitor.hold(rig.eid, "U06SRE", "now"))
        engine = Engine(racing, lambda s: rig.fake, rig.clock, "owner-a")  # type: ignore[arg-type]
        rig.clock.advance(30)
        engine.tick(rig.eid)
    finally:
        other.close()
    assert racing.conflicts == 1
    state = rig.state
    assert hold_kind(state) == "manual"
    # The sample decided on the old state was not written after the hold.
    hold_seq = rig.of_kind(ev.HOLD_OPENED)[0].seq
    assert all(e.seq < hold_seq for e in rig.of_kind(ev.VERIFICATION_SAMPLED))


def test_a_release_that_loses_the_race_is_decided_again_and_recorded_as_a_no_op(rig: Rig) -> None:
    rig.start()
    rig.run()
    other = SqlLedgerStore(rig.url)
    try:
        competitor = Engine(other, lambda s: rig.fake, rig.clock, "web-b")
        racing = RacingStore(rig.store, ev.RELEASE_GRANTED, lambda: competitor.release(rig.eid, "H1", 1, "U02LEE"))
        engine = Engine(racing, lambda s: rig.fake, rig.clock, "web-a")  # type: ignore[arg-type]
        out = engine.release(rig.eid, "H1", 1, "U01DANA")
    finally:
        other.close()
    assert racing.conflicts == 1
    assert out.kinds == (ev.RELEASE_IGNORED,)
    assert "already released by U02LEE" in out.entries[0].body["reason"]
    assert rig.kinds().count(ev.HOLD_RELEASED) == 1
    assert rig.of_kind(ev.HOLD_RELEASED)[0].body["by"] == ["U02LEE"]


def test_a_writer_that_lost_its_lease_mid_action_cannot_append(tmp_path: Path) -> None:
    takeover: dict[str, Any] = {}

    def lease_lapses_during_send(state: State, action: SendAction) -> None:
        if "done" in takeover:
            return
        takeover["done"] = True
        rig.clock.advance(61)  # this process stalls; another takes the execution over
        store = SqlLedgerStore(rig.url)
        try:
            Engine(store, lambda s: rig.fake, rig.clock, "owner-b").tick(state.execution_id)
        finally:
            store.close()

    rig = Rig(tmp_path / "l.db", before_send=lease_lapses_during_send)
    try:
        rig.start()
        assert rig.tick() is None  # fenced out: the stalled writer gives up
        key = f"{rig.eid}:canary-5:apply:1"
        # The new owner resolved the action (re-sent once with the same key, applied once); the
        # stalled writer's late answer was not appended on top of the new owner's history.
        assert [a["key"] for a in rig.fake.applied] == [key]
        assert [e.body["key"] for e in rig.of_kind(ev.ACTION_SENT)] == [key]
        assert rig.state.stages[0].status == "live"
    finally:
        rig.close()


def test_only_the_lease_holder_drives_and_a_fenced_writer_stops(rig: Rig) -> None:
    rig.start()
    rig.run(until=lambda s: s.stages[0].consecutive == 2)
    other = SqlLedgerStore(rig.url)
    try:
        second = Engine(other, lambda s: rig.fake, rig.clock, "owner-b")
        assert second.tick(rig.eid) is None
        seq = rig.state.seq
        rig.clock.advance(61)  # owner-a's lease lapses; owner-b takes over with a higher epoch
        second.tick(rig.eid)
        assert rig.state.seq > seq
        taken = rig.state.seq
        rig.clock.advance(1)
        assert rig.engine.tick(rig.eid) is None  # owner-a is fenced out
        assert rig.state.seq == taken
    finally:
        other.close()


# ---------------------------------------------------------------- resume and reconcile


class Killed(BaseException):
    """The process dies: not an error the engine may catch."""


def _kill_before_send(state: State, action: SendAction) -> None:
    raise Killed


class KillAfterApply:
    """The target applies the action, then the process dies before the result is recorded."""

    def __init__(self, fake: FakeTarget, direction: str) -> None:
        self.fake = fake
        self.direction = direction
        self.armed = True

    def __getattr__(self, name: str) -> Any:
        return getattr(self.fake, name)

    def apply(self, action: Any, key: str, role: Role, timeout_s: float) -> ActionResult:
        result = self.fake.apply(action, key, role, timeout_s)
        if self.armed and f":{self.direction}:" in key:
            self.armed = False
            raise Killed
        return result


def _restart(rig: Rig, owner: str = "owner-b") -> Engine:
    rig.clock.advance(61)  # the dead process's lease lapses
    return Engine(rig.store, lambda s: rig.fake, rig.clock, owner)


def test_killed_between_intent_and_send_resolves_by_read_back_and_sends_once(tmp_path: Path) -> None:
    rig = Rig(tmp_path / "l.db", before_send=_kill_before_send)
    try:
        rig.start()
        with pytest.raises(Killed):
            rig.tick()
        assert rig.kinds()[-1] == ev.ACTION_INTENDED
        assert rig.fake.applies() == []
        engine = _restart(rig)
        engine.resume(rig.eid)
        state = engine.load(rig.eid)
        assert state.stages[0].status == "live"
        key = f"{rig.eid}:canary-5:apply:1"
        assert rig.fake.applies() == [key]
        resumed = rig.of_kind(ev.EXECUTION_RESUMED)[0]
        assert resumed.body["owner"] == "owner-b" and resumed.body["reconcile"] is None
        assert [e.body["key"] for e in rig.of_kind(ev.ACTION_RESEND_INTENDED)] == [key]
    finally:
        rig.close()


def test_killed_after_the_effect_resolves_by_read_back_without_a_duplicate(rig: Rig) -> None:
    killer = KillAfterApply(rig.fake, "apply")
    rig.engine = Engine(rig.store, lambda s: killer, rig.clock, "owner-a")  # type: ignore[arg-type, return-value]
    rig.start()
    with pytest.raises(Killed):
        rig.tick()
    assert [a["key"] for a in rig.fake.applied] == [f"{rig.eid}:canary-5:apply:1"]
    engine = _restart(rig)
    engine.resume(rig.eid)
    assert engine.load(rig.eid).stages[0].status == "live"
    assert len(rig.fake.applies()) == 1
    assert ev.ACTION_SENT not in rig.kinds()  # the send's answer died with the process
    assert ev.ACTION_RESEND_INTENDED not in rig.kinds()


def test_a_live_state_mismatch_on_resume_opens_a_hold(rig: Rig) -> None:
    rig.start()
    rig.run(until=lambda s: s.stages[0].consecutive == 3)
    rig.fake.docs["/weights"] = {"tokenizer": 40, "legacy": 60}  # someone changed it by hand
    engine = _restart(rig)
    engine.resume(rig.eid)
    state = engine.load(rig.eid)
    resumed = rig.of_kind(ev.EXECUTION_RESUMED)[0]
    assert resumed.body["reconcile"]["matches"] is False
    assert resumed.body["reconcile"]["observed"] == {"tokenizer": 40, "legacy": 60}
    assert hold_kind(state) == "reconcile_mismatch" and state.hold is not None
    assert state.hold.resume_phase == "verifying"
    assert len(rig.fake.applies()) == 1


def test_a_takeover_by_a_plain_tick_reconciles_first(rig: Rig) -> None:
    """A restart inside the old owner's lease cannot resume at once; its later tick still reconciles."""
    rig.start()
    rig.run(until=lambda s: s.stages[0].consecutive == 3)
    rig.fake.docs["/weights"] = {"tokenizer": 40, "legacy": 60}
    engine = Engine(rig.store, lambda s: rig.fake, rig.clock, "owner-b")
    rig.clock.advance(10)
    assert engine.resume(rig.eid) is None  # the dead owner's lease is still live
    assert engine.tick(rig.eid) is None
    assert ev.EXECUTION_RESUMED not in rig.kinds()
    rig.clock.advance(51)
    engine.tick(rig.eid)
    resumed = rig.of_kind(ev.EXECUTION_RESUMED)
    assert [e.body["owner"] for e in resumed] == ["owner-b"]
    assert resumed[0].body["reconcile"]["matches"] is False
    assert hold_kind(engine.load(rig.eid)) == "reconcile_mismatch"
    # Driving on under the same lease does not reconcile again.
    rig.clock.advance(30)
    engine.tick(rig.eid)
    assert len(rig.of_kind(ev.EXECUTION_RESUMED)) == 1


def test_resume_with_matching_live_state_continues_where_it_was(rig: Rig) -> None:
    rig.start()
    rig.run(until=lambda s: s.stages[0].consecutive == 3)
    engine = _restart(rig)
    engine.resume(rig.eid)
    resumed = rig.of_kind(ev.EXECUTION_RESUMED)[0]
    assert resumed.body["reconcile"]["matches"] is True
    assert engine.load(rig.eid).phase == Phase.VERIFYING
    assert len(rig.fake.applies()) == 1


def test_interruption_replay_and_partial_rollback_never_duplicate_or_skip(rig: Rig) -> None:
    rig.start()
    rig.run_to_stage("full")
    rig.engine.rollback(rig.eid, "U03RESP", "abandon")
    # Die right after the first rollback step took effect.
    killer = KillAfterApply(rig.fake, "rollback")
    rig.engine = Engine(rig.store, lambda s: killer, rig.clock, "owner-a")  # type: ignore[arg-type, return-value]
    with pytest.raises(Killed):
        rig.tick()
    # Replay: a restarted process resumes, and a second resume/tick on top of it is harmless.
    engine = _restart(rig)
    engine.resume(rig.eid)
    engine.resume(rig.eid)
    engine.tick(rig.eid)
    state = engine.load(rig.eid)
    assert state.phase == Phase.ROLLED_BACK
    applied = [a["key"] for a in rig.fake.applied]
    assert applied == rig.confirmed()
    assert len(applied) == len(set(applied))
    assert [k.split(":")[1:3] for k in applied] == [
        ["canary-5", "apply"],
        ["canary-25", "apply"],
        ["full", "apply"],
        ["full", "rollback"],
        ["canary-25", "rollback"],
        ["canary-5", "rollback"],
    ]
    assert rig.fake.docs["/weights"] == {"tokenizer": 0, "legacy": 100}
    # The stage history is one line: every stage entered was confirmed once and undone once.
    assert [s.status for s in state.stages] == ["rolled_back", "rolled_back", "rolled_back", "pending"]


def test_a_terminal_execution_is_left_alone_on_resume(rig: Rig) -> None:
    rig.start()
    rig.run()
    rig.engine.rollback(rig.eid, "U03RESP", "stop")
    rig.run()
    seq = rig.state.seq
    engine = _restart(rig)
    assert engine.resume(rig.eid) is None
    assert rig.state.seq == seq


# ---------------------------------------------------------------- starting


def test_engine_start_refuses_a_second_running_execution_of_the_same_change(rig: Rig) -> None:
    rig.start()
    with pytest.raises(StartRefused, match="already has a running execution"):
        rig.engine.start(rig.change, INITIATOR)


def test_rehearsals_and_live_runs_do_not_block_each_other(rig: Rig) -> None:
    rehearsal = rig.engine.start(rig.change, INITIATOR, mode="rehearsal", speed=60)
    assert not rehearsal.terminal
    # A live execution touches the real targets, a rehearsal only a sandbox: neither blocks the other.
    rig.clock.advance(1)
    live = rig.engine.start(rig.change, INITIATOR)
    assert live.mode == "live" and live.execution_id != rehearsal.execution_id
    # One rehearsal per change on a shared sandbox ...
    with pytest.raises(StartRefused, match="already has an unfinished rehearsal"):
        rig.engine.start(rig.change, INITIATOR, mode="rehearsal", speed=60)
    # ... but a rehearsal on its own private sandbox shares nothing and may run beside it.
    private = rig.engine.start(rig.change, INITIATOR, mode="rehearsal", speed=60, exclusive=False)
    assert private.execution_id not in (rehearsal.execution_id, live.execution_id)


def test_bodies_are_masked_before_they_are_written(rig: Rig) -> None:
    rig.fake.signals["vault_healthy"] = "token=sk_live_9f8e7d6c5b4a"
    rig.fake.signal_error["snapshot_age_s"] = "GET failed: Authorization: Bearer abcd1234efgh5678"
    rig.start()
    rig.run()
    rig.engine.hold(rig.eid, "U06SRE", "card 4111 1111 1111 1111 declined")
    text = json.dumps([e.to_json() for e in rig.entries()])
    for secret in ("sk_live_9f8e7d6c5b4a", "abcd1234efgh5678", "4111 1111 1111 1111"):
        assert secret not in text
    assert "***" in text


def test_nominal_run_completes_with_one_confirmed_action_per_stage(rig: Rig) -> None:
    rig.start()
    for _ in range(6):
        state = rig.run()
        if state.terminal:
            break
        rig.release_protected()
    assert state.phase == Phase.COMPLETED
    assert [a["key"].split(":")[1] for a in rig.fake.applied] == list(
        s for s in ("canary-5", "canary-25", "full", "retire-legacy")
    )
    assert rig.confirmed() == [a["key"] for a in rig.fake.applied]
    assert rig.kinds()[-1] == ev.EXECUTION_COMPLETED
    assert ev.EXECUTION_RESUMED not in rig.kinds()  # one owner throughout: nothing to reconcile
    assert PAYMENTS_HEALTHY["error_rate"] == rig.fake.signals["error_rate"]


def test_new_entries_are_listened_to_after_they_are_written(tmp_path: Path) -> None:
    heard: list[str] = []

    def listener(execution_id: str, written: Any) -> None:
        heard.extend(e.kind for e in written)
        raise RuntimeError("a broken listener must not break the engine")

    rig = Rig(tmp_path / "l.db", listeners=[listener])
    try:
        rig.start()
        rig.run()
        assert heard == rig.kinds()
    finally:
        rig.close()
