"""The engine's decisions: pure functions of (state folded from the ledger, fresh evidence, now).

Protocol with the shell (``service.py``):
1. ``decider(state, now)`` is the phase's decision as one generator: it yields what to observe
   right now (signals, a read-back) if anything, and receives what was ``Observed``. What a phase
   reads and what it decides on it live in one function, so they cannot disagree.
2. The shell answers the read (``protocol.run``) and takes the ``Decision`` the decider returns.
3. The shell appends ``decision.append`` conditionally at ``state.seq + 1``; then, if there is an
   ``effect``, performs it and records the result; then it starts again at 1. When a decision
   has nothing to append and no effect, the shell sleeps until ``decision.wake_at``.
``reads`` and ``decide`` drive the same decider for callers (tests, probes) that observe by
themselves.

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

Module map: ``protocol`` (types shared with the shell), ``readings`` (evidence for a decision),
``holds``, ``actions`` (intent, send, read back), ``verify`` and ``rollback``; this module
decides the gates between stages and dispatches by phase.

Worked example: state READY at canary-25 (hold_before), no release yet, fresh preflight and
readiness all pass -> append ``gate.checked`` and ``hold.opened`` (kind ``protected``, 1 release
needed, expires now + 2h); no effect; the shell waits for a human.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from execution import events as ev
from execution import policy
from execution.actions import intend, resolve_pending
from execution.evaluate import Result, categories, changed, overall
from execution.events import Direction, HoldKind, Purpose, Resume
from execution.holds import manual_hold, open_hold
from execution.model import Outcome, Role
from execution.project import State
from execution.protocol import (
    Decider,
    Decision,
    Observations,
    Observed,
    ReadRequest,
    SendAction,
    action_key,
    run,
    scaled,
    timeout_seconds,
)
from execution.readings import gate_results, readiness_names, summary
from execution.rollback import rolling_back, start_rollback
from execution.transitions import Phase
from execution.verify import sample_due, verifying, watch, watched_stage
from ledger.chain import format_ts
from ledger.entry import NewEntry

__all__ = [
    "Decision",
    "Observations",
    "ReadRequest",
    "SendAction",
    "action_key",
    "decide",
    "decider",
    "open_hold",
    "reads",
    "scaled",
    "start_rollback",
    "timeout_seconds",
]


def decider(state: State, now: datetime) -> Decider:
    """The decision for the phase the execution is in, with what it must read kept beside it:
    yields the ``ReadRequest`` (at most one), receives what was ``Observed``, returns the
    ``Decision``. A phase with nothing to read right now returns at once."""
    if state.terminal or state.plan is None:
        return Decision()
    if state.phase == Phase.READY:
        return (yield from _ready_flow(state, now))
    if state.phase in (Phase.APPLYING, Phase.ROLLING_BACK):
        return (yield from _resolving_flow(state, now))
    if state.phase == Phase.VERIFYING:
        return (yield from _verifying_flow(state, now))
    if state.phase == Phase.HOLDING:
        return (yield from _holding_flow(state, now))
    return Decision()


def _ready_flow(state: State, now: datetime) -> Decider:
    closed = state.window_closes is not None and now >= state.window_closes
    if state.current >= len(state.stages) or state.hold_requested or closed:
        return _ready(state, Observations(), now)  # complete, the requested hold, or the window's
    stage = state.stage_def(state.current)
    seen = yield ReadRequest(
        "gate", Role.PREFLIGHT, preflight=tuple(g.signal for g in stage.preflight), readiness=readiness_names(state)
    )
    return _ready(state, seen.observations, seen.now)


def _resolving_flow(state: State, now: datetime) -> Decider:
    """An action in flight (forward, or a rollback step): read the target back, then resolve it."""
    settle = _applying if state.phase == Phase.APPLYING else rolling_back
    pending = state.pending
    if pending is None or pending.readback != "none":
        return settle(state, Observations(), now)
    role = Role.ROLLBACK if pending.direction == Direction.ROLLBACK else Role.EXECUTOR
    seen = yield ReadRequest("readback", role, readback=(pending.index, pending.direction))
    return settle(state, seen.observations, seen.now)


def _verifying_flow(state: State, now: datetime) -> Decider:
    stage_state = state.stages[state.current]
    if state.hold_requested or (stage_state.accept_hold is None and not sample_due(state, now)):
        return verifying(state, Observations(), now)  # the requested hold, or when to sample next
    stage = state.stage_def(state.current)
    seen = yield ReadRequest(
        "accept" if stage_state.accept_hold else "verify",
        Role.VERIFIER,
        checks=tuple(c.signal for c in stage.verify.checks),
        readiness=readiness_names(state),
    )
    return verifying(state, seen.observations, seen.now)


def _holding_flow(state: State, now: datetime) -> Decider:
    watched = watched_stage(state)
    if watched is None:
        return _holding(state, Observations(), now)
    stage = state.stage_def(watched)
    seen = yield ReadRequest(
        "watch", Role.VERIFIER, checks=tuple(c.signal for c in stage.verify.checks), readiness=readiness_names(state)
    )
    return _holding(state, seen.observations, seen.now)


def reads(state: State, now: datetime) -> ReadRequest | None:
    """What the decider would read now (None: nothing); for callers that observe by themselves."""
    try:
        return next(decider(state, now))
    except StopIteration:
        return None


def decide(state: State, obs: Observations, now: datetime) -> Decision:
    """The decider's Decision, with ``obs`` as the answer to its read (if it asks for one)."""
    return run(decider(state, now), lambda _request: Observed(obs, now))


def _ready(state: State, obs: Observations, now: datetime) -> Decision:
    assert state.plan is not None
    i = state.current
    if i >= len(state.stages):
        completed = ev.ExecutionCompleted(stages=tuple(s.id for s in state.stages))
        return Decision((ev.record(completed, Role.EXECUTOR, now),))
    if state.hold_requested:
        return manual_hold(state, now)
    stage = state.stage_def(i)
    if state.window_closes is not None and now >= state.window_closes:
        return Decision(
            (
                open_hold(
                    state,
                    now,
                    Role.PREFLIGHT,
                    kind=HoldKind.WINDOW_CLOSED,
                    reason=f"the change window closed at {format_ts(state.window_closes)}; "
                    f"nothing expands further (next stage '{stage.id}' not entered)",
                    index=i,
                    results=[],
                    resume=Resume.ENTER,
                    releasable=False,
                ),
            )
        )
    results = gate_results(state, stage, obs, now)
    outcome = overall(results)
    cats = categories(results)
    gate = ev.GateChecked(
        stage=stage.id, purpose=Purpose.ENTER, results=tuple(r.to_json() for r in results), outcome=outcome.value
    )
    checked = ev.record(gate, Role.PREFLIGHT, now)
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
        diffs = changed(entry_hold.categories, cats) or [f"evidence is {outcome.value}: {summary(results)}"]
        who = ", ".join(entry_hold.released_by)
        why = (
            f"release of {entry_hold.id} by {who} on evidence v{entry_hold.evidence_version} does not carry over: "
            + "; ".join(diffs)
        )
        not_carried = ev.record(
            ev.ReleaseNotCarried(hold=entry_hold.id, why=why, changes=tuple(diffs)), Role.PREFLIGHT, now
        )
        hold = open_hold(
            state,
            now,
            Role.PREFLIGHT,
            kind=HoldKind.PROTECTED if stage.hold_before else _gate_kind(results),
            reason=why,
            index=i,
            results=results,
            resume=Resume.ENTER,
            required=required if stage.hold_before else 1,
            supersedes=entry_hold.id,
        )
        return Decision((checked, not_carried, hold))
    if stage.hold_before:
        reason = f"protected stage '{stage.id}' ({_protection_reason(state, i)}): a named authority must release"
        if outcome != Outcome.PASS:
            reason += f"; evidence now: {summary(results)}"
        hold = open_hold(
            state,
            now,
            Role.PREFLIGHT,
            kind=HoldKind.PROTECTED,
            reason=reason,
            index=i,
            results=results,
            resume=Resume.ENTER,
            required=required,
        )
        return Decision((checked, hold))
    if outcome != Outcome.PASS:
        hold = open_hold(
            state,
            now,
            Role.PREFLIGHT,
            kind=_gate_kind(results),
            reason=f"not entering '{stage.id}': {summary(results)}",
            index=i,
            results=results,
            resume=Resume.ENTER,
        )
        return Decision((checked, hold))
    return _intend_apply(state, i, now, checked)


def _gate_kind(results: list[Result]) -> HoldKind:
    if any(r.kind == "readiness" and r.outcome != Outcome.PASS for r in results):
        return HoldKind.READINESS_LOST
    return HoldKind.PREFLIGHT


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
    intended = intend(state, i, Direction.APPLY, now)
    return Decision((checked, *intended.append), intended.effect)


def _applying(state: State, obs: Observations, now: datetime) -> Decision:
    if state.pending is None:  # pragma: no cover - the fold never leaves APPLYING without one
        return Decision()
    return resolve_pending(state, obs, now)


def _holding(state: State, obs: Observations, now: datetime) -> Decision:
    hold = state.hold
    if hold is None:  # pragma: no cover
        return Decision()
    if not hold.evidence_stale and hold.evidence_expires_at is not None and now >= hold.evidence_expires_at:
        expired = ev.HoldEvidenceExpired(
            hold=hold.id,
            evidence_version=hold.evidence_version + 1,
            note="evidence is stale: a release will re-check live evidence first",
        )
        return Decision((ev.record(expired, Role.SCHEDULER, now),))
    if not hold.reminded and now >= hold.remind_at and now < hold.expires_at:
        return Decision((ev.record(ev.HoldReminded(hold=hold.id, expires_at=hold.expires_at), Role.SCHEDULER, now),))
    if not hold.escalated and now >= hold.expires_at:
        escalated = ev.HoldEscalated(
            hold=hold.id,
            expires_at=hold.expires_at,
            notify=policy.rollback_authority(state),
            note="hold expired: escalated; it stays held",
        )
        return Decision((ev.record(escalated, Role.SCHEDULER, now),))
    watched = watched_stage(state)
    if watched is not None and obs.evidence:
        trigger = watch(state, watched, obs, now)
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
