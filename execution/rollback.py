"""The way back (pure decisions): undo stages newest-first with the rollback role, each undo read
back; narrowing undoes one tier and holds.

Rules: the way back never crosses an irreversible stage (that needs a human); a rollback in
progress is finished, not held; a failed rollback step ends in needs_human.
"""

from __future__ import annotations

from datetime import datetime

from execution import events as ev
from execution import policy
from execution.actions import intend, resolve_pending
from execution.events import Direction, HoldKind, Resume, Scope
from execution.holds import open_hold
from execution.model import Role
from execution.project import State
from execution.protocol import Decision, Observations
from execution.transitions import Phase


def start_rollback(state: State, now: datetime, actor: str, trigger: str, reason: str, scope: Scope) -> Decision:
    plan = policy.undo_plan(state, scope)
    if plan.blocked_by is not None:
        why = f"rollback requested ({reason}) but stage '{plan.blocked_by}' is irreversible: no automated way back"
        return Decision((ev.record(ev.ExecutionNeedsHuman(why=why, stage=plan.blocked_by), actor, now),))
    started = ev.RollbackStarted(trigger=trigger, reason=reason, scope=scope, undo=tuple(plan.undo), requested_by=actor)
    return Decision((ev.record(started, actor, now),))


def rolling_back(state: State, obs: Observations, now: datetime) -> Decision:
    rb = state.rollback
    assert rb is not None
    if state.pending is not None and state.pending.direction == Direction.ROLLBACK:
        return resolve_pending(state, obs, now)
    remaining = [s for s in rb.undo if s not in rb.done]
    if remaining:
        name = remaining[0]
        index = next(s.index for s in state.stages if s.id == name)
        stage = state.stage_def(index)
        if stage.rollback is None:
            no_way_back = ev.ExecutionNeedsHuman(why=f"stage '{name}' has no rollback", stage=name)
            return Decision((ev.record(no_way_back, Role.ROLLBACK, now),))
        return intend(state, index, Direction.ROLLBACK, now)
    if rb.scope == Scope.NARROW and rb.undo:
        index = next(s.index for s in state.stages if s.id == rb.undo[0])
        return Decision(
            (
                open_hold(
                    state,
                    now,
                    Role.ROLLBACK,
                    kind=HoldKind.NARROWED,
                    reason=f"narrowed: '{rb.undo[0]}' was undone after {rb.reason}; release re-enters it (a protected "
                    "stage then needs its own release), rollback undoes the rest",
                    index=index,
                    results=[],
                    resume=Resume.RESUME,
                    resume_phase=Phase.READY,
                ),
            )
        )
    return Decision((ev.record(ev.ExecutionRolledBack(undone=rb.done, reason=rb.reason), Role.ROLLBACK, now),))
