"""Opening holds (pure): every hold records why, the evidence, the way back, who may release and
when it expires.

Rules: one open hold at a time (a new one supersedes it); a hold's evidence version starts at 1;
expiry escalates and never releases.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from execution import events as ev
from execution import policy
from execution.evaluate import Result, categories
from execution.events import HoldKind, Resume
from execution.project import State
from execution.protocol import Decision, scaled
from execution.readings import evidence_expiry
from execution.transitions import Phase
from ledger.entry import NewEntry


def open_hold(
    state: State,
    now: datetime,
    actor: str,
    *,
    kind: HoldKind,
    reason: str,
    index: int,
    results: list[Result],
    resume: Resume,
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
    evidence_expires = evidence_expiry(state, results)
    opened = ev.HoldOpened(
        hold=hold_id,
        stage=stage,
        index=index,
        hold_kind=kind,
        reason=reason,
        results=tuple(r.to_json() for r in results),
        categories=categories(results),
        evidence_version=1,
        evidence_expires_at=evidence_expires,
        releasers=policy.releasers(state),
        required=required,
        releasable=releasable,
        resume=resume,
        resume_phase=(resume_phase or state.phase).value,
        expires_at=expires,
        remind_at=expires - timedelta(seconds=remind),
        rollback_path=policy.rollback_path(state),
        rollback_authority=policy.rollback_authority(state),
        supersedes=supersedes,
    )
    return ev.record(opened, actor, now)


def manual_hold(state: State, now: datetime) -> Decision:
    assert state.hold_requested is not None
    user, reason = state.hold_requested
    return Decision(
        (
            open_hold(
                state,
                now,
                user,
                kind=HoldKind.MANUAL,
                reason=f"manual hold by {user}: {reason}",
                index=state.current if state.current < len(state.stages) else len(state.stages) - 1,
                results=[],
                resume=Resume.RESUME,
            ),
        )
    )
