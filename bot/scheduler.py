"""APScheduler wakes executions when they are due; the engine decides what "due" means.

Rules:
* One job per execution (``exec:<id>``) with a date trigger at the engine's next wake time; no
  thread per execution: a small pool runs whichever are due.
* Misfires coalesce into one catch-up run, never a silent skip (``misfire_grace_time=None``).
* A sweep re-arms any active execution that has no job (new ones, ones released from Slack,
  ones whose job was lost), so nothing waits forever.
* Every run is safe to repeat: a tick re-reads the ledger and decides again.
* Only the lease holder drives an execution; ticks elsewhere return without acting.
* Replicas (``bot.replicas``): every ``renew_s`` the leases this process holds are renewed (one
  that cannot be is dropped at once, and that execution is no longer driven here); every
  ``poll_s`` the ledger heads and leases are read in two queries: an execution whose lease
  lapsed or was let go is woken here (the tick takes the lease and reconciles first), and one
  this process drives is woken when another replica appended to it (a release clicked there).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Protocol

from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.schedulers.background import BackgroundScheduler

from execution.model import Clock
from execution.service import Engine
from ledger.store import Lease


class Coordination(Protocol):
    """What replicas read of each other, in one query each (``SqlLedgerStore``)."""

    def heads(self) -> dict[str, int]: ...
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
        self.scheduler = BackgroundScheduler(
            timezone="UTC",
            executors={"default": ThreadPoolExecutor(max_workers=workers)},
            job_defaults={"coalesce": True, "misfire_grace_time": None, "max_instances": 3},
        )
        self._runs = threading.Condition()
        self._running_now = 0
        self._stopping = False

    def start(self, *, resume: bool = True) -> None:
        self.scheduler.start()
        self.scheduler.add_job(
            self.sweep,
            "interval",
            seconds=self.sweep_seconds,
            id="sweep",
            replace_existing=True,
            next_run_time=self.clock(),
        )
        if self.coordination is not None:
            self.scheduler.add_job(self.renew, "interval", seconds=self.renew_s, id="renew", replace_existing=True)
            self.scheduler.add_job(self.poll, "interval", seconds=self.poll_s, id="poll", replace_existing=True)
        if resume:
            for execution_id in self.engine.active():
                self._at(self._resume, execution_id, self.clock())

    def stop(self, timeout: float = 30.0) -> None:
        """Stop scheduling, then wait for runs in progress.

        Not ``shutdown(wait=True)``: it waits while holding the scheduler's job-store lock, which a
        finishing run needs to re-arm itself (``add_job``), so the two would wait for each other.
        """
        with self._runs:
            self._stopping = True
        if self.scheduler.running:
            self.scheduler.shutdown(wait=False)
        deadline = time.monotonic() + timeout
        with self._runs:
            while self._running_now and time.monotonic() < deadline:
                self._runs.wait(timeout=max(0.0, deadline - time.monotonic()))

    def wake(self, execution_id: str, at: datetime | None = None) -> None:
        """Drive ``execution_id`` at ``at`` (default: now). Replaces any later wake-up."""
        when = at or self.clock()
        job = self.scheduler.get_job(f"exec:{execution_id}")
        if job is not None and job.next_run_time is not None and job.next_run_time <= when:
            return  # an earlier run is already due; it will re-decide and re-arm
        self._at(self._run, execution_id, when)

    def _at(self, run: Callable[[str, datetime], None], execution_id: str, when: datetime) -> None:
        """The execution's one job, run at ``when`` (told when it was due, for the lag metric)."""
        self.scheduler.add_job(
            run, "date", run_date=when, id=f"exec:{execution_id}", args=[execution_id, when], replace_existing=True
        )

    def _resume(self, execution_id: str, due: datetime | None = None) -> None:
        self._lag(due)
        self._counted(execution_id, self.engine.resume, "resume")

    def _run(self, execution_id: str, due: datetime | None = None) -> None:
        self._lag(due)
        self._counted(execution_id, self.engine.tick, "tick")

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
            self._at(self._run, execution_id, wake)

    def sweep(self) -> None:
        """Re-arm active executions without a pending job (the safety net for lost wake-ups).

        An execution with a wake-up pending is skipped before its ledger is read: with a thousand
        executions, reading them all at every sweep cost more than a tenth of the process's time.
        """
        for execution_id in self.engine.active(skip=self._pending):
            self.wake(execution_id)

    def _pending(self, execution_id: str) -> bool:
        return self.scheduler.get_job(f"exec:{execution_id}") is not None

    def renew(self) -> None:
        lost = self.engine.renew_leases()
        for execution_id in lost:
            log.warning("lost the lease on %s: no longer driving it here", execution_id)

    def poll(self) -> None:
        """Wake executions whose lease lapsed, and ours that another replica appended to."""
        assert self.coordination is not None
        try:
            heads = self.coordination.heads()
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
            elif head > seen or self.scheduler.get_job(f"exec:{execution_id}") is None:
                self.wake(execution_id)  # ours, and another replica appended to it (or no run is due)
