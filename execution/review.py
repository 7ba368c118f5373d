"""Checkpoint review: how holds, releases and rollbacks went, computed from ledger entries alone (pure).

A protected hold is only worth something while the people releasing it look at the evidence. These
figures show when that drifts into ceremony: releases seconds after the card was shown, always by
the same person, on degraded or expired evidence; rollbacks never verified; transitions whose
record does not link back to the approval.

Rules:
* Pure: ``review(ledgers, now, options, shown)`` takes each execution's entries and the time; no
  clock, no I/O, no Slack, settings or plotting. The same input always gives the same figures.
* Where an execution stands comes from the engine's own fold (``project.apply``), walked one
  entry at a time by ``execution.review_walk``, which is also the only reader of entry bodies.
* Durations are ledger time in seconds. Rehearsals run with compressed plan durations, but
  releases and clicks in them happen at human speed, so nothing is rescaled.
* Percentiles interpolate linearly between closest ranks: the p-quantile of n sorted values sits
  at position p·(n−1) (the default of numpy and of most spreadsheets).
* A hold card counts as shown when Slack received it, if the caller knows that time (``shown``)
  and it lies between the hold's opening and the release; otherwise at the hold's opening. Every
  release says which basis it used.
* A release is "possibly unreviewed" when it came less than ``fast_release_s`` after the card
  was shown; "on degraded evidence" when the evidence on the hold was not all passing; "on
  expired evidence" when the card's evidence had expired before the click.
* A transition (every ``action.intended``, forward or rollback) is linked when its record names
  the package and plan version, a well-formed plan digest, a stage of the plan, the evidence it
  was decided on, the release (or rollback order) that authorised it, and the duty that acted
  (the precise tests are in ``execution.review_walk``). The target is 100%.
* Time in hold (median, p90) counts holds that ended (released, superseded, or closed by a
  rollback or a hand-over); holds still open are listed with their age instead. A hold expired
  when it stayed open past its expiry; it escalated when the engine recorded the escalation.

Worked example: one execution whose protected hold H1 opened at 10:00:00 was released by U01DANA
at 10:00:04 (card delivered by Slack at 10:00:01) with ``fast_release_s=60`` -> one release,
latency 3 s on the "slack" basis, flagged possibly unreviewed; U01DANA holds a share of 1.0; H1's
time in hold is 4 s.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from fnmatch import fnmatchcase
from typing import Any

from execution.review_walk import LINKS, Walk, named, seconds, ts_text
from execution.transitions import IllegalTransition
from ledger.chain import format_ts
from ledger.entry import Entry

STATUSES = ("completed", "held", "narrowed", "rolled_back", "needs_human", "running")
STOPPED = STATUSES[1:]  # the outcomes an execution can stop at a stage with
BAD_READINGS = ("stale", "no_data", "error")
DEFAULT_FAST_RELEASE_S = 60.0


@dataclass(frozen=True)
class Options:
    """Which executions to review and the operator's threshold for a too-fast release."""

    since: datetime | None = None  # executions started at or after this time
    change: str | None = None  # shell-style pattern on the change id (``CHG-20*``)
    fast_release_s: float = DEFAULT_FAST_RELEASE_S


# ---------------------------------------------------------------- small statistics


def quantile(values: Sequence[float], q: float) -> float | None:
    """Linear interpolation between closest ranks: position q·(n−1) of the sorted values.

    Example: the 0.9-quantile of [1, 2, 3, 4, 10] sits at position 3.6: 4 + 0.6·(10 − 4) = 7.6.
    """
    if not values:
        return None
    ordered = sorted(values)
    pos = q * (len(ordered) - 1)
    lo = math.floor(pos)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def _r(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


def summary(values: Sequence[float]) -> dict[str, Any]:
    return {
        "count": len(values),
        "median": _r(quantile(values, 0.5)),
        "p90": _r(quantile(values, 0.9)),
        "max": _r(max(values)) if values else None,
    }


def _share(part: int, whole: int) -> float | None:
    return round(part / whole, 4) if whole else None


# ---------------------------------------------------------------- across executions


def _selected(walk: Walk, options: Options) -> bool:
    s = walk.state
    if s.package is None or s.started_at is None:
        return False
    if options.since is not None and s.started_at < options.since:
        return False
    return options.change is None or fnmatchcase(s.package.id, options.change)


def _week(when: datetime) -> str:
    year, week, _ = when.isocalendar()
    return f"{year}-W{week:02d}"


def review(
    ledgers: Iterable[tuple[str, Sequence[Entry]]],
    now: datetime,
    options: Options = Options(),
    shown: Mapping[tuple[str, str], datetime] | None = None,
    excluded: Sequence[Mapping[str, str]] = (),
) -> dict[str, Any]:
    """The review of every execution in ``ledgers`` selected by ``options``, as JSON-ready figures.

    ``shown`` maps (execution, hold) to when Slack received the hold's card; ``excluded`` lists
    executions the caller left out (e.g. a chain that does not verify), reported as they are.
    """
    skipped = [dict(x) for x in excluded]
    walks: list[Walk] = []
    for execution_id, entries in ledgers:
        try:
            walk = Walk(execution_id, shown or {}, options.fast_release_s).walk(entries)
        except (ValueError, KeyError, TypeError, AssertionError, IllegalTransition) as exc:
            # A verified chain the fold cannot read is reported, never allowed to sink the whole review.
            skipped.append({"execution": execution_id, "reason": f"cannot be folded: {type(exc).__name__}: {exc}"})
            continue
        if _selected(walk, options):
            walks.append(walk)
    walks.sort(key=lambda w: (w.state.started_at or now, w.execution_id))
    return {
        "generated_at": format_ts(now),
        "filters": {
            "since": ts_text(options.since),
            "change": options.change,
            "fast_release_s": options.fast_release_s,
        },
        "executions": _executions(walks, skipped),
        "outcomes": _outcomes(walks),
        "holds": _holds(walks, now),
        "releases": _releases(walks, options.fast_release_s),
        "rollbacks": _rollbacks(walks),
        "evidence": _evidence(walks),
    }


def _change(walk: Walk) -> str:
    return walk.state.package.id if walk.state.package is not None else "?"


def _executions(walks: Sequence[Walk], skipped: list[dict[str, str]]) -> dict[str, Any]:
    modes = Counter(w.state.mode for w in walks)
    return {
        "total": len(walks),
        "live": modes.get("live", 0),
        "rehearsal": modes.get("rehearsal", 0),
        "excluded": skipped,
        "items": [
            {
                "execution": w.execution_id,
                "change": _change(w),
                "mode": w.state.mode,
                "started_at": ts_text(w.state.started_at),
                "status": w.state.status(),
                "stopped_at": w.stopped_at(),
            }
            for w in walks
        ],
    }


def _stopped() -> dict[str, int]:
    return dict.fromkeys(STOPPED, 0)


def _outcomes(walks: Sequence[Walk]) -> dict[str, Any]:
    def blank() -> dict[str, int]:
        return dict.fromkeys(STATUSES, 0)

    totals = blank()
    by_change: dict[str, dict[str, int]] = {}
    by_week: dict[str, dict[str, int]] = {}
    by_stage: dict[tuple[str, str], dict[str, int]] = {}
    for w in walks:
        status, change = w.state.status(), _change(w)
        totals[status] += 1
        by_change.setdefault(change, {"executions": 0, **blank()})
        by_change[change]["executions"] += 1
        by_change[change][status] += 1
        assert w.state.started_at is not None
        by_week.setdefault(_week(w.state.started_at), blank())[status] += 1
        for s in w.state.stages:
            row = by_stage.setdefault((change, s.id), {"entered": 0, "passed": 0, **_stopped()})
            row["entered"] += s.id in w.entered
            row["passed"] += s.id in w.passed
        stop = w.stopped_at()
        if stop is not None and (change, stop) in by_stage:
            by_stage[(change, stop)][status] += 1
    stages = [
        {"change": c, "stage": s, **row}
        for (c, s), row in by_stage.items()
        if row["entered"] or any(row[k] for k in STOPPED)
    ]
    return {
        "totals": totals,
        "by_change": [{"change": c, **row} for c, row in sorted(by_change.items())],
        "by_stage": stages,
        "by_week": [{"week": wk, **row} for wk, row in sorted(by_week.items())],
    }


def _holds(walks: Sequence[Walk], now: datetime) -> dict[str, Any]:
    items: list[dict[str, Any]] = []
    for w in walks:
        for life in w.holds.values():
            hold = life.hold
            end = life.ended_at or now
            items.append(
                {
                    "execution": w.execution_id,
                    "change": _change(w),
                    "hold": hold.id,
                    "stage": hold.stage,
                    "kind": hold.kind,
                    "opened_at": ts_text(hold.opened_at),
                    "ended_at": ts_text(life.ended_at),
                    "end": life.end,
                    "duration_s": round(seconds(hold.opened_at, end), 3),
                    "expired": end >= hold.expires_at,
                    "escalated": hold.escalated,
                    "reminded": hold.reminded,
                    "evidence_expired": hold.id in w.evidence_expired,
                }
            )
    ended = [h for h in items if h["end"] != "open"]
    groups: dict[tuple[str, str | None, str], list[dict[str, Any]]] = {}
    for h in items:
        groups.setdefault((h["change"], h["stage"], h["kind"]), []).append(h)
    by_stage_kind = []
    for (change, stage, kind), group in sorted(groups.items(), key=lambda kv: (kv[0][0], kv[0][1] or "", kv[0][2])):
        done = [h["duration_s"] for h in group if h["end"] != "open"]
        by_stage_kind.append(
            {
                "change": change,
                "stage": stage,
                "kind": kind,
                "holds": len(group),
                "open": sum(h["end"] == "open" for h in group),
                "time_in_hold_s": summary(done),
                "expired": sum(h["expired"] for h in group),
                "escalated": sum(h["escalated"] for h in group),
            }
        )
    ends = Counter(h["end"] for h in items)
    return {
        "total": len(items),
        "released": ends.get("released", 0),
        "superseded": ends.get("superseded", 0),
        "closed": ends.get("closed", 0),
        "open": ends.get("open", 0),
        "time_in_hold_s": summary([h["duration_s"] for h in ended]),
        "expired": sum(h["expired"] for h in items),
        "escalated": sum(h["escalated"] for h in items),
        "reminded": sum(h["reminded"] for h in items),
        "evidence_expired": sum(h["evidence_expired"] for h in items),
        "by_stage_kind": by_stage_kind,
        "open_now": [h for h in items if h["end"] == "open"],
        "items": items,
    }


def _releases(walks: Sequence[Walk], fast_release_s: float) -> dict[str, Any]:
    items = [dict(r, change=_change(w)) for w in walks for r in w.releases]
    total = len(items)
    people: dict[str, list[dict[str, Any]]] = {}
    for r in items:
        people.setdefault(r["user"], []).append(r)
    by_person = [
        {
            "user": user,
            "releases": len(rs),
            "share": _share(len(rs), total),
            "latency_s": summary([r["latency_s"] for r in rs]),
            "fast": sum(r["fast"] for r in rs),
            "degraded": sum(r["degraded"] for r in rs),
        }
        for user, rs in sorted(people.items(), key=lambda kv: (-len(kv[1]), kv[0]))
    ]
    basis = Counter(r["basis"] for r in items)
    fast = [r for r in items if r["fast"]]
    return {
        "total": total,
        "latency_s": summary([r["latency_s"] for r in items]),
        "shown_basis": {"slack": basis.get("slack", 0), "opened": basis.get("opened", 0)},
        "fast_release_s": fast_release_s,
        "fast": len(fast),
        "fast_share": _share(len(fast), total),
        "degraded": sum(r["degraded"] for r in items),
        "expired_evidence": sum(r["expired_evidence"] for r in items),
        "by_person": by_person,
        "top_share": by_person[0]["share"] if by_person else None,
        "flagged": fast,
        "items": items,
    }


def _rollbacks(walks: Sequence[Walk]) -> dict[str, Any]:
    items: list[dict[str, Any]] = []
    for w in walks:
        for rb in w.rollbacks:
            verified = rb.outcome in ("rolled_back", "narrowed") and rb.confirmed >= len(rb.undo)
            items.append(
                {
                    "execution": w.execution_id,
                    "change": _change(w),
                    "trigger": rb.trigger,
                    "by": "person" if named(rb.actor) else "trigger",
                    "actor": rb.actor,
                    "scope": rb.scope,
                    "undo": list(rb.undo),
                    "steps_confirmed": rb.confirmed,
                    "verified": verified,
                    "outcome": rb.outcome,
                    "started_at": ts_text(rb.started_at),
                    "breach_at": ts_text(rb.breach_at),
                    "sent_at": ts_text(rb.sent_at),
                    "breach_to_sent_s": _r(seconds(rb.breach_at, rb.sent_at)) if rb.breach_at and rb.sent_at else None,
                    "order_to_sent_s": _r(seconds(rb.started_at, rb.sent_at)) if rb.sent_at else None,
                }
            )
    outcomes = Counter(r["outcome"] for r in items)
    return {
        "total": len(items),
        "by_trigger": sum(r["by"] == "trigger" for r in items),
        "by_person": sum(r["by"] == "person" for r in items),
        "verified": sum(r["verified"] for r in items),
        "failed": outcomes.get("failed", 0),
        "in_progress": outcomes.get("in_progress", 0),
        "breach_to_sent_s": summary([r["breach_to_sent_s"] for r in items if r["breach_to_sent_s"] is not None]),
        "items": items,
    }


def _evidence(walks: Sequence[Walk]) -> dict[str, Any]:
    transitions = [t for w in walks for t in w.transitions]
    linked = sum(not t["missing"] for t in transitions)
    missing = Counter(name for t in transitions for name in t["missing"])
    readings: Counter[tuple[str, str]] = Counter()
    for w in walks:
        readings.update(w.readings)
    signals: dict[str, dict[str, int]] = {}
    for (signal, outcome), n in readings.items():
        row = signals.setdefault(signal, {"readings": 0, **dict.fromkeys(BAD_READINGS, 0)})
        row["readings"] += n
        if outcome in BAD_READINGS:
            row[outcome] += n
    total = sum(readings.values())
    bad = {k: sum(n for (_, o), n in readings.items() if o == k) for k in BAD_READINGS}
    return {
        "transitions": len(transitions),
        "linked": linked,
        "lineage_pct": round(100.0 * linked / len(transitions), 2) if transitions else None,
        "missing_links": {name: missing.get(name, 0) for name in LINKS},
        "unlinked": [t for t in transitions if t["missing"]],
        "readings": total,
        **bad,
        "stale_or_missing_share": _share(bad["stale"] + bad["no_data"], total),
        "by_signal": [{"signal": s, **row} for s, row in sorted(signals.items())],
    }
