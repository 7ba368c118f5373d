"""State is a fold over ledger entries: ``project(entries)`` is the only source of "where we are".

Rules:
* Pure: the same entries always give the same state; no clock, no I/O.
* Every phase change is looked up in ``transitions.TABLE`` by the event that causes it (an event
  with no row for the current phase raises).
* ``apply(state, entry)`` folds one more entry, so callers may cache a state and fold only what
  was appended since (``state.seq`` says how far it has read).
* Entries that only record an attempt (denied or ignored clicks) never change the phase.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from execution import events as ev
from execution.contract.models import RECORDED, ChangePackage, Plan, Stage
from execution.events import Direction, HoldKind, Resume, StageStatus
from execution.transitions import TERMINAL, Phase, Via, next_phase
from ledger.chain import parse_ts
from ledger.entry import Entry


@dataclass(frozen=True)
class Release:
    user: str
    at: datetime
    evidence_version: int


@dataclass(frozen=True)
class Hold:
    id: str
    stage: str | None
    index: int
    kind: HoldKind
    reason: str
    opened_at: datetime
    opened_by: str
    results: tuple[Mapping[str, Any], ...]
    categories: Mapping[str, str]
    evidence_version: int
    evidence_expires_at: datetime | None
    releasers: Mapping[str, list[str]]
    required: int
    releasable: bool
    resume: Resume
    resume_phase: str
    expires_at: datetime
    remind_at: datetime
    rollback_path: str
    supersedes: str | None = None
    status: str = "open"  # open | released | superseded | closed
    releases: tuple[Release, ...] = ()
    released_by: tuple[str, ...] = ()
    released_at: datetime | None = None
    evidence_stale: bool = False
    reminded: bool = False
    escalated: bool = False

    def current_releases(self) -> tuple[Release, ...]:
        """Releases that still count: only those given on the current evidence version."""
        return tuple(r for r in self.releases if r.evidence_version == self.evidence_version)


# A stage counts as live unless it never started or its undo was confirmed by read-back: an apply
# in flight may have landed, and a rollback that is in flight, was rejected or is in doubt has
# not been proved to take the stage away (DESIGN §3 rule 12: when in doubt, count it as live).
LIVE_STATUSES = frozenset({StageStatus.APPLYING, StageStatus.LIVE, StageStatus.PASSED, StageStatus.ROLLING_BACK})


@dataclass(frozen=True)
class StageState:
    id: str
    index: int
    status: StageStatus = StageStatus.PENDING
    attempts: int = 0
    rollback_attempts: int = 0
    consecutive: int = 0
    verify_since: datetime | None = None
    last_sample_at: datetime | None = None
    applied_at: datetime | None = None
    passed_at: datetime | None = None
    passed_basis: ev.Basis | None = None
    passed_hold: str | None = None
    checkpoint: Any = None
    entry_hold: str | None = None  # the released hold that authorises entering this stage
    accept_hold: str | None = None  # a released tolerated-band hold: accept the checkpoint
    failing: Mapping[str, int] = field(default_factory=dict)  # check key -> consecutive failing samples
    watched_at: datetime | None = None  # the last recorded sample taken while held


@dataclass(frozen=True)
class PendingAction:
    """An action whose intent is recorded but whose effect is not yet confirmed."""

    stage: str
    index: int
    direction: Direction
    attempt: int
    key: str
    last_send: ev.SendOutcome | None = None  # None: unknown (sent, no record)
    readback: str = "none"  # none | match | mismatch | failed  (since the latest send)
    ambiguous_resends: int = 0
    sends: int = 1
    observed: Any = None  # what the latest read-back saw


@dataclass(frozen=True)
class RollbackState:
    trigger: str
    reason: str
    scope: ev.Scope
    requested_by: str
    undo: tuple[str, ...]
    done: tuple[str, ...] = ()
    started_at: datetime | None = None


@dataclass(frozen=True)
class State:
    execution_id: str
    seq: int = 0
    phase: Phase = Phase.NEW
    package: ChangePackage | None = None
    plan: Plan | None = None
    plan_sha256: str = ""
    mode: str = "live"
    speed: float = 1.0
    window_opens: datetime | None = None
    window_closes: datetime | None = None
    initiator: str = ""
    started_at: datetime | None = None
    stages: tuple[StageState, ...] = ()
    current: int = 0  # index of the stage in focus (next to enter, or live)
    holds: Mapping[str, Hold] = field(default_factory=dict)
    open_hold: str | None = None
    pending: PendingAction | None = None
    rollback: RollbackState | None = None
    hold_requested: tuple[str, str] | None = None  # (user, reason) asked while an action resolves
    fallback_retired: bool = False
    last_confirmed: tuple[int, Direction] | None = None  # (stage index, direction) of the latest confirmed effect
    narrowed: bool = False
    outcome_reason: str = ""
    outcome_stage: str | None = None  # the stage a needs_human outcome is about
    last_ts: datetime | None = None
    denied: int = 0
    approvals: Mapping[str, Any] | None = None  # what the signed approvals showed at start

    @property
    def unsigned(self) -> bool:
        """A rehearsal started without the approvals its policy requires (a live start is refused without them)."""
        return self.mode != "live" and not (self.approvals or {}).get("approved", False)

    # ------------------------------------------------------------------ helpers

    @property
    def terminal(self) -> bool:
        return self.phase in TERMINAL

    def stage_def(self, index: int) -> Stage:
        assert self.plan is not None
        return self.plan.stages[index]

    @property
    def hold(self) -> Hold | None:
        return self.holds.get(self.open_hold) if self.open_hold else None

    def status(self) -> str:
        """The final-record status: completed, held, narrowed, rolled_back, needs_human, abandoned or running."""
        if self.phase == Phase.COMPLETED:
            return "completed"
        if self.phase == Phase.ROLLED_BACK:
            return "rolled_back"
        if self.phase == Phase.NEEDS_HUMAN:
            return "needs_human"
        if self.phase == Phase.ABANDONED:
            return "abandoned"
        if self.phase == Phase.HOLDING:
            return "narrowed" if self.narrowed else "held"
        return "running"

    def live_stages(self) -> tuple[StageState, ...]:
        """Stages that may be live on the target, in plan order (see ``LIVE_STATUSES``)."""
        return tuple(s for s in self.stages if s.status in LIVE_STATUSES)

    def blast_radius_reached(self) -> float:
        """The widest blast radius that may be live now: a stage whose undo is unconfirmed still counts.

        Example: canary-5 passed, canary-25's rollback rejected (still ``rolling_back``) -> 25.
        """
        return max((self.stage_def(s.index).blast_radius for s in self.live_stages()), default=0.0)


def project(execution_id: str, entries: Iterable[Entry]) -> State:
    state = State(execution_id)
    for entry in entries:
        state = apply(state, entry)
    return state


def _with_stage(state: State, index: int, **changes: Any) -> State:
    stages = list(state.stages)
    stages[index] = replace(stages[index], **changes)
    return replace(state, stages=tuple(stages))


def _with_hold(state: State, hold_id: str, **changes: Any) -> State:
    holds = dict(state.holds)
    holds[hold_id] = replace(holds[hold_id], **changes)
    return replace(state, holds=holds)


def _go(state: State, event: ev.Event, via: Via = None) -> State:
    """Move to the phase the transition table gives for ``event`` (``via``: its resume target or direction)."""
    return replace(state, phase=next_phase(state.phase, event, via))


def apply(state: State, entry: Entry) -> State:
    """Fold one entry into the state."""
    if entry.seq != state.seq + 1:
        raise ValueError(f"{state.execution_id}: entry seq {entry.seq} does not follow {state.seq}")
    state = replace(state, seq=entry.seq, last_ts=entry.ts)
    event = ev.event_of(entry)
    if event is None:
        return state  # kinds the engine does not interpret (notes, notifier marks) are history only
    return _fold(event, state, entry)


@functools.singledispatch
def _fold(event: ev.Event, state: State, e: Entry) -> State:
    return state  # an event that records history only


@_fold.register
def _started(event: ev.ExecutionStarted, state: State, e: Entry) -> State:
    package = ChangePackage.model_validate(event.package, context={RECORDED: True})
    plan = Plan.model_validate(event.plan, context={RECORDED: True})
    state = replace(
        state,
        package=package,
        plan=plan,
        plan_sha256=event.plan_sha256,
        mode=event.mode,
        speed=event.speed,
        window_opens=parse_ts(event.window["opens"]),
        window_closes=parse_ts(event.window["closes"]),
        initiator=e.actor,
        started_at=e.ts,
        stages=tuple(StageState(s.id, i) for i, s in enumerate(plan.stages)),
        approvals=event.approvals,
    )
    return _go(state, event)


@_fold.register
def _hold_opened(event: ev.HoldOpened, state: State, e: Entry) -> State:
    hold = Hold(
        id=event.hold,
        stage=event.stage,
        index=event.index if event.index is not None else state.current,
        kind=event.hold_kind,
        reason=event.reason,
        opened_at=e.ts,
        opened_by=e.actor,
        results=event.results,
        categories=dict(event.categories),
        evidence_version=event.evidence_version,
        evidence_expires_at=event.evidence_expires_at,
        releasers=dict(event.releasers),
        required=event.required,
        releasable=event.releasable,
        resume=event.resume,
        resume_phase=event.resume_phase or state.phase.value,
        expires_at=event.expires_at,
        remind_at=event.remind_at,
        rollback_path=event.rollback_path,
        supersedes=event.supersedes,
    )
    holds = dict(state.holds)
    if state.open_hold and state.open_hold in holds:
        holds[state.open_hold] = replace(holds[state.open_hold], status="superseded")
    holds[hold.id] = hold
    narrowed = state.narrowed or hold.kind == ev.HoldKind.NARROWED
    # A hold asked for while an action resolves opens once it has resolved. A hold that leaves
    # the action unresolved (its release re-reads the target) does not satisfy that request:
    # clearing it here would let the execution carry on after the read-back as if nobody asked.
    requested = state.hold_requested if hold.resume == ev.Resume.READBACK else None
    state = replace(state, holds=holds, open_hold=hold.id, hold_requested=requested, narrowed=narrowed)
    if hold.kind == ev.HoldKind.NARROWED:
        # Narrowing finished: the undone stage is where the execution now stands.
        state = replace(state, rollback=None, current=hold.index)
    return _go(state, event)


@_fold.register
def _hold_requested(event: ev.HoldRequested, state: State, e: Entry) -> State:
    return replace(state, hold_requested=(e.actor, event.reason))


@_fold.register
def _evidence_expired(event: ev.HoldEvidenceExpired, state: State, e: Entry) -> State:
    return _with_hold(state, event.hold, evidence_stale=True, evidence_version=event.evidence_version)


@_fold.register
def _reminded(event: ev.HoldReminded, state: State, e: Entry) -> State:
    return _with_hold(state, event.hold, reminded=True)


@_fold.register
def _escalated(event: ev.HoldEscalated, state: State, e: Entry) -> State:
    return _with_hold(state, event.hold, escalated=True)


@_fold.register
def _release_granted(event: ev.ReleaseGranted, state: State, e: Entry) -> State:
    hold = state.holds[event.hold]
    release = Release(e.actor, e.ts, event.evidence_version)
    return _with_hold(state, hold.id, releases=(*hold.releases, release))


@_fold.register
def _denied(event: ev.Attempt, state: State, e: Entry) -> State:
    return replace(state, denied=state.denied + 1)


@_fold.register
def _hold_released(event: ev.HoldReleased, state: State, e: Entry) -> State:
    hold = state.holds[event.hold]
    state = _with_hold(state, hold.id, status="released", released_by=event.by, released_at=e.ts)
    state = replace(state, open_hold=None)
    # Where the release leads is the table's to say; what the release authorises is kept here.
    via = hold.resume if hold.resume != Resume.RESUME else Phase(hold.resume_phase)
    if via == Resume.ENTER:
        state = _with_stage(state, hold.index, entry_hold=hold.id)
        state = replace(state, current=hold.index, narrowed=False)
    elif via == Resume.ACCEPT:
        state = _with_stage(state, hold.index, accept_hold=hold.id)
    elif via in (Resume.VERIFY, Phase.VERIFYING):
        state = _with_stage(state, hold.index, consecutive=0, verify_since=e.ts, last_sample_at=None)
    elif via == Resume.READBACK:
        assert state.pending is not None
        state = replace(state, pending=replace(state.pending, readback="none"))
    return _go(state, event, via)


@_fold.register
def _not_carried(event: ev.ReleaseNotCarried, state: State, e: Entry) -> State:
    # The release that authorised entry no longer counts; clear it so the stage needs a new one.
    hold = state.holds.get(event.hold)
    if hold is not None and 0 <= hold.index < len(state.stages):
        state = _with_stage(state, hold.index, entry_hold=None, accept_hold=None)
    return state


@_fold.register
def _intended(event: ev.ActionIntended, state: State, e: Entry) -> State:
    index = event.index
    pending = PendingAction(
        stage=event.stage, index=index, direction=event.direction, attempt=event.attempt, key=event.key
    )
    state = replace(state, pending=pending)
    if event.direction == ev.Direction.APPLY:
        state = _with_stage(state, index, status=StageStatus.APPLYING, attempts=event.attempt, consecutive=0)
        state = replace(state, current=index, narrowed=False)
    else:
        state = _with_stage(state, index, status=StageStatus.ROLLING_BACK, rollback_attempts=event.attempt)
    return _go(state, event, event.direction)


@_fold.register
def _sent(event: ev.ActionSent, state: State, e: Entry) -> State:
    if state.pending is None or state.pending.key != event.key:
        return state
    return replace(state, pending=replace(state.pending, last_send=event.outcome, readback="none"))


@_fold.register
def _read_back(event: ev.ActionReadBack, state: State, e: Entry) -> State:
    if state.pending is None or state.pending.key != event.key:
        return state
    result = "match" if event.matches is True else "mismatch" if event.matches is False else "failed"
    return replace(state, pending=replace(state.pending, readback=result, observed=event.observed))


@_fold.register
def _resend(event: ev.ActionResendIntended, state: State, e: Entry) -> State:
    p = state.pending
    if p is None or p.key != event.key:
        return state
    charged = 1 if p.last_send == ev.SendOutcome.AMBIGUOUS else 0
    return replace(
        state,
        pending=replace(
            p,
            last_send=None,
            readback="none",
            sends=p.sends + 1,
            ambiguous_resends=p.ambiguous_resends + charged,
        ),
    )


@_fold.register
def _confirmed(event: ev.ActionConfirmed, state: State, e: Entry) -> State:
    index = event.index
    state = replace(state, pending=None, last_confirmed=(index, event.direction))
    if event.direction == ev.Direction.APPLY:
        stage_def = state.stage_def(index)
        state = _with_stage(
            state,
            index,
            status=StageStatus.LIVE,
            applied_at=e.ts,
            verify_since=e.ts,
            last_sample_at=None,
            consecutive=0,
            checkpoint=event.observed,
            accept_hold=None,
            failing={},
            watched_at=None,
        )
        if stage_def.retires_fallback:
            state = replace(state, fallback_retired=True)
    else:
        assert state.rollback is not None
        rb = replace(state.rollback, done=(*state.rollback.done, event.stage))
        state = _with_stage(state, index, status=StageStatus.ROLLED_BACK, checkpoint=event.observed, entry_hold=None)
        state = replace(state, rollback=rb)
    return _go(state, event, event.direction)


@_fold.register
def _sampled(event: ev.VerificationSampled, state: State, e: Entry) -> State:
    failing = dict(event.failing or ())
    if event.during_hold:
        # A watch sample taken while held: the bake is not touched, the failing streaks are.
        index = next((s.index for s in state.stages if s.id == event.stage), None)
        if index is None:
            return state
        return _with_stage(state, index, failing=failing, watched_at=e.ts)
    return _with_stage(state, state.current, consecutive=event.consecutive, last_sample_at=e.ts, failing=failing)


@_fold.register
def _passed(event: ev.StagePassed, state: State, e: Entry) -> State:
    index = event.index
    state = _with_stage(
        state,
        index,
        status=StageStatus.PASSED,
        passed_at=e.ts,
        passed_basis=event.basis,
        passed_hold=event.hold,
        consecutive=event.consecutive,
    )
    state = replace(state, current=index + 1)
    return _go(state, event)


@_fold.register
def _rollback_started(event: ev.RollbackStarted, state: State, e: Entry) -> State:
    rb = RollbackState(
        trigger=event.trigger,
        reason=event.reason,
        scope=event.scope,
        requested_by=e.actor,
        undo=event.undo,
        started_at=e.ts,
    )
    holds = state.holds
    if state.open_hold:
        holds = dict(holds)
        holds[state.open_hold] = replace(holds[state.open_hold], status="closed")
    # A forward action still resolving is abandoned: its stage is in the undo list, and undoing
    # restores the previous tier whether or not the forward action landed.
    state = replace(state, rollback=rb, holds=holds, open_hold=None, hold_requested=None, pending=None)
    return _go(state, event)


@_fold.register
def _completed(event: ev.ExecutionCompleted, state: State, e: Entry) -> State:
    return _go(state, event)


@_fold.register
def _rolled_back(event: ev.ExecutionRolledBack, state: State, e: Entry) -> State:
    return _go(state, event)


def _close_open_hold(state: State) -> State:
    if not state.open_hold:
        return state
    holds = dict(state.holds)
    holds[state.open_hold] = replace(holds[state.open_hold], status="closed")
    return replace(state, holds=holds, open_hold=None)


@_fold.register
def _needs_human(event: ev.ExecutionNeedsHuman, state: State, e: Entry) -> State:
    state = replace(_close_open_hold(state), outcome_reason=event.why, outcome_stage=event.stage)
    return _go(state, event)


@_fold.register
def _abandoned(event: ev.ExecutionAbandoned, state: State, e: Entry) -> State:
    # Nothing is undone: what the last read-back showed stays as it was (the record says so).
    state = replace(_close_open_hold(state), outcome_reason=f"abandoned by {e.actor}: {event.reason}")
    return _go(state, event)
