"""Value types shared by the engine's decisions and its adapters (no I/O here)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any, Literal

from ledger.chain import format_ts

Clock = Callable[[], datetime]
JSON = Any


class Role(StrEnum):
    """Separate duties in code and in the ledger's ``actor`` field, each with its own credential."""

    PREFLIGHT = "role:preflight"
    EXECUTOR = "role:executor"
    VERIFIER = "role:verifier"
    ROLLBACK = "role:rollback"
    SCHEDULER = "role:scheduler"


class Outcome(StrEnum):
    PASS = "pass"
    HOLD = "hold"
    NO_DATA = "no_data"
    STALE = "stale"
    ERROR = "error"
    FAIL = "fail"


# Most severe wins when checks disagree. No outcome other than PASS ever counts as a pass.
SEVERITY: Mapping[Outcome, int] = {
    Outcome.PASS: 0,
    Outcome.HOLD: 1,
    Outcome.NO_DATA: 2,
    Outcome.STALE: 3,
    Outcome.ERROR: 4,
    Outcome.FAIL: 5,
}


def most_severe(outcomes: list[Outcome]) -> Outcome:
    return max(outcomes, key=SEVERITY.__getitem__) if outcomes else Outcome.NO_DATA


@dataclass(frozen=True)
class Evidence:
    """One reading of one signal, as an adapter returned it.

    ``value`` None means no data. ``sampled_at`` is when the *source* says the value was true
    (a Prometheus sample timestamp, or the response time for HTTP), and drives freshness.
    ``error`` is set when the read failed; it is already masked.
    """

    signal: str
    value: JSON
    sampled_at: datetime | None
    source: str
    samples: int | None = None
    error: str | None = None

    def age_seconds(self, now: datetime) -> float | None:
        if self.sampled_at is None:
            return None
        return max(0.0, (now - self.sampled_at).total_seconds())

    def to_json(self) -> dict[str, JSON]:
        return {
            "signal": self.signal,
            "value": self.value,
            "sampled_at": format_ts(self.sampled_at) if self.sampled_at else None,
            "samples": self.samples,
            "source": self.source,
            "error": self.error,
        }


@dataclass(frozen=True)
class ActionResult:
    """What happened when an action was sent.

    ``ok``: the target acknowledged it. ``ambiguous``: it may or may not have been applied
    (timeout or connection dropped after sending). ``rejected``: the target definitely refused it.
    """

    outcome: Literal["ok", "ambiguous", "rejected"]
    detail: str
    status: int | None = None
    response: JSON = None


@dataclass(frozen=True)
class ReadbackResult:
    """The target's live state for a read-back. ``matches`` is None when the read itself failed."""

    matches: bool | None
    observed: JSON
    detail: str


@dataclass(frozen=True)
class Credentials:
    """One secret per role; a role's adapter only ever sends its own."""

    tokens: Mapping[Role, str | None] = field(default_factory=dict)

    def for_role(self, role: Role) -> str | None:
        return self.tokens.get(role)
