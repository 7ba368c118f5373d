"""Verification (pure decisions): bake a live stage against its checks and rollback readiness.

Rules:
* A bake needs ceil(bake / every) consecutive passes; any other outcome resets the count, and so
  does a gap: a sample taken longer than ``streak_gap_limit`` after the previous one (the process
  was down, the scheduler starved) starts a new streak, and the sample records the gap.
* The most severe reaction wins when checks disagree; lost readiness holds even when checks pass.
* A fail reaction rolls back (or narrows) only when the way back is ready, else it holds for the
  rollback authority.
* Only tolerated-band evidence can be accepted by a release, and only if fresh evidence still
  matches what the releaser saw.
* While held, the newest live tier is still watched for hard triggers.
"""

from __future__ import annotations

import math
from datetime import datetime, timedelta

from execution import events as ev
from execution import policy
from execution.evaluate import categories, changed, overall
from execution.holds import manual_hold, open_hold
from execution.model import Outcome, Role
from execution.project import Hold, State
from execution.protocol import Decision, Observations, new_entry, scaled, streak_gap_limit
from execution.readings import check_results, readiness_results, summary
from execution.rollback import start_rollback
from execution.transitions import Phase


def sample_due(state: State, now: datetime) -> bool:
    stage_state = state.stages[state.current]
    if stage_state.last_sample_at is None:
        return True
    every = scaled(state, state.stage_def(state.current).verify.every)
    return now >= stage_state.last_sample_at + timedelta(seconds=every)


def streak_gap(state: State, index: int, now: datetime) -> dict[str, float] | None:
    """The gap that breaks this stage's streak of passes, or None when the streak may go on.

    Example (live, every 30s): previous sample at 22:00:00, now 22:01:04 -> 64 s > 60 s ->
    ``{"since_previous_s": 64.0, "limit_s": 60.0}``: the sample now counts as the first of a new streak.
    """
    previous = state.stages[index].last_sample_at
    if previous is None:
        return None
    since = (now - previous).total_seconds()
    limit = streak_gap_limit(state, state.stage_def(index).verify.every)
    if since <= limit:
        return None
    return {"since_previous_s": round(since, 3), "limit_s": round(limit, 3)}


def verifying(state: State, obs: Observations, now: datetime) -> Decision:
    i = state.current
    stage = state.stage_def(i)
    stage_state = state.stages[i]
    if state.hold_requested:
        return manual_hold(state, now)
    if stage_state.accept_hold is not None:
        return accept(state, state.holds[stage_state.accept_hold], obs, now)
    every = scaled(state, stage.verify.every)
    if not sample_due(state, now):
        assert stage_state.last_sample_at is not None
        return Decision(wake_at=stage_state.last_sample_at + timedelta(seconds=every))
    checks = check_results(state, stage, obs, now)
    ready = readiness_results(state, obs, now)
    results = checks + ready
    required = max(1, math.ceil(scaled(state, stage.verify.bake) / every - 1e-9))
    check_reaction = policy.strongest(policy.reaction(r.outcome, stage.verify.on) for r in checks)
    readiness_ok = all(r.outcome == Outcome.PASS for r in ready)
    outcome = overall(results)
    gap = streak_gap(state, i, now)
    streak = 0 if gap is not None else stage_state.consecutive
    consecutive = streak + 1 if (check_reaction == "continue" and readiness_ok) else 0
    reaction = check_reaction
    if not readiness_ok and reaction in ("continue", "hold"):
        reaction = "hold"
    sampled = new_entry(
        ev.VERIFICATION_SAMPLED,
        Role.VERIFIER,
        now,
        stage=stage.id,
        results=[r.to_json() for r in results],
        outcome=outcome.value,
        reaction=reaction,
        consecutive=consecutive,
        required=required,
        **({"gap": gap} if gap is not None else {}),
    )
    if reaction == "continue":
        if consecutive >= required:
            passed = new_entry(
                ev.STAGE_PASSED,
                Role.VERIFIER,
                now,
                stage=stage.id,
                index=i,
                basis="verified",
                hold=None,
                consecutive=consecutive,
            )
            return Decision((sampled, passed))
        return Decision((sampled,), wake_at=now + timedelta(seconds=every))
    if reaction in ("rollback", "narrow") and not readiness_ok:
        hold = open_hold(
            state,
            now,
            Role.VERIFIER,
            kind="rollback_unsafe",
            reason=f"checks call for {reaction} ({summary(checks)}) but the way back is not ready "
            f"({summary(ready)}): the rollback authority must decide",
            index=i,
            results=results,
            resume="verify",
        )
        return Decision((sampled, hold))
    if reaction in ("rollback", "narrow"):
        scope = "narrow" if reaction == "narrow" else "full"
        return Decision((sampled, *start_rollback(state, now, Role.ROLLBACK, "verification", summary(checks), scope)))
    # hold
    non_pass = {r.outcome for r in results if r.outcome != Outcome.PASS}
    if not readiness_ok:
        kind, resume = "readiness_lost", "verify"
        reason = f"rollback readiness lost while '{stage.id}' is live: {summary(ready)}"
    elif non_pass == {Outcome.HOLD}:
        kind, resume = "degraded", "accept"
        reason = f"degraded but tolerable evidence at '{stage.id}': {summary(checks)}; release accepts this checkpoint"
    elif any(r.outcome == Outcome.FAIL for r in checks):
        # The plan maps fail to hold here (e.g. past the point of no return). A failing check is a
        # fail even when another check passes: calling it "conflicting" or "not conclusive" would
        # tell the human to reconcile signals instead of deciding on a failure.
        kind, resume = "fail", "verify"
        reason = f"checks at '{stage.id}' fail and the plan says hold: {summary(checks)}; release resumes verification"
    else:
        passing = any(r.outcome == Outcome.PASS for r in checks)
        kind = "conflicting" if passing else overall(results).value
        resume = "verify"
        reason = f"verification of '{stage.id}' is not conclusive: {summary(checks)}; release resumes verification"
    hold = open_hold(state, now, Role.VERIFIER, kind=kind, reason=reason, index=i, results=results, resume=resume)
    return Decision((sampled, hold))


def accept(state: State, hold: Hold, obs: Observations, now: datetime) -> Decision:
    """A released tolerated-band hold: accept the checkpoint only if fresh evidence still matches."""
    i = state.current
    stage = state.stage_def(i)
    results = check_results(state, stage, obs, now) + readiness_results(state, obs, now)
    cats = categories(results)
    checked = new_entry(
        ev.GATE_CHECKED,
        Role.VERIFIER,
        now,
        stage=stage.id,
        purpose="release",
        results=[r.to_json() for r in results],
        outcome=overall(results).value,
    )
    if cats == dict(hold.categories):
        passed = new_entry(
            ev.STAGE_PASSED,
            Role.VERIFIER,
            now,
            stage=stage.id,
            index=i,
            basis="released",
            hold=hold.id,
            consecutive=state.stages[i].consecutive,
        )
        return Decision((checked, passed))
    diffs = changed(hold.categories, cats)
    why = (
        f"release of {hold.id} by {', '.join(hold.released_by)} does not carry over: "
        + "; ".join(diffs)
        + "; verification resumes"
    )
    return Decision(
        (checked, new_entry(ev.RELEASE_NOT_CARRIED, Role.VERIFIER, now, hold=hold.id, why=why, changes=diffs))
    )


# Holds during which the live tier is not watched: an action's outcome is in doubt, the ledger and
# the target disagree, or the rollback authority has already been asked to decide.
_UNWATCHED_HOLDS = frozenset({"ambiguous", "not_applied", "reconcile_mismatch", "rollback_unsafe"})


def watched_stage(state: State) -> int | None:
    """While held, the newest live tier is still watched for hard triggers (rollback or narrow)."""
    hold = state.hold
    if hold is None or hold.kind in _UNWATCHED_HOLDS or state.pending is not None:
        return None
    live = [s.index for s in state.stages if s.status in ("live", "passed")]
    if not live:
        return None
    stage = state.stage_def(live[-1])
    if not any(r in ("rollback", "narrow") for r in stage.verify.on.model_dump().values()):
        return None
    return live[-1]


def watch(state: State, index: int, obs: Observations, now: datetime) -> Decision | None:
    """A hold does not stop the live tier from failing: a hard trigger still rolls back."""
    stage = state.stage_def(index)
    checks = check_results(state, stage, obs, now)
    ready = readiness_results(state, obs, now)
    reaction = policy.strongest(policy.reaction(r.outcome, stage.verify.on) for r in checks)
    if reaction not in ("rollback", "narrow"):
        return None
    results = checks + ready
    sampled = new_entry(
        ev.VERIFICATION_SAMPLED,
        Role.VERIFIER,
        now,
        stage=stage.id,
        results=[r.to_json() for r in results],
        outcome=overall(results).value,
        reaction=reaction,
        consecutive=0,
        required=0,
        during_hold=state.open_hold,
    )
    if not all(r.outcome == Outcome.PASS for r in ready):
        hold = open_hold(
            state,
            now,
            Role.VERIFIER,
            kind="rollback_unsafe",
            reason=f"while held, '{stage.id}' calls for {reaction} ({summary(checks)}) but the way back is not "
            f"ready ({summary(ready)}): the rollback authority must decide",
            index=index,
            results=results,
            resume="resume",
            resume_phase=Phase(state.hold.resume_phase) if state.hold else None,
        )
        return Decision((sampled, hold))
    scope = "narrow" if reaction == "narrow" else "full"
    reason = f"while held at {state.open_hold}: {summary(checks)}"
    return Decision((sampled, *start_rollback(state, now, Role.ROLLBACK, "verification", reason, scope)))
