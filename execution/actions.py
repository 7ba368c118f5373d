"""Acting on a live system (pure decisions): record intent, send with an idempotency key, read
back, confirm — or re-send once with the same key, or stop.

Rules:
* The attempt number is part of the key; a new attempt is a new intended transition, a re-send
  after an ambiguous outcome reuses its attempt's key.
* An unknown outcome is resolved by read-back; it is re-sent only when the read-back shows the
  old state, at most once after a recorded ambiguous send (an unrecorded send — the process died
  — costs nothing); otherwise a forward action holds and a rollback step needs a human.
"""

from __future__ import annotations

from datetime import datetime

from execution import events as ev
from execution.contract.models import Stage
from execution.events import Direction, HoldKind, Resume
from execution.holds import open_hold
from execution.model import Role
from execution.project import State
from execution.protocol import Decision, Observations, SendAction, action_key, timeout_seconds


def intend(state: State, index: int, direction: Direction, now: datetime) -> Decision:
    """Record the intent of a forward action or a rollback step, and send it.

    The attempt number is part of the idempotency key: a new attempt is a new intended
    transition; a re-send after an ambiguous outcome reuses its attempt's key.
    """
    stage = state.stage_def(index)
    stage_state = state.stages[index]
    if direction == Direction.APPLY:
        action, role, attempt = stage.action, Role.EXECUTOR, stage_state.attempts + 1
    else:
        assert stage.rollback is not None
        action, role, attempt = stage.rollback.action, Role.ROLLBACK, stage_state.rollback_attempts + 1
    key = action_key(state, stage.id, direction, attempt)
    intended = ev.record(
        ev.ActionIntended(
            stage=stage.id,
            index=index,
            direction=direction,
            attempt=attempt,
            key=key,
            target=action.target,
            action=action.model_dump(mode="json", by_alias=True, exclude_none=True),
        ),
        role,
        now,
    )
    return Decision(
        (intended,), SendAction(index, stage.id, direction, key, role, action_timeout(state, stage, direction))
    )


def action_timeout(state: State, stage: Stage, direction: Direction) -> float:
    if direction == Direction.APPLY:
        action = stage.action
    else:
        assert stage.rollback is not None
        action = stage.rollback.action
    return timeout_seconds(state, action.spec.timeout)


def resolve_pending(state: State, obs: Observations, now: datetime) -> Decision:
    """Shared by forward actions and rollback steps: read back, confirm, re-send once, or stop."""
    p = state.pending
    assert p is not None
    stage = state.stage_def(p.index)
    role = Role.ROLLBACK if p.direction == Direction.ROLLBACK else Role.EXECUTOR
    confirm = stage.confirm if p.direction == Direction.APPLY else (stage.rollback.confirm if stage.rollback else None)
    if p.readback == "none":
        rb = obs.readback
        if rb is None or confirm is None:
            return Decision()
        return Decision(
            (
                ev.record(
                    ev.ActionReadBack(
                        stage=p.stage,
                        direction=p.direction,
                        key=p.key,
                        matches=rb.matches,
                        expect=confirm.expect,
                        observed=rb.observed,
                        detail=rb.detail,
                    ),
                    role,
                    now,
                ),
            )
        )
    if p.readback == "match":
        return Decision(
            (
                ev.record(
                    ev.ActionConfirmed(
                        stage=p.stage, index=p.index, direction=p.direction, key=p.key, observed=p.observed
                    ),
                    role,
                    now,
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
        timeout = action_timeout(state, stage, p.direction)
        return Decision(
            (
                ev.record(
                    ev.ActionResendIntended(stage=p.stage, direction=p.direction, key=p.key, reason=why), role, now
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
    if p.direction == Direction.ROLLBACK:
        return Decision(
            (ev.record(ev.ExecutionNeedsHuman(why=f"rollback failed: {what}", stage=p.stage), Role.ROLLBACK, now),)
        )
    return Decision(
        (
            open_hold(
                state,
                now,
                Role.EXECUTOR,
                kind=HoldKind.AMBIGUOUS if p.readback == "failed" else HoldKind.NOT_APPLIED,
                reason=what + "; release re-reads the target, rollback restores the previous tier",
                index=p.index,
                results=[],
                resume=Resume.READBACK,
            ),
        )
    )
