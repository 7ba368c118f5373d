"""Where an execution stands, told to a person at a terminal: one word, what it waits for, the next
step and who may take it. Used by ``status``, ``list`` and ``watch`` (pure; ``now`` is passed in).

Rules:
* Never say RUNNING when nothing drives it. The ledger says what phase an execution is in; only
  its lease says whether a process is moving it. A lease handed back, never taken, or lapsed for
  longer than the engine ever waits between ticks means nobody drives it: PAUSED, and the next
  step says how to drive it on (or abandon it).
* An expired hold is shown as expired, with whether its escalation was recorded; it stays held
  (expiry escalates, it never releases).
* A ledger whose chain does not verify is TAMPERED and nothing else is said about it: a state
  folded from altered entries is not to be acted on.
* The word maps to an exit code (``bot.exits``) for commands that exit with where it stands.

Worked example: a rehearsal held at H2 (degraded) whose process ended: word HELD, code 3; next
"release H2 to accept the checkpoint, then drive it on with stagehold resume …, or roll back";
who "release: U01DANA, U02LEE, S0CAB · roll back: U03RESP, S0ONCALL".
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from bot import exits
from execution import policy
from execution.hold_kinds import meaning
from execution.project import Hold, State
from execution.protocol import scaled
from execution.transitions import Phase
from ledger.store import Lease
from templates import format_age, format_time

# A driver between ticks lets its lease lapse for at most the stage's sample interval; the
# scheduler's sweep adds up to this much before it notices a lost wake-up.
DRIVER_SLACK_S = 15.0
# A lease handed back (``let_go``) is moved this far into the past; anything older is handed back.
HANDED_BACK = timedelta(days=365)

WORD_CODE = {
    "COMPLETED": exits.OK,
    "TAMPERED": exits.TAMPERED,
    "HELD": exits.HELD,
    "NARROWED": exits.HELD,
    "PAUSED": exits.HELD,
    "ROLLED BACK": exits.ROLLED_BACK,
    "NEEDS HUMAN": exits.NEEDS_HUMAN,
    "ABANDONED": exits.ABANDONED,
}


@dataclass(frozen=True)
class Driver:
    """Whether a process is moving the execution, in words."""

    driven: bool
    detail: str


@dataclass(frozen=True)
class View:
    word: str  # RUNNING, PAUSED, HELD, NARROWED, COMPLETED, ROLLED BACK, NEEDS HUMAN, ABANDONED, TAMPERED
    stage: str | None  # the stage in focus
    driver: Driver | None
    hold_lines: tuple[str, ...]
    next_step: str
    who: str

    @property
    def code(self) -> int | None:
        """The exit code this standing means; None while it is moving (RUNNING)."""
        return WORD_CODE.get(self.word)


def _who(users: list[str] | tuple[str, ...], groups: list[str] | tuple[str, ...]) -> str:
    return ", ".join([*users, *groups]) or "nobody"


def stage_in_focus(state: State) -> str | None:
    if state.hold is not None and state.hold.stage:
        return state.hold.stage
    if not state.stages:
        return None
    if state.phase == Phase.ROLLING_BACK and state.pending is not None:
        return state.pending.stage
    if state.phase == Phase.COMPLETED:
        return state.stages[-1].id
    return state.stages[min(state.current, len(state.stages) - 1)].id


def _wait_s(state: State) -> float:
    """The longest the engine waits between two ticks of this execution when nothing is wrong."""
    if state.plan is None or not state.stages:
        return 0.0
    index = min(state.current, len(state.stages) - 1)
    return scaled(state, state.stage_def(index).verify.every)


def driver(state: State, lease: Lease | None, now: datetime) -> Driver:
    """Is a process driving this execution right now?

    Example: a lease of ``host:42:ab12`` valid until a minute from now -> driven, "driven by
    host:42:ab12". A lease handed back when ``rehearse`` ended -> not driven.
    """
    if lease is None:
        return Driver(False, "no process has taken it over since it was recorded")
    if lease.expires_at > now:
        return Driver(True, f"driven by {lease.owner}")
    if lease.expires_at < now - HANDED_BACK:
        return Driver(False, f"nobody is driving it: {lease.owner} let it go")
    lapsed = (now - lease.expires_at).total_seconds()
    if lapsed <= _wait_s(state) + DRIVER_SLACK_S:
        return Driver(True, f"driven by {lease.owner} (between ticks)")
    return Driver(False, f"nobody is driving it: the lease of {lease.owner} lapsed {format_age(lapsed)} ago")


def _hold_lines(state: State, hold: Hold, drv: Driver, now: datetime) -> tuple[str, ...]:
    rb = policy.rollback_authority(state)
    lines = [f"hold {hold.id} · {hold.kind} — {meaning(hold.kind)}", f"why: {hold.reason}"]
    opened = f"opened {format_time(hold.opened_at)} by {hold.opened_by}"
    if now >= hold.expires_at:
        ago = format_age((now - hold.expires_at).total_seconds())
        if hold.escalated:
            after = f"escalated to the rollback authority ({_who(rb['users'], rb['groups'])}); it stays held"
        elif drv.driven:
            after = "escalating to the rollback authority; it stays held"
        else:
            after = "not escalated: nothing has driven this execution since; it stays held"
        lines.append(f"{opened} · EXPIRED {format_time(hold.expires_at)} ({ago} ago): {after}")
    else:
        left = format_age((hold.expires_at - now).total_seconds())
        lines.append(f"{opened} · expires {format_time(hold.expires_at)} (in {left}), then escalates")
    stale = hold.evidence_stale or (hold.evidence_expires_at is not None and now >= hold.evidence_expires_at)
    if hold.releasable:
        given = hold.current_releases()
        by = f" (so far: {', '.join(r.user for r in given)})" if given else ""
        note = "; its evidence is stale: a release re-checks live evidence before anything moves" if stale else ""
        lines.append(f"releases: {len(given)} of {hold.required} on evidence v{hold.evidence_version}{by}{note}")
    else:
        lines.append("this hold cannot be released: roll back, or let it stand")
    return tuple(lines)


def _command(state: State, verb: str, extra: str = "") -> str:
    return f"stagehold {verb} {state.execution_id}{extra}"


def _held_next(state: State, hold: Hold) -> tuple[str, str]:
    rb = policy.rollback_authority(state)
    rollback_who = _who(rb["users"], rb["groups"])
    if state.mode == "live":
        channel = state.package.channel if state.package is not None else "the change channel"
        where = f"from the hold card in Slack ({channel}) or /stagehold"
        if not hold.releasable:
            return f"roll back {where}", f"roll back: {rollback_who}"
        releasers = _who(hold.releasers.get("users", []), hold.releasers.get("groups", []))
        return (
            f"release {hold.id} or roll back {where}; the running bot drives it on",
            f"release: {releasers} · roll back: {rollback_who}",
        )
    rollback = _command(state, "rollback", " --as USER --reason TEXT")
    resume = _command(state, "resume", " --sandbox URL")
    if not hold.releasable:
        return f"roll back: {rollback}, then drive it on: {resume}", f"roll back: {rollback_who}"
    releasers = _who(hold.releasers.get("users", []), hold.releasers.get("groups", []))
    more = hold.required - len(hold.current_releases())
    return (
        f"release {hold.id} ({more} more release{'s' if more != 1 else ''} needed): "
        f"{_command(state, 'release', ' --as USER')}, then drive it on: {resume}; or roll back: {rollback}",
        f"release: {releasers} · roll back: {rollback_who}",
    )


def _paused_next(state: State) -> tuple[str, str]:
    assert state.package is not None
    auth = state.package.authorities
    abandoners = _who([*auth.initiate.users, *auth.rollback.users], [*auth.initiate.groups, *auth.rollback.groups])
    doubt = (
        "an action's outcome is unresolved; resuming reads the target back before anything else. "
        if state.pending is not None
        else ""
    )
    if state.mode == "live":
        return (
            f"{doubt}start `stagehold serve` (it resumes every unfinished execution) or run "
            f"{_command(state, 'resume')} with the role credentials set",
            "whoever operates stagehold for this change",
        )
    return (
        f"{doubt}drive it on against the sandbox it ran on: {_command(state, 'resume', ' --sandbox URL')}; "
        f"or, if nobody will finish it: {_command(state, 'abandon', ' --as USER --reason TEXT')}",
        f"resume: anyone with the ledger · abandon: {abandoners}",
    )


def view(state: State, lease: Lease | None, now: datetime) -> View:
    """Where ``state`` stands at ``now``, given the lease row of its execution (or None)."""
    assert state.package is not None
    auth = state.package.authorities
    stage = stage_in_focus(state)
    status = state.status()
    if state.terminal:
        if status == "completed":
            return View("COMPLETED", stage, None, (), "nothing: the record is final", "nobody")
        if status == "rolled_back":
            return View(
                "ROLLED BACK",
                stage,
                None,
                (),
                "confirm the restored state on the live system; start a new execution once the cause is fixed",
                f"confirm: {_who(auth.rollback.users, auth.rollback.groups)} · start again: "
                f"{_who(auth.initiate.users, auth.initiate.groups)}",
            )
        if status == "abandoned":
            return View(
                "ABANDONED",
                stage,
                None,
                (),
                f"nothing: a new {'rehearsal' if state.mode != 'live' else 'execution'} of "
                f"{state.package.id} may start",
                f"start: {_who(auth.initiate.users, auth.initiate.groups)}",
            )
        return View(
            "NEEDS HUMAN",
            stage,
            None,
            (),
            f"take over by hand: {_command(state, 'packet')} says what is live and what to confirm",
            f"{_who(auth.rollback.users, auth.rollback.groups)} (rollback authority)",
        )
    drv = driver(state, lease, now)
    hold = state.hold
    if hold is not None:
        step, who = _held_next(state, hold)
        return View("NARROWED" if state.narrowed else "HELD", stage, drv, _hold_lines(state, hold, drv, now), step, who)
    if not drv.driven:
        step, who = _paused_next(state)
        return View("PAUSED", stage, drv, (), step, who)
    operators = _who(
        sorted({*auth.operators.users, *auth.initiate.users, *auth.release.users, *auth.rollback.users}),
        sorted({*auth.operators.groups, *auth.initiate.groups, *auth.release.groups, *auth.rollback.groups}),
    )
    return View(
        "RUNNING",
        stage,
        drv,
        (),
        f"nothing yet: follow it with {_command(state, 'watch')}; any listed person may hold it",
        f"hold: {operators}",
    )


def tampered(execution_id: str, where: str) -> View:
    return View(
        "TAMPERED",
        None,
        None,
        (f"ledger: {where}",),
        f"do not act on {execution_id}: compare it with a saved checkpoint "
        f"(stagehold ledger verify {execution_id} --head FILE) or an export, and find out who changed the database",
        "whoever audits the ledger database",
    )
