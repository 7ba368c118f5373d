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
from execution.holds import open_hold
from execution.model import Role
from execution.project import State
from execution.protocol import Decision, Observations, new_entry
from execution.transitions import Phase
from ledger.entry import NewEntry


def start_rollback(
    state: State, now: datetime, actor: str, trigger: str, reason: str, scope: str
) -> tuple[NewEntry, ...]:
    plan = policy.undo_plan(state, scope)
    if plan.blocked_by is not None:
        return (
            new_entry(
                ev.EXECUTION_NEEDS_HUMAN,
                actor,
                now,
                why=f"rollback requested ({reason}) but stage '{plan.blocked_by}' is irreversible: no automated way back",
                stage=plan.blocked_by,
            ),
        )
    return (
        new_entry(
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


def rolling_back(state: State, obs: Observations, now: datetime) -> Decision:
    rb = state.rollback
    assert rb is not None
    if state.pending is not None and state.pending.direction == "rollback":
        return resolve_pending(state, obs, now)
    remaining = [s for s in rb.undo if s not in rb.done]
    if remaining:
        name = remaining[0]
        index = next(s.index for s in state.stages if s.id == name)
        stage = state.stage_def(index)
        if stage.rollback is None:
            return Decision(
                (
                    new_entry(
                        ev.EXECUTION_NEEDS_HUMAN,
                        Role.ROLLBACK,
                        now,
                        why=f"stage '{name}' has no rollback",
                        stage=name,
                    ),
                )
            )
        intended, send = intend(state, index, "rollback", now)
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
    return Decision((new_entry(ev.EXECUTION_ROLLED_BACK, Role.ROLLBACK, now, undone=list(rb.done), reason=rb.reason),))
