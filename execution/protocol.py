"""The protocol between the engine's pure decisions and its shell, and the small pieces both use.

``reads`` asks for a ``ReadRequest``; the shell answers with ``Observations``; ``decide``
returns a ``Decision``: entries to append, at most one ``SendAction`` to perform, and when to
wake up if nothing happens. Durations are scaled by the rehearsal speed (1 for live runs).
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime

from execution.conditions import parse_duration
from execution.events import Direction
from execution.model import Evidence, ReadbackResult, Role
from execution.project import State
from ledger.entry import NewEntry


@dataclass(frozen=True)
class ReadRequest:
    purpose: str  # gate | verify | accept | readback
    role: Role
    preflight: tuple[str, ...] = ()
    checks: tuple[str, ...] = ()
    readiness: tuple[str, ...] = ()
    readback: tuple[int, Direction] | None = None  # (stage index, direction)

    @property
    def signals(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys((*self.preflight, *self.checks, *self.readiness)))


@dataclass(frozen=True)
class Observations:
    evidence: Mapping[str, Evidence] = field(default_factory=dict)
    readback: ReadbackResult | None = None


@dataclass(frozen=True)
class Observed:
    """What the shell sends back into a decider: the observations it asked for, and the time
    right after reading them (evidence ages are judged against it)."""

    observations: Observations
    now: datetime


@dataclass(frozen=True)
class SendAction:
    index: int
    stage: str
    direction: Direction
    key: str
    role: Role
    timeout_s: float


@dataclass(frozen=True)
class Decision:
    """What a pure decision returns, every one of them (phases, human commands, rollback, resume):
    the entries to append, at most one action to send, and when to look again. It iterates over
    the entries it appends."""

    append: tuple[NewEntry, ...] = ()
    effect: SendAction | None = None
    wake_at: datetime | None = None

    def __iter__(self) -> Iterator[NewEntry]:
        return iter(self.append)

    def __getitem__(self, index: int) -> NewEntry:
        return self.append[index]

    @property
    def idle(self) -> bool:
        return not self.append and self.effect is None


# A phase's decision, what it must read kept together with what it decides: a generator that
# yields at most one ReadRequest, receives what was Observed, and returns the Decision (as an
# httpx auth flow yields a request and receives its response).
Decider = Generator[ReadRequest, Observed, Decision]


def run(decider: Decider, observe: Callable[[ReadRequest], Observed]) -> Decision:
    """Drive ``decider``: answer its read (if it asks for one) with ``observe``; return its Decision."""
    try:
        request = next(decider)
    except StopIteration as done:
        decision: Decision = done.value
        return decision
    try:
        decider.send(observe(request))
    except StopIteration as done:
        decision = done.value
        return decision
    raise RuntimeError("a decider reads at most once before it decides")


def scaled(state: State, text: str) -> float:
    """A plan duration in seconds, compressed by the rehearsal speed (1 for live runs)."""
    return parse_duration(text) / state.speed


def timeout_seconds(state: State, text: str) -> float:
    """A network timeout: rehearsal compression never takes it below 1 s, but a plan's own short
    timeout is honoured as written."""
    raw = parse_duration(text)
    return raw if raw <= 1.0 else max(1.0, raw / state.speed)


# A person reads a hold card in real time, whatever the rehearsal speed (seconds).
HUMAN_READING_S = 60.0


def hold_evidence_window(state: State, max_age: str) -> float:
    """How long the evidence on a hold card stays current, in seconds: until then its buttons keep
    their evidence version. Live, that is the signal's ``max_age``. A rehearsal compresses it, but
    never below ``min(max_age, HUMAN_READING_S)`` of real time, so a person can read the card
    before it goes stale; and never beyond ``max_age``, the window a live run would give.

    This only decides when the card's version moves on. Evidence is still judged stale by the
    compressed ``max_age`` everywhere else, and a release re-reads fresh evidence before any
    transition (DESIGN §3 rules 2 and 5).

    Example: max_age 30s at x60 -> 30 s (not 0.5 s); 10m at x120 -> 60 s; 30s live -> 30 s.
    """
    raw = parse_duration(max_age)
    return max(raw / state.speed, min(raw, HUMAN_READING_S))


def streak_gap_limit(state: State, every: str) -> float:
    """The longest gap, in seconds, between two samples of one bake streak: the interval plus a
    tolerance of one interval, so a late sample keeps the streak but a missed one restarts it.
    Rehearsal compression never takes the tolerance below 1 s of real time (scheduling jitter on a
    loaded machine is not a gap in the evidence), but a plan's own shorter interval is honoured.

    Example: every 30s live -> 60 s; every 30s at x120 -> 0.25 s + 1 s = 1.25 s.
    """
    interval = scaled(state, every)
    return interval + max(interval, min(1.0, parse_duration(every))) if state.speed != 1.0 else 2 * interval


def action_key(state: State, stage: str, direction: str, attempt: int) -> str:
    return f"{state.execution_id}:{stage}:{direction}:{attempt}"
