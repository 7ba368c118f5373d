"""State is a fold over ledger entries: ``project(entries)`` is the only source of "where we are".

Rules:
* Pure: the same entries always give the same state; no clock, no I/O.
* Every phase change goes through ``transitions.transition`` (illegal ones raise).
* ``apply(state, entry)`` folds one more entry, so callers may cache a state and fold only what
  was appended since (``state.seq`` says how far it has read).
* Entries that only record an attempt (denied or ignored clicks) never change the phase.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from execution import events as ev
from execution.contract.models import RECORDED, ChangePackage, Plan, Stage
from execution.transitions import TERMINAL, Phase, transition
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
    kind: str
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
    resume: str  # enter | accept | verify | readback | resume
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
LIVE_STATUSES = frozenset({"applying", "live", "passed", "rolling_back"})


@dataclass(frozen=True)
class StageState:
    id: str
    index: int
    status: str = "pending"  # pending | applying | live | passed | rolling_back | rolled_back
    attempts: int = 0
    rollback_attempts: int = 0
    consecutive: int = 0
    verify_since: datetime | None = None
    last_sample_at: datetime | None = None
    applied_at: datetime | None = None
    passed_at: datetime | None = None
    passed_basis: str | None = None
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
    direction: str  # apply | rollback
    attempt: int
    key: str
    last_send: str | None = None  # ok | ambiguous | rejected | None = unknown (sent, no record)
    readback: str = "none"  # none | match | mismatch | failed  (since the latest send)
    ambiguous_resends: int = 0
    sends: int = 1
    observed: Any = None  # what the latest read-back saw


@dataclass(frozen=True)
class RollbackState:
    trigger: str
    reason: str
    scope: str  # full | narrow
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
    last_confirmed: tuple[int, str] | None = None  # (stage index, apply|rollback) of the latest confirmed effect
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


def _ts(text: str | None) -> datetime | None:
    return parse_ts(text) if text else None


def _go(state: State, target: Phase, cause: str) -> State:
    return replace(state, phase=transition(state.phase, target, cause))


def apply(state: State, entry: Entry) -> State:
    """Fold one entry into the state."""
    if entry.seq != state.seq + 1:
        raise ValueError(f"{state.execution_id}: entry seq {entry.seq} does not follow {state.seq}")
    state = replace(state, seq=entry.seq, last_ts=entry.ts)
    handler = _HANDLERS.get(entry.kind)
    if handler is None:
        return state  # kinds the engine does not interpret (notes, notifier marks) are history only
    return handler(state, entry, entry.body)


Body = Mapping[str, Any]


def _started(state: State, e: Entry, b: Body) -> State:
    package = ChangePackage.model_validate(b["package"], context={RECORDED: True})
    plan = Plan.model_validate(b["plan"], context={RECORDED: True})
    window = b["window"]
    state = replace(
        state,
        package=package,
        plan=plan,
        plan_sha256=b["plan_sha256"],
        mode=b.get("mode", "live"),
        speed=float(b.get("speed", 1.0)),
        window_opens=parse_ts(window["opens"]),
        window_closes=parse_ts(window["closes"]),
        initiator=e.actor,
        started_at=e.ts,
        stages=tuple(StageState(s.id, i) for i, s in enumerate(plan.stages)),
        approvals=b.get("approvals"),
    )
    return _go(state, Phase.READY, e.kind)


def _hold_opened(state: State, e: Entry, b: Body) -> State:
    hold = Hold(
        id=b["hold"],
        stage=b.get("stage"),
        index=int(b.get("index", state.current)),
        kind=b["kind"],
        reason=b["reason"],
        opened_at=e.ts,
        opened_by=e.actor,
        results=tuple(b.get("results", ())),
        categories=dict(b.get("categories", {})),
        evidence_version=int(b.get("evidence_version", 1)),
        evidence_expires_at=_ts(b.get("evidence_expires_at")),
        releasers=dict(b.get("releasers", {})),
        required=int(b.get("required", 1)),
        releasable=bool(b.get("releasable", True)),
        resume=b.get("resume", "resume"),
        resume_phase=b.get("resume_phase", state.phase.value),
        expires_at=parse_ts(b["expires_at"]),
        remind_at=parse_ts(b["remind_at"]),
        rollback_path=b.get("rollback_path", ""),
        supersedes=b.get("supersedes"),
    )
    holds = dict(state.holds)
    if state.open_hold and state.open_hold in holds:
        holds[state.open_hold] = replace(holds[state.open_hold], status="superseded")
    holds[hold.id] = hold
    narrowed = state.narrowed or hold.kind == "narrowed"
    # A hold asked for while an action resolves opens once it has resolved. A hold that leaves
    # the action unresolved (its release re-reads the target) does not satisfy that request:
    # clearing it here would let the execution carry on after the read-back as if nobody asked.
    requested = state.hold_requested if hold.resume == "readback" else None
    state = replace(state, holds=holds, open_hold=hold.id, hold_requested=requested, narrowed=narrowed)
    if hold.kind == "narrowed":
        # Narrowing finished: the undone stage is where the execution now stands.
        state = replace(state, rollback=None, current=hold.index)
    return _go(state, Phase.HOLDING, e.kind)


def _hold_requested(state: State, e: Entry, b: Body) -> State:
    return replace(state, hold_requested=(e.actor, str(b.get("reason", ""))))


def _evidence_expired(state: State, e: Entry, b: Body) -> State:
    return _with_hold(state, b["hold"], evidence_stale=True, evidence_version=int(b["evidence_version"]))


def _reminded(state: State, e: Entry, b: Body) -> State:
    return _with_hold(state, b["hold"], reminded=True)


def _escalated(state: State, e: Entry, b: Body) -> State:
    return _with_hold(state, b["hold"], escalated=True)


def _release_granted(state: State, e: Entry, b: Body) -> State:
    hold = state.holds[b["hold"]]
    release = Release(e.actor, e.ts, int(b["evidence_version"]))
    return _with_hold(state, hold.id, releases=(*hold.releases, release))


def _denied(state: State, e: Entry, b: Body) -> State:
    return replace(state, denied=state.denied + 1)


def _hold_released(state: State, e: Entry, b: Body) -> State:
    hold = state.holds[b["hold"]]
    state = _with_hold(state, hold.id, status="released", released_by=tuple(b["by"]), released_at=e.ts)
    state = replace(state, open_hold=None)
    if hold.resume == "enter":
        state = _with_stage(state, hold.index, entry_hold=hold.id)
        state = replace(state, current=hold.index, narrowed=False)
        return _go(state, Phase.READY, e.kind)
    if hold.resume == "accept":
        state = _with_stage(state, hold.index, accept_hold=hold.id)
        return _go(state, Phase.VERIFYING, e.kind)
    if hold.resume == "verify":
        state = _with_stage(state, hold.index, consecutive=0, verify_since=e.ts, last_sample_at=None)
        return _go(state, Phase.VERIFYING, e.kind)
    if hold.resume == "readback":
        assert state.pending is not None
        state = replace(state, pending=replace(state.pending, readback="none"))
        return _go(state, Phase.APPLYING, e.kind)
    target = Phase(hold.resume_phase)
    if target == Phase.VERIFYING:
        state = _with_stage(state, hold.index, consecutive=0, verify_since=e.ts, last_sample_at=None)
    return _go(state, target, e.kind)


def _not_carried(state: State, e: Entry, b: Body) -> State:
    # The release that authorised entry no longer counts; clear it so the stage needs a new one.
    hold = state.holds.get(b["hold"])
    if hold is not None and 0 <= hold.index < len(state.stages):
        state = _with_stage(state, hold.index, entry_hold=None, accept_hold=None)
    return state


def _intended(state: State, e: Entry, b: Body) -> State:
    index = int(b["index"])
    direction = b["direction"]
    pending = PendingAction(stage=b["stage"], index=index, direction=direction, attempt=int(b["attempt"]), key=b["key"])
    state = replace(state, pending=pending)
    if direction == "apply":
        state = _with_stage(state, index, status="applying", attempts=int(b["attempt"]), consecutive=0)
        state = replace(state, current=index, narrowed=False)
        return _go(state, Phase.APPLYING, e.kind)
    state = _with_stage(state, index, status="rolling_back", rollback_attempts=int(b["attempt"]))
    return state


def _sent(state: State, e: Entry, b: Body) -> State:
    if state.pending is None or state.pending.key != b["key"]:
        return state
    return replace(state, pending=replace(state.pending, last_send=b["outcome"], readback="none"))


def _read_back(state: State, e: Entry, b: Body) -> State:
    if state.pending is None or state.pending.key != b["key"]:
        return state
    matches = b.get("matches")
    result = "match" if matches is True else "mismatch" if matches is False else "failed"
    return replace(state, pending=replace(state.pending, readback=result, observed=b.get("observed")))


def _resend(state: State, e: Entry, b: Body) -> State:
    p = state.pending
    if p is None or p.key != b["key"]:
        return state
    charged = 1 if p.last_send == "ambiguous" else 0
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


def _confirmed(state: State, e: Entry, b: Body) -> State:
    index = int(b["index"])
    state = replace(state, pending=None, last_confirmed=(index, str(b["direction"])))
    if b["direction"] == "apply":
        stage_def = state.stage_def(index)
        state = _with_stage(
            state,
            index,
            status="live",
            applied_at=e.ts,
            verify_since=e.ts,
            last_sample_at=None,
            consecutive=0,
            checkpoint=b.get("observed"),
            accept_hold=None,
            failing={},
            watched_at=None,
        )
        if stage_def.retires_fallback:
            state = replace(state, fallback_retired=True)
        return _go(state, Phase.VERIFYING, e.kind)
    assert state.rollback is not None
    rb = replace(state.rollback, done=(*state.rollback.done, b["stage"]))
    state = _with_stage(state, index, status="rolled_back", checkpoint=b.get("observed"), entry_hold=None)
    return replace(state, rollback=rb)


def _sampled(state: State, e: Entry, b: Body) -> State:
    # [[check key, consecutive failing samples], ...]: pairs, not an object, so that a signal whose
    # name looks secret (masking works by key) cannot hide its streak in the ledger.
    failing = {str(key): int(count) for key, count in b.get("failing") or []}
    if b.get("during_hold"):
        # A watch sample taken while held: the bake is not touched, the failing streaks are.
        index = next((s.index for s in state.stages if s.id == b.get("stage")), None)
        if index is None:
            return state
        return _with_stage(state, index, failing=failing, watched_at=e.ts)
    index = state.current
    return _with_stage(state, index, consecutive=int(b["consecutive"]), last_sample_at=e.ts, failing=failing)


def _passed(state: State, e: Entry, b: Body) -> State:
    index = int(b["index"])
    state = _with_stage(
        state,
        index,
        status="passed",
        passed_at=e.ts,
        passed_basis=b["basis"],
        passed_hold=b.get("hold"),
        consecutive=int(b.get("consecutive", 0)),
    )
    state = replace(state, current=index + 1)
    return _go(state, Phase.READY, e.kind)


def _rollback_started(state: State, e: Entry, b: Body) -> State:
    rb = RollbackState(
        trigger=b["trigger"],
        reason=b.get("reason", ""),
        scope=b.get("scope", "full"),
        requested_by=e.actor,
        undo=tuple(b["undo"]),
        started_at=e.ts,
    )
    holds = state.holds
    if state.open_hold:
        holds = dict(holds)
        holds[state.open_hold] = replace(holds[state.open_hold], status="closed")
    # A forward action still resolving is abandoned: its stage is in the undo list, and undoing
    # restores the previous tier whether or not the forward action landed.
    state = replace(state, rollback=rb, holds=holds, open_hold=None, hold_requested=None, pending=None)
    return _go(state, Phase.ROLLING_BACK, e.kind)


def _completed(state: State, e: Entry, b: Body) -> State:
    return _go(state, Phase.COMPLETED, e.kind)


def _rolled_back(state: State, e: Entry, b: Body) -> State:
    return _go(state, Phase.ROLLED_BACK, e.kind)


def _close_open_hold(state: State) -> State:
    if not state.open_hold:
        return state
    holds = dict(state.holds)
    holds[state.open_hold] = replace(holds[state.open_hold], status="closed")
    return replace(state, holds=holds, open_hold=None)


def _needs_human(state: State, e: Entry, b: Body) -> State:
    stage = b.get("stage")
    state = replace(
        _close_open_hold(state),
        outcome_reason=str(b.get("why", "")),
        outcome_stage=str(stage) if stage is not None else None,
    )
    return _go(state, Phase.NEEDS_HUMAN, e.kind)


def _abandoned(state: State, e: Entry, b: Body) -> State:
    # Nothing is undone: what the last read-back showed stays as it was (the record says so).
    state = replace(_close_open_hold(state), outcome_reason=f"abandoned by {e.actor}: {b.get('reason', '')}")
    return _go(state, Phase.ABANDONED, e.kind)


_HANDLERS = {
    ev.EXECUTION_STARTED: _started,
    ev.HOLD_OPENED: _hold_opened,
    ev.HOLD_REQUESTED: _hold_requested,
    ev.HOLD_EVIDENCE_EXPIRED: _evidence_expired,
    ev.HOLD_REMINDED: _reminded,
    ev.HOLD_ESCALATED: _escalated,
    ev.RELEASE_GRANTED: _release_granted,
    ev.RELEASE_DENIED: _denied,
    ev.RELEASE_IGNORED: _denied,
    ev.ROLLBACK_DENIED: _denied,
    ev.HOLD_IGNORED: _denied,
    ev.HOLD_DENIED: _denied,
    ev.ABANDON_DENIED: _denied,
    ev.HOLD_RELEASED: _hold_released,
    ev.RELEASE_NOT_CARRIED: _not_carried,
    ev.ACTION_INTENDED: _intended,
    ev.ACTION_SENT: _sent,
    ev.ACTION_READ_BACK: _read_back,
    ev.ACTION_RESEND_INTENDED: _resend,
    ev.ACTION_CONFIRMED: _confirmed,
    ev.VERIFICATION_SAMPLED: _sampled,
    ev.STAGE_PASSED: _passed,
    ev.ROLLBACK_STARTED: _rollback_started,
    ev.EXECUTION_COMPLETED: _completed,
    ev.EXECUTION_ROLLED_BACK: _rolled_back,
    ev.EXECUTION_NEEDS_HUMAN: _needs_human,
    ev.EXECUTION_ABANDONED: _abandoned,
}
