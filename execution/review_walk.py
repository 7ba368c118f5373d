"""One execution's ledger, walked for the checkpoint review (pure; used by ``execution.review``).

Rules:
* The entries are folded with the engine's own ``project.apply``; what the review needs is read
  from what each entry changes in the folded state (a hold that stops being open ended at that
  entry), never from a second interpretation of phases.
* Entry bodies are read only through ``Body`` (one accessor per field), so when bodies become
  typed classes only that class changes.
* A transition is every ``action.intended`` (forward or rollback). Its links, judged on the state
  just before it: ``package`` (package and plan version known), ``plan_digest`` (a SHA-256),
  ``stage`` (the stage named is the plan's stage at that index), ``evidence`` (forward: a passing
  preflight/readiness gate for that stage right before; rollback: the breaching sample, or the
  reason a person gave), ``release`` (a protected stage: its hold released by enough distinct
  named people; the first stage: a named initiator; a rollback: the trigger or a named rollback
  authority), ``actor`` (the executor duty forward, the rollback duty back).
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from execution import events as ev
from execution.model import Role
from execution.project import Hold, State, apply
from execution.transitions import Phase
from ledger.chain import format_ts, parse_ts
from ledger.entry import Entry

LINKS = ("package", "plan_digest", "stage", "evidence", "release", "actor")

_SHA256 = re.compile(r"^[0-9a-f]{64}$")


class Body:
    """Entry bodies, read in this one place: when bodies become typed classes, only these change."""

    @staticmethod
    def hold(e: Entry) -> str:
        return str(e.body.get("hold", ""))

    @staticmethod
    def stage(e: Entry) -> str | None:
        value = e.body.get("stage")
        return str(value) if value is not None else None

    @staticmethod
    def index(e: Entry) -> int:
        return int(e.body.get("index", -1))

    @staticmethod
    def direction(e: Entry) -> str:
        return str(e.body.get("direction", ""))

    @staticmethod
    def outcome(e: Entry) -> str:
        return str(e.body.get("outcome", ""))

    @staticmethod
    def reaction(e: Entry) -> str:
        return str(e.body.get("reaction", ""))

    @staticmethod
    def results(e: Entry) -> list[Mapping[str, Any]]:
        value = e.body.get("results")
        return [r for r in value if isinstance(r, Mapping)] if isinstance(value, list) else []

    @staticmethod
    def trigger(e: Entry) -> str:
        return str(e.body.get("trigger", ""))

    @staticmethod
    def result_signal(r: Mapping[str, Any]) -> str:
        return str(r.get("signal", "?"))

    @staticmethod
    def result_outcome(r: Mapping[str, Any]) -> str:
        return str(r.get("outcome", ""))

    @staticmethod
    def result_sampled_at(r: Mapping[str, Any]) -> datetime | None:
        value = r.get("sampled_at")
        try:
            return parse_ts(value) if isinstance(value, str) and value else None
        except ValueError:
            return None


def named(who: str) -> bool:
    """A person (a Slack user id), not one of the engine's duties."""
    return bool(who) and not who.startswith("role:")


def ts_text(value: datetime | None) -> str | None:
    return format_ts(value) if value is not None else None


def seconds(start: datetime, end: datetime) -> float:
    return (end - start).total_seconds()


# ---------------------------------------------------------------- one execution, walked


@dataclass
class HoldLife:
    hold: Hold
    ended_at: datetime | None = None
    end: str = "open"  # released | superseded | closed | open


@dataclass
class RollbackLife:
    trigger: str
    actor: str
    scope: str
    undo: tuple[str, ...]
    started_at: datetime
    breach_at: datetime | None
    sent_at: datetime | None = None
    confirmed: int = 0
    outcome: str = "in_progress"  # rolled_back | narrowed | failed | in_progress


@dataclass
class Walk:
    """What one execution's entries say, gathered while folding them with the engine's fold."""

    execution_id: str
    shown: Mapping[tuple[str, str], datetime]
    fast_release_s: float
    state: State = field(init=False)
    holds: dict[str, HoldLife] = field(default_factory=dict)
    releases: list[dict[str, Any]] = field(default_factory=list)
    rollbacks: list[RollbackLife] = field(default_factory=list)
    transitions: list[dict[str, Any]] = field(default_factory=list)
    readings: Counter[tuple[str, str]] = field(default_factory=Counter)  # (signal, outcome)
    entered: set[str] = field(default_factory=set)
    passed: set[str] = field(default_factory=set)
    evidence_expired: set[str] = field(default_factory=set)
    needs_human_stage: str | None = None
    _gate: Entry | None = None
    _breach: Entry | None = None

    def __post_init__(self) -> None:
        self.state = State(self.execution_id)

    def walk(self, entries: Iterable[Entry]) -> Walk:
        for entry in entries:
            before = self.state
            self.state = apply(before, entry)
            self._see(before, entry)
            self._hold_changes(before, entry)
        return self

    # -------------------------------------------------------------- per entry

    def _see(self, before: State, e: Entry) -> None:
        k = e.kind
        if k == ev.GATE_CHECKED:
            self._gate = e
            self._count(e)
        elif k == ev.VERIFICATION_SAMPLED:
            self._count(e)
            if Body.reaction(e) in ("rollback", "narrow"):
                self._breach = e
        elif k == ev.HOLD_EVIDENCE_EXPIRED:
            self.evidence_expired.add(Body.hold(e))
        elif k == ev.RELEASE_GRANTED:
            self._release(before, e)
        elif k == ev.ACTION_INTENDED:
            self._transition(before, e)
        elif k == ev.STAGE_PASSED:
            self.passed.add(str(Body.stage(e)))
        elif k == ev.ROLLBACK_STARTED:
            breach = self._breach if Body.trigger(e) == "verification" else None
            self._breach = None
            rb = self.state.rollback
            assert rb is not None
            self.rollbacks.append(
                RollbackLife(rb.trigger, e.actor, rb.scope, rb.undo, e.ts, _breach_time(breach) if breach else None)
            )
        elif k == ev.ACTION_SENT and Body.direction(e) == "rollback" and self._rollback_open():
            if self.rollbacks[-1].sent_at is None:
                self.rollbacks[-1].sent_at = e.ts
        elif k == ev.ACTION_CONFIRMED and Body.direction(e) == "rollback" and self._rollback_open():
            self.rollbacks[-1].confirmed += 1
        elif k == ev.EXECUTION_ROLLED_BACK and self._rollback_open():
            self.rollbacks[-1].outcome = "rolled_back"
        elif k == ev.HOLD_OPENED and self.state.hold is not None and self.state.hold.kind == "narrowed":
            if self._rollback_open():
                self.rollbacks[-1].outcome = "narrowed"
        elif k == ev.EXECUTION_NEEDS_HUMAN:
            self.needs_human_stage = Body.stage(e)
            if before.phase == Phase.ROLLING_BACK and self._rollback_open():
                self.rollbacks[-1].outcome = "failed"

    def _rollback_open(self) -> bool:
        return bool(self.rollbacks) and self.rollbacks[-1].outcome == "in_progress"

    def _count(self, e: Entry) -> None:
        for r in Body.results(e):
            self.readings[(Body.result_signal(r), Body.result_outcome(r))] += 1

    def _hold_changes(self, before: State, e: Entry) -> None:
        for hold_id, hold in self.state.holds.items():
            life = self.holds.get(hold_id)
            if life is None:
                self.holds[hold_id] = life = HoldLife(hold)
            life.hold = hold
            if hold.status != "open" and life.end == "open":
                life.end, life.ended_at = hold.status, e.ts

    def _release(self, before: State, e: Entry) -> None:
        hold = before.holds.get(Body.hold(e))
        if hold is None:
            return
        delivered = self.shown.get((self.execution_id, hold.id))
        if delivered is not None and hold.opened_at <= delivered <= e.ts:
            shown_at, basis = delivered, "slack"
        else:
            shown_at, basis = hold.opened_at, "opened"
        latency = seconds(shown_at, e.ts)
        self.releases.append(
            {
                "execution": self.execution_id,
                "hold": hold.id,
                "stage": hold.stage,
                "kind": hold.kind,
                "user": e.actor,
                "at": ts_text(e.ts),
                "shown_at": ts_text(shown_at),
                "basis": basis,
                "latency_s": round(latency, 3),
                "fast": latency < self.fast_release_s,
                "degraded": any(c != "pass" for c in hold.categories.values()),
                "expired_evidence": hold.evidence_stale,
            }
        )

    def _transition(self, before: State, e: Entry) -> None:
        i, direction, stage = Body.index(e), Body.direction(e), Body.stage(e)
        has_plan = before.package is not None and before.plan is not None
        links = {
            "package": has_plan and bool(before.package and before.package.id),
            "plan_digest": bool(_SHA256.match(before.plan_sha256)),
            "stage": has_plan and 0 <= i < len(before.stages) and before.stage_def(i).id == stage,
        }
        if direction == "apply":
            gate = self._gate
            links["evidence"] = gate is not None and Body.stage(gate) == stage and Body.outcome(gate) == "pass"
            links["release"] = links["stage"] and _entry_release(before, i)
            links["actor"] = e.actor == Role.EXECUTOR.value
            if stage is not None:
                self.entered.add(stage)
        else:
            rb = before.rollback
            ordered = rb is not None and (rb.trigger == "verification" or named(rb.requested_by))
            # A triggered rollback rests on its breaching sample; a person's order on the reason given.
            breach = bool(self.rollbacks) and self.rollbacks[-1].breach_at is not None
            links["evidence"] = rb is not None and bool(rb.reason) and (rb.trigger != "verification" or breach)
            links["release"] = ordered
            links["actor"] = e.actor == Role.ROLLBACK.value
        self._gate = None
        missing = [name for name in LINKS if not links[name]]
        self.transitions.append(
            {"execution": self.execution_id, "seq": e.seq, "stage": stage, "direction": direction, "missing": missing}
        )

    # -------------------------------------------------------------- at the end

    def stopped_at(self) -> str | None:
        """The stage an execution ended at (or is at), for per-stage outcomes; None when completed."""
        s = self.state
        status = s.status()
        if status == "completed":
            return None
        if status in ("held", "narrowed") and s.hold is not None:
            return s.hold.stage or _stage_id(s, s.hold.index)
        if status == "rolled_back" and s.rollback is not None and s.rollback.undo:
            return s.rollback.undo[0]
        if status == "needs_human" and self.needs_human_stage:
            return self.needs_human_stage
        return _stage_id(s, s.current)


def _stage_id(state: State, index: int) -> str | None:
    return state.stage_def(index).id if 0 <= index < len(state.stages) else None


def _entry_release(state: State, index: int) -> bool:
    """Entering a protected stage needs its released hold; the first stage, the initiator's start."""
    if state.stage_def(index).hold_before:
        hold = state.holds.get(state.stages[index].entry_hold or "")
        return (
            hold is not None
            and hold.status == "released"
            and len(set(hold.released_by)) >= hold.required
            and all(named(u) for u in hold.released_by)
        )
    if index == 0:
        return named(state.initiator)
    return True  # an unprotected later stage is entered on its passing gate alone


def _breach_time(sample: Entry) -> datetime:
    """When the breaching data was sampled: the oldest failing reading's sample time, else the entry's."""
    times = [
        t
        for r in Body.results(sample)
        if Body.result_outcome(r) == "fail" and (t := Body.result_sampled_at(r)) is not None
    ]
    return min(times, default=sample.ts)
