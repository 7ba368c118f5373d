"""Human commands as pure decisions: start, release, rollback, hold, abandon.

Each takes the state folded from the ledger, who is asking (user id and the user groups they
belong to), and ``now``; each returns a ``Decision`` whose entries the shell appends, as every
pure decision does. Refusals are entries too: every denied or ignored attempt is recorded, so
the ledger shows who tried what. The rules that guard a command live here too: one unfinished
execution of a change per mode (``start``), and a button bound to its hold's stage
(``button_binds``).

Worked example: ``release(state, "H2", 1, "U05OPS", (), now)`` where U05OPS started the execution
under two-person control returns one ``release.denied`` entry ("the initiator cannot release");
the state's phase is unchanged.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta
from typing import Any

from execution import events as ev
from execution import policy
from execution.contract.load import LoadedChange
from execution.decide import Decision, open_hold, start_rollback
from execution.events import HoldKind, Resume, Scope
from execution.project import State
from execution.transitions import Phase
from ledger.chain import format_ts
from ledger.masking import mask


class StartRefused(Exception):
    """The change may not start now; the message says why in one line."""


def start(
    change: LoadedChange,
    initiator: str,
    groups: Iterable[str],
    now: datetime,
    *,
    mode: str = "live",
    speed: float = 1.0,
    approvals: Mapping[str, Any] | None = None,
    others: Iterable[State] = (),
) -> Decision:
    """The first entry of an execution, or ``StartRefused``.

    ``others`` are the change's other executions that must be finished first (the shell passes
    none for a rehearsal on a private sandbox): one live execution per change, and one rehearsal
    per change on a shared sandbox; rehearsals never block a live execution, nor the reverse.

    ``approvals`` is what the signed approvals showed (``ApprovalReport.record()``), kept in the
    entry; the shell refuses a live start without them before it gets here.

    A live execution starts only inside the package's window. A rehearsal re-bases the window
    to start now, keeping its length divided by the rehearsal speed.
    """
    pkg = change.package
    for other in others:
        if not other.terminal and other.mode == mode:
            what = "a running execution" if mode == "live" else "an unfinished rehearsal"
            raise StartRefused(f"{pkg.id} already has {what}: {other.execution_id}")
    if not policy.is_member(initiator, groups, pkg.authorities.initiate):
        raise StartRefused(f"{initiator} may not start {pkg.id}: not in its initiate authority")
    if mode == "live":
        if speed != 1.0:
            raise StartRefused("a live execution runs in real time; speed applies to rehearsals only")
        if now < pkg.window.opens:
            raise StartRefused(f"{pkg.id}: the change window opens at {format_ts(pkg.window.opens)}; not before")
        if now >= pkg.window.closes:
            raise StartRefused(f"{pkg.id}: the change window closed at {format_ts(pkg.window.closes)}")
        opens, closes = pkg.window.opens, pkg.window.closes
    else:
        length = (pkg.window.closes - pkg.window.opens).total_seconds() / speed
        opens, closes = now, now + timedelta(seconds=length)
    plan_data = change.plan_data()
    if mask(plan_data, change.plan.sensitive_fields) != plan_data:
        raise StartRefused(
            f"{pkg.id}: the plan contains values that look like secrets or account numbers; "
            "credentials belong in settings, not in plans"
        )
    started = ev.ExecutionStarted(
        change_id=pkg.id,
        title=pkg.title,
        package=change.package_data(),
        plan=plan_data,
        plan_sha256=change.plan_sha256,
        channel=pkg.channel,
        mode=mode,
        speed=speed,
        window={"opens": format_ts(opens), "closes": format_ts(closes)},
        initiator=initiator,
        approvals=dict(approvals) if approvals is not None else None,
    )
    return Decision((ev.record(started, initiator, now),))


def button_binds(state: State, hold_id: str, stage: str | None) -> bool:
    """A button carries its execution, hold and stage: it binds only to an execution the ledger
    holds, and only if that hold (when the ledger has it) is at that stage. A value naming hold H
    at another stage was not written by stagehold; nothing is recorded for it.

    Example: H2 opened at canary-25; a button for (H2, canary-25) binds, one for (H2, full) does
    not; one for H7, which the ledger has not opened, binds (the release then says "no hold H7").
    """
    if state.plan is None or state.package is None:
        return False
    hold = state.holds.get(hold_id)
    return hold is None or hold.stage == stage


def release(
    state: State, hold_id: str, evidence_version: int, user: str, groups: Iterable[str], now: datetime
) -> Decision:
    """A named authority releases one specific hold, bound to one evidence version (single use)."""
    groups = tuple(groups)
    hold = state.holds.get(hold_id)

    def ignored(reason: str, **extra: Any) -> Decision:
        event = ev.ReleaseIgnored(hold=hold_id, evidence_version=evidence_version, reason=reason, **extra)
        return Decision((ev.record(event, user, now),))

    def denied(reason: str) -> Decision:
        event = ev.ReleaseDenied(hold=hold_id, evidence_version=evidence_version, reason=reason)
        return Decision((ev.record(event, user, now),))

    if state.plan is None:
        return ignored("no such execution")
    refusal = policy.release_refusal(state, user, groups)
    if refusal:
        return denied(refusal)
    if state.terminal:
        return ignored(f"the execution is {state.status()}")
    if hold is None:
        return ignored(f"no hold {hold_id} in this execution")
    if hold.status == "released":
        when = format_ts(hold.released_at) if hold.released_at else "earlier"
        return ignored(
            f"{hold_id} was already released by {', '.join(hold.released_by)} at {when}",
            released_by=hold.released_by,
            released_at=when,
        )
    if hold.status != "open":
        current = f"; the current hold is {state.open_hold}" if state.open_hold else ""
        return ignored(f"{hold_id} was {hold.status}{current}")
    if evidence_version != hold.evidence_version:
        why = "went stale" if hold.evidence_stale else "changed"
        return ignored(
            f"the evidence of {hold_id} {why} since this button was shown (v{evidence_version} -> "
            f"v{hold.evidence_version}); use the refreshed card"
        )
    if not hold.releasable:
        return denied(f"a {hold.kind} hold cannot be released: {hold.reason}; roll back or let it stand")
    given = hold.current_releases()
    if any(r.user == user for r in given):
        return ignored(
            f"{user} already released {hold_id}; {hold.required - len(given)} more distinct releaser(s) needed"
        )
    count = len(given) + 1
    granted = ev.ReleaseGranted(hold=hold_id, evidence_version=evidence_version, count=count, required=hold.required)
    if count < hold.required:
        return Decision((ev.record(granted, user, now),))
    by = (*(r.user for r in given), user)
    released = ev.HoldReleased(hold=hold_id, by=by, resume=hold.resume)
    return Decision((ev.record(granted, user, now), ev.record(released, user, now)))


def repeated_release(
    hold_id: str, evidence_version: int, user: str, repeats: int, first_at: datetime, last_at: datetime, now: datetime
) -> Decision:
    """A person's repeated clicks on one Release button, counted after a first click that already
    decided them (released or ignored): one record of them all, changing nothing."""
    first, last = format_ts(first_at), format_ts(last_at)
    counted = ev.ReleaseIgnored(
        hold=hold_id,
        evidence_version=evidence_version,
        reason=f"{repeats} repeated click(s) on the same Release button between {first} and {last}; "
        "the first click's outcome stands",
        repeats=repeats,
        first_at=first,
        last_at=last,
    )
    return Decision((ev.record(counted, user, now),))


def rollback(state: State, user: str, groups: Iterable[str], reason: str, now: datetime) -> Decision:
    """A rollback authority orders the way back; release authority alone is not enough."""
    groups = tuple(groups)
    if state.plan is None:
        return Decision((ev.record(ev.RollbackDenied(reason="no such execution"), user, now),))
    refusal = policy.rollback_refusal(state, user, groups)
    if refusal:
        return Decision((ev.record(ev.RollbackDenied(reason=refusal), user, now),))
    if state.terminal:
        return Decision((ev.record(ev.RollbackDenied(reason=f"the execution is already {state.status()}"), user, now),))
    if state.phase == Phase.ROLLING_BACK:
        assert state.rollback is not None
        why = f"a rollback is already in progress (ordered by {state.rollback.requested_by})"
        return Decision((ev.record(ev.RollbackDenied(reason=why), user, now),))
    return start_rollback(state, now, user, "manual", reason or "rollback ordered", Scope.FULL)


def hold(state: State, user: str, groups: Iterable[str], reason: str, now: datetime) -> Decision:
    """Any listed operator may stop progression at any time."""
    groups = tuple(groups)
    if state.plan is None:
        return Decision((ev.record(ev.HoldDenied(reason="no such execution"), user, now),))
    if not policy.is_operator(state, user, groups):
        assert state.package is not None
        return Decision((ev.record(ev.HoldDenied(reason=f"{user} is not listed for {state.package.id}"), user, now),))
    reason = reason or "manual hold"
    if state.terminal:
        return Decision((ev.record(ev.HoldIgnored(reason=f"the execution is already {state.status()}"), user, now),))
    if state.phase == Phase.HOLDING:
        held = state.hold
        assert held is not None
        return Decision((ev.record(ev.HoldIgnored(reason=f"already held at {held.id}: {held.reason}"), user, now),))
    if state.phase == Phase.ROLLING_BACK:
        return Decision((ev.record(ev.HoldIgnored(reason="a rollback in progress is finished, not held"), user, now),))
    if state.phase == Phase.APPLYING:
        # The action in flight is resolved first (read back); the hold opens right after.
        return Decision((ev.record(ev.HoldRequested(reason=reason), user, now),))
    index = min(state.current, len(state.stages) - 1)
    manual = open_hold(
        state,
        now,
        user,
        kind=HoldKind.MANUAL,
        reason=f"manual hold by {user}: {reason}",
        index=index,
        results=[],
        resume=Resume.RESUME,
    )
    return Decision((manual,))


def abandon(state: State, user: str, groups: Iterable[str], reason: str, now: datetime) -> Decision:
    """End an execution nobody will finish, with a reason, so its change is free to start again.

    Only people who start the change (initiate authority) or own its way back (rollback authority)
    may abandon it. Nothing is undone: the ledger keeps what the last read-back showed, and the
    record says who abandoned it and why. A reason is required: "nobody will finish this" is a
    decision someone must own.

    Worked example: a rehearsal held at H2 since yesterday, ``abandon(state, "U05OPS", (),
    "sandbox torn down", now)`` returns one ``execution.abandoned`` entry; the fold closes H2 and
    the phase becomes ABANDONED (terminal), so a new rehearsal of the change may start.
    """
    groups = tuple(groups)
    if state.plan is None or state.package is None:
        return Decision((ev.record(ev.AbandonDenied(reason="no such execution"), user, now),))
    auth = state.package.authorities
    if not (policy.is_member(user, groups, auth.initiate) or policy.is_member(user, groups, auth.rollback)):
        why = f"{user} may not abandon {state.package.id}: only its initiate or rollback authority may"
        return Decision((ev.record(ev.AbandonDenied(reason=why), user, now),))
    if state.terminal:
        return Decision((ev.record(ev.AbandonDenied(reason=f"the execution is already {state.status()}"), user, now),))
    if not reason.strip():
        return Decision(
            (ev.record(ev.AbandonDenied(reason="a reason is required to abandon an execution"), user, now),)
        )
    held = state.hold
    abandoned = ev.ExecutionAbandoned(
        reason=reason.strip(), phase=state.phase.value, hold=held.id if held is not None else None
    )
    return Decision((ev.record(abandoned, user, now),))
