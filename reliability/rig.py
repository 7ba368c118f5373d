"""An in-process rehearsal: the real engine and driver against the real sandbox, on a settable clock.

``rehearse(...)`` is what ``stagehold rehearse --auto-release`` does, minus the process: the
driver's sleeps move a fake clock instead of waiting, so a plan with five-minute bakes finishes in
well under a second while every read, write and read-back still crosses loopback HTTP.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from bot.bootstrap import live_connector
from bot.commands.execute import FaultSchedule
from bot.driver import drive
from execution.contract import LoadedChange
from execution.model import Credentials
from execution.project import State
from execution.sandbox import Sandbox
from execution.service import Engine, Listener
from ledger.store import LedgerStore


class Clock:
    """A settable clock shared by the engine and its adapters (thread-safe)."""

    def __init__(self, start: datetime | None = None) -> None:
        self.now = start or datetime.now(UTC)
        self._lock = threading.Lock()

    def __call__(self) -> datetime:
        with self._lock:
            return self.now

    def advance(self, seconds: float) -> None:
        with self._lock:
            self.now += timedelta(seconds=max(seconds, 0.001))


def engine_for(
    store: LedgerStore,
    sandbox_url: str,
    client: httpx.Client,
    clock: Clock,
    *,
    owner: str = "reliability",
    credentials: Credentials | None = None,
    listeners: Iterable[Listener] = (),
) -> Engine:
    connect = live_connector(credentials or Credentials({}), client, clock, sandbox_url)
    return Engine(store, connect, clock, owner, listeners=listeners)


def rehearse(
    store: LedgerStore,
    change: LoadedChange,
    sandbox: Sandbox,
    client: httpx.Client,
    *,
    execution_id: str,
    faults: Sequence[str] = (),
    initiator: str = "U05OPS",
    clock: Clock | None = None,
    credentials: Credentials | None = None,
    listeners: Iterable[Listener] = (),
    auto_release: bool = True,
) -> tuple[Engine, State]:
    """Start and drive one rehearsal until it ends or holds for a human; faults as ``NAME@STAGE``."""
    clock = clock or Clock()
    stages = [s.id for s in change.plan.stages]
    later: dict[str, set[str]] = {}
    for spec in faults:
        name, _, stage = spec.partition("@")
        if stage:
            later.setdefault(stage, set()).add(name)
        else:
            sandbox.add_fault(name)
    schedule: Any = FaultSchedule(sandbox.add_fault, later, stages)
    engine = engine_for(store, sandbox.url, client, clock, credentials=credentials, listeners=[schedule, *listeners])
    state = engine.start(change, initiator, mode="rehearsal", speed=1.0, execution_id=execution_id)
    state = drive(engine, state.execution_id, auto_release=auto_release, sleep=clock.advance)
    return engine, state
