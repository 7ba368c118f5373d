"""APScheduler wakes executions when they are due; the engine decides what "due" means.

Rules:
* One pending wake-up per execution at the engine's next wake time, in a heap (``bot.due``) that
  one dispatching thread drains; no thread per execution: a small pool runs whichever are due.
  APScheduler runs the periodic jobs (sweep, lease renewal, poll); a job per execution re-armed at
  every sample cost a sixth of the process's time at a thousand executions.
* A wake-up late for any reason runs once, as soon as it can: never a silent skip.
* A sweep re-arms any active execution that has no wake-up pending (new ones, ones released from
  Slack, ones whose wake-up was lost), so nothing waits forever.
* Every run is safe to repeat: a tick re-reads the ledger and decides again.
* Only the lease holder drives an execution; ticks elsewhere return without acting.
* Every ``renew_s`` the leases this process holds are renewed, all in one round (one that cannot
  be is dropped at once, and that execution is no longer driven here).
* Replicas (``bot.replicas``): every ``poll_s`` the ledger heads and leases are read in two
  queries: an execution whose lease lapsed or was let go is woken here (the tick takes the lease
  and reconciles first), and one this process drives is woken when another replica appended to it
  (a release clicked there).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta
from typing import Protocol

from apscheduler.executors.pool import ThreadPoolExecutor as JobExecutor
from apscheduler.schedulers.background import BackgroundScheduler

from bot.due import DueQueue, Wake
from execution.model import Clock
from execution.service import Engine
from ledger.store import Lease


class Coordination(Protocol):
    """What replicas read of each other, in one query each (``SqlLedgerStore``)."""

    def open_heads(self) -> dict[str, int]: ...
    def leases(self) -> dict[str, Lease]: ...


log = logging.getLogger("stagehold.scheduler")


class Driver:
    def __init__(
        self,
        engine: Engine,
        clock: Clock,
        *,
        workers: int = 8,
        sweep_seconds: float = 15.0,
        on_lag: Callable[[float], None] | None = None,
        coordination: Coordination | None = None,
        renew_s: float = 3.0,
        poll_s: float = 2.0,
    ) -> None:
        self.engine = engine
        self.coordination = coordination
        self.renew_s = renew_s
        self.poll_s = poll_s
        self.on_lag = on_lag  # how late each run started (the /metrics scheduler lag)
        self.clock = clock
        self.sweep_seconds = sweep_seconds
        # The periodic jobs only (the executions' wake-ups run in the pool below).
        self.scheduler = BackgroundScheduler(
            timezone="UTC",
            executors={"default": JobExecutor(max_workers=4)},
            job_defaults={"coalesce": True, "misfire_grace_time": None, "max_instances": 3},
        )
        self._pool = ThreadPoolExecutor(workers, thread_name_prefix="stagehold-drive")
        self._due = DueQueue()
        self._queue = threading.Condition()  # guards the wake-ups; the dispatcher waits on it
        self._in_flight: Counter[str] = Counter()  # handed to the pool, not finished yet
        self._runs = threading.Condition()  # guards the count of runs in progress and stopping
        self._running_now = 0
        self._stopping = False
        self._dispatcher = threading.Thread(target=self._dispatch, name="stagehold-due", daemon=True)

    def start(self, *, resume: bool = True) -> None:
        self.scheduler.start()
        self._dispatcher.start()
        self.scheduler.add_job(
            self.sweep,
            "interval",
            seconds=self.sweep_seconds,
            id="sweep",
            replace_existing=True,
            next_run_time=self.clock(),
        )
        self.scheduler.add_job(self.renew, "interval", seconds=self.renew_s, id="renew", replace_existing=True)
        if self.coordination is not None:
            self.scheduler.add_job(self.poll, "interval", seconds=self.poll_s, id="poll", replace_existing=True)
        if resume:
            for execution_id in self.engine.active():
                self._at(execution_id, self.clock(), resume=True)

    def stop(self, timeout: float = 30.0) -> None:
        """Stop scheduling, then wait for runs in progress (those not started yet never start)."""
        with self._runs:
            self._stopping = True
        with self._queue:
            self._queue.notify_all()
        if self.scheduler.running:
            self.scheduler.shutdown(wait=False)
        self._pool.shutdown(wait=False, cancel_futures=True)
        deadline = time.monotonic() + timeout
        with self._runs:
            while self._running_now and time.monotonic() < deadline:
                self._runs.wait(timeout=max(0.0, deadline - time.monotonic()))

    def wake(self, execution_id: str, at: datetime | None = None) -> None:
        """Drive ``execution_id`` at ``at`` (default: now). Replaces any later wake-up."""
        self._at(execution_id, at or self.clock())

    def _at(self, execution_id: str, when: datetime, *, resume: bool = False) -> None:
        with self._queue:
            if self._due.put(execution_id, when, resume=resume):
                self._queue.notify_all()  # a new earliest: the dispatcher waits for it instead

    def _dispatch(self) -> None:
        """Hand each wake-up to the pool when it is due."""
        while True:
            with self._queue:
                while not self._stopping:
                    delay = self._due.seconds_to_next(time.time())
                    if delay is not None and delay <= 0:
                        break
                    # Bounded, so a wall-clock step is noticed within a second.
                    self._queue.wait(timeout=1.0 if delay is None else min(delay, 1.0))
                if self._stopping:
                    return
                due = self._due.pop_due(time.time())
                self._in_flight.update(wake.execution_id for wake in due)
            for wake in due:
                try:
                    self._pool.submit(self._step, wake)
                except RuntimeError:
                    return  # the pool was shut down: stopping

    def _step(self, wake: Wake) -> None:
        try:
            self._lag(wake.at)
            if wake.resume:
                self._counted(wake.execution_id, self.engine.resume, "resume")
            else:
                self._counted(wake.execution_id, self.engine.tick, "tick")
        finally:
            with self._queue:
                self._in_flight[wake.execution_id] -= 1
                if self._in_flight[wake.execution_id] <= 0:
                    del self._in_flight[wake.execution_id]

    def _lag(self, due: datetime | None) -> None:
        if self.on_lag is not None and due is not None:
            self.on_lag((self.clock() - due).total_seconds())

    def _counted(self, execution_id: str, step: Callable[[str], datetime | None], name: str) -> None:
        with self._runs:
            if self._stopping:
                return
            self._running_now += 1
        try:
            try:
                wake = step(execution_id)
            except Exception:
                log.exception("%s of %s failed; retrying shortly", name, execution_id)
                wake = self.clock() + timedelta(seconds=5)
            self._rearm(execution_id, wake)
        finally:
            with self._runs:
                self._running_now -= 1
                self._runs.notify_all()

    def _rearm(self, execution_id: str, wake: datetime | None) -> None:
        if wake is not None and not self._stopping:
            self._at(execution_id, wake)

    def sweep(self) -> None:
        """Re-arm active executions without a pending job (the safety net for lost wake-ups).

        An execution with a wake-up pending is skipped before its ledger is read: with a thousand
        executions, reading them all at every sweep cost more than a tenth of the process's time.
        """
        for execution_id in self.engine.active(skip=self.pending):
            self.wake(execution_id)

    def pending(self, execution_id: str) -> bool:
        """A wake-up is queued, or a run is on its way (it re-arms the execution when it ends)."""
        with self._queue:
            return self._due.pending(execution_id) or execution_id in self._in_flight

    def renew(self) -> None:
        lost = self.engine.renew_leases()
        for execution_id in lost:
            log.warning("lost the lease on %s: no longer driving it here", execution_id)

    def poll(self) -> None:
        """Wake executions whose lease lapsed, and ours that another replica appended to."""
        assert self.coordination is not None
        try:
            heads = self.coordination.open_heads()  # closed executions need no driving
            leases = self.coordination.leases()
        except Exception as exc:
            log.warning("poll: the ledger database does not answer: %s", type(exc).__name__)
            return
        now = self.clock()
        for execution_id, head in heads.items():
            lease = leases.get(execution_id)
            live = lease is not None and lease.expires_at > now
            if live and lease is not None and lease.owner != self.engine.owner:
                continue  # driven elsewhere
            state = self.engine.cached(execution_id)
            seen = state.seq if state is not None else 0
            if state is None or seen < head:
                state = self.engine.load(execution_id)
            if state.plan is None or state.terminal:
                continue
            if not live:
                self.wake(execution_id)  # free or lapsed: the tick takes it over, reconciling first
            elif head > seen or not self.pending(execution_id):
                self.wake(execution_id)  # ours, and another replica appended to it (or no run is due)
