"""Human-readable lines for the terminal.

* ``describe``: the run log of ``rehearse``/``run``/``resume``, one or more lines per ledger entry.
* ``progress``: the compact lines of ``watch``, a line per stage transition and each hold's why.
* ``stage_table``: the stages of ``status``.

Rules: values are JSON (never Python reprs); times are to the second; every hold's kind comes
with its meaning; an evidence row's value agrees with its outcome (``error`` / ``no data``).
"""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence
from typing import Any, TextIO

from execution import events as ev
from execution.hold_kinds import meaning
from execution.project import State
from ledger.entry import Entry
from templates import compact_json, evidence_value, format_time, format_value, gap_text, outcome_word, render

# Evidence rows name what they are: a preflight check, the way back (rollback readiness), or a
# checkpoint verification check.
ROW_KIND = {"preflight": "preflight", "readiness": "readiness", "check": "check"}


def _results_table(results: Sequence[Mapping[str, Any]]) -> list[str]:
    lines = []
    for r in results:
        age = f"{r['age_s']:.1f}s" if r.get("age_s") is not None else "—"
        band = f" (hold {r['hold_band']})" if r.get("hold_band") else ""
        samples = r.get("samples") if r.get("samples") is not None else "—"
        lines.append(
            f"      {ROW_KIND.get(r['kind'], r['kind']):<9} {r['signal']:<22} {evidence_value(r):<10} "
            f"{(r['condition'] + band):<28} age {age:<7} samples {samples!s:<6} -> {outcome_word(r['outcome'])}"
        )
    return lines


def _who(who: Mapping[str, Sequence[str]]) -> str:
    return ", ".join([*who.get("users", ()), *who.get("groups", ())]) or "nobody"


def _ending(event: ev.Event, actor: str) -> str:
    match event:
        case ev.ExecutionRolledBack(undone=undone):
            return f"ROLLED BACK: undone {', '.join(undone) or 'nothing'}"
        case ev.ExecutionNeedsHuman(why=why):
            return f"NEEDS HUMAN: {why}"
        case ev.ExecutionAbandoned(reason=reason):
            return f"ABANDONED by {actor}: {reason}"
    return "COMPLETED"


def describe(entry: Entry) -> list[str]:
    head = f"{entry.ts.strftime('%H:%M:%S')} #{entry.seq:<4}"
    match event := ev.event_of(entry):
        case ev.ExecutionStarted() as e:
            return [
                f"{head} started {e.change_id} ({e.title}) by {entry.actor}; plan sha256 {e.plan_sha256[:12]}…, "
                f"mode {e.mode}"
                + (f", speed x{e.speed:g}" if e.mode != "live" else "")
                + ("" if (e.approvals or {}).get("approved") else ", UNSIGNED")
            ]
        case ev.ExecutionResumed(owner=owner, reconcile=rec):
            what = (
                "nothing to reconcile"
                if not rec
                else f"{rec['stage']} {'matches' if rec['matches'] else 'DOES NOT MATCH'} the ledger"
            )
            return [f"{head} resumed by {owner}: {what}"]
        case ev.GateChecked() as e:
            what = "preflight and rollback readiness" if e.purpose == ev.Purpose.ENTER else "re-check before accepting"
            return [f"{head} {what} for {e.stage}: {outcome_word(e.outcome)}", *_results_table(e.results)]
        case ev.VerificationSampled() as e:
            line = (
                f"{head} verify {e.stage}: {outcome_word(e.outcome)} -> {e.reaction} "
                f"({e.consecutive}/{e.required} consecutive passes)"
            )
            if e.gap:
                line += f"; {gap_text(e.gap)}"
            return [line] if e.outcome == "pass" else [line, *_results_table(e.results)]
        case ev.HoldOpened() as e:
            card = render("hold.txt.j2", hold={**entry.body, "id": e.hold}, meaning=meaning(e.hold_kind))
            return [f"{head} HOLD {e.hold} opened ({e.hold_kind}: {meaning(e.hold_kind)})", card.rstrip("\n")]
        case ev.ReleaseGranted() as e:
            return [f"{head} release of {e.hold} by {entry.actor} ({e.count} of {e.required})"]
        case ev.HoldReleased() as e:
            return [f"{head} hold {e.hold} released by {', '.join(e.by)}"]
        case ev.Attempt(reason=reason):
            return [f"{head} {entry.kind} ({entry.actor}): {reason}"]
        case ev.ReleaseNotCarried(why=why):
            return [f"{head} release not carried over: {why}"]
        case ev.ActionIntended() as e:
            return [f"{head} {e.direction} {e.stage} intended (key {e.key})"]
        case ev.ActionSent() as e:
            return [f"{head} {e.direction} {e.stage} sent: {e.outcome} ({e.detail})"]
        case ev.ActionReadBack() as e:
            verdict = {True: "matches", False: "does not match", None: "read failed"}[e.matches]
            observed = compact_json(e.observed) if e.observed is not None else "nothing"
            return [f"{head} read-back {e.stage}: {verdict} (expect {compact_json(e.expect)}, observed {observed})"]
        case ev.ActionResendIntended() as e:
            return [f"{head} re-send {e.stage} with the same key: {e.reason}"]
        case ev.ActionConfirmed() as e:
            return [f"{head} {e.direction} {e.stage} confirmed live"]
        case ev.StagePassed() as e:
            return [f"{head} stage {e.stage} passed ({e.basis})"]
        case ev.RollbackStarted() as e:
            return [f"{head} ROLLBACK ({e.scope}) by {entry.actor}: {e.reason}; undo {', '.join(e.undo) or 'nothing'}"]
        case ev.HoldEscalated() as e:
            return [f"{head} hold {e.hold} expired: escalated to {_who(e.notify)}; it stays held"]
        case ev.HoldEvidenceExpired() as e:
            return [f"{head} hold {e.hold}: evidence went stale (now v{e.evidence_version}); a release re-checks it"]
        case ev.ExecutionCompleted() | ev.ExecutionRolledBack() | ev.ExecutionNeedsHuman() | ev.ExecutionAbandoned():
            return [f"{head} {_ending(event, entry.actor)}"]
    return [f"{head} {entry.kind} {entry.actor}"]


# ---------------------------------------------------------------- watch


def _bar(done: int, required: int, width: int = 10) -> str:
    filled = round(width * done / required) if required else width
    return "[" + "#" * filled + "-" * (width - filled) + "]"


def _milestone(done: int, required: int) -> bool:
    """Bake progress worth a line: the first pass, every quarter, and the last."""
    step = max(1, required // 4)
    return done in (1, required) or done % step == 0


def _not_passing(results: Sequence[Mapping[str, Any]]) -> str:
    """``readiness snapshot_age_s 7200 (fail, pass < 3600); ...`` for the rows that do not pass."""
    return "; ".join(
        f"{ROW_KIND.get(r['kind'], r['kind'])} {r['signal']} {evidence_value(r)} "
        f"({outcome_word(r['outcome'])}, pass {r['condition']})"
        for r in results
        if r["outcome"] != "pass"
    )


def progress(entry: Entry, state: State, *, history: bool = False) -> list[str]:
    """Lines for ``watch``; ``history``: an entry that happened before the watch began (terser).

    Example: a ``verification.sampled`` with 5 of 10 passes -> ``12:00:05 canary-5   baking 5/10
    [#####-----]``; a hold -> its kind and meaning, why, and who may release or roll back.
    """
    t = entry.ts.strftime("%H:%M:%S")
    event = ev.event_of(entry)
    named = getattr(event, "stage", None)
    stage = f"{named!s:<14}" if named else ""
    match event:
        case ev.ExecutionStarted() as e:
            stages = " → ".join(s.id for s in state.stages)
            return [f"{t} started by {entry.actor} ({e.mode}): {stages}"]
        case ev.ExecutionResumed(owner=owner):
            return [f"{t} resumed by {owner}"]
        case ev.GateChecked() as e:
            if e.outcome == "pass":
                return []
            return [f"{t} {stage} preflight and readiness: {outcome_word(e.outcome)} — {_not_passing(e.results)}"]
        case ev.ActionIntended() as e:
            if e.direction == ev.Direction.ROLLBACK:
                return [f"{t} {stage} undoing"]
            radius = state.stage_def(e.index).blast_radius if state.plan is not None else None
            return [f"{t} {stage} entering" + (f" (blast radius {format_value(radius)})" if radius is not None else "")]
        case ev.ActionSent() as e if e.outcome != ev.SendOutcome.OK:
            return [f"{t} {stage} {e.direction} sent: {e.outcome} ({e.detail})"]
        case ev.ActionReadBack() as e if e.matches is not True:
            verdict = "read-back failed" if e.matches is None else "read-back does not match"
            return [f"{t} {stage} {verdict} (expect {compact_json(e.expect)})"]
        case ev.ActionConfirmed() as e:
            return [f"{t} {stage} {'live, verifying' if e.direction == ev.Direction.APPLY else 'undone and confirmed'}"]
        case ev.VerificationSampled() as e:
            if e.outcome == "pass":
                if history or e.during_hold or not _milestone(e.consecutive, e.required):
                    return []
                return [f"{t} {stage} baking {e.consecutive}/{e.required} {_bar(e.consecutive, e.required)}"]
            return [f"{t} {stage} sample {outcome_word(e.outcome)} -> {e.reaction}: {_not_passing(e.results)}"]
        case ev.StagePassed() as e:
            basis = "verified" if e.basis == ev.Basis.VERIFIED else f"accepted on the release of {e.hold}"
            return [f"{t} {stage} passed ({basis})"]
        case ev.HoldOpened() as e:
            at = f" at {e.stage}" if e.stage else ""
            who = f"release: {e.required} of {_who(e.releasers)}" if e.releasable else "cannot be released"
            return [
                f"{t} HOLD {e.hold}{at} · {e.hold_kind} — {meaning(e.hold_kind)}",
                f"         why: {e.reason}",
                f"         {who} · roll back: {_who(e.rollback_authority or {})} · expires {format_time(e.expires_at)}",
            ]
        case ev.ReleaseGranted() as e:
            return [f"{t} {e.hold} release {e.count} of {e.required} by {entry.actor}"]
        case ev.HoldReleased() as e:
            return [f"{t} {e.hold} released by {', '.join(e.by)}"]
        case ev.ReleaseNotCarried() as e:
            return [f"{t} release of {e.hold} not carried over: {e.why}"]
        case ev.HoldEvidenceExpired() as e:
            return [] if history else [f"{t} {e.hold} evidence went stale (now v{e.evidence_version})"]
        case ev.HoldEscalated() as e:
            return [f"{t} {e.hold} expired: escalated to {_who(e.notify)}; it stays held"]
        case ev.HoldRequested(reason=reason):
            return [f"{t} hold requested by {entry.actor}: {reason} (opens once the action resolves)"]
        case ev.RollbackStarted() as e:
            return [f"{t} ROLLBACK ({e.scope}) by {entry.actor}: {e.reason}; undo {' → '.join(e.undo) or 'nothing'}"]
        case ev.Attempt(reason=reason):
            return [f"{t} refused {entry.actor} ({entry.kind}): {reason}"]
        case ev.ExecutionCompleted() | ev.ExecutionRolledBack() | ev.ExecutionNeedsHuman() | ev.ExecutionAbandoned():
            return [f"{t} {_ending(event, entry.actor)}"]
    return []


# ---------------------------------------------------------------- status


def stage_table(state: State) -> list[str]:
    """One line per stage: id, blast radius, status, and how it passed or what protects it."""
    lines = []
    width = max((len(s.id) for s in state.stages), default=5)
    for s in state.stages:
        d = state.stage_def(s.index)
        notes = []
        if s.passed_basis:
            notes.append(s.passed_basis if s.passed_basis == "verified" else f"accepted on {s.passed_hold}")
        entry_hold = state.holds.get(s.entry_hold or "")
        if entry_hold is not None and entry_hold.released_by:
            notes.append(f"entry released by {', '.join(entry_hold.released_by)}")
        elif d.hold_before and s.status == "pending":
            notes.append("protected")
        if d.irreversible:
            notes.append("irreversible")
        focus = "  ◀" if s.index == state.current and not state.terminal and s.status != "passed" else ""
        note = f" ({', '.join(notes)})" if notes else ""
        lines.append(
            f"{s.id:<{width}}  blast {format_value(d.blast_radius):>5}  {s.status.replace('_', ' ')}{note}{focus}"
        )
    return lines


class ConsolePrinter:
    """An engine listener printing progress as entries land."""

    def __init__(self, out: TextIO | None = None) -> None:
        self.out = out or sys.stdout

    def __call__(self, execution_id: str, entries: Sequence[Entry]) -> None:
        for entry in entries:
            for line in describe(entry):
                print(line, file=self.out, flush=True)
