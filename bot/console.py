"""Human-readable progress lines for the terminal, one or more per ledger entry."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any, TextIO

from execution import events as ev
from ledger.entry import Entry
from templates import format_value, render


def _results_table(results: Sequence[dict[str, Any]]) -> list[str]:
    lines = []
    for r in results:
        age = f"{r['age_s']:.1f}s" if r.get("age_s") is not None else "—"
        band = f" (hold {r['hold_band']})" if r.get("hold_band") else ""
        samples = r.get("samples") if r.get("samples") is not None else "—"
        lines.append(
            f"      {r['kind']:<9} {r['signal']:<22} {format_value(r.get('value')):<10} "
            f"{(r['condition'] + band):<28} age {age:<7} samples {samples!s:<6} -> {r['outcome']}"
        )
    return lines


def describe(entry: Entry) -> list[str]:
    b = entry.body
    t = entry.ts.strftime("%H:%M:%S.%f")[:-3]
    head = f"{t} #{entry.seq:<4}"
    k = entry.kind
    if k == ev.EXECUTION_STARTED:
        return [
            f"{head} started {b['change_id']} ({b['title']}) by {entry.actor}; plan sha256 {b['plan_sha256'][:12]}…, "
            f"mode {b['mode']}" + (f", speed x{b['speed']:g}" if b["mode"] != "live" else "")
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
        return [
            f"{head} preflight+readiness for {b['stage']} ({b['purpose']}): {b['outcome']}",
            *_results_table(b["results"]),
        ]
    if k == ev.VERIFICATION_SAMPLED:
        line = f"{head} verify {b['stage']}: {b['outcome']} -> {b['reaction']} ({b['consecutive']}/{b['required']} consecutive passes)"
        return [line] if b["outcome"] == "pass" else [line, *_results_table(b["results"])]
    if k == ev.HOLD_OPENED:
        card = render("hold.txt.j2", hold={**b, "id": b["hold"]})
        return [f"{head} HOLD {b['hold']} opened ({b['kind']})", card.rstrip("\n")]
    if k in (ev.RELEASE_GRANTED,):
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
        return [f"{head} read-back {b['stage']}: {verdict} (expect {b['expect']}, observed {b.get('observed')})"]
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
    if k == ev.EXECUTION_COMPLETED:
        return [f"{head} COMPLETED"]
    if k == ev.EXECUTION_ROLLED_BACK:
        return [f"{head} ROLLED BACK: undone {', '.join(b['undone']) or 'nothing'}"]
    if k == ev.EXECUTION_NEEDS_HUMAN:
        return [f"{head} NEEDS HUMAN: {b['why']}"]
    return [f"{head} {k} {entry.actor}"]


class ConsolePrinter:
    """An engine listener printing progress as entries land."""

    def __init__(self, out: TextIO | None = None) -> None:
        self.out = out or sys.stdout

    def __call__(self, execution_id: str, entries: Sequence[Entry]) -> None:
        for entry in entries:
            for line in describe(entry):
                print(line, file=self.out, flush=True)
