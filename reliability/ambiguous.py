"""Family 2: ambiguous outcomes — writes the target applied whose answer never arrived.

Many small executions (a generated plan of 20 short stages, one document per stage) run in-process
with the real engine against the real sandbox over loopback, in parallel threads. The sandbox is
started with ``timeout_ratio=0.1``: one write in ten is applied and then its answer is lost —
withheld just past the plan's 100 ms client timeout on some sandboxes, the connection dropped at
once on others. A replay under the same key draws again. About a third of the executions have
``error-rate-high`` switched on as a random stage is entered, so they roll back through the same
lossy answer path. The engine's clock is a fake one, moved to each wake-up time, so bakes cost no
waiting; the network timeouts are real.

Invariants per execution: no transition took effect twice (``/applied`` against the ledger's keys)
and no confirmed one is missing; no key was sent again without a read-back showing the old state;
every ambiguous send was resolved by a matching read-back or held; no transition was lost — the
execution ends exactly as it would with every answer delivered (completed, or rolled back when its
fault fires) and the live documents match the ledger; the chain verifies.
"""

from __future__ import annotations

import multiprocessing
import os
import random
import shutil
import threading
import time
from collections import Counter
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from bot.bootstrap import http_client, live_connector
from execution.contract import LoadedChange, load_change
from execution.model import Credentials
from execution.service import Engine
from execution.transitions import Phase
from ledger.entry import Entry
from ledger.sql import SqlLedgerStore
from reliability import checks, plans
from reliability.harness import FamilyResult, Recorder, Size, Violation
from reliability.target import TrialSandbox

STAGES = 20
TIMEOUT_RATIO = 0.1
# Writes lost on the way in (not applied, no answer): the engine must re-send them once under the
# same key after a read-back shows the old state, and hold if that is lost too.
LOSE_BEFORE_RATIO = 0.03
CLIENT_TIMEOUT = "100ms"
HANG_JUST_PAST_TIMEOUT_S = 0.15
PROCESSES = 2
THREADS = 4

INVARIANTS = [
    "no duplicate effect; every confirmed transition took effect",
    "no re-send without a read-back showing the old state",
    "every ambiguous send resolved by a matching read-back or held",
    "no lost transition: ends as with every answer delivered, live documents match the ledger",
    "chain verifies",
]


class _Clock:
    def __init__(self) -> None:
        self.now = datetime.now(UTC)
        self.lock = threading.Lock()

    def __call__(self) -> datetime:
        with self.lock:
            return self.now

    def jump(self, to: datetime) -> None:
        with self.lock:
            self.now = max(self.now, to)


class _Worker:
    """One thread's engine, clock and ledger, reused across its executions (a warm fold cache)."""

    def __init__(self, store: SqlLedgerStore, client: Any, number: int) -> None:
        self.clock = _Clock()
        self.sandboxes: dict[str, TrialSandbox] = {}
        self.fault_at: dict[str, int | None] = {}
        connect_to = {}

        def connect(state: Any) -> Any:
            url = self.sandboxes[state.execution_id].url
            if url not in connect_to:
                connect_to[url] = live_connector(Credentials({}), client, self.clock, url)
            return connect_to[url](state)

        self.engine = Engine(store, connect, self.clock, f"reliability-{number}", listeners=[self._arm])

    def _arm(self, execution_id: str, entries: Any) -> None:
        """Switch ``error-rate-high`` on as the chosen stage is entered (when the stage before it passes)."""
        index = self.fault_at.get(execution_id)
        if index is None:
            return
        for e in entries:
            if e.kind == "stage.passed" and int(e.body["index"]) == index - 1:
                self.sandboxes[execution_id].add_fault("error-rate-high")


def _drive(engine: Engine, eid: str, clock: _Clock) -> None:
    for _ in range(5000):
        wake = engine.tick(eid)
        state = engine.load(eid)
        if state.terminal or state.phase == Phase.HOLDING:
            return
        clock.jump(wake or clock() + timedelta(seconds=1))


class _Totals:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.counts: Counter[str] = Counter()

    def add(self, **counts: int) -> None:
        with self.lock:
            self.counts.update(counts)


def _one(
    number: int, change: LoadedChange, worker: _Worker, rng: random.Random, rec: Recorder, totals: _Totals
) -> None:
    fault_at = rng.randint(1, STAGES - 1) if rng.random() < 0.35 else None
    hang = HANG_JUST_PAST_TIMEOUT_S if number % 2 else 0.0
    sandbox = TrialSandbox(
        timeout_ratio=TIMEOUT_RATIO, hang_seconds=hang, seed=rng.randrange(2**32), lose_before_ratio=LOSE_BEFORE_RATIO
    )
    sandbox.start()
    name = f"ambiguous-{number:07d}"
    eid = f"CHG-AMB-{number:07d}"
    worker.sandboxes[eid] = sandbox
    worker.fault_at[eid] = fault_at
    engine, clock, store = worker.engine, worker.clock, worker.engine.store
    try:
        state = engine.start(change, "U05OPS", mode="rehearsal", speed=1.0, execution_id=eid)
        _drive(engine, state.execution_id, clock)
        expected = "completed" if fault_at is None else "rolled_back"
        stopped = engine.load(eid)
        if stopped.hold is not None and stopped.hold.kind in ("ambiguous", "not_applied"):
            # The re-send was lost too, so the engine held instead of guessing. The transition it
            # holds on must not have taken effect; the rollback authority then takes the way back.
            pending = stopped.pending
            if pending is not None and any(a["key"] == pending.key for a in sandbox.applied()):
                rec.add(name, "no lost transition", f"held as not applied, but {pending.key} was applied")
            engine.rollback(eid, "U03RESP", "outcome unknown after a lost re-send")
            _drive(engine, eid, clock)
            expected = "rolled_back"
        entries: list[Entry] = store.read(state.execution_id)
        final = checks.folded(entries)
        rec.add(name, "no duplicate effect", checks.effects(entries, sandbox.applied()))
        rec.add(name, "no blind retry", checks.no_blind_retry(entries, [e.key for e in sandbox.sends()]))
        rec.add(name, "ambiguity resolved", checks.ambiguity_resolved(entries))
        rollback_unconfirmed = (
            final.status() == "needs_human"
            and final.pending is not None
            and final.pending.direction == "rollback"
            and final.outcome_reason.startswith("rollback failed")
        )
        if rollback_unconfirmed:
            # A rollback step whose re-send was lost too cannot be confirmed: that is for a human,
            # never a third send. It must not have taken effect behind the ledger's back.
            assert final.pending is not None
            totals.add(rollbacks_for_a_human=1)
            if any(a["key"] == final.pending.key for a in sandbox.applied()):
                rec.add(name, "no lost transition", f"needs a human for {final.pending.key}, which was applied")
        elif final.status() != expected:
            hold = f" ({final.hold.kind}: {final.hold.reason})" if final.hold else ""
            rec.add(name, "no lost transition", f"ended {final.status()}{hold}, expected {expected}")
        rec.add(name, "no lost transition", checks.live_matches_ledger(entries, sandbox.state))
        rec.add(name, "chain verifies", checks.chain(entries, state.execution_id))
        sent = [e for e in entries if e.kind == "action.sent"]
        ambiguous = [e for e in sent if e.body.get("outcome") == "ambiguous"]
        keys = {e.body["key"] for e in ambiguous}
        confirmed = {e.body["key"] for e in entries if e.kind == "action.confirmed"}
        held = sum(1 for e in entries if e.kind == "hold.opened" and e.body.get("kind") in ("ambiguous", "not_applied"))
        totals.add(
            executions=1,
            actions=sum(1 for e in entries if e.kind == "action.intended"),
            rollbacks=1 if fault_at is not None else 0,
            sends=len(sent),
            ambiguous=len(ambiguous),
            resolved=len(keys & confirmed),
            held=held,
            resends=sum(1 for e in entries if e.kind == "action.resend_intended"),
            dropped=len(ambiguous) if hang == 0 else 0,
            lost_before=sandbox.lost_before,
        )
    finally:
        sandbox.stop()
        worker.sandboxes.pop(eid, None)


def _scratch(workdir: Path) -> Path:
    """Where the ledgers go: memory-backed when the system has it. This family is about lost answers,
    not disk durability (the crash family keeps its ledgers on disk), and fsync would dominate."""
    shm = Path("/dev/shm")
    if shm.is_dir() and os.access(shm, os.W_OK):
        path = shm / f"stagehold-ambiguous-{os.getpid()}"
        path.mkdir(exist_ok=True)
        return path
    return workdir


def _process(
    seed: int, part: int, workdir: Path, target_actions: int
) -> tuple[list[Violation], int, int, dict[str, int]]:
    """One worker process: ``THREADS`` threads running executions until ``target_actions`` are reached."""
    change = load_change(workdir / "change" / "package.yaml")
    rec = Recorder()
    totals = _Totals()
    numbers = iter(range(part * 1_000_000 + 1, (part + 1) * 1_000_000))
    numbers_lock = threading.Lock()
    scratch = _scratch(workdir)

    def worker(w: int) -> None:
        rng = random.Random(seed * 1000 + part * 100 + w)
        store = SqlLedgerStore(f"sqlite:///{scratch / f'ledger-{part}-{w}.db'}")
        client = http_client(10.0)
        state = _Worker(store, client, part * 100 + w)
        try:
            while True:
                with totals.lock:
                    if totals.counts["actions"] >= target_actions:
                        return
                with numbers_lock:
                    number = next(numbers)
                _one(number, change, state, rng, rec, totals)
                rec.trial_done()
        finally:
            client.close()
            store.close()

    try:
        with ThreadPoolExecutor(max_workers=THREADS) as pool:
            list(pool.map(worker, range(THREADS)))
    finally:
        if scratch != workdir:
            shutil.rmtree(scratch, ignore_errors=True)
    return rec.violations, rec.dropped, rec.trials, dict(totals.counts)


def run(size: Size, workdir: Path) -> list[FamilyResult]:
    started = time.monotonic()
    workdir.mkdir(parents=True, exist_ok=True)
    plans.write_change(workdir / "change", plans.package("CHG-AMB"), plans.many_stages(STAGES, timeout=CLIENT_TIMEOUT))
    target_actions = size.pick(400, 10_000)
    processes = max(1, min(PROCESSES, os.cpu_count() or 1))
    share = -(-target_actions // processes)
    rec = Recorder()
    totals = _Totals()
    # Separate processes use both cores; the engine, its adapters and the sandbox are CPU-bound
    # Python that one interpreter would run on one core.
    with ProcessPoolExecutor(max_workers=processes, mp_context=multiprocessing.get_context("spawn")) as pool:
        futures = [pool.submit(_process, size.seed, part, workdir, share) for part in range(processes)]
        for future in futures:
            violations, dropped, _trials, counts = future.result()
            for v in violations:
                rec.add(v.trial, v.invariant, v.detail)
            rec.dropped += dropped
            totals.add(**counts)
    c = totals.counts
    notes = [
        f"{c['executions']} executions of {STAGES} stages ({c['rollbacks']} rolled back by a fault switched on at a "
        f"random stage), {c['actions']:,} actions (forward and rollback), {c['sends']:,} sends",
        f"{c['ambiguous']:,} ambiguous sends ({c['ambiguous'] / max(1, c['sends']):.1%} of sends; "
        f"{c['dropped']:,} by a dropped connection, the rest by an answer withheld {HANG_JUST_PAST_TIMEOUT_S:g}s "
        f"against a {CLIENT_TIMEOUT} client timeout): {c['resolved']:,} of their transitions confirmed by read-back, "
        f"{c['held']} held, {c['resends']} re-sent once under the same key after a read-back showed the old state "
        f"({c['lost_before']} writes lost before they were applied, ratio {LOSE_BEFORE_RATIO}); a forward step "
        f"whose re-send was lost too is held (then rolled back by the rollback authority), a rollback step ends "
        f"needing a human ({c['rollbacks_for_a_human']})",
        f"sandbox: `Sandbox(timeout_ratio={TIMEOUT_RATIO}, hang_seconds=..., seed=...)`, one per execution; "
        f"{processes} processes × {THREADS} threads run executions in parallel",
    ]
    if rec.dropped:
        notes.append(f"{rec.dropped} further violation(s) not listed")
    return [
        rec.result("ambiguous", "Ambiguous outcomes", "actions", INVARIANTS, notes, size, started, trials=c["actions"])
    ]
