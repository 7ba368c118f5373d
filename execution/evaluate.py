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

A reading of several series (``Evidence.series``) is judged series by series with the rules
above. ``reduce: all`` takes the most severe outcome (so one dead target is never hidden by a
healthy one) and ``any`` the least severe; among equal outcomes the series furthest from passing
is the one named, with its labels. Worked example: ``up`` answering 1 for ``{instance="a"}`` and
0 for ``{instance="b"}``, against ``pass: "== 1"`` -> fail, naming ``{instance="b"}``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from execution.conditions import parse_condition
from execution.model import SEVERITY, Evidence, Outcome, most_severe


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
    labels: Mapping[str, str] | None = None  # the series named, when the reading had several
    series: int | None = None  # how many series the reading had
    series_not_passing: int | None = None

    def to_json(self) -> dict[str, Any]:
        extra: dict[str, Any] = {}
        if self.series is not None:
            extra = {
                "labels": dict(self.labels or {}),
                "series": self.series,
                "series_not_passing": self.series_not_passing,
            }
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
            **extra,
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
    extra: dict[str, Any] = {}
    if evidence.series and evidence.reduce in ("all", "any") and not evidence.error:
        outcome, detail, value, extra = _judge_series(evidence, pass_text, max_age_s, now, hold_text, min_samples)
    else:
        outcome, detail = _outcome(evidence, pass_text, hold_text, min_samples, max_age_s, age)
        value = evidence.value
    return Result(
        key=f"{kind}:{evidence.signal}",
        kind=kind,
        signal=evidence.signal,
        condition=pass_text,
        hold_band=hold_text,
        outcome=outcome,
        value=value,
        age_s=age,
        max_age_s=max_age_s,
        samples=evidence.samples,
        min_samples=min_samples,
        source=evidence.source,
        detail=detail,
        sampled_at=evidence.to_json()["sampled_at"],
        **extra,
    )


def _judge_series(
    evidence: Evidence,
    pass_text: str,
    max_age_s: float,
    now: datetime,
    hold_text: str | None,
    min_samples: int | None,
) -> tuple[Outcome, str, Any, dict[str, Any]]:
    """Each series judged on its own; the one named and the outcome, per the reduction."""
    judged = []
    for s in evidence.series:
        one = Evidence(evidence.signal, s.value, s.sampled_at, evidence.source, samples=evidence.samples)
        outcome, detail = _outcome(one, pass_text, hold_text, min_samples, max_age_s, one.age_seconds(now))
        judged.append((SEVERITY[outcome], _distance(pass_text, s.value), outcome, detail, s))
    n = len(judged)
    not_passing = sum(1 for j in judged if j[2] != Outcome.PASS)
    if evidence.reduce == "any":
        _, _, outcome, detail, chosen = min(judged, key=lambda j: (j[0], j[1]))
        summary = f"{n - not_passing} of {n} series pass (reduce: any); best {chosen.label_text()}: {detail}"
    else:
        _, _, outcome, detail, chosen = max(judged, key=lambda j: (j[0], j[1]))
        if not_passing:
            summary = f"{not_passing} of {n} series not passing; worst {chosen.label_text()}: {detail}"
        else:
            summary = f"all {n} series pass; closest to failing {chosen.label_text()}: {detail}"
    if n == 1 and not chosen.labels:
        summary = detail  # one unlabelled series (a scalar or an aggregate): nothing to name
    extra = {"labels": dict(chosen.labels), "series": n, "series_not_passing": not_passing}
    return outcome, summary, chosen.value, extra


def _distance(pass_text: str, value: float | None) -> float:
    """How far ``value`` is from meeting ``pass_text`` (0 inside it): orders equally judged series."""
    if value is None:
        return math.inf
    condition = parse_condition(pass_text)
    if isinstance(condition.value, bool):
        return 0.0
    bound = float(condition.value)
    if condition.op == "!=":
        return -abs(value - bound)
    if condition.op in ("<", "<="):
        return value - bound
    if condition.op in (">", ">="):
        return bound - value
    if condition.op == "between" and condition.upper is not None:
        return max(bound - value, value - condition.upper)
    return abs(value - bound)


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
        return Outcome.STALE, "no current sample: no raw sample behind the value is recent (the source stopped?)"
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
