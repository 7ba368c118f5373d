"""The engine's decisions: pure functions of (state folded from the ledger, fresh evidence, now).

Protocol with the shell (``service.py``):
1. ``reads(state, now)`` says what to observe right now (signals, a read-back), or None.
2. The shell observes and calls ``decide(state, observations, now)``.
3. The shell appends ``decision.append`` conditionally at ``state.seq + 1``; then, if there is an
   ``effect``, performs it and records the result; then it starts again at 1. When a decision
   has nothing to append and no effect, the shell sleeps until ``decision.wake_at``.

Rules kept here (DESIGN.md §3):
* Preflight and rollback readiness are re-read right before every consequential transition;
  stale or missing evidence never passes; a closed window stops expansion.
* Protected stages are entered only after a human release bound to the evidence shown; if the
  fresh evidence differs from it, the release does not carry over and a new hold opens.
* Intent is recorded before an action is sent; a result is read back before it counts. An
  unknown outcome is resolved by read-back, re-sent at most once with the same key after an
  ambiguous send, and otherwise held — never retried blindly.
* Lost rollback readiness holds, even when forward metrics pass; a fail reaction rolls back only
  if the way back is ready, else it holds for the rollback authority.

Worked example: state READY at canary-25 (hold_before), no release yet, fresh preflight and
readiness all pass -> append ``gate.checked`` and ``hold.opened`` (kind ``protected``, 1 release
needed, expires now + 2h); no effect; the shell waits for a human.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from execution import events as ev
from execution import policy
from execution.conditions import parse_duration
from execution.contract.models import Stage
from execution.evaluate import Result, categories, changed, evaluate, overall
from execution.model import Evidence, Outcome, ReadbackResult, Role
from execution.project import Hold, State
from execution.transitions import Phase
from ledger.chain import format_ts, parse_ts
from ledger.entry import NewEntry

# ---------------------------------------------------------------- protocol types


@dataclass(frozen=True)
class ReadRequest:
    purpose: str  # gate | verify | accept | readback
    role: Role
    preflight: tuple[str, ...] = ()
    checks: tuple[str, ...] = ()
    readiness: tuple[str, ...] = ()
    readback: tuple[int, str] | None = None  # (stage index, direction)

    @property
    def signals(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys((*self.preflight, *self.checks, *self.readiness)))


@dataclass(frozen=True)
class Observations:
    evidence: Mapping[str, Evidence] = field(default_factory=dict)
    readback: ReadbackResult | None = None


@dataclass(frozen=True)
class SendAction:
    index: int
    stage: str
    direction: str  # apply | rollback
    key: str
    role: Role
    timeout_s: float


@dataclass(frozen=True)
class Decision:
    append: tuple[NewEntry, ...] = ()
    effect: SendAction | None = None
    wake_at: datetime | None = None

    @property
    def idle(self) -> bool:
        return not self.append and self.effect is None


# ---------------------------------------------------------------- small helpers


def scaled(state: State, text: str) -> float:
    """A plan duration in seconds, compressed by the rehearsal speed (1 for live runs)."""
    return parse_duration(text) / state.speed


def action_key(state: State, stage: str, direction: str, attempt: int) -> str:
    return f"{state.execution_id}:{stage}:{direction}:{attempt}"


def _entry(kind: str, actor: str, now: datetime, /, **body: Any) -> NewEntry:
    return NewEntry(kind=kind, actor=actor, body=body, ts=now)


def _readiness_names(state: State) -> tuple[str, ...]:
    assert state.plan is not None
    if state.fallback_retired:
        return ()
    return tuple(g.signal for g in state.plan.rollback_readiness)


def _evidence(obs: Observations, name: str) -> Evidence:
    found = obs.evidence.get(name)
    return found if found is not None else Evidence(name, None, None, "not observed", error="signal was not read")


def gate_results(state: State, stage: Stage, obs: Observations, now: datetime) -> list[Result]:
    assert state.plan is not None
    results = []
    for gate in stage.preflight:
        sig = state.plan.signals[gate.signal]
        results.append(evaluate("preflight", _evidence(obs, gate.signal), gate.pass_, scaled(state, sig.max_age), now))
    results += readiness_results(state, obs, now)
    return results


def readiness_results(state: State, obs: Observations, now: datetime) -> list[Result]:
    assert state.plan is not None
    if state.fallback_retired:
        return []
    out = []
    for gate in state.plan.rollback_readiness:
        sig = state.plan.signals[gate.signal]
        out.append(evaluate("readiness", _evidence(obs, gate.signal), gate.pass_, scaled(state, sig.max_age), now))
    return out


def check_results(state: State, stage: Stage, obs: Observations, now: datetime) -> list[Result]:
    assert state.plan is not None
    out = []
    for check in stage.verify.checks:
        sig = state.plan.signals[check.signal]
        out.append(
            evaluate(
                "check",
                _evidence(obs, check.signal),
                check.pass_,
                scaled(state, sig.max_age),
                now,
                hold_text=check.hold,
                min_samples=check.min_samples,
            )
        )
    return out


def _evidence_expiry(state: State, results: list[Result]) -> datetime | None:
    times = []
    for r in results:
        if r.sampled_at is None:
            continue
        times.append(parse_ts(r.sampled_at) + timedelta(seconds=r.max_age_s))
    return min(times) if times else None


def _summary(results: list[Result]) -> str:
    bad = [r for r in results if r.outcome != Outcome.PASS]
    if not bad:
        return "all evidence passes"
    return "; ".join(f"{r.signal} {r.outcome.value} ({r.detail})" for r in bad)


def open_hold(
    state: State,
    now: datetime,
    actor: str,
    *,
    kind: str,
    reason: str,
    index: int,
    results: list[Result],
    resume: str,
    resume_phase: Phase | None = None,
    releasable: bool = True,
    required: int = 1,
    supersedes: str | None = None,
) -> NewEntry:
    assert state.plan is not None
    expiry = scaled(state, state.plan.holds.expiry)
    remind = scaled(state, state.plan.holds.remind_before)
    expires = now + timedelta(seconds=expiry)
    hold_id = f"H{len(state.holds) + 1}"
    stage = state.stage_def(index).id if 0 <= index < len(state.stages) else None
    evidence_expires = _evidence_expiry(state, results)
    return _entry(
        ev.HOLD_OPENED,
        actor,
        now,
        hold=hold_id,
        stage=stage,
        index=index,
        kind=kind,
        reason=reason,
        results=[r.to_json() for r in results],
        categories=categories(results),
        evidence_version=1,
        evidence_expires_at=format_ts(evidence_expires) if evidence_expires else None,
        releasers=policy.releasers(state),
        required=required,
        releasable=releasable,
        resume=resume,
        resume_phase=(resume_phase or state.phase).value,
        expires_at=format_ts(expires),
        remind_at=format_ts(expires - timedelta(seconds=remind)),
        rollback_path=policy.rollback_path(state),
        rollback_authority=policy.rollback_authority(state),
        supersedes=supersedes,
    )


# ---------------------------------------------------------------- what to read


def reads(state: State, now: datetime) -> ReadRequest | None:
    """What the shell must observe before ``decide`` can act now (None: nothing)."""
    if state.terminal or state.plan is None:
        return None
    if state.phase == Phase.READY:
        if state.current >= len(state.stages) or state.hold_requested:
            return None
        if state.window_closes is not None and now >= state.window_closes:
            return None
        stage = state.stage_def(state.current)
        return ReadRequest(
            "gate",
            Role.PREFLIGHT,
            preflight=tuple(g.signal for g in stage.preflight),
            readiness=_readiness_names(state),
        )
    if state.phase in (Phase.APPLYING, Phase.ROLLING_BACK) and state.pending is not None:
        if state.pending.readback == "none":
            role = Role.ROLLBACK if state.pending.direction == "rollback" else Role.EXECUTOR
            return ReadRequest("readback", role, readback=(state.pending.index, state.pending.direction))
        return None
    if state.phase == Phase.VERIFYING:
        if state.hold_requested:
            return None
        stage_state = state.stages[state.current]
        stage = state.stage_def(state.current)
        if stage_state.accept_hold is None and not _sample_due(state, now):
            return None
        return ReadRequest(
            "accept" if stage_state.accept_hold else "verify",
            Role.VERIFIER,
            checks=tuple(c.signal for c in stage.verify.checks),
            readiness=_readiness_names(state),
        )
    if state.phase == Phase.HOLDING:
        watched = _watched_stage(state)
        if watched is not None:
            stage = state.stage_def(watched)
            return ReadRequest(
                "watch",
                Role.VERIFIER,
                checks=tuple(c.signal for c in stage.verify.checks),
                readiness=_readiness_names(state),
            )
    return None


def _sample_due(state: State, now: datetime) -> bool:
    stage_state = state.stages[state.current]
    if stage_state.last_sample_at is None:
        return True
    every = scaled(state, state.stage_def(state.current).verify.every)
    return now >= stage_state.last_sample_at + timedelta(seconds=every)


# ---------------------------------------------------------------- decide


def decide(state: State, obs: Observations, now: datetime) -> Decision:
    if state.terminal or state.plan is None:
        return Decision()
    handler = {
        Phase.READY: _ready,
        Phase.APPLYING: _applying,
        Phase.VERIFYING: _verifying,
        Phase.HOLDING: _holding,
        Phase.ROLLING_BACK: _rolling_back,
    }.get(state.phase)
    return handler(state, obs, now) if handler else Decision()


def _manual_hold(state: State, now: datetime) -> Decision:
    assert state.hold_requested is not None
    user, reason = state.hold_requested
    return Decision(
        (
            open_hold(
                state,
                now,
                user,
                kind="manual",
                reason=f"manual hold by {user}: {reason}",
                index=state.current if state.current < len(state.stages) else len(state.stages) - 1,
                results=[],
                resume="resume",
            ),
        )
    )


def _ready(state: State, obs: Observations, now: datetime) -> Decision:
    assert state.plan is not None
    i = state.current
    if i >= len(state.stages):
        return Decision((_entry(ev.EXECUTION_COMPLETED, Role.EXECUTOR, now, stages=[s.id for s in state.stages]),))
    if state.hold_requested:
        return _manual_hold(state, now)
    stage = state.stage_def(i)
    if state.window_closes is not None and now >= state.window_closes:
        return Decision(
            (
                open_hold(
                    state,
                    now,
                    Role.PREFLIGHT,
                    kind="window_closed",
                    reason=f"the change window closed at {format_ts(state.window_closes)}; "
                    f"nothing expands further (next stage '{stage.id}' not entered)",
                    index=i,
                    results=[],
                    resume="enter",
                    releasable=False,
                ),
            )
        )
    results = gate_results(state, stage, obs, now)
    outcome = overall(results)
    cats = categories(results)
    checked = _entry(
        ev.GATE_CHECKED,
        Role.PREFLIGHT,
        now,
        stage=stage.id,
        purpose="enter",
        results=[r.to_json() for r in results],
        outcome=outcome.value,
    )
    entry_hold = state.holds.get(state.stages[i].entry_hold or "")
    required = policy.required_releases(state, i)
    if entry_hold is not None:
        if cats == dict(entry_hold.categories) and outcome == Outcome.PASS:
            return _intend_apply(state, i, now, checked)
        if not stage.hold_before and outcome == Outcome.PASS:
            # An unprotected stage is entered on passing evidence alone; releasing its gate hold
            # (preflight, readiness) asked for this re-check. Holding again here would open a
            # "preflight" hold whose evidence all passes and need a second release for nothing.
            return _intend_apply(state, i, now, checked)
        diffs = changed(entry_hold.categories, cats) or [f"evidence is {outcome.value}: {_summary(results)}"]
        who = ", ".join(entry_hold.released_by)
        why = (
            f"release of {entry_hold.id} by {who} on evidence v{entry_hold.evidence_version} does not carry over: "
            + "; ".join(diffs)
        )
        not_carried = _entry(ev.RELEASE_NOT_CARRIED, Role.PREFLIGHT, now, hold=entry_hold.id, why=why, changes=diffs)
        hold = open_hold(
            state,
            now,
            Role.PREFLIGHT,
            kind="protected" if stage.hold_before else _gate_kind(results),
            reason=why,
            index=i,
            results=results,
            resume="enter",
            required=required if stage.hold_before else 1,
            supersedes=entry_hold.id,
        )
        return Decision((checked, not_carried, hold))
    if stage.hold_before:
        reason = f"protected stage '{stage.id}' ({_protection_reason(state, i)}): a named authority must release"
        if outcome != Outcome.PASS:
            reason += f"; evidence now: {_summary(results)}"
        hold = open_hold(
            state,
            now,
            Role.PREFLIGHT,
            kind="protected",
            reason=reason,
            index=i,
            results=results,
            resume="enter",
            required=required,
        )
        return Decision((checked, hold))
    if outcome != Outcome.PASS:
        hold = open_hold(
            state,
            now,
            Role.PREFLIGHT,
            kind=_gate_kind(results),
            reason=f"not entering '{stage.id}': {_summary(results)}",
            index=i,
            results=results,
            resume="enter",
        )
        return Decision((checked, hold))
    return _intend_apply(state, i, now, checked)


def _gate_kind(results: list[Result]) -> str:
    if any(r.kind == "readiness" and r.outcome != Outcome.PASS for r in results):
        return "readiness_lost"
    return "preflight"


def _protection_reason(state: State, i: int) -> str:
    stage = state.stage_def(i)
    reasons = []
    reached = max((state.stage_def(s.index).blast_radius for s in state.stages[:i]), default=0.0)
    if stage.blast_radius > reached:
        reasons.append(f"blast radius {reached:g} -> {stage.blast_radius:g}")
    if stage.promotes:
        reasons.append("promotes authoritative state")
    if stage.retires_fallback:
        reasons.append("retires the fallback; irreversible, two releasers")
    elif stage.irreversible:
        reasons.append("irreversible, two releasers")
    return ", ".join(reasons) or "protected by the plan"


def _intend_apply(state: State, i: int, now: datetime, checked: NewEntry) -> Decision:
    intended, send = _intend(state, i, "apply", now)
    return Decision((checked, intended), send)


def _intend(state: State, index: int, direction: str, now: datetime) -> tuple[NewEntry, SendAction]:
    """Record the intent of a forward action or a rollback step, and say what to send.

    The attempt number is part of the idempotency key: a new attempt is a new intended
    transition; a re-send after an ambiguous outcome reuses its attempt's key.
    """
    stage = state.stage_def(index)
    stage_state = state.stages[index]
    if direction == "apply":
        action, role, attempt = stage.action, Role.EXECUTOR, stage_state.attempts + 1
    else:
        assert stage.rollback is not None
        action, role, attempt = stage.rollback.action, Role.ROLLBACK, stage_state.rollback_attempts + 1
    key = action_key(state, stage.id, direction, attempt)
    intended = _entry(
        ev.ACTION_INTENDED,
        role,
        now,
        stage=stage.id,
        index=index,
        direction=direction,
        attempt=attempt,
        key=key,
        target=action.target,
        action=action.model_dump(mode="json", by_alias=True, exclude_none=True),
    )
    return intended, SendAction(index, stage.id, direction, key, role, _action_timeout(state, stage, direction))


def timeout_seconds(state: State, text: str) -> float:
    """A network timeout: rehearsal compression never takes it below 1 s, but a plan's own short
    timeout is honoured as written."""
    raw = parse_duration(text)
    return raw if raw <= 1.0 else max(1.0, raw / state.speed)


def _action_timeout(state: State, stage: Stage, direction: str) -> float:
    if direction == "apply":
        action = stage.action
    else:
        assert stage.rollback is not None
        action = stage.rollback.action
    spec = action.http or action.command
    assert spec is not None
    return timeout_seconds(state, spec.timeout)


def _resolve_pending(state: State, obs: Observations, now: datetime) -> Decision:
    """Shared by forward actions and rollback steps: read back, confirm, re-send once, or stop."""
    p = state.pending
    assert p is not None
    stage = state.stage_def(p.index)
    role = Role.ROLLBACK if p.direction == "rollback" else Role.EXECUTOR
    confirm = stage.confirm if p.direction == "apply" else (stage.rollback.confirm if stage.rollback else None)
    if p.readback == "none":
        rb = obs.readback
        if rb is None or confirm is None:
            return Decision()
        return Decision(
            (
                _entry(
                    ev.ACTION_READ_BACK,
                    role,
                    now,
                    stage=p.stage,
                    direction=p.direction,
                    key=p.key,
                    matches=rb.matches,
                    expect=confirm.expect,
                    observed=rb.observed,
                    detail=rb.detail,
                ),
            )
        )
    if p.readback == "match":
        return Decision(
            (
                _entry(
                    ev.ACTION_CONFIRMED,
                    role,
                    now,
                    stage=p.stage,
                    index=p.index,
                    direction=p.direction,
                    key=p.key,
                    observed=p.observed,
                ),
            )
        )
    may_resend = p.readback == "mismatch" and (
        p.last_send is None or (p.last_send == "ambiguous" and p.ambiguous_resends == 0)
    )
    if may_resend:
        why = (
            "no send result was recorded (interrupted); the target shows the old state"
            if p.last_send is None
            else "the send was ambiguous and the target shows the old state: re-sending once with the same key"
        )
        timeout = _action_timeout(state, stage, p.direction)
        return Decision(
            (
                _entry(
                    ev.ACTION_RESEND_INTENDED,
                    role,
                    now,
                    stage=p.stage,
                    direction=p.direction,
                    key=p.key,
                    reason=why,
                ),
            ),
            SendAction(p.index, p.stage, p.direction, p.key, role, timeout),
        )
    if p.readback == "failed":
        what = f"outcome unknown: the {p.direction} of '{p.stage}' was sent (last send: {p.last_send or 'unrecorded'}) but the read-back failed"
    elif p.last_send == "rejected":
        what = f"the target rejected the {p.direction} of '{p.stage}' and still shows the previous state"
    else:
        what = f"the {p.direction} of '{p.stage}' was not applied: the read-back does not show the intended state (after {p.sends} send(s))"
    if p.direction == "rollback":
        return Decision(
            (
                _entry(
                    ev.EXECUTION_NEEDS_HUMAN,
                    Role.ROLLBACK,
                    now,
                    why=f"rollback failed: {what}",
                    stage=p.stage,
                ),
            )
        )
    return Decision(
        (
            open_hold(
                state,
                now,
                Role.EXECUTOR,
                kind="ambiguous" if p.readback == "failed" else "not_applied",
                reason=what + "; release re-reads the target, rollback restores the previous tier",
                index=p.index,
                results=[],
                resume="readback",
            ),
        )
    )


def _applying(state: State, obs: Observations, now: datetime) -> Decision:
    if state.pending is None:  # pragma: no cover - the fold never leaves APPLYING without one
        return Decision()
    return _resolve_pending(state, obs, now)


def _verifying(state: State, obs: Observations, now: datetime) -> Decision:
    i = state.current
    stage = state.stage_def(i)
    stage_state = state.stages[i]
    if state.hold_requested:
        return _manual_hold(state, now)
    if stage_state.accept_hold is not None:
        return _accept(state, state.holds[stage_state.accept_hold], obs, now)
    every = scaled(state, stage.verify.every)
    if not _sample_due(state, now):
        assert stage_state.last_sample_at is not None
        return Decision(wake_at=stage_state.last_sample_at + timedelta(seconds=every))
    checks = check_results(state, stage, obs, now)
    ready = readiness_results(state, obs, now)
    results = checks + ready
    required = max(1, math.ceil(scaled(state, stage.verify.bake) / every - 1e-9))
    check_reaction = policy.strongest(policy.reaction(r.outcome, stage.verify.on) for r in checks)
    readiness_ok = all(r.outcome == Outcome.PASS for r in ready)
    outcome = overall(results)
    consecutive = stage_state.consecutive + 1 if (check_reaction == "continue" and readiness_ok) else 0
    reaction = check_reaction
    if not readiness_ok and reaction in ("continue", "hold"):
        reaction = "hold"
    sampled = _entry(
        ev.VERIFICATION_SAMPLED,
        Role.VERIFIER,
        now,
        stage=stage.id,
        results=[r.to_json() for r in results],
        outcome=outcome.value,
        reaction=reaction,
        consecutive=consecutive,
        required=required,
    )
    if reaction == "continue":
        if consecutive >= required:
            passed = _entry(
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
            reason=f"checks call for {reaction} ({_summary(checks)}) but the way back is not ready "
            f"({_summary(ready)}): the rollback authority must decide",
            index=i,
            results=results,
            resume="verify",
        )
        return Decision((sampled, hold))
    if reaction in ("rollback", "narrow"):
        scope = "narrow" if reaction == "narrow" else "full"
        return Decision((sampled, *_start_rollback(state, now, Role.ROLLBACK, "verification", _summary(checks), scope)))
    # hold
    non_pass = {r.outcome for r in results if r.outcome != Outcome.PASS}
    if not readiness_ok:
        kind, resume = "readiness_lost", "verify"
        reason = f"rollback readiness lost while '{stage.id}' is live: {_summary(ready)}"
    elif non_pass == {Outcome.HOLD}:
        kind, resume = "degraded", "accept"
        reason = f"degraded but tolerable evidence at '{stage.id}': {_summary(checks)}; release accepts this checkpoint"
    elif any(r.outcome == Outcome.FAIL for r in checks):
        # The plan maps fail to hold here (e.g. past the point of no return). A failing check is a
        # fail even when another check passes: calling it "conflicting" or "not conclusive" would
        # tell the human to reconcile signals instead of deciding on a failure.
        kind, resume = "fail", "verify"
        reason = f"checks at '{stage.id}' fail and the plan says hold: {_summary(checks)}; release resumes verification"
    else:
        passing = any(r.outcome == Outcome.PASS for r in checks)
        kind = "conflicting" if passing else overall(results).value
        resume = "verify"
        reason = f"verification of '{stage.id}' is not conclusive: {_summary(checks)}; release resumes verification"
    hold = open_hold(state, now, Role.VERIFIER, kind=kind, reason=reason, index=i, results=results, resume=resume)
    return Decision((sampled, hold))


def _accept(state: State, hold: Hold, obs: Observations, now: datetime) -> Decision:
    """A released tolerated-band hold: accept the checkpoint only if fresh evidence still matches."""
    i = state.current
    stage = state.stage_def(i)
    results = check_results(state, stage, obs, now) + readiness_results(state, obs, now)
    cats = categories(results)
    checked = _entry(
        ev.GATE_CHECKED,
        Role.VERIFIER,
        now,
        stage=stage.id,
        purpose="release",
        results=[r.to_json() for r in results],
        outcome=overall(results).value,
    )
    if cats == dict(hold.categories):
        passed = _entry(
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
    return Decision((checked, _entry(ev.RELEASE_NOT_CARRIED, Role.VERIFIER, now, hold=hold.id, why=why, changes=diffs)))


def _holding(state: State, obs: Observations, now: datetime) -> Decision:
    hold = state.hold
    if hold is None:  # pragma: no cover
        return Decision()
    if not hold.evidence_stale and hold.evidence_expires_at is not None and now >= hold.evidence_expires_at:
        return Decision(
            (
                _entry(
                    ev.HOLD_EVIDENCE_EXPIRED,
                    Role.SCHEDULER,
                    now,
                    hold=hold.id,
                    evidence_version=hold.evidence_version + 1,
                    note="evidence is stale: a release will re-check live evidence first",
                ),
            )
        )
    if not hold.reminded and now >= hold.remind_at and now < hold.expires_at:
        return Decision(
            (_entry(ev.HOLD_REMINDED, Role.SCHEDULER, now, hold=hold.id, expires_at=format_ts(hold.expires_at)),)
        )
    if not hold.escalated and now >= hold.expires_at:
        return Decision(
            (
                _entry(
                    ev.HOLD_ESCALATED,
                    Role.SCHEDULER,
                    now,
                    hold=hold.id,
                    expires_at=format_ts(hold.expires_at),
                    notify=policy.rollback_authority(state),
                    note="hold expired: escalated; it stays held",
                ),
            )
        )
    watched = _watched_stage(state)
    if watched is not None and obs.evidence:
        trigger = _watch(state, watched, obs, now)
        if trigger is not None:
            return trigger
    timers = []
    if watched is not None:
        timers.append(now + timedelta(seconds=scaled(state, state.stage_def(watched).verify.every)))
    if not hold.evidence_stale and hold.evidence_expires_at is not None:
        timers.append(hold.evidence_expires_at)
    if not hold.reminded and hold.remind_at > now:
        timers.append(hold.remind_at)
    if not hold.escalated:
        timers.append(hold.expires_at)
    return Decision(wake_at=min(timers) if timers else None)


# Holds during which the live tier is not watched: an action's outcome is in doubt, the ledger and
# the target disagree, or the rollback authority has already been asked to decide.
_UNWATCHED_HOLDS = frozenset({"ambiguous", "not_applied", "reconcile_mismatch", "rollback_unsafe"})


def _watched_stage(state: State) -> int | None:
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


def _watch(state: State, index: int, obs: Observations, now: datetime) -> Decision | None:
    """A hold does not stop the live tier from failing: a hard trigger still rolls back."""
    stage = state.stage_def(index)
    checks = check_results(state, stage, obs, now)
    ready = readiness_results(state, obs, now)
    reaction = policy.strongest(policy.reaction(r.outcome, stage.verify.on) for r in checks)
    if reaction not in ("rollback", "narrow"):
        return None
    results = checks + ready
    sampled = _entry(
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
            reason=f"while held, '{stage.id}' calls for {reaction} ({_summary(checks)}) but the way back is not "
            f"ready ({_summary(ready)}): the rollback authority must decide",
            index=index,
            results=results,
            resume="resume",
            resume_phase=Phase(state.hold.resume_phase) if state.hold else None,
        )
        return Decision((sampled, hold))
    scope = "narrow" if reaction == "narrow" else "full"
    reason = f"while held at {state.open_hold}: {_summary(checks)}"
    return Decision((sampled, *_start_rollback(state, now, Role.ROLLBACK, "verification", reason, scope)))


def _start_rollback(
    state: State, now: datetime, actor: str, trigger: str, reason: str, scope: str
) -> tuple[NewEntry, ...]:
    plan = policy.undo_plan(state, scope)
    if plan.blocked_by is not None:
        return (
            _entry(
                ev.EXECUTION_NEEDS_HUMAN,
                actor,
                now,
                why=f"rollback requested ({reason}) but stage '{plan.blocked_by}' is irreversible: no automated way back",
                stage=plan.blocked_by,
            ),
        )
    return (
        _entry(
            ev.ROLLBACK_STARTED,
            actor,
            now,
            trigger=trigger,
            reason=reason,
            scope=scope,
            undo=list(plan.undo),
            requested_by=actor,
        ),
    )


def _rolling_back(state: State, obs: Observations, now: datetime) -> Decision:
    rb = state.rollback
    assert rb is not None
    if state.pending is not None and state.pending.direction == "rollback":
        return _resolve_pending(state, obs, now)
    remaining = [s for s in rb.undo if s not in rb.done]
    if remaining:
        name = remaining[0]
        index = next(s.index for s in state.stages if s.id == name)
        stage = state.stage_def(index)
        if stage.rollback is None:
            return Decision(
                (
                    _entry(
                        ev.EXECUTION_NEEDS_HUMAN,
                        Role.ROLLBACK,
                        now,
                        why=f"stage '{name}' has no rollback",
                        stage=name,
                    ),
                )
            )
        intended, send = _intend(state, index, "rollback", now)
        return Decision((intended,), send)
    if rb.scope == "narrow" and rb.undo:
        index = next(s.index for s in state.stages if s.id == rb.undo[0])
        return Decision(
            (
                open_hold(
                    state,
                    now,
                    Role.ROLLBACK,
                    kind="narrowed",
                    reason=f"narrowed: '{rb.undo[0]}' was undone after {rb.reason}; release re-enters it (a protected "
                    "stage then needs its own release), rollback undoes the rest",
                    index=index,
                    results=[],
                    resume="resume",
                    resume_phase=Phase.READY,
                ),
            )
        )
    return Decision((_entry(ev.EXECUTION_ROLLED_BACK, Role.ROLLBACK, now, undone=list(rb.done), reason=rb.reason),))
