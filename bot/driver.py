"""Foreground driving for the command line: tick until the execution stops or needs a human.

Used by ``rehearse``, ``run`` and ``resume``. A foreground run stops at a hold (exit 3) unless
``--auto-release`` is given for a rehearsal, which releases routine protected holds as the
package's authorities would: distinct named people, never the initiator, and only when every
piece of evidence on the hold passes. Evidence-driven holds always stop the run.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable, Sequence
from datetime import timedelta

from sqlalchemy.exc import InterfaceError, OperationalError

from bot import exits
from execution.project import Hold, State
from execution.service import Engine
from execution.transitions import Phase
from ledger.entry import Entry

# How long a foreground run waits for an unreachable ledger database before it gives up.
DATABASE_OUTAGE_S = 300.0

EXIT_BY_STATUS = {
    "completed": exits.OK,
    "held": exits.HELD,
    "narrowed": exits.HELD,
    "rolled_back": exits.ROLLED_BACK,
    "needs_human": exits.NEEDS_HUMAN,
    "abandoned": exits.ABANDONED,
}


def auto_releasers(state: State, hold: Hold) -> list[tuple[str, tuple[str, ...]]]:
    """Who would release ``hold``: distinct listed users first, then members of listed groups."""
    assert state.package is not None
    auth = state.package.authorities
    people: list[tuple[str, tuple[str, ...]]] = [
        (u, ()) for u in auth.release.users if not (auth.two_person and u == state.initiator)
    ]
    people += [(f"U0REHEARSAL{i}", (g,)) for i, g in enumerate(auth.release.groups)]
    already = {r.user for r in hold.current_releases()}
    return [p for p in people if p[0] not in already][: max(0, hold.required - len(already))]


def releasable_by_rehearsal(hold: Hold) -> bool:
    # Evidence that merely aged past max_age (``evidence_stale``) does not stop a routine release:
    # the release is given on the current evidence version and the gate re-reads live evidence
    # before entering, so a change of category still holds again. Requiring unexpired evidence
    # here made compressed rehearsals stop at random whenever the driver was slower than max_age
    # divided by the speed (50 ms at x600).
    return hold.kind == "protected" and hold.releasable and all(r.get("outcome") == "pass" for r in hold.results)


def drive(
    engine: Engine,
    execution_id: str,
    *,
    auto_release: bool = False,
    sleep: Callable[[float], None] = time.sleep,
    on_release: Callable[[str, Sequence[Entry]], None] | None = None,
) -> State:
    # The lease is renewed beside the ticks, so a tick waiting on a slow action never lets it lapse.
    stop = threading.Event()
    renewer = threading.Thread(target=_renew, args=(engine, stop), name="stagehold-lease-renewal", daemon=True)
    renewer.start()
    try:
        return _drive(engine, execution_id, auto_release, sleep)
    finally:
        stop.set()


def _renew(engine: Engine, stop: threading.Event) -> None:
    while not stop.wait(engine.lease_ttl_s / 3):
        engine.renew_leases()


def _drive(engine: Engine, execution_id: str, auto_release: bool, sleep: Callable[[float], None]) -> State:
    outage_since: float | None = None
    while True:
        try:
            wake = engine.tick(execution_id)
            state = engine.load(execution_id)
        except (OperationalError, InterfaceError) as exc:
            # The database went away (a restart, a failover): nothing is acted on without a ledger
            # append, so wait for it and decide again; give up only after a long outage.
            now_s = time.monotonic()
            outage_since = outage_since or now_s
            if now_s - outage_since > DATABASE_OUTAGE_S:
                raise
            first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            print(f"stagehold: the ledger database does not answer ({first[:200]}); retrying", file=sys.stderr)
            sleep(1.0)
            continue
        outage_since = None
        if state.plan is None or state.terminal:
            return state
        if state.phase == Phase.HOLDING:
            hold = state.hold
            if auto_release and hold is not None and releasable_by_rehearsal(hold):
                for user, groups in auto_releasers(state, hold):
                    engine.release(execution_id, hold.id, hold.evidence_version, user, groups)
                if engine.load(execution_id).phase != Phase.HOLDING or engine.load(execution_id).open_hold != hold.id:
                    continue
            return state
        now = engine.clock()
        if wake is None:
            wake = now + timedelta(seconds=1)
        sleep(max(0.0, min((wake - now).total_seconds(), 5.0)))


def exit_code(state: State) -> int:
    return EXIT_BY_STATUS.get(state.status(), exits.HELD)
