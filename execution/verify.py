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
* The first sample waits ``initial_delay`` after the read-back confirmed the stage (none: at once).
* A check with ``consecutive_failure_limit: N`` tolerates N consecutive failing samples: a
  tolerated failure does not react, but it breaks the run of passes. A pass ends the streak; an
  outcome that is neither pass nor fail (no data, stale, error) leaves it as it was.
* A sample whose data could predate the change (a rate or range window reaching back before the
  read-back confirmed the stage, or a raw sample older than that) is not evidence about the
  change (DESIGN rule 11): it may still hold, fail or roll back, but it never counts toward the
  bake.
"""

from __future__ import annotations

import math
from datetime import datetime, timedelta

from execution import events as ev
from execution import policy
from execution.contract.models import Stage
from execution.evaluate import Result, categories, changed, overall
from execution.events import Basis, HoldKind, Purpose, Resume, Scope, StageStatus
from execution.holds import manual_hold, open_hold
from execution.model import Outcome, Role
from execution.project import Hold, State
from execution.protocol import Decision, Observations, scaled, streak_gap_limit
from execution.readings import check_results, readiness_results, summary
from execution.rollback import start_rollback
from execution.transitions import Phase


def next_sample_at(state: State) -> datetime | None:
    """When the live stage is sampled next (None: now). Worked example: confirmed at 12:00:00
    with ``initial_delay: 1m`` and no sample yet -> 12:01:00; last sampled 12:03:00 with
    ``every: 30s`` -> 12:03:30."""
    stage_state = state.stages[state.current]
    verify = state.stage_def(state.current).verify
    if stage_state.last_sample_at is None:
        if verify.initial_delay is None or stage_state.applied_at is None:
            return None
        return stage_state.applied_at + timedelta(seconds=scaled(state, verify.initial_delay))
    return stage_state.last_sample_at + timedelta(seconds=scaled(state, verify.every))


def sample_due(state: State, now: datetime) -> bool:
    due = next_sample_at(state)
    return due is None or now >= due


def failing_streaks(state: State, stage: Stage, index: int, checks: list[Result]) -> tuple[dict[str, int], set[str]]:
    """Each check's run of consecutive failing samples after this one, and the keys whose failure
    is still tolerated. Worked example: limit 2, streak 1 before, this sample fails -> streak 2,
    tolerated; the next failure -> streak 3, not tolerated (the plan's ``fail`` reaction)."""
    before = state.stages[index].failing
    streaks: dict[str, int] = {}
    tolerated: set[str] = set()
    for check, result in zip(stage.verify.checks, checks, strict=True):
        streak = before.get(result.key, 0)
        if result.outcome == Outcome.FAIL:
            streak += 1
            if streak <= check.consecutive_failure_limit:
                tolerated.add(result.key)
        elif result.outcome == Outcome.PASS:
            streak = 0
        if streak:
            streaks[result.key] = streak
    return streaks, tolerated


def reactions(stage: Stage, checks: list[Result], tolerated: set[str]) -> str:
    return policy.strongest(
        "continue" if r.key in tolerated else policy.reaction(r.outcome, stage.verify.on) for r in checks
    )


def predating(state: State, stage: Stage, index: int, obs: Observations) -> list[str]:
    """The checked signals whose data could come from before the stage was confirmed live."""
    since = state.stages[index].applied_at
    if since is None:
        return []
    out = []
    for check in stage.verify.checks:
        evidence = obs.evidence.get(check.signal)
        start = evidence.data_from(state.speed) if evidence is not None else None
        if start is not None and start < since and check.signal not in out:
            out.append(check.signal)
    return out


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
        return Decision(wake_at=next_sample_at(state))
    checks = check_results(state, stage, obs, now)
    ready = readiness_results(state, obs, now)
    results = checks + ready
    required = max(1, math.ceil(scaled(state, stage.verify.bake) / every - 1e-9))
    streaks, tolerated = failing_streaks(state, stage, i, checks)
    check_reaction = reactions(stage, checks, tolerated)
    readiness_ok = all(r.outcome == Outcome.PASS for r in ready)
    outcome = overall(results)
    gap = streak_gap(state, i, now)
    streak = 0 if gap is not None else stage_state.consecutive
    early = predating(state, stage, i, obs)
    if check_reaction == "continue" and readiness_ok and not tolerated:
        # A pass on data that could predate the change is not evidence about it: not counted.
        consecutive = streak if early else streak + 1
    else:
        consecutive = 0
    reaction = check_reaction
    if not readiness_ok and reaction in ("continue", "hold"):
        reaction = "hold"
    sample = ev.VerificationSampled(
        stage=stage.id,
        results=tuple(r.to_json() for r in results),
        outcome=outcome.value,
        reaction=reaction,
        consecutive=consecutive,
        required=required,
        gap=gap,
        failing=tuple(sorted(streaks.items())),
        tolerated=tuple(sorted(tolerated)),
        predates_change=tuple(early),
    )
    sampled = ev.record(sample, Role.VERIFIER, now)
    if reaction == "continue":
        if consecutive >= required:
            verified = ev.StagePassed(stage=stage.id, index=i, basis=Basis.VERIFIED, consecutive=consecutive)
            passed = ev.record(verified, Role.VERIFIER, now)
            return Decision((sampled, passed))
        return Decision((sampled,), wake_at=now + timedelta(seconds=every))
    if reaction in ("rollback", "narrow") and not readiness_ok:
        hold = open_hold(
            state,
            now,
            Role.VERIFIER,
            kind=HoldKind.ROLLBACK_UNSAFE,
            reason=f"checks call for {reaction} ({summary(checks)}) but the way back is not ready "
            f"({summary(ready)}): the rollback authority must decide",
            index=i,
            results=results,
            resume=Resume.VERIFY,
        )
        return Decision((sampled, hold))
    if reaction in ("rollback", "narrow"):
        scope = Scope.NARROW if reaction == "narrow" else Scope.FULL
        return Decision((sampled, *start_rollback(state, now, Role.ROLLBACK, "verification", summary(checks), scope)))
    # hold
    non_pass = {r.outcome for r in results if r.outcome != Outcome.PASS}
    kind: HoldKind
    if not readiness_ok:
        kind, resume = HoldKind.READINESS_LOST, Resume.VERIFY
        reason = f"rollback readiness lost while '{stage.id}' is live: {summary(ready)}"
    elif non_pass == {Outcome.HOLD}:
        kind, resume = HoldKind.DEGRADED, Resume.ACCEPT
        reason = f"degraded but tolerable evidence at '{stage.id}': {summary(checks)}; release accepts this checkpoint"
    elif any(r.outcome == Outcome.FAIL for r in checks):
        # The plan maps fail to hold here (e.g. past the point of no return). A failing check is a
        # fail even when another check passes: calling it "conflicting" or "not conclusive" would
        # tell the human to reconcile signals instead of deciding on a failure.
        kind, resume = HoldKind.FAIL, Resume.VERIFY
        reason = f"checks at '{stage.id}' fail and the plan says hold: {summary(checks)}; release resumes verification"
    else:
        passing = any(r.outcome == Outcome.PASS for r in checks)
        kind = HoldKind.CONFLICTING if passing else HoldKind(overall(results).value)
        resume = Resume.VERIFY
        reason = f"verification of '{stage.id}' is not conclusive: {summary(checks)}; release resumes verification"
    hold = open_hold(state, now, Role.VERIFIER, kind=kind, reason=reason, index=i, results=results, resume=resume)
    return Decision((sampled, hold))


def accept(state: State, hold: Hold, obs: Observations, now: datetime) -> Decision:
    """A released tolerated-band hold: accept the checkpoint only if fresh evidence still matches."""
    i = state.current
    stage = state.stage_def(i)
    results = check_results(state, stage, obs, now) + readiness_results(state, obs, now)
    cats = categories(results)
    gate = ev.GateChecked(
        stage=stage.id,
        purpose=Purpose.RELEASE,
        results=tuple(r.to_json() for r in results),
        outcome=overall(results).value,
    )
    checked = ev.record(gate, Role.VERIFIER, now)
    if cats == dict(hold.categories):
        accepted = ev.StagePassed(
            stage=stage.id, index=i, basis=Basis.RELEASED, hold=hold.id, consecutive=state.stages[i].consecutive
        )
        return Decision((checked, ev.record(accepted, Role.VERIFIER, now)))
    diffs = changed(hold.categories, cats)
    why = (
        f"release of {hold.id} by {', '.join(hold.released_by)} does not carry over: "
        + "; ".join(diffs)
        + "; verification resumes"
    )
    not_carried = ev.ReleaseNotCarried(hold=hold.id, why=why, changes=tuple(diffs))
    return Decision((checked, ev.record(not_carried, Role.VERIFIER, now)))


# Holds during which the live tier is not watched: an action's outcome is in doubt, the ledger and
# the target disagree, or the rollback authority has already been asked to decide.
_UNWATCHED_HOLDS = frozenset(
    {HoldKind.AMBIGUOUS, HoldKind.NOT_APPLIED, HoldKind.RECONCILE_MISMATCH, HoldKind.ROLLBACK_UNSAFE}
)


def watched_stage(state: State) -> int | None:
    """While held, the newest live tier is still watched for hard triggers (rollback or narrow)."""
    hold = state.hold
    if hold is None or hold.kind in _UNWATCHED_HOLDS or state.pending is not None:
        return None
    live = [s.index for s in state.stages if s.status in (StageStatus.LIVE, StageStatus.PASSED)]
    if not live:
        return None
    stage = state.stage_def(live[-1])
    if not any(r in ("rollback", "narrow") for r in stage.verify.on.model_dump().values()):
        return None
    return live[-1]


def watch(state: State, index: int, obs: Observations, now: datetime) -> Decision | None:
    """A hold does not stop the live tier from failing: a hard trigger still rolls back."""
    stage = state.stage_def(index)
    watched_at = state.stages[index].watched_at
    if watched_at is not None and now < watched_at + timedelta(seconds=scaled(state, stage.verify.every)):
        return None  # one counted sample per interval: a re-read in the same tick is not another
    checks = check_results(state, stage, obs, now)
    ready = readiness_results(state, obs, now)
    streaks, tolerated = failing_streaks(state, stage, index, checks)
    reaction = reactions(stage, checks, tolerated)
    if reaction not in ("rollback", "narrow"):
        if streaks != dict(state.stages[index].failing):
            # Record the streak, so the next watch sample counts on from it.
            streak = ev.VerificationSampled(
                stage=stage.id,
                results=tuple(r.to_json() for r in checks + ready),
                outcome=overall(checks + ready).value,
                reaction="continue",
                consecutive=0,
                required=0,
                during_hold=state.open_hold,
                failing=tuple(sorted(streaks.items())),
                tolerated=tuple(sorted(tolerated)),
            )
            return Decision((ev.record(streak, Role.VERIFIER, now),))
        return None
    results = checks + ready
    watched = ev.VerificationSampled(
        stage=stage.id,
        results=tuple(r.to_json() for r in results),
        outcome=overall(results).value,
        reaction=reaction,
        consecutive=0,
        required=0,
        during_hold=state.open_hold,
        failing=tuple(sorted(streaks.items())),
        tolerated=tuple(sorted(tolerated)),
    )
    sampled = ev.record(watched, Role.VERIFIER, now)
    if not all(r.outcome == Outcome.PASS for r in ready):
        hold = open_hold(
            state,
            now,
            Role.VERIFIER,
            kind=HoldKind.ROLLBACK_UNSAFE,
            reason=f"while held, '{stage.id}' calls for {reaction} ({summary(checks)}) but the way back is not "
            f"ready ({summary(ready)}): the rollback authority must decide",
            index=index,
            results=results,
            resume=Resume.RESUME,
            resume_phase=Phase(state.hold.resume_phase) if state.hold else None,
        )
        return Decision((sampled, hold))
    scope = Scope.NARROW if reaction == "narrow" else Scope.FULL
    reason = f"while held at {state.open_hold}: {summary(checks)}"
    return Decision((sampled, *start_rollback(state, now, Role.ROLLBACK, "verification", reason, scope)))
