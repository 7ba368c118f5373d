"""The engine's shell: load -> fold -> decide -> append intent -> act -> read back -> append result.

Rules:
* The ledger is the only state. The cache here is a fold of what was read, extended by reading
  only entries after its last seq; it is never written to directly.
* Every append is conditional at ``state.seq + 1``. On ``AppendConflict`` the shell re-reads and
  re-decides; a recorded *fact* (what an action returned) is re-appended at the new head, never
  dropped.
* An action is sent only after its intent is durably appended, and it carries the idempotency key.
* Only the holder of an execution's lease drives it; its appends carry the lease as a fence, so a
  writer that lost the lease cannot append.
* Bodies are masked before they are written.
* Listeners (notifier, rehearsal printer) are told about appended entries after the append; they
  must not block and cannot change what was written.
* The signals one step needs are read at the same time, in one pool shared by every execution of
  the process (a few threads, never one per execution): a sample waits for its slowest signal,
  not for the sum of them.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

from execution import commands as cmd
from execution import events as ev
from execution.adapters.base import Connection
from execution.contract.load import LoadedChange
from execution.contract.models import ChangePackage, Signal
from execution.decide import Decision, Observations, ReadRequest, SendAction, decider, timeout_seconds
from execution.model import ActionResult, Clock, Evidence, ReadbackResult, Role
from execution.project import State, apply
from execution.protocol import Observed, run
from execution.reconcile import reconcile, target
from ledger.entry import Entry, NewEntry
from ledger.masking import mask
from ledger.store import AppendConflict, FencedOut, Lease, LedgerStore

Listener = Callable[[str, Sequence[Entry]], None]
log = logging.getLogger("stagehold.engine")

MAX_STEPS_PER_TICK = 500
APPEND_RETRIES = 20
# How long a start holds its change's lease at most (it is released as soon as the start is written).
START_LEASE_S = 30.0
# Threads reading signals for all executions of this process together.
SIGNAL_READERS = 16
_readers: ThreadPoolExecutor | None = None
_readers_guard = threading.Lock()


def _signal_readers() -> ThreadPoolExecutor:
    global _readers
    with _readers_guard:
        if _readers is None:
            _readers = ThreadPoolExecutor(SIGNAL_READERS, thread_name_prefix="stagehold-read")
        return _readers


def _read(connection: Connection | Exception, name: str, signal: Signal, role: Role) -> Evidence:
    """One signal's evidence; an adapter that raised (or could not be built) is an error reading."""
    try:
        if isinstance(connection, Exception):
            raise connection
        return connection.read(name, signal, role)
    except Exception as exc:
        return Evidence(name, None, None, "adapter", error=f"{type(exc).__name__}: {exc}")


@dataclass(frozen=True)
class CommandOutcome:
    """What a human command did: the entries appended and the state after them."""

    entries: tuple[Entry, ...]
    state: State

    @property
    def kinds(self) -> tuple[str, ...]:
        return tuple(e.kind for e in self.entries)

    @property
    def effective(self) -> bool:
        return any(k not in ev.NO_OP_KINDS for k in self.kinds)


class Engine:
    def __init__(
        self,
        store: LedgerStore,
        connect: Callable[[State], Connection],
        clock: Clock,
        owner: str,
        *,
        lease_ttl_s: float = 60.0,
        listeners: Iterable[Listener] = (),
        before_send: Callable[[State, SendAction], None] | None = None,
    ) -> None:
        self.store = store
        self.connect = connect
        self.clock = clock
        self.owner = owner
        self.lease_ttl_s = lease_ttl_s
        self.listeners = list(listeners)
        self.before_send = before_send
        self._cache: dict[str, State] = {}
        self._locks: dict[str, threading.RLock] = {}
        self._locks_guard = threading.Lock()
        self._leases: dict[str, Lease] = {}
        self._connections: dict[str, Connection] = {}

    # ------------------------------------------------------------------ reading

    def connection(self, state: State) -> Connection:
        """The adapters for this execution's package targets (built once per execution)."""
        conn = self._connections.get(state.execution_id)
        if conn is None:
            conn = self.connect(state)
            self._connections[state.execution_id] = conn
        return conn

    def _lock(self, execution_id: str) -> threading.RLock:
        with self._locks_guard:
            return self._locks.setdefault(execution_id, threading.RLock())

    def load(self, execution_id: str) -> State:
        """The state folded from the ledger, reading only entries appended since the cached fold."""
        cached = self._cache.get(execution_id) or State(execution_id)
        new = self.store.read(execution_id, after_seq=cached.seq)
        state = cached
        for entry in new:
            state = apply(state, entry)
        current = self._cache.get(execution_id)
        if current is None or current.seq <= state.seq:  # never let a slower reader move it back
            self._cache[execution_id] = state
        return state

    def entries(self, execution_id: str) -> list[Entry]:
        return self.store.read(execution_id)

    def executions(self) -> list[str]:
        return self.store.executions()

    def active(self, skip: Callable[[str], bool] | None = None) -> list[str]:
        """Executions not finished; those ``skip`` names are left out before their ledger is read.

        Only executions the store does not know to be closed are read (a process that starts on a
        ledger with years of finished executions folds none of them).
        """
        out = []
        for eid in self.store.open_executions():
            if skip is not None and skip(eid):
                continue
            state = self.load(eid)
            if state.plan is not None and not state.terminal:
                out.append(eid)
        return out

    def find(self, change_id: str) -> list[str]:
        """Executions of one change, oldest first."""
        out = []
        for eid in self.store.executions():
            # Execution ids start with the change id; the fold, not the name, is authoritative.
            if not eid.startswith(change_id):
                continue
            state = self.load(eid)
            if state.package is not None and state.package.id == change_id:
                out.append(eid)
        return out

    # ------------------------------------------------------------------ writing

    def _mask(self, state: State, entries: Sequence[NewEntry]) -> list[NewEntry]:
        sensitive = state.plan.sensitive_fields if state.plan is not None else ()
        return [replace(e, body=mask(dict(e.body), sensitive)) for e in entries]

    def _append(self, state: State, entries: Sequence[NewEntry], lease: Lease | None) -> list[Entry]:
        written = self.store.append(state.execution_id, state.seq + 1, self._mask(state, entries), fence=lease)
        # What was just written is exactly what the store holds at those positions: fold it into
        # the cache instead of reading it back.
        cached = self._cache.get(state.execution_id)
        if cached is None or cached.seq == state.seq:
            folded = state
            for entry in written:
                folded = apply(folded, entry)
            self._cache[state.execution_id] = folded
        self._notify(state.execution_id, written)
        return written

    def _cached(self, execution_id: str) -> State:
        """The cached fold (may lag other writers; a conditional append finds that out)."""
        return self._cache.get(execution_id) or self.load(execution_id)

    def _append_fact(self, execution_id: str, entries: Sequence[NewEntry], lease: Lease | None) -> list[Entry]:
        """Append something that already happened: retry at the new head on conflict."""
        state = self._cached(execution_id)
        for _ in range(APPEND_RETRIES):
            try:
                return self._append(state, entries, lease)
            except AppendConflict:
                state = self.load(execution_id)
        raise AppendConflict(execution_id, -1, -1)

    def _notify(self, execution_id: str, written: Sequence[Entry]) -> None:
        for listener in self.listeners:
            try:
                listener(execution_id, written)
            except Exception:  # a listener must never break the engine
                log.exception("listener failed for %s", execution_id)

    def _command(self, execution_id: str, decide_entries: Callable[[State], Decision]) -> CommandOutcome:
        with self._lock(execution_id):
            for _ in range(APPEND_RETRIES):
                state = self.load(execution_id)
                entries = decide_entries(state).append
                if not entries:
                    return CommandOutcome((), state)
                try:
                    written = self._append(state, entries, None)
                except AppendConflict:
                    continue  # someone else wrote first: decide again on the new state
                return CommandOutcome(tuple(written), self._after(state, written))
        raise AppendConflict(execution_id, -1, -1)

    def _after(self, state: State, written: Sequence[Entry]) -> State:
        """The state after ``written``: the cache ``_append`` just folded them into, without reading
        the ledger again (read only if another reader moved the cache on meanwhile)."""
        cached = self._cache.get(state.execution_id)
        head = written[-1].seq if written else state.seq
        return cached if cached is not None and cached.seq == head else self.load(state.execution_id)

    # ------------------------------------------------------------------ commands

    def start(
        self,
        change: LoadedChange,
        initiator: str,
        groups: Iterable[str] = (),
        *,
        mode: str = "live",
        speed: float = 1.0,
        execution_id: str | None = None,
        exclusive: bool = True,
        approvals: Mapping[str, Any] | None = None,
    ) -> State:
        """Start an execution. ``exclusive``: refuse while another execution of this change in the
        same mode is unfinished — one live execution per change; one rehearsal per change on a
        shared sandbox. A rehearsal against its own private sandbox touches nothing shared and
        passes ``exclusive=False``. Rehearsals never block a live execution, nor the reverse."""
        now = self.clock()
        # Two starts of one change at the same moment (a slash command sent twice, two operators)
        # both passed the "already running" check and, their ids colliding, the second retried
        # under a suffixed id: two live executions of one change. The check and the first append
        # now run under a lock for this process and a short lease on the change for all others.
        gate = f"start:{change.package.id}"
        with self._lock(gate):
            lease = self.store.acquire_lease(gate, self.owner, now, START_LEASE_S)
            if lease is None:
                raise cmd.StartRefused(f"{change.package.id} is being started by another request; try again shortly")
            try:
                return self._start(
                    change, initiator, tuple(groups), now, mode, speed, execution_id, exclusive, approvals
                )
            finally:
                self.store.release_lease(lease)

    def _start(
        self,
        change: LoadedChange,
        initiator: str,
        groups: tuple[str, ...],
        now: datetime,
        mode: str,
        speed: float,
        execution_id: str | None,
        exclusive: bool,
        approvals: Mapping[str, Any] | None = None,
    ) -> State:
        others = [self.load(other) for other in self.find(change.package.id)] if exclusive else []
        entries = cmd.start(
            change, initiator, groups, now, mode=mode, speed=speed, approvals=approvals, others=others
        ).append
        base = execution_id or f"{change.package.id}-{now.strftime('%Y%m%dT%H%M%SZ')}"
        for attempt in range(1 if execution_id else 50):
            eid = base if attempt == 0 else f"{base}-{attempt + 1}"
            try:
                written = self.store.append(eid, 1, self._mask(State(eid), entries))
            except AppendConflict:
                continue
            self._notify(eid, written)
            return self.load(eid)
        raise cmd.StartRefused(f"execution {base} already exists")

    def release(
        self, execution_id: str, hold_id: str, version: int, user: str, groups: Iterable[str] = ()
    ) -> CommandOutcome:
        g = tuple(groups)
        return self._command(execution_id, lambda s: cmd.release(s, hold_id, version, user, g, self.clock()))

    def record_repeated_release(
        self, execution_id: str, hold_id: str, version: int, user: str, repeats: int, first_at: datetime, last: datetime
    ) -> CommandOutcome:
        """Record repeats of one person's Release click that were counted, not decided one by one."""
        return self._command(
            execution_id,
            lambda _s: cmd.repeated_release(hold_id, version, user, repeats, first_at, last, self.clock()),
        )

    def release_click(
        self,
        execution_id: str,
        hold_id: str,
        version: int,
        stage: str | None,
        user: str,
        groups_of: Callable[[ChangePackage], Iterable[str]],
    ) -> CommandOutcome | None:
        """A Release button's click: None when the button is not bound to this execution's hold
        (``commands.button_binds``), else the release decided on one read of the ledger.
        ``groups_of`` names the user's groups among the package's (asked only once it is known)."""
        # The package never changes after the start: take it from the cached fold when there is
        # one, and ask for the groups before taking the execution's lock, so a slow directory
        # (Slack) never holds up the execution.
        known = self._cache.get(execution_id)
        package = known.package if known is not None and known.package is not None else self.load(execution_id).package
        if package is None:
            return None
        groups = tuple(groups_of(package))
        unbound: list[bool] = []

        def decide_entries(state: State) -> Decision:
            if not cmd.button_binds(state, hold_id, stage):
                unbound.append(True)
                return Decision()
            return cmd.release(state, hold_id, version, user, groups, self.clock())

        outcome = self._command(execution_id, decide_entries)
        return None if unbound else outcome

    def rollback(self, execution_id: str, user: str, reason: str, groups: Iterable[str] = ()) -> CommandOutcome:
        g = tuple(groups)
        return self._command(execution_id, lambda s: cmd.rollback(s, user, g, reason, self.clock()))

    def hold(self, execution_id: str, user: str, reason: str, groups: Iterable[str] = ()) -> CommandOutcome:
        g = tuple(groups)
        return self._command(execution_id, lambda s: cmd.hold(s, user, g, reason, self.clock()))

    def abandon(self, execution_id: str, user: str, reason: str, groups: Iterable[str] = ()) -> CommandOutcome:
        g = tuple(groups)
        return self._command(execution_id, lambda s: cmd.abandon(s, user, g, reason, self.clock()))

    # ------------------------------------------------------------------ driving

    def _take_lease(self, execution_id: str) -> Lease | None:
        held = self._leases.get(execution_id)
        if held is not None and (held.expires_at - self.clock()).total_seconds() > self.lease_ttl_s / 2:
            # Still comfortably ours: renewing on every tick would cost a write transaction, and
            # the fence on every append proves ownership anyway (a lost lease fails the append).
            return held
        lease = self.store.acquire_lease(execution_id, self.owner, self.clock(), self.lease_ttl_s)
        if lease is not None:
            self._leases[execution_id] = lease
        return lease

    def cached(self, execution_id: str) -> State | None:
        """The fold this process last read, without reading (None: never read here)."""
        return self._cache.get(execution_id)

    def renew_leases(self) -> list[str]:
        """Renew every lease this process holds; forget, and return, those it could not renew.

        Called on a timer, never under an execution's lock: a tick waiting on a slow action must
        not let its lease lapse. A lease that cannot be renewed (taken over, or the database does
        not answer) is dropped at once, so this process stops driving that execution until it
        takes the lease again; its appends were fenced anyway.
        """
        lost = []
        renewing: list[Lease] = []
        for execution_id, held in list(self._leases.items()):
            state = self._cache.get(execution_id)
            if state is not None and state.terminal:
                try:
                    self.let_go(execution_id)  # finished: nothing left to drive
                except Exception:
                    self._leases.pop(execution_id, None)  # it lapses by itself
                continue
            renewing.append(held)
        # One round for all of them: a write transaction per lease was a thousand a second at
        # three thousand executions.
        try:
            renewed = self.store.renew_leases(self.owner, renewing, self.clock(), self.lease_ttl_s)
        except Exception as exc:
            log.warning("%d leases not renewed: %s: %s", len(renewing), type(exc).__name__, exc)
            renewed = {}
        for held in renewing:
            execution_id = held.execution_id
            lease = renewed.get(execution_id)
            if self._leases.get(execution_id) is not held:
                continue  # a tick took or dropped it meanwhile: its answer is the newer one
            if lease is not None:
                self._leases[execution_id] = lease
            else:
                self._leases.pop(execution_id, None)
                lost.append(execution_id)
        return lost

    def leases_held(self) -> int:
        """Executions whose lease this process holds (a lease it failed to renew is already dropped)."""
        return len(self._leases)

    def let_go(self, execution_id: str) -> None:
        """Give up this process's lease on an execution so another process may take it at once."""
        with self._lock(execution_id):
            lease = self._leases.pop(execution_id, None)
            if lease is not None:
                self.store.release_lease(lease)

    def resume(self, execution_id: str) -> datetime | None:
        """Reconcile the ledger against the live target, record it, then drive on."""
        with self._lock(execution_id):
            lease = self._take_lease(execution_id)
            if lease is None:
                return None
            state = self.load(execution_id)
            if state.plan is None or state.terminal:
                return None
            self._reconcile(state, lease)
        return self.tick(execution_id)

    def _reconcile(self, state: State, lease: Lease) -> None:
        checked = target(state)
        readback = None
        if checked is not None:
            role = Role.ROLLBACK if checked.direction == "rollback" else Role.EXECUTOR
            readback = self._safe_read_back(state, checked.confirm, role, 10.0)
        resumed = reconcile(state, self.owner, checked, readback, self.clock())
        self._append_fact(state.execution_id, resumed.append, lease)

    def tick(self, execution_id: str) -> datetime | None:
        """Drive one execution until it waits; return when to wake it next (None: nothing timed)."""
        with self._lock(execution_id):
            held = self._leases.get(execution_id)
            lease = self._take_lease(execution_id)
            if lease is None:
                return None  # another process drives it
            try:
                if lease.epoch > 1 and (held is None or held.epoch != lease.epoch):
                    # This process is taking the execution over from another owner. A restart
                    # within the old owner's lease finds it taken in ``resume`` and gets here
                    # later by a plain tick: reconcile first all the same, never drive unchecked.
                    state = self.load(execution_id)
                    if state.plan is not None and not state.terminal:
                        self._reconcile(state, lease)
                # Held here without a break since the last tick: the cached fold is this
                # process's own writing, so the tick may start from it instead of reading.
                return self._drive(execution_id, lease, trusted=held is not None and held.epoch == lease.epoch)
            except FencedOut:
                self._leases.pop(execution_id, None)
                return None

    def _drive(self, execution_id: str, lease: Lease, *, trusted: bool = False) -> datetime | None:
        """Decide and act until the execution waits.

        Starts from the cached fold when ``trusted`` (else reads the ledger once). The fold may
        lag a writer elsewhere (a command from another process): a decision that appends finds
        that out from its conditional append (then re-reads and decides again), and a decision to
        wait is made again on a fresh read unless one was already made in this tick. So a sample
        costs no read of the ledger, and nothing is acted on, nor waited for, on a stale fold.
        """
        state = self._cache.get(execution_id) if trusted else None
        fresh = state is None
        if state is None:
            state = self.load(execution_id)
        for _ in range(MAX_STEPS_PER_TICK):
            if state.terminal:
                return None  # final: no later entry changes that
            if state.plan is None:
                if fresh:
                    return None
                state, fresh = self.load(execution_id), True
                continue
            decision = run(decider(state, self.clock()), self._observer(state))
            if decision.idle:
                if fresh:
                    return decision.wake_at
                latest, fresh = self.load(execution_id), True
                if latest.seq == state.seq:
                    return decision.wake_at  # nothing new: the same decision
                state = latest
                continue
            try:
                self._append(state, decision.append, lease)
            except AppendConflict:
                state, fresh = self.load(execution_id), True
                continue
            fresh = True  # the append read the head: the fold is current as of its commit
            if decision.effect is not None:
                self._act(execution_id, decision, lease)
            state = self._cached(execution_id)
        return self.clock() + timedelta(seconds=1)

    def _act(self, execution_id: str, decision: Decision, lease: Lease) -> None:
        effect = decision.effect
        assert effect is not None
        state = self._cached(execution_id)
        if self.before_send is not None:
            self.before_send(state, effect)
        stage = state.stage_def(effect.index)
        if effect.direction == "apply":
            action = stage.action
        else:
            assert stage.rollback is not None
            action = stage.rollback.action
        result = self._safe_apply(state, action, effect.key, effect.role, effect.timeout_s)
        sent = ev.record(
            ev.ActionSent(
                stage=effect.stage,
                direction=effect.direction,
                key=effect.key,
                outcome=ev.SendOutcome(result.outcome),
                status=result.status,
                detail=result.detail,
                response=result.response,
            ),
            effect.role,
            self.clock(),
        )
        self._append_fact(execution_id, [sent], lease)

    def _safe_apply(self, state: State, action: Any, key: str, role: Role, timeout_s: float) -> ActionResult:
        try:
            return self.connection(state).apply(action, key, role, timeout_s)
        except Exception as exc:
            return ActionResult("ambiguous", f"adapter failed: {type(exc).__name__}: {exc}")

    def _safe_read_back(self, state: State, confirm: Any, role: Role, timeout_s: float) -> ReadbackResult:
        try:
            return self.connection(state).read_back(confirm, role, timeout_s)
        except Exception as exc:
            return ReadbackResult(None, None, f"adapter failed: {type(exc).__name__}: {exc}")

    def _observer(self, state: State) -> Callable[[ReadRequest], Observed]:
        """Answers a decider's read for ``state``: what was read, and the time right after."""
        return lambda request: Observed(self._observe(state, request), self.clock())

    def _observe(self, state: State, request: ReadRequest | None) -> Observations:
        if request is None:
            return Observations()
        assert state.plan is not None
        names = list(request.signals)
        signals = state.plan.signals
        connection: Connection | Exception
        try:
            connection = self.connection(state)  # built here, once, before the reads share it
        except Exception as exc:
            connection = exc
        evidence: dict[str, Evidence]
        # All but the first go to the shared readers; this thread reads the first meanwhile
        # instead of waiting idle (one hand-over between threads fewer per sample).
        pool = _signal_readers()
        pending = [pool.submit(_read, connection, name, signals[name], request.role) for name in names[1:]]
        evidence = {names[0]: _read(connection, names[0], signals[names[0]], request.role)} if names else {}
        evidence.update((name, future.result()) for name, future in zip(names[1:], pending, strict=True))
        readback = None
        if request.readback is not None:
            index, direction = request.readback
            stage = state.stage_def(index)
            if direction == "apply":
                confirm = stage.confirm
            else:
                assert stage.rollback is not None
                confirm = stage.rollback.confirm
            timeout = timeout_seconds(state, confirm.spec.timeout)
            readback = self._safe_read_back(state, confirm, request.role, timeout)
        return Observations(evidence, readback)
