"""Value types shared by the engine's decisions and its adapters (no I/O here)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
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
class SeriesValue:
    """One series (or one point of a range query) of a query that answered several.

    ``sampled_at`` is the time of the newest raw sample behind this series (None: none is current).
    """

    labels: Mapping[str, str]
    value: float | None  # None: NaN, no data
    sampled_at: datetime | None

    def label_text(self) -> str:
        inner = ", ".join(f'{k}="{v}"' for k, v in sorted(self.labels.items()))
        return "{" + inner + "}"


@dataclass(frozen=True)
class Evidence:
    """One reading of one signal, as an adapter returned it.

    ``value`` None means no data. ``sampled_at`` is when the *source* says the value was true
    (the newest raw sample behind a Prometheus answer, or the response time for HTTP), and drives
    freshness. ``error`` is set when the read failed; it is already masked.

    A query answering several series sets ``series`` and ``reduce`` (``all`` or ``any``): each
    series is then judged on its own. ``evaluated_at``, ``window_s`` and ``earliest_at`` say how
    far back the data behind the value may reach (DESIGN rule 11): from ``evaluated_at -
    window_s`` (a rate or range window) and from ``earliest_at`` (the oldest raw sample read).
    """

    signal: str
    value: JSON
    sampled_at: datetime | None
    source: str
    samples: int | None = None
    error: str | None = None
    series: tuple[SeriesValue, ...] = ()
    reduce: str | None = None
    evaluated_at: datetime | None = None
    window_s: float = 0.0
    earliest_at: datetime | None = None

    def age_seconds(self, now: datetime) -> float | None:
        if self.sampled_at is None:
            return None
        return max(0.0, (now - self.sampled_at).total_seconds())

    def data_from(self, speed: float = 1.0) -> datetime | None:
        """The earliest time the data behind this reading may come from (windows compressed by
        ``speed`` in rehearsals, like every plan duration); None when nothing was read."""
        if self.sampled_at is None:
            return None
        earliest = min(self.sampled_at, self.earliest_at or self.sampled_at)
        if self.window_s > 0 and self.evaluated_at is not None:
            earliest = min(earliest, self.evaluated_at - timedelta(seconds=self.window_s / speed))
        return earliest

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
class TargetAuth:
    """How to reach one target, from settings (never from the plan or package, never recorded).

    ``bearer`` or ``username``/``password`` (basic) replace the role credentials for this target;
    ``headers`` are secret headers; ``ca_bundle``, ``client_cert`` and ``client_key`` are file
    paths for TLS.
    """

    bearer: str | None = None
    username: str | None = None
    password: str | None = None
    headers: Mapping[str, str] = field(default_factory=dict)
    ca_bundle: str | None = None
    client_cert: str | None = None
    client_key: str | None = None

    def secrets(self) -> list[str]:
        return [s for s in (self.bearer, self.password, *self.headers.values()) if s]

    @property
    def tls(self) -> tuple[str | None, str | None, str | None] | None:
        given = (self.ca_bundle, self.client_cert, self.client_key)
        return given if any(given) else None


@dataclass(frozen=True)
class Credentials:
    """One secret per role (a role's adapter only ever sends its own), and per-target auth."""

    tokens: Mapping[Role, str | None] = field(default_factory=dict)
    targets: Mapping[str, TargetAuth] = field(default_factory=dict)

    def for_role(self, role: Role) -> str | None:
        return self.tokens.get(role)

    def for_target(self, target: str) -> TargetAuth | None:
        return self.targets.get(target)

    def secrets(self) -> list[str]:
        """Every secret value, to scrub from texts literally."""
        found = [s for s in self.tokens.values() if s]
        for auth in self.targets.values():
            found += auth.secrets()
        return found
