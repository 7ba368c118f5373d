"""Resume starts by reconciling the ledger against live state (pure decision).

Rules:
* The thing to check is the last confirmed effect in the ledger: the forward action of the stage
  that is live, or the rollback of the stage last undone.
* A pending action (intent recorded, outcome not confirmed) is not reconciled here: the normal
  read-back path resolves it.
* A mismatch between the ledger and the live system opens a hold; it never "fixes" either side.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from execution import events as ev
from execution.contract.models import Confirm
from execution.decide import Decision, open_hold
from execution.events import Direction, HoldKind, Resume
from execution.model import ReadbackResult, Role
from execution.project import State
from execution.transitions import Phase


@dataclass(frozen=True)
class ReconcileTarget:
    index: int
    direction: Direction
    confirm: Confirm


def target(state: State) -> ReconcileTarget | None:
    """Which confirmed effect to compare with the live system, if any."""
    if state.terminal or state.plan is None or state.pending is not None:
        return None
    if state.phase == Phase.ROLLING_BACK:
        return None
    if state.last_confirmed is None:
        return None
    index, direction = state.last_confirmed
    stage = state.stage_def(index)
    if direction == Direction.APPLY:
        return ReconcileTarget(index, Direction.APPLY, stage.confirm)
    if stage.rollback is None:  # pragma: no cover - a confirmed rollback implies one exists
        return None
    return ReconcileTarget(index, Direction.ROLLBACK, stage.rollback.confirm)


def reconcile(
    state: State, owner: str, checked: ReconcileTarget | None, readback: ReadbackResult | None, now: datetime
) -> Decision:
    if checked is None or readback is None:
        return Decision((ev.record(ev.ExecutionResumed(owner=owner), Role.SCHEDULER, now),))
    stage = state.stage_def(checked.index)
    compared = {
        "stage": stage.id,
        "direction": checked.direction.value,
        "expect": checked.confirm.expect,
        "observed": readback.observed,
        "matches": readback.matches,
        "detail": readback.detail,
    }
    resumed = ev.record(ev.ExecutionResumed(owner=owner, reconcile=compared), Role.SCHEDULER, now)
    if readback.matches is True:
        return Decision((resumed,))
    what = "could not be read" if readback.matches is None else "does not match the ledger"
    reason = (
        f"on resume, the live state of '{stage.id}' ({checked.direction}) {what}: "
        f"expected {checked.confirm.expect}, observed {readback.observed}; confirm the live state before continuing"
    )
    resume_phase = state.phase
    if state.phase == Phase.HOLDING and state.hold is not None:
        resume_phase = Phase(state.hold.resume_phase)
    mismatch = open_hold(
        state,
        now,
        Role.SCHEDULER,
        kind=HoldKind.RECONCILE_MISMATCH,
        reason=reason,
        index=checked.index,
        results=[],
        resume=Resume.RESUME,
        resume_phase=resume_phase,
    )
    return Decision((resumed, mismatch))
