"""Pure decisions: ``reads(state, now)`` and ``decide(state, observations, now)``, table-driven.

States come from folding entries an engine wrote over the fake target (once per module), cut at
the point each case needs; every decision below is then computed with hand-made evidence and an
explicit ``now``.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

import pytest

from execution import commands as cmd
from execution import decide as d
from execution import events as ev
from execution.decide import Observations, SendAction, decide, reads
from execution.model import Evidence, ReadbackResult, Role
from execution.project import State
from execution.transitions import Phase
from ledger.chain import format_ts
from ledger.entry import Entry, NewEntry
from tests.fakes import (
    INITIATOR,
    PAYMENTS_HEALTHY,
    FakeClock,
    MemoryLedger,
    Rig,
    before,
    edited,
    evidence,
    example,
    stage_of,
    upto,
)

GATE_SIGNALS = ("vault_healthy", "legacy_healthy", "snapshot_age_s")
VERIFY_SIGNALS = ("error_rate", "settlement_parity", "legacy_healthy", "snapshot_age_s")


@pytest.fixture(scope="module")
def run_entries(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[Entry]]:
    """An engine run: canary-5 verified and passed, then the protected hold before canary-25."""
    rig = Rig(tmp_path_factory.mktemp("decide") / "l.db")
    try:
        rig.start()
        state = rig.run()
        assert state.hold is not None and state.hold.kind == "protected"
        yield rig.entries()
    finally:
        rig.close()


def kinds(decision: d.Decision) -> list[str]:
    return [e.kind for e in decision.append]


def body(decision: d.Decision, kind: str) -> dict[str, Any]:
    found = [e for e in decision.append if e.kind == kind]
    assert len(found) == 1, kinds(decision)
    return dict(found[0].body)


def obs(now: datetime, signals: dict[str, Any] | None = None, **overrides: Evidence | None) -> Observations:
    values = dict(PAYMENTS_HEALTHY if signals is None else signals)
    out = {name: evidence(name, value, now) for name, value in values.items()}
    for name, item in overrides.items():
        if item is None:
            out.pop(name, None)
        else:
            out[name] = item
    return Observations(out)


def last_ts(state: State) -> datetime:
    assert state.last_ts is not None
    return state.last_ts


def started() -> MemoryLedger:
    ledger = MemoryLedger()
    ledger.append(cmd.start(example(), INITIATOR, (), FakeClock()()))
    return ledger


# ---------------------------------------------------------------- gate before entering a stage


def test_ready_asks_for_preflight_and_readiness_with_the_preflight_role() -> None:
    state = started().state
    request = reads(state, last_ts(state))
    assert request is not None
    assert request.purpose == "gate"
    assert request.role == Role.PREFLIGHT
    assert request.preflight == ("vault_healthy",)
    assert request.readiness == ("legacy_healthy", "snapshot_age_s")
    assert request.signals == GATE_SIGNALS


def test_fresh_passing_gate_records_the_check_then_the_intent_and_sends_with_the_executor() -> None:
    state = started().state
    now = last_ts(state) + timedelta(seconds=5)
    decision = decide(state, obs(now), now)
    assert kinds(decision) == [ev.GATE_CHECKED, ev.ACTION_INTENDED]
    assert body(decision, ev.GATE_CHECKED)["outcome"] == "pass"
    intended = body(decision, ev.ACTION_INTENDED)
    key = f"{state.execution_id}:canary-5:apply:1"
    assert intended["key"] == key
    assert (intended["stage"], intended["index"], intended["direction"], intended["attempt"]) == (
        "canary-5",
        0,
        "apply",
        1,
    )
    assert decision.effect == SendAction(0, "canary-5", "apply", key, Role.EXECUTOR, 10.0)
    assert decision.append[1].actor == Role.EXECUTOR


GATE_CASES = [
    pytest.param("vault_healthy", "stale", "preflight", id="preflight-stale"),
    pytest.param("vault_healthy", "missing", "preflight", id="preflight-not-read"),
    pytest.param("vault_healthy", "no_data", "preflight", id="preflight-no-data"),
    pytest.param("vault_healthy", "fail", "preflight", id="dependency-down"),
    pytest.param("vault_healthy", "error", "preflight", id="preflight-error"),
    pytest.param("legacy_healthy", "fail", "readiness_lost", id="fallback-unhealthy"),
    pytest.param("snapshot_age_s", "stale", "readiness_lost", id="snapshot-reading-stale"),
    pytest.param("snapshot_age_s", "fail", "readiness_lost", id="snapshot-too-old"),
    pytest.param("snapshot_age_s", "missing", "readiness_lost", id="snapshot-missing"),
]


def bad(name: str, how: str, now: datetime) -> Evidence | None:
    if how == "missing":
        return None
    if how == "no_data":
        return evidence(name, None, now)
    if how == "error":
        return evidence(name, None, now, error="HTTP 500")
    if how == "stale":
        # Just past max_age: vault/legacy 30 s, snapshot 60 s.
        return evidence(name, PAYMENTS_HEALTHY[name], now, age=61)
    return evidence(name, {"vault_healthy": False, "legacy_healthy": False, "snapshot_age_s": 90_000}[name], now)


@pytest.mark.parametrize(("signal", "how", "kind"), GATE_CASES)
def test_any_non_passing_gate_evidence_holds_before_the_stage_and_sends_nothing(
    signal: str, how: str, kind: str
) -> None:
    state = started().state
    now = last_ts(state) + timedelta(seconds=5)
    decision = decide(state, obs(now, **{signal: bad(signal, how, now)}), now)
    assert kinds(decision) == [ev.GATE_CHECKED, ev.HOLD_OPENED]
    assert decision.effect is None
    hold = body(decision, ev.HOLD_OPENED)
    assert hold["kind"] == kind
    assert hold["resume"] == "enter"
    assert hold["stage"] == "canary-5"
    assert signal in hold["reason"]
    assert hold["categories"][f"{'preflight' if signal == 'vault_healthy' else 'readiness'}:{signal}"] != "pass"


def test_stale_by_seconds_holds_and_fresh_by_seconds_passes() -> None:
    state = started().state
    now = last_ts(state) + timedelta(seconds=5)
    at_limit = obs(now, vault_healthy=evidence("vault_healthy", True, now, age=30))
    assert kinds(decide(state, at_limit, now))[-1] == ev.ACTION_INTENDED
    past = obs(now, vault_healthy=evidence("vault_healthy", True, now, age=30.5))
    assert kinds(decide(state, past, now))[-1] == ev.HOLD_OPENED


def test_rehearsal_speed_compresses_max_age() -> None:
    ledger = MemoryLedger()
    ledger.append(cmd.start(example(), INITIATOR, (), FakeClock()(), mode="rehearsal", speed=10.0))
    state = ledger.state
    now = last_ts(state) + timedelta(seconds=1)
    # max_age 30 s at speed 10 is 3 s: a 4 s old reading is stale in the rehearsal.
    decision = decide(state, obs(now, vault_healthy=evidence("vault_healthy", True, now, age=4)), now)
    assert body(decision, ev.HOLD_OPENED)["kind"] == "preflight"


def test_the_window_closing_stops_expansion_without_reading_or_sending() -> None:
    state = started().state
    assert state.window_closes is not None
    now = state.window_closes
    assert reads(state, now) is None
    decision = decide(state, obs(now), now)
    assert kinds(decision) == [ev.HOLD_OPENED]
    assert decision.effect is None
    hold = body(decision, ev.HOLD_OPENED)
    assert hold["kind"] == "window_closed"
    assert hold["releasable"] is False
    assert "nothing expands further" in hold["reason"]
    # One second earlier the gate still runs normally.
    earlier = now - timedelta(seconds=1)
    assert kinds(decide(state, obs(earlier), earlier)) == [ev.GATE_CHECKED, ev.ACTION_INTENDED]


def test_after_the_last_stage_ready_completes(run_entries: list[Entry]) -> None:
    ledger = MemoryLedger.of(before(run_entries, ev.HOLD_OPENED))
    state = ledger.state
    done = replace(state, current=len(state.stages))
    assert reads(done, last_ts(state)) is None
    decision = decide(done, Observations(), last_ts(state))
    assert kinds(decision) == [ev.EXECUTION_COMPLETED]


def test_nothing_is_decided_for_a_terminal_or_unstarted_execution() -> None:
    assert reads(State("nothing"), FakeClock()()) is None
    assert decide(State("nothing"), Observations(), FakeClock()()).idle


# ---------------------------------------------------------------- protected stages


def test_protected_stage_opens_a_hold_even_on_perfect_evidence(run_entries: list[Entry]) -> None:
    state = MemoryLedger.of(before(run_entries, ev.GATE_CHECKED, 2)).state
    assert state.phase == Phase.READY and state.current == 1
    now = last_ts(state)
    decision = decide(state, obs(now), now)
    assert kinds(decision) == [ev.GATE_CHECKED, ev.HOLD_OPENED]
    assert decision.effect is None
    hold = body(decision, ev.HOLD_OPENED)
    assert hold["kind"] == "protected"
    assert hold["required"] == 1
    assert hold["resume"] == "enter"
    assert "blast radius 5 -> 25" in hold["reason"]
    assert hold["releasers"] == {"users": ["U01DANA", "U02LEE"], "groups": ["S0CAB"]}
    assert hold["expires_at"] == format_ts(now + timedelta(hours=2))
    assert hold["remind_at"] == format_ts(now + timedelta(hours=2) - timedelta(minutes=15))
    # The evidence shown expires with its first reading to go stale (legacy/vault: 30 s).
    assert hold["evidence_expires_at"] == format_ts(now + timedelta(seconds=30))
    assert hold["categories"] == {
        "preflight:vault_healthy": "pass",
        "readiness:legacy_healthy": "pass",
        "readiness:snapshot_age_s": "pass",
    }
    assert "undo canary-5" in hold["rollback_path"]


def test_protected_stage_with_degraded_evidence_says_so_in_the_hold(run_entries: list[Entry]) -> None:
    state = MemoryLedger.of(before(run_entries, ev.GATE_CHECKED, 2)).state
    now = last_ts(state)
    decision = decide(state, obs(now, vault_healthy=evidence("vault_healthy", False, now)), now)
    hold = body(decision, ev.HOLD_OPENED)
    assert hold["kind"] == "protected"
    assert "evidence now: vault_healthy fail" in hold["reason"]


def released(run_entries: list[Entry], user: str = "U01DANA") -> MemoryLedger:
    ledger = MemoryLedger.of(run_entries)
    hold = ledger.state.hold
    assert hold is not None
    ledger.append(cmd.release(ledger.state, hold.id, hold.evidence_version, user, (), last_ts(ledger.state)))
    return ledger


def test_release_enters_when_fresh_evidence_has_the_same_categories(run_entries: list[Entry]) -> None:
    state = released(run_entries).state
    assert state.phase == Phase.READY
    assert state.stages[1].entry_hold == "H1"
    now = last_ts(state) + timedelta(seconds=10)
    decision = decide(state, obs(now), now)
    assert kinds(decision) == [ev.GATE_CHECKED, ev.ACTION_INTENDED]
    assert decision.effect is not None and decision.effect.stage == "canary-25"


@pytest.mark.parametrize(
    ("signal", "how", "change"),
    [
        ("snapshot_age_s", "stale", "readiness:snapshot_age_s pass -> stale"),
        ("legacy_healthy", "fail", "readiness:legacy_healthy pass -> fail"),
        ("vault_healthy", "missing", "preflight:vault_healthy pass -> error"),
        ("vault_healthy", "no_data", "preflight:vault_healthy pass -> no_data"),
    ],
)
def test_release_does_not_carry_when_the_evidence_changed(
    run_entries: list[Entry], signal: str, how: str, change: str
) -> None:
    state = released(run_entries).state
    now = last_ts(state) + timedelta(seconds=10)
    decision = decide(state, obs(now, **{signal: bad(signal, how, now)}), now)
    assert kinds(decision) == [ev.GATE_CHECKED, ev.RELEASE_NOT_CARRIED, ev.HOLD_OPENED]
    assert decision.effect is None
    not_carried = body(decision, ev.RELEASE_NOT_CARRIED)
    assert not_carried["hold"] == "H1"
    assert not_carried["changes"] == [change]
    hold = body(decision, ev.HOLD_OPENED)
    assert hold["kind"] == "protected"
    assert hold["supersedes"] == "H1"
    assert change in hold["reason"] and "U01DANA" in hold["reason"]


def test_release_on_non_passing_evidence_never_enters_even_if_unchanged(run_entries: list[Entry]) -> None:
    # The protected hold was opened while a dependency was down; it is released on that evidence.
    prefix = before(run_entries, ev.GATE_CHECKED, 2)
    ledger = MemoryLedger.of(prefix)
    now = last_ts(ledger.state)
    down = obs(now, vault_healthy=evidence("vault_healthy", False, now))
    ledger.append(decide(ledger.state, down, now).append)
    hold = ledger.state.hold
    assert hold is not None
    ledger.append(cmd.release(ledger.state, hold.id, 1, "U01DANA", (), now))
    decision = decide(ledger.state, down, now)
    assert kinds(decision) == [ev.GATE_CHECKED, ev.RELEASE_NOT_CARRIED, ev.HOLD_OPENED]
    assert "evidence is fail" in body(decision, ev.RELEASE_NOT_CARRIED)["why"]


def test_released_preflight_hold_of_an_unprotected_stage_enters_once_evidence_passes() -> None:
    """A preflight hold on an unprotected stage only stops for evidence: release re-checks it.

    The stage needs no human release to be entered, so when the dependency is back and the
    fresh gate passes, the release's re-check lets it in; on still-bad evidence it holds again.
    """
    ledger = started()
    now = last_ts(ledger.state) + timedelta(seconds=1)
    down = obs(now, vault_healthy=evidence("vault_healthy", False, now))
    ledger.append(decide(ledger.state, down, now).append)
    assert ledger.state.hold is not None and ledger.state.hold.kind == "preflight"
    ledger.append(cmd.release(ledger.state, "H1", 1, "U01DANA", (), now))
    still_down = decide(ledger.state, down, now)
    assert kinds(still_down) == [ev.GATE_CHECKED, ev.RELEASE_NOT_CARRIED, ev.HOLD_OPENED]
    assert body(still_down, ev.HOLD_OPENED)["kind"] == "preflight"
    recovered = decide(ledger.state, obs(now), now)
    assert kinds(recovered) == [ev.GATE_CHECKED, ev.ACTION_INTENDED]
    assert recovered.effect is not None and recovered.effect.stage == "canary-5"


def test_irreversible_stage_needs_two_releasers_and_says_why(run_entries: list[Entry]) -> None:
    state = MemoryLedger.of(before(run_entries, ev.GATE_CHECKED, 2)).state
    at_retire = replace(state, current=3)
    now = last_ts(state)
    hold = body(decide(at_retire, obs(now), now), ev.HOLD_OPENED)
    assert hold["required"] == 2
    assert "retires the fallback; irreversible, two releasers" in hold["reason"]
    assert hold["stage"] == "retire-legacy"


# ---------------------------------------------------------------- verification


def verifying(run_entries: list[Entry]) -> MemoryLedger:
    """canary-5 just confirmed: live, no samples yet."""
    return MemoryLedger.of(upto(run_entries, ev.ACTION_CONFIRMED))


def test_verifying_reads_checks_and_readiness_with_the_verifier_role(run_entries: list[Entry]) -> None:
    state = verifying(run_entries).state
    request = reads(state, last_ts(state))
    assert request is not None
    assert (request.purpose, request.role) == ("verify", Role.VERIFIER)
    assert request.checks == ("error_rate", "settlement_parity")
    assert request.readiness == ("legacy_healthy", "snapshot_age_s")


def test_bake_needs_ceil_bake_over_every_consecutive_passes(run_entries: list[Entry]) -> None:
    ledger = verifying(run_entries)
    now = last_ts(ledger.state)
    required = math.ceil(300 / 30)
    for n in range(1, required + 1):
        decision = decide(ledger.state, obs(now), now)
        sampled = body(decision, ev.VERIFICATION_SAMPLED)
        assert (sampled["consecutive"], sampled["required"], sampled["reaction"]) == (n, required, "continue")
        if n < required:
            assert kinds(decision) == [ev.VERIFICATION_SAMPLED]
            assert decision.wake_at == now + timedelta(seconds=30)
            ledger.append(decision.append)
            # Not due again until `every` has passed: nothing to read, nothing to do.
            assert reads(ledger.state, now + timedelta(seconds=29)) is None
            assert decide(ledger.state, obs(now), now + timedelta(seconds=29)).idle
            now += timedelta(seconds=30)
        else:
            assert kinds(decision) == [ev.VERIFICATION_SAMPLED, ev.STAGE_PASSED]
            assert body(decision, ev.STAGE_PASSED)["basis"] == "verified"


def test_uneven_bake_rounds_up() -> None:
    change = edited(example(), plan=lambda p: stage_of(p, "canary-5")["verify"].update(bake="100s", every="30s"))
    ledger = MemoryLedger()
    ledger.append(cmd.start(change, INITIATOR, (), FakeClock()()))
    now = last_ts(ledger.state)
    ledger.append(decide(ledger.state, obs(now), now).append)
    ledger.append([_confirmed(ledger.state, now)])
    assert body(decide(ledger.state, obs(now), now), ev.VERIFICATION_SAMPLED)["required"] == 4


def _confirmed(state: State, now: datetime) -> NewEntry:
    p = state.pending
    assert p is not None
    return NewEntry(
        ev.ACTION_CONFIRMED,
        Role.EXECUTOR,
        {"stage": p.stage, "index": p.index, "direction": p.direction, "key": p.key, "observed": {}},
        now,
    )


def test_one_non_pass_resets_the_count_and_verification_restarts_after_release(run_entries: list[Entry]) -> None:
    ledger = verifying(run_entries)
    now = last_ts(ledger.state)
    for _ in range(3):
        ledger.append(decide(ledger.state, obs(now), now).append)
        now += timedelta(seconds=30)
    assert ledger.state.stages[0].consecutive == 3
    gap = decide(ledger.state, obs(now, error_rate=evidence("error_rate", None, now)), now)
    assert body(gap, ev.VERIFICATION_SAMPLED)["consecutive"] == 0
    ledger.append(gap.append)
    assert ledger.state.stages[0].consecutive == 0
    hold = ledger.state.hold
    assert hold is not None and hold.resume == "verify"
    ledger.append(cmd.release(ledger.state, hold.id, hold.evidence_version, "U02LEE", (), now))
    assert ledger.state.phase == Phase.VERIFYING
    first = decide(ledger.state, obs(now), now)
    assert body(first, ev.VERIFICATION_SAMPLED)["consecutive"] == 1


VERIFY_CASES = [
    # (overrides as (signal, value, age, samples, error), expected kinds, hold kind or rollback scope)
    pytest.param({"error_rate": (0.015, 0, 1000, None)}, "hold", "degraded", id="hold-band"),
    pytest.param({"error_rate": (None, 0, 1000, None)}, "hold", "conflicting", id="no-data-one-check"),
    pytest.param(
        {"error_rate": (None, 0, 1000, None), "settlement_parity": (None, 0, 1000, None)},
        "hold",
        "no_data",
        id="no-data-all-checks",
    ),
    pytest.param({"error_rate": (0.002, 0, 5, None)}, "hold", "conflicting", id="min-samples-not-met"),
    pytest.param(
        {"error_rate": (0.002, 61, 1000, None), "settlement_parity": (0, 121, 1000, None)},
        "hold",
        "stale",
        id="stale-all-checks",
    ),
    pytest.param(
        {"error_rate": (None, 0, 1000, "HTTP 500"), "settlement_parity": (None, 0, 1000, "HTTP 500")},
        "hold",
        "error",
        id="error-all-checks",
    ),
    pytest.param({"error_rate": (0.05, 0, 1000, None)}, "rollback", "full", id="fail-rolls-back"),
    pytest.param(
        {"error_rate": (0.05, 0, 1000, None), "settlement_parity": (0.0005, 0, 1000, None)},
        "rollback",
        "full",
        id="fail-and-hold-band-most-severe",
    ),
    pytest.param({"legacy_healthy": (False, 0, 1000, None)}, "hold", "readiness_lost", id="fallback-unhealthy"),
    pytest.param({"snapshot_age_s": (90_000, 0, 1000, None)}, "hold", "readiness_lost", id="snapshot-too-old"),
    pytest.param({"snapshot_age_s": (120, 61, 1000, None)}, "hold", "readiness_lost", id="snapshot-stale"),
    pytest.param(
        {"error_rate": (0.05, 0, 1000, None), "legacy_healthy": (False, 0, 1000, None)},
        "hold",
        "rollback_unsafe",
        id="fail-with-readiness-lost",
    ),
]


@pytest.mark.parametrize(("overrides", "reaction", "expected"), VERIFY_CASES)
def test_verification_reactions(
    run_entries: list[Entry], overrides: dict[str, tuple[Any, float, int, str | None]], reaction: str, expected: str
) -> None:
    state = verifying(run_entries).state
    now = last_ts(state)
    readings = {
        name: evidence(name, value, now, age=age, samples=samples, error=error)
        for name, (value, age, samples, error) in overrides.items()
    }
    decision = decide(state, obs(now, **readings), now)
    assert decision.effect is None
    sampled = body(decision, ev.VERIFICATION_SAMPLED)
    assert sampled["consecutive"] == 0
    if reaction == "hold":
        assert kinds(decision) == [ev.VERIFICATION_SAMPLED, ev.HOLD_OPENED]
        hold = body(decision, ev.HOLD_OPENED)
        assert hold["kind"] == expected
        assert hold["resume"] == ("accept" if expected == "degraded" else "verify")
    else:
        assert kinds(decision) == [ev.VERIFICATION_SAMPLED, ev.ROLLBACK_STARTED]
        started_rb = body(decision, ev.ROLLBACK_STARTED)
        assert started_rb["scope"] == expected
        assert started_rb["undo"] == ["canary-5"]
        assert started_rb["trigger"] == "verification"
        assert decision.append[1].actor == Role.ROLLBACK


def test_readiness_lost_holds_even_when_every_forward_check_passes(run_entries: list[Entry]) -> None:
    state = verifying(run_entries).state
    now = last_ts(state)
    decision = decide(state, obs(now, snapshot_age_s=None), now)
    sampled = body(decision, ev.VERIFICATION_SAMPLED)
    assert [r["outcome"] for r in sampled["results"] if r["kind"] == "check"] == ["pass", "pass"]
    hold = body(decision, ev.HOLD_OPENED)
    assert hold["kind"] == "readiness_lost"
    assert "rollback readiness lost" in hold["reason"]


@pytest.mark.parametrize(
    ("fail_reaction", "expect"),
    [("hold", "fail"), ("narrow", "narrow"), ("rollback", "full")],
)
def test_the_plan_decides_what_a_fail_does(fail_reaction: str, expect: str) -> None:
    # A failing check is reported as a fail even though the other check passes.
    change = edited(example(), plan=lambda p: stage_of(p, "canary-5")["verify"]["on"].update(fail=fail_reaction))
    ledger = MemoryLedger()
    ledger.append(cmd.start(change, INITIATOR, (), FakeClock()()))
    now = last_ts(ledger.state)
    ledger.append(decide(ledger.state, obs(now), now).append)
    ledger.append([_confirmed(ledger.state, now)])
    decision = decide(ledger.state, obs(now, error_rate=evidence("error_rate", 0.5, now)), now)
    if expect == "fail":
        assert kinds(decision) == [ev.VERIFICATION_SAMPLED, ev.HOLD_OPENED]
        assert body(decision, ev.HOLD_OPENED)["kind"] == "fail"
    else:
        assert body(decision, ev.ROLLBACK_STARTED)["scope"] == expect


def test_a_fail_at_the_irreversible_stage_needs_a_human() -> None:
    # The contract refuses such a plan; the engine still never rolls back across the stage.
    change = edited(example(), plan=lambda p: stage_of(p, "canary-5").update(irreversible=True))
    ledger = MemoryLedger()
    ledger.append(cmd.start(change, INITIATOR, (), FakeClock()()))
    now = last_ts(ledger.state)
    ledger.append(decide(ledger.state, obs(now), now).append)
    ledger.append([_confirmed(ledger.state, now)])
    decision = decide(ledger.state, obs(now, error_rate=evidence("error_rate", 0.5, now)), now)
    assert kinds(decision) == [ev.VERIFICATION_SAMPLED, ev.EXECUTION_NEEDS_HUMAN]
    assert "irreversible" in body(decision, ev.EXECUTION_NEEDS_HUMAN)["why"]


# ---------------------------------------------------------------- accepting a degraded checkpoint


def degraded_released(run_entries: list[Entry]) -> tuple[MemoryLedger, datetime]:
    ledger = verifying(run_entries)
    now = last_ts(ledger.state)
    ledger.append(decide(ledger.state, obs(now, error_rate=evidence("error_rate", 0.015, now)), now).append)
    hold = ledger.state.hold
    assert hold is not None and hold.kind == "degraded"
    ledger.append(cmd.release(ledger.state, hold.id, hold.evidence_version, "U01DANA", (), now))
    return ledger, now


def test_released_degraded_hold_accepts_the_checkpoint_when_evidence_still_matches(run_entries: list[Entry]) -> None:
    ledger, now = degraded_released(run_entries)
    state = ledger.state
    assert state.phase == Phase.VERIFYING and state.stages[0].accept_hold == "H1"
    request = reads(state, now)
    assert request is not None and request.purpose == "accept"
    decision = decide(state, obs(now, error_rate=evidence("error_rate", 0.016, now)), now)
    assert kinds(decision) == [ev.GATE_CHECKED, ev.STAGE_PASSED]
    assert body(decision, ev.GATE_CHECKED)["purpose"] == "release"
    passed = body(decision, ev.STAGE_PASSED)
    assert (passed["basis"], passed["hold"]) == ("released", "H1")


@pytest.mark.parametrize(
    ("value", "change"),
    [(0.05, "check:error_rate hold -> fail"), (0.002, "check:error_rate hold -> pass")],
)
def test_released_degraded_hold_does_not_carry_when_evidence_moved(
    run_entries: list[Entry], value: float, change: str
) -> None:
    ledger, now = degraded_released(run_entries)
    decision = decide(ledger.state, obs(now, error_rate=evidence("error_rate", value, now)), now)
    assert kinds(decision) == [ev.GATE_CHECKED, ev.RELEASE_NOT_CARRIED]
    assert body(decision, ev.RELEASE_NOT_CARRIED)["changes"] == [change]
    ledger.append(decision.append)
    assert ledger.state.stages[0].accept_hold is None
    assert ledger.state.phase == Phase.VERIFYING


# ---------------------------------------------------------------- hold timers


def gate_held() -> MemoryLedger:
    """A preflight hold before canary-5: nothing is live, so no live tier is watched."""
    ledger = started()
    now = last_ts(ledger.state)
    ledger.append(decide(ledger.state, obs(now, vault_healthy=evidence("vault_healthy", False, now)), now).append)
    return ledger


def test_hold_timers_expire_evidence_remind_escalate_and_never_release() -> None:
    ledger = gate_held()
    hold = ledger.state.hold
    assert hold is not None and hold.evidence_expires_at is not None
    opened = hold.opened_at
    assert hold.evidence_expires_at == opened + timedelta(seconds=30)
    assert reads(ledger.state, opened) is None
    # Before anything is due: idle, waking at the evidence expiry.
    quiet = decide(ledger.state, Observations(), opened + timedelta(seconds=1))
    assert quiet.idle and quiet.wake_at == hold.evidence_expires_at
    # Evidence expiry bumps the version: earlier release buttons go stale.
    expiry = decide(ledger.state, Observations(), hold.evidence_expires_at)
    assert kinds(expiry) == [ev.HOLD_EVIDENCE_EXPIRED]
    assert body(expiry, ev.HOLD_EVIDENCE_EXPIRED)["evidence_version"] == 2
    ledger.append(expiry.append)
    assert ledger.state.hold is not None and ledger.state.hold.evidence_version == 2
    nxt = decide(ledger.state, Observations(), hold.evidence_expires_at)
    assert nxt.idle and nxt.wake_at == hold.remind_at
    # A reminder before expiry.
    remind = decide(ledger.state, Observations(), hold.remind_at)
    assert kinds(remind) == [ev.HOLD_REMINDED]
    ledger.append(remind.append)
    assert decide(ledger.state, Observations(), hold.remind_at).wake_at == hold.expires_at
    # Expiry escalates to the rollback authority and the hold stays.
    escalate = decide(ledger.state, Observations(), hold.expires_at)
    assert kinds(escalate) == [ev.HOLD_ESCALATED]
    assert body(escalate, ev.HOLD_ESCALATED)["notify"] == {"users": ["U03RESP"], "groups": ["S0ONCALL"]}
    assert escalate.append[0].actor == Role.SCHEDULER
    ledger.append(escalate.append)
    state = ledger.state
    assert state.phase == Phase.HOLDING and state.open_hold == hold.id
    assert state.hold is not None and state.hold.escalated and state.hold.status == "open"
    # Long after, nothing more happens: no release, no action, no timer.
    later = decide(state, Observations(), hold.expires_at + timedelta(days=3))
    assert later.idle and later.wake_at is None


def test_a_late_tick_past_expiry_escalates_without_reminding_first() -> None:
    ledger = gate_held()
    hold = ledger.state.hold
    assert hold is not None
    ledger.append(decide(ledger.state, Observations(), hold.expires_at).append)  # evidence expiry
    decision = decide(ledger.state, Observations(), hold.expires_at)
    assert kinds(decision) == [ev.HOLD_ESCALATED]


# ---------------------------------------------------------------- the live tier is watched while held


def test_while_held_the_live_tier_is_watched_on_its_interval(run_entries: list[Entry]) -> None:
    ledger = MemoryLedger.of(run_entries)
    state = ledger.state
    now = last_ts(state) + timedelta(seconds=1)
    request = reads(state, now)
    assert request is not None
    assert (request.purpose, request.role) == ("watch", Role.VERIFIER)
    assert request.checks == ("error_rate", "settlement_parity")
    decision = decide(state, obs(now), now)
    assert state.hold is not None and state.hold.evidence_expires_at is not None
    assert decision.idle and decision.wake_at == min(now + timedelta(seconds=30), state.hold.evidence_expires_at)
    later = state.hold.evidence_expires_at + timedelta(seconds=1)
    ledger.append(decide(state, obs(later), later).append)  # evidence expiry comes first
    assert decide(ledger.state, obs(later), later).wake_at == later + timedelta(seconds=30)


def test_a_hard_failure_while_held_still_rolls_back(run_entries: list[Entry]) -> None:
    ledger = MemoryLedger.of(run_entries)
    now = last_ts(ledger.state) + timedelta(seconds=1)
    decision = decide(ledger.state, obs(now, error_rate=evidence("error_rate", 0.05, now)), now)
    assert kinds(decision) == [ev.VERIFICATION_SAMPLED, ev.ROLLBACK_STARTED]
    assert body(decision, ev.VERIFICATION_SAMPLED)["during_hold"] == "H1"
    assert body(decision, ev.ROLLBACK_STARTED)["undo"] == ["canary-5"]
    # The watch sample is history only: it does not touch the stage's bake.
    consecutive = ledger.state.stages[0].consecutive
    ledger.append(decision.append[:1])
    assert ledger.state.stages[0].consecutive == consecutive


def test_a_watch_sample_is_history_only_and_leaves_the_bake_alone(run_entries: list[Entry]) -> None:
    ledger = MemoryLedger.of(upto(run_entries, ev.VERIFICATION_SAMPLED, 3))
    now = last_ts(ledger.state)
    ledger.append(cmd.hold(ledger.state, "U06SRE", (), "look", now))
    stages = ledger.state.stages
    assert stages[0].consecutive == 3
    later = now + timedelta(seconds=5)
    decision = decide(ledger.state, obs(later, error_rate=evidence("error_rate", 0.5, later)), later)
    assert body(decision, ev.VERIFICATION_SAMPLED)["during_hold"] == "H1"
    ledger.append(decision.append[:1])
    # The bake is untouched; only the check's failing streak and the watch time are recorded.
    after = ledger.state.stages
    assert [(s.consecutive, s.last_sample_at, s.status) for s in after] == [
        (s.consecutive, s.last_sample_at, s.status) for s in stages
    ]
    assert after[0].failing == {"check:error_rate": 1}


def test_a_hard_failure_while_held_with_the_way_back_broken_asks_the_rollback_authority(
    run_entries: list[Entry],
) -> None:
    ledger = MemoryLedger.of(run_entries)
    now = last_ts(ledger.state) + timedelta(seconds=1)
    readings = obs(
        now, error_rate=evidence("error_rate", 0.05, now), legacy_healthy=evidence("legacy_healthy", False, now)
    )
    decision = decide(ledger.state, readings, now)
    assert kinds(decision) == [ev.VERIFICATION_SAMPLED, ev.HOLD_OPENED]
    hold = body(decision, ev.HOLD_OPENED)
    assert hold["kind"] == "rollback_unsafe"
    ledger.append(decision.append)
    # That hold is not watched: the rollback authority was asked, nothing rolls back on its own.
    assert reads(ledger.state, now) is None


def test_degraded_evidence_while_held_does_not_trigger_anything(run_entries: list[Entry]) -> None:
    state = MemoryLedger.of(run_entries).state
    now = last_ts(state) + timedelta(seconds=1)
    decision = decide(state, obs(now, error_rate=evidence("error_rate", 0.015, now), settlement_parity=None), now)
    assert decision.idle


# ---------------------------------------------------------------- resolving an action (pure)


def applying(run_entries: list[Entry]) -> MemoryLedger:
    return MemoryLedger.of(upto(run_entries, ev.ACTION_INTENDED))


def sent(state: State, outcome: str, now: datetime) -> NewEntry:
    p = state.pending
    assert p is not None
    return NewEntry(
        ev.ACTION_SENT,
        Role.EXECUTOR,
        {"stage": p.stage, "direction": p.direction, "key": p.key, "outcome": outcome, "status": None},
        now,
    )


def read_back(ledger: MemoryLedger, matches: bool | None, now: datetime) -> d.Decision:
    state = ledger.state
    request = reads(state, now)
    assert request is not None and request.purpose == "readback"
    assert request.readback == (0, "apply")
    decision = decide(state, Observations(readback=ReadbackResult(matches, {"tokenizer": 0}, "read")), now)
    assert kinds(decision) == [ev.ACTION_READ_BACK]
    return decision


def test_a_read_back_follows_every_send_and_only_a_match_confirms(run_entries: list[Entry]) -> None:
    ledger = applying(run_entries)
    now = last_ts(ledger.state)
    ledger.append([sent(ledger.state, "ok", now)])
    # Without a read-back result there is nothing to decide yet.
    assert decide(ledger.state, Observations(), now).idle
    ledger.append(read_back(ledger, True, now).append)
    assert reads(ledger.state, now) is None
    decision = decide(ledger.state, Observations(), now)
    assert kinds(decision) == [ev.ACTION_CONFIRMED]
    assert decision.effect is None


@pytest.mark.parametrize(
    ("send", "matches", "expect"),
    [
        ("ambiguous", False, "resend"),
        (None, False, "resend"),  # intent recorded, no send recorded (interrupted)
        ("ok", False, "not_applied"),
        ("rejected", False, "not_applied"),
        ("ok", None, "ambiguous"),
        ("ambiguous", None, "ambiguous"),
    ],
)
def test_unresolved_sends(run_entries: list[Entry], send: str | None, matches: bool | None, expect: str) -> None:
    ledger = applying(run_entries)
    now = last_ts(ledger.state)
    if send is not None:
        ledger.append([sent(ledger.state, send, now)])
    ledger.append(read_back(ledger, matches, now).append)
    decision = decide(ledger.state, Observations(), now)
    key = f"{ledger.execution_id}:canary-5:apply:1"
    if expect == "resend":
        assert kinds(decision) == [ev.ACTION_RESEND_INTENDED]
        assert decision.effect is not None and decision.effect.key == key
        assert body(decision, ev.ACTION_RESEND_INTENDED)["key"] == key
    else:
        assert kinds(decision) == [ev.HOLD_OPENED]
        assert decision.effect is None
        hold = body(decision, ev.HOLD_OPENED)
        assert hold["kind"] == expect
        assert hold["resume"] == "readback"
        if expect == "ambiguous":
            assert "outcome unknown" in hold["reason"]


def test_an_ambiguous_send_is_resent_at_most_once(run_entries: list[Entry]) -> None:
    ledger = applying(run_entries)
    now = last_ts(ledger.state)
    ledger.append([sent(ledger.state, "ambiguous", now)])
    ledger.append(read_back(ledger, False, now).append)
    ledger.append(decide(ledger.state, Observations(), now).append)  # resend intended
    ledger.append([sent(ledger.state, "ambiguous", now)])
    ledger.append(read_back(ledger, False, now).append)
    decision = decide(ledger.state, Observations(), now)
    assert decision.effect is None
    hold = body(decision, ev.HOLD_OPENED)
    assert hold["kind"] == "not_applied"
    assert "after 2 send(s)" in hold["reason"]


# ---------------------------------------------------------------- rolling back (pure)


def test_rollback_undoes_newest_first_with_the_rollback_role(run_entries: list[Entry]) -> None:
    ledger = released(run_entries)
    now = last_ts(ledger.state)
    ledger.append(decide(ledger.state, obs(now), now).append)  # canary-25 intended
    ledger.append([sent(ledger.state, "ok", now)])
    ledger.append([_confirmed(ledger.state, now)])
    ledger.append(cmd.rollback(ledger.state, "U03RESP", (), "manual", now))
    state = ledger.state
    assert state.phase == Phase.ROLLING_BACK
    assert state.rollback is not None and state.rollback.undo == ("canary-25", "canary-5")
    first = decide(state, Observations(), now)
    assert kinds(first) == [ev.ACTION_INTENDED]
    assert first.append[0].actor == Role.ROLLBACK
    assert first.effect is not None
    assert (first.effect.stage, first.effect.direction, first.effect.role) == ("canary-25", "rollback", Role.ROLLBACK)
    assert first.effect.key == f"{state.execution_id}:canary-25:rollback:1"
    ledger.append(first.append)
    request = reads(ledger.state, now)
    assert request is not None and request.role == Role.ROLLBACK and request.readback == (1, "rollback")
    # A failed read-back of a rollback step is no hold: the way back failed, a human takes over.
    ledger.append([sent(ledger.state, "ok", now)])
    ledger.append(decide(ledger.state, Observations(readback=ReadbackResult(None, None, "500")), now).append)
    failed = decide(ledger.state, Observations(), now)
    assert kinds(failed) == [ev.EXECUTION_NEEDS_HUMAN]
    assert "rollback failed" in body(failed, ev.EXECUTION_NEEDS_HUMAN)["why"]
