"""Turn evidence into outcomes (pure).

Rules, in order, for one reading against one condition:
1. The read failed                                   -> error
2. No value                                          -> no_data
3. No sample time, or older than ``max_age``          -> stale (stale evidence is never used)
4. ``min_samples`` set and too few samples behind it  -> no_data (too little data to judge)
5. The value has the wrong type for the condition    -> error
6. ``pass`` holds                                     -> pass
7. A tolerated ``hold`` band is given and holds       -> hold
8. Otherwise                                          -> fail

Worked example: error_rate 0.015 sampled 5 s ago from 1200 requests, against
``pass: "< 0.01", hold: "< 0.02", min_samples: 20``, max_age 60 s -> hold.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from execution.conditions import parse_condition
from execution.model import Evidence, Outcome, most_severe


@dataclass(frozen=True)
class Result:
    key: str  # "<kind>:<signal>", unique within one evaluation
    kind: str  # check | preflight | readiness
    signal: str
    condition: str
    hold_band: str | None
    outcome: Outcome
    value: Any
    age_s: float | None
    max_age_s: float
    samples: int | None
    min_samples: int | None
    source: str
    detail: str
    sampled_at: str | None

    def to_json(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "kind": self.kind,
            "signal": self.signal,
            "condition": self.condition,
            "hold_band": self.hold_band,
            "outcome": self.outcome.value,
            "value": self.value,
            "age_s": None if self.age_s is None else round(self.age_s, 3),
            "max_age_s": round(self.max_age_s, 3),
            "samples": self.samples,
            "min_samples": self.min_samples,
            "source": self.source,
            "detail": self.detail,
            "sampled_at": self.sampled_at,
        }


def evaluate(
    kind: str,
    evidence: Evidence,
    pass_text: str,
    max_age_s: float,
    now: datetime,
    hold_text: str | None = None,
    min_samples: int | None = None,
) -> Result:
    age = evidence.age_seconds(now)
    outcome, detail = _outcome(evidence, pass_text, hold_text, min_samples, max_age_s, age)
    return Result(
        key=f"{kind}:{evidence.signal}",
        kind=kind,
        signal=evidence.signal,
        condition=pass_text,
        hold_band=hold_text,
        outcome=outcome,
        value=evidence.value,
        age_s=age,
        max_age_s=max_age_s,
        samples=evidence.samples,
        min_samples=min_samples,
        source=evidence.source,
        detail=detail,
        sampled_at=evidence.to_json()["sampled_at"],
    )


def _outcome(
    evidence: Evidence,
    pass_text: str,
    hold_text: str | None,
    min_samples: int | None,
    max_age_s: float,
    age: float | None,
) -> tuple[Outcome, str]:
    if evidence.error:
        return Outcome.ERROR, evidence.error
    if evidence.value is None:
        return Outcome.NO_DATA, "no data"
    if age is None:
        return Outcome.STALE, "no sample time"
    if age > max_age_s:
        return Outcome.STALE, f"sample is {age:.1f}s old; max age {max_age_s:g}s"
    if min_samples is not None and (evidence.samples is None or evidence.samples < min_samples):
        have = "unknown" if evidence.samples is None else str(evidence.samples)
        return Outcome.NO_DATA, f"{have} samples; at least {min_samples} needed"
    passed = parse_condition(pass_text).holds(evidence.value)
    if passed is None:
        return Outcome.ERROR, f"value {evidence.value!r} cannot be compared with '{pass_text}'"
    if passed:
        return Outcome.PASS, f"within '{pass_text}'"
    if hold_text is not None and parse_condition(hold_text).holds(evidence.value):
        return Outcome.HOLD, f"outside '{pass_text}' but within tolerated '{hold_text}'"
    return Outcome.FAIL, f"outside '{pass_text}'" + (f" and '{hold_text}'" if hold_text else "")


def categories(results: Iterable[Result]) -> dict[str, str]:
    return {r.key: r.outcome.value for r in results}


def overall(results: Iterable[Result]) -> Outcome:
    return most_severe([r.outcome for r in results])


def changed(before: Mapping[str, str], after: Mapping[str, str]) -> list[str]:
    """Human-readable differences between two category maps, e.g. ``readiness:x pass -> stale``."""
    out = []
    for key in sorted(set(before) | set(after)):
        a, b = before.get(key, "absent"), after.get(key, "absent")
        if a != b:
            out.append(f"{key} {a} -> {b}")
    return out
