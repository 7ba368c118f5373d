"""The three outputs, each built from the ledger alone (pure).

* ``state_record``: the checkpointed execution state record — stages and their status, holds and
  who released them, rollback outcome, the live state confirmed at each checkpoint.
* the ledger export is ``Entry.to_json`` per line (see ``ledger``).
* ``intervention_packet``: when progression stopped — why, what is live now, which rollback path
  remains, what a human must confirm next.

The final status is one of: completed, held, narrowed, rolled_back, needs_human (or running).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from execution import events as ev
from execution import policy
from execution.project import State
from ledger.chain import format_ts
from ledger.entry import Entry


def _ts(value: Any) -> str | None:
    return format_ts(value) if value is not None else None


def _confirmed_states(entries: Sequence[Entry]) -> dict[tuple[str, str], Any]:
    """The observed live state of each confirmed action, keyed by (stage, direction)."""
    out: dict[tuple[str, str], Any] = {}
    for e in entries:
        if e.kind == ev.ACTION_CONFIRMED:
            out[(e.body["stage"], e.body["direction"])] = {"observed": e.body.get("observed"), "at": format_ts(e.ts)}
    return out


def _bake_gaps(entries: Sequence[Entry], stage: str) -> list[dict[str, Any]]:
    """Every gap that restarted this stage's bake, with when it was noticed."""
    return [
        {"at": format_ts(e.ts), **e.body["gap"]}
        for e in entries
        if e.kind == ev.VERIFICATION_SAMPLED and e.body.get("stage") == stage and e.body.get("gap")
    ]


def _bake(entries: Sequence[Entry], stage: str | None) -> dict[str, Any] | None:
    """Where the stage's bake stands: the latest streak and every gap that restarted it."""
    samples = [
        e
        for e in entries
        if e.kind == ev.VERIFICATION_SAMPLED and e.body.get("stage") == stage and not e.body.get("during_hold")
    ]
    if stage is None or not samples:
        return None
    last = samples[-1].body
    return {
        "stage": stage,
        "consecutive": last.get("consecutive"),
        "required": last.get("required"),
        "gaps": _bake_gaps(entries, stage),
    }


def approval(state: State) -> dict[str, Any]:
    """``signed`` with who signed, or ``UNSIGNED`` (a rehearsal started without its approvals)."""
    record = dict(state.approvals or {})
    return {"status": "UNSIGNED" if state.unsigned else "signed", **record}


def state_record(state: State, entries: Sequence[Entry]) -> dict[str, Any]:
    assert state.package is not None and state.plan is not None
    confirmed = _confirmed_states(entries)
    stages = []
    for s in state.stages:
        d = state.stage_def(s.index)
        entry_hold = state.holds.get(s.entry_hold or "")
        passed_hold = state.holds.get(s.passed_hold or "")
        stages.append(
            {
                "id": s.id,
                "blast_radius": d.blast_radius,
                "protected": d.hold_before,
                "irreversible": d.irreversible,
                "status": s.status,
                "attempts": s.attempts,
                "applied_at": _ts(s.applied_at),
                "passed_at": _ts(s.passed_at),
                "passed_basis": s.passed_basis,
                "entered_on_release": (
                    {"hold": entry_hold.id, "released_by": list(entry_hold.released_by)} if entry_hold else None
                ),
                "accepted_on_release": (
                    {"hold": passed_hold.id, "released_by": list(passed_hold.released_by)} if passed_hold else None
                ),
                "live_state_confirmed": confirmed.get((s.id, "apply")),
                "rollback_confirmed": confirmed.get((s.id, "rollback")),
                "bake_gaps": _bake_gaps(entries, s.id),
            }
        )
    holds = [
        {
            "id": h.id,
            "stage": h.stage,
            "kind": h.kind,
            "reason": h.reason,
            "opened_at": _ts(h.opened_at),
            "status": h.status,
            "required_releases": h.required,
            "releases": [{"user": r.user, "at": _ts(r.at), "evidence_version": r.evidence_version} for r in h.releases],
            "released_by": list(h.released_by),
            "released_at": _ts(h.released_at),
            "expires_at": _ts(h.expires_at),
            "escalated": h.escalated,
            "evidence_version": h.evidence_version,
        }
        for h in state.holds.values()
    ]
    rollback = None
    if state.rollback is not None or any(s.status == "rolled_back" for s in state.stages):
        rb = state.rollback
        rollback = {
            "trigger": rb.trigger if rb else "narrowing",
            "reason": rb.reason if rb else "",
            "scope": rb.scope if rb else "narrow",
            "requested_by": rb.requested_by if rb else None,
            "undo": list(rb.undo) if rb else [s.id for s in state.stages if s.status == "rolled_back"],
            "undone": [s.id for s in state.stages if s.status == "rolled_back"],
            "outcome": {
                "rolled_back": "completed",
                "needs_human": "failed",
            }.get(state.status(), "in progress" if state.phase.value == "rolling_back" else "partial"),
        }
    denied = [
        {"seq": e.seq, "kind": e.kind, "actor": e.actor, "at": format_ts(e.ts), "reason": e.body.get("reason")}
        for e in entries
        if e.kind in ev.NO_OP_KINDS
    ]
    return {
        "execution": state.execution_id,
        "change": {"id": state.package.id, "title": state.package.title, "channel": state.package.channel},
        "plan": {"name": state.plan.name, "version": state.plan.version, "sha256": state.plan_sha256},
        "mode": state.mode,
        "approval": approval(state),
        "speed": state.speed,
        "initiator": state.initiator,
        "started_at": _ts(state.started_at),
        "status": state.status(),
        "phase": state.phase.value,
        "reason": state.outcome_reason or (state.hold.reason if state.hold else ""),
        "blast_radius_reached": state.blast_radius_reached(),
        "fallback_retired": state.fallback_retired,
        "stages": stages,
        "holds": holds,
        "rollback": rollback,
        "denied_or_ignored_attempts": denied,
        "ledger": {"entries": state.seq, "head": entries[-1].hash if entries else None},
    }


def _last_read_back(entries: Sequence[Entry], key: str) -> Entry | None:
    for e in reversed(entries):
        if e.kind == ev.ACTION_READ_BACK and e.body.get("key") == key:
            return e
    return None


def _live_now(state: State, entries: Sequence[Entry]) -> dict[str, Any]:
    """What may be live on the target now (DESIGN §3 rule 12: never less than the last read-back showed).

    A stage counts as live until its undo is confirmed (``State.live_stages``). An action still
    unresolved is reported by what its latest read-back proved: ``action_not_applied`` when the
    read-back showed the old state (the stage it was meant to change is as it was), otherwise
    ``action_in_doubt`` (sent, outcome unknown).

    Example: canary-5 passed, canary-25's rollback rejected and read back as ``{"tokenizer": 25}``
    -> stages_live ``["canary-5", "canary-25"]``, blast_radius 25, action_not_applied names the
    rollback of canary-25 with the observed ``{"tokenizer": 25}``.
    """
    confirmed = _confirmed_states(entries)
    last = state.last_confirmed
    observed = None
    if last is not None:
        observed = confirmed.get((state.stage_def(last[0]).id, last[1]))
    p = state.pending
    in_doubt = not_applied = None
    if p is not None:
        action = {"stage": p.stage, "direction": p.direction, "key": p.key}
        read = _last_read_back(entries, p.key)
        if p.readback == "mismatch" and read is not None:
            not_applied = {**action, "observed": read.body.get("observed"), "read_back_at": format_ts(read.ts)}
        else:
            in_doubt = action
    return {
        "stages_live": [s.id for s in state.live_stages()],
        "blast_radius": state.blast_radius_reached(),
        "last_confirmed": (
            {"stage": state.stage_def(last[0]).id, "direction": last[1], **(observed or {})} if last else None
        ),
        "action_in_doubt": in_doubt,
        "action_not_applied": not_applied,
        "fallback_retired": state.fallback_retired,
    }


_CONFIRM_NEXT = {
    "protected": "Review the evidence for entering '{stage}' and release it, or order a rollback.",
    "degraded": "Decide whether the degraded evidence at '{stage}' is acceptable (release accepts this checkpoint) or roll back.",
    "conflicting": "Reconcile the disagreeing signals at '{stage}'; release resumes verification, rollback restores the previous tier.",
    "no_data": "Find out why signals for '{stage}' have no data; missing data never counts as a pass.",
    "stale": "Find out why evidence for '{stage}' is stale; stale evidence is never used.",
    "error": "Fix the signal read errors for '{stage}' before anything continues.",
    "fail": "Checks at '{stage}' fail and the plan asks a human: order a rollback, or keep it frozen while you investigate.",
    "preflight": "Preflight for '{stage}' does not pass: fix the dependency, then release to re-check.",
    "readiness_lost": "Restore the way back (rollback readiness) before anything expands, or roll back while it still works.",
    "rollback_unsafe": "Checks call for rollback but the way back is not ready: decide how to restore service.",
    "ambiguous": "Check the live state of the target of '{stage}': the action's outcome is unknown. Release re-reads it.",
    "not_applied": "The action for '{stage}' did not take effect: check the control plane, then release to re-read or roll back.",
    "window_closed": "The change window closed: roll back, or obtain a new approved package to continue.",
    "manual": "A person placed this hold: confirm with them before releasing.",
    "narrowed": "'{stage}' was narrowed back after bad evidence: confirm the restored tier, then re-enter or roll back.",
    "reconcile_mismatch": "On restart the live state did not match the ledger for '{stage}': confirm which is right.",
}


def intervention_packet(state: State, entries: Sequence[Entry]) -> dict[str, Any] | None:
    """The handoff when progression stops; None while it is still progressing or completed."""
    status = state.status()
    if status in ("running", "completed"):
        return None
    assert state.package is not None
    hold = state.hold
    stage_id = hold.stage if hold else state.outcome_stage or (state.pending.stage if state.pending else None)
    if stage_id is None and state.stages:
        stage_id = state.stages[min(state.current, len(state.stages) - 1)].id
    if hold is not None:
        why = hold.reason
        confirm = _CONFIRM_NEXT.get(hold.kind, "Review the hold and decide.").format(stage=stage_id)
        evidence = list(hold.results)
    elif status == "rolled_back":
        rb = state.rollback
        why = f"rolled back: {rb.reason}" if rb else "rolled back"
        confirm = "Confirm the restored state on the live system and close the change as rolled back."
        evidence = _last_evidence(entries)
    else:
        why = state.outcome_reason or "a human must take over"
        confirm = "Take over: confirm the live state of every target by hand; automation has stopped."
        evidence = _last_evidence(entries)
    auth = policy.rollback_authority(state)
    return {
        "execution": state.execution_id,
        "change": state.package.id,
        "title": state.package.title,
        "approval": approval(state),
        "status": status,
        "stage": stage_id,
        "why": why,
        "hold": (
            {
                "id": hold.id,
                "kind": hold.kind,
                "opened_at": _ts(hold.opened_at),
                "expires_at": _ts(hold.expires_at),
                "evidence_version": hold.evidence_version,
                "evidence_stale": hold.evidence_stale,
                "releases": f"{len(hold.current_releases())} of {hold.required}",
                "releasable": hold.releasable,
                "who_may_release": hold.releasers,
            }
            if hold
            else None
        ),
        "live_now": _live_now(state, entries),
        "bake": _bake(entries, stage_id),
        "rollback_path": policy.rollback_path(state) if status != "rolled_back" else "already rolled back",
        "who_may_roll_back": auth,
        "evidence": evidence,
        "confirm_next": confirm,
        "ledger": {"entries": state.seq, "head": entries[-1].hash if entries else None},
    }


def _last_evidence(entries: Sequence[Entry]) -> list[Any]:
    for e in reversed(entries):
        if e.kind in (ev.VERIFICATION_SAMPLED, ev.GATE_CHECKED):
            return list(e.body.get("results", []))
    return []
