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


def describe(entry: Entry) -> list[str]:
    b = entry.body
    head = f"{entry.ts.strftime('%H:%M:%S')} #{entry.seq:<4}"
    k = entry.kind
    if k == ev.EXECUTION_STARTED:
        return [
            f"{head} started {b['change_id']} ({b['title']}) by {entry.actor}; plan sha256 {b['plan_sha256'][:12]}…, "
            f"mode {b['mode']}"
            + (f", speed x{b['speed']:g}" if b["mode"] != "live" else "")
            + ("" if (b.get("approvals") or {}).get("approved") else ", UNSIGNED")
        ]
    if k == ev.EXECUTION_RESUMED:
        rec = b.get("reconcile")
        what = (
            "nothing to reconcile"
            if not rec
            else f"{rec['stage']} {'matches' if rec['matches'] else 'DOES NOT MATCH'} the ledger"
        )
        return [f"{head} resumed by {b['owner']}: {what}"]
    if k == ev.GATE_CHECKED:
        what = "preflight and rollback readiness" if b["purpose"] == "enter" else "re-check before accepting"
        return [
            f"{head} {what} for {b['stage']}: {outcome_word(b['outcome'])}",
            *_results_table(b["results"]),
        ]
    if k == ev.VERIFICATION_SAMPLED:
        line = (
            f"{head} verify {b['stage']}: {outcome_word(b['outcome'])} -> {b['reaction']} "
            f"({b['consecutive']}/{b['required']} consecutive passes)"
        )
        if b.get("gap"):
            line += f"; {gap_text(b['gap'])}"
        return [line] if b["outcome"] == "pass" else [line, *_results_table(b["results"])]
    if k == ev.HOLD_OPENED:
        card = render("hold.txt.j2", hold={**b, "id": b["hold"]}, meaning=meaning(b["kind"]))
        return [f"{head} HOLD {b['hold']} opened ({b['kind']}: {meaning(b['kind'])})", card.rstrip("\n")]
    if k == ev.RELEASE_GRANTED:
        return [f"{head} release of {b['hold']} by {entry.actor} ({b['count']} of {b['required']})"]
    if k == ev.HOLD_RELEASED:
        return [f"{head} hold {b['hold']} released by {', '.join(b['by'])}"]
    if k in ev.NO_OP_KINDS:
        return [f"{head} {k} ({entry.actor}): {b.get('reason')}"]
    if k == ev.RELEASE_NOT_CARRIED:
        return [f"{head} release not carried over: {b['why']}"]
    if k == ev.ACTION_INTENDED:
        return [f"{head} {b['direction']} {b['stage']} intended (key {b['key']})"]
    if k == ev.ACTION_SENT:
        return [f"{head} {b['direction']} {b['stage']} sent: {b['outcome']} ({b['detail']})"]
    if k == ev.ACTION_READ_BACK:
        verdict = {True: "matches", False: "does not match", None: "read failed"}[b.get("matches")]
        observed = compact_json(b.get("observed")) if b.get("observed") is not None else "nothing"
        return [f"{head} read-back {b['stage']}: {verdict} (expect {compact_json(b['expect'])}, observed {observed})"]
    if k == ev.ACTION_RESEND_INTENDED:
        return [f"{head} re-send {b['stage']} with the same key: {b['reason']}"]
    if k == ev.ACTION_CONFIRMED:
        return [f"{head} {b['direction']} {b['stage']} confirmed live"]
    if k == ev.STAGE_PASSED:
        return [f"{head} stage {b['stage']} passed ({b['basis']})"]
    if k == ev.ROLLBACK_STARTED:
        return [
            f"{head} ROLLBACK ({b['scope']}) by {entry.actor}: {b['reason']}; undo {', '.join(b['undo']) or 'nothing'}"
        ]
    if k == ev.HOLD_ESCALATED:
        return [f"{head} hold {b['hold']} expired: escalated to {_who(b.get('notify', {}))}; it stays held"]
    if k == ev.HOLD_EVIDENCE_EXPIRED:
        return [f"{head} hold {b['hold']}: evidence went stale (now v{b['evidence_version']}); a release re-checks it"]
    if k == ev.EXECUTION_COMPLETED:
        return [f"{head} COMPLETED"]
    if k == ev.EXECUTION_ROLLED_BACK:
        return [f"{head} ROLLED BACK: undone {', '.join(b['undone']) or 'nothing'}"]
    if k == ev.EXECUTION_NEEDS_HUMAN:
        return [f"{head} NEEDS HUMAN: {b['why']}"]
    if k == ev.EXECUTION_ABANDONED:
        return [f"{head} ABANDONED by {entry.actor}: {b['reason']}"]
    return [f"{head} {k} {entry.actor}"]


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
    b = entry.body
    k = entry.kind
    t = entry.ts.strftime("%H:%M:%S")
    stage = f"{b.get('stage', '')!s:<14}" if b.get("stage") else ""
    if k == ev.EXECUTION_STARTED:
        stages = " → ".join(s.id for s in state.stages)
        return [f"{t} started by {entry.actor} ({b['mode']}): {stages}"]
    if k == ev.EXECUTION_RESUMED:
        return [f"{t} resumed by {b['owner']}"]
    if k == ev.GATE_CHECKED:
        if b["outcome"] == "pass":
            return []
        return [f"{t} {stage} preflight and readiness: {outcome_word(b['outcome'])} — {_not_passing(b['results'])}"]
    if k == ev.ACTION_INTENDED:
        if b["direction"] == "rollback":
            return [f"{t} {stage} undoing"]
        radius = state.stage_def(int(b["index"])).blast_radius if state.plan is not None else None
        return [f"{t} {stage} entering" + (f" (blast radius {format_value(radius)})" if radius is not None else "")]
    if k == ev.ACTION_SENT and b["outcome"] != "ok":
        return [f"{t} {stage} {b['direction']} sent: {b['outcome']} ({b['detail']})"]
    if k == ev.ACTION_READ_BACK and b.get("matches") is not True:
        verdict = "read-back failed" if b.get("matches") is None else "read-back does not match"
        return [f"{t} {stage} {verdict} (expect {compact_json(b['expect'])})"]
    if k == ev.ACTION_CONFIRMED:
        return [f"{t} {stage} {'live, verifying' if b['direction'] == 'apply' else 'undone and confirmed'}"]
    if k == ev.VERIFICATION_SAMPLED:
        if b["outcome"] == "pass":
            if history or b.get("during_hold") or not _milestone(int(b["consecutive"]), int(b["required"])):
                return []
            done, required = int(b["consecutive"]), int(b["required"])
            return [f"{t} {stage} baking {done}/{required} {_bar(done, required)}"]
        return [f"{t} {stage} sample {outcome_word(b['outcome'])} -> {b['reaction']}: {_not_passing(b['results'])}"]
    if k == ev.STAGE_PASSED:
        basis = "verified" if b["basis"] == "verified" else f"accepted on the release of {b.get('hold')}"
        return [f"{t} {stage} passed ({basis})"]
    if k == ev.HOLD_OPENED:
        at = f" at {b['stage']}" if b.get("stage") else ""
        who = (
            f"release: {b['required']} of {_who(b.get('releasers', {}))}"
            if b.get("releasable", True)
            else "cannot be released"
        )
        return [
            f"{t} HOLD {b['hold']}{at} · {b['kind']} — {meaning(b['kind'])}",
            f"         why: {b['reason']}",
            f"         {who} · roll back: {_who(b.get('rollback_authority', {}))} · expires {format_time(b['expires_at'])}",
        ]
    if k == ev.RELEASE_GRANTED:
        return [f"{t} {b['hold']} release {b['count']} of {b['required']} by {entry.actor}"]
    if k == ev.HOLD_RELEASED:
        return [f"{t} {b['hold']} released by {', '.join(b['by'])}"]
    if k == ev.RELEASE_NOT_CARRIED:
        return [f"{t} release of {b['hold']} not carried over: {b['why']}"]
    if k == ev.HOLD_EVIDENCE_EXPIRED:
        return [] if history else [f"{t} {b['hold']} evidence went stale (now v{b['evidence_version']})"]
    if k == ev.HOLD_ESCALATED:
        return [f"{t} {b['hold']} expired: escalated to {_who(b.get('notify', {}))}; it stays held"]
    if k == ev.HOLD_REQUESTED:
        return [f"{t} hold requested by {entry.actor}: {b.get('reason')} (opens once the action resolves)"]
    if k == ev.ROLLBACK_STARTED:
        return [
            f"{t} ROLLBACK ({b['scope']}) by {entry.actor}: {b['reason']}; undo {' → '.join(b['undo']) or 'nothing'}"
        ]
    if k in ev.NO_OP_KINDS:
        return [f"{t} refused {entry.actor} ({k}): {b.get('reason')}"]
    if k == ev.EXECUTION_COMPLETED:
        return [f"{t} COMPLETED"]
    if k == ev.EXECUTION_ROLLED_BACK:
        return [f"{t} ROLLED BACK: undone {', '.join(b['undone']) or 'nothing'}"]
    if k == ev.EXECUTION_NEEDS_HUMAN:
        return [f"{t} NEEDS HUMAN: {b['why']}"]
    if k == ev.EXECUTION_ABANDONED:
        return [f"{t} ABANDONED by {entry.actor}: {b['reason']}"]
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
