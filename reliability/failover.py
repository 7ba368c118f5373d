"""Family: failover — three replicas on one PostgreSQL ledger, the lease holder killed with SIGKILL.

Each trial runs the four-stage drill (``plans.crash_drill``) as three engine-driving processes on
a private PostgreSQL cluster (``reliability.pgcluster``): ``rehearse`` starts the execution, two
``resume`` processes wait beside it (each ticks about once a second; only the lease holder acts),
all with ``--auto-release`` and short leases (``STAGEHOLD_LEASE_TTL``). At chosen moments — a
write in flight, a write applied but unanswered, a read-back waiting, a verification sample, a
rollback in flight — the harness SIGKILLs whichever process holds the execution's lease (its
owner name carries its pid) and starts a replacement, so three run again. Nobody expires the dead
process's lease: a survivor must take it over by itself, and the time from the kill to the new
owner in the lease table is the takeover time, reported against TTL + one poll. Some trials also
restart PostgreSQL (an immediate stop: WAL recovery) mid-run; the processes wait it out.

Per trial: each intended transition took effect once (the sandbox's effect log against the
ledger's intent keys), no re-send without a read-back, every ambiguous send resolved, no stage
passed without its evidence, no checkpoint skipped, the chain verifies (also against the heads
saved at each kill), the live documents match the ledger, no traceback, every process that ran to
the end reports the same end, and that end is the scenario's (completed; rolled back).

Slack trials (``reliability.failover_slack``): three ``serve`` replicas, the one posting to the
channel killed between Slack's answer and its own database write; no message twice, none lost.
"""

from __future__ import annotations

import os
import random
import signal
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from bot import exits
from reliability import checks, crash, failover_slack, plans
from reliability.crash import CHANGE_ID, _child_env, _confirm_paths, _Dropped
from reliability.harness import ROOT, FamilyResult, Recorder, Size
from reliability.pgcluster import Peek, PrivateCluster
from reliability.target import Event, TrialSandbox

SPEED = "600"
TTL_S = 2.0
POLL_S = 1.0  # a waiting process ticks about once a second (bot.driver)
REPLICAS = 3
TRIAL_TIMEOUT_S = 180.0

# The kill moments: (where, moment, sandbox event kind) or a ledger kind.
POINTS: dict[str, tuple[str, str, str]] = {
    "apply-in-flight": ("sandbox", "before", "write:apply"),
    "apply-landed": ("sandbox", "after", "write:apply"),
    "read-back": ("sandbox", "before", "get:confirm"),
    "verify": ("sandbox", "before", "get:verify"),
    "verify-recorded": ("ledger", "", "verification.sampled"),
    "rollback-in-flight": ("sandbox", "before", "write:rollback"),
    "rollback-landed": ("sandbox", "after", "write:rollback"),
}
FORWARD = ("apply-in-flight", "apply-landed", "read-back", "verify", "verify-recorded")
SCENARIOS: dict[str, tuple[str, tuple[str, ...]]] = {
    # name: (expected status, kill points)
    "clean": ("completed", FORWARD),
    "fail-at-s2": ("rolled_back", (*FORWARD, "rollback-in-flight", "rollback-landed")),
}

INVARIANTS = [
    *crash.INVARIANTS[:8],  # the crash trials' checks, on the replicas' shared ledger
    "every replica that ran to the end reports the same end, the scenario's",
    f"the lease moves to a survivor by itself (TTL {TTL_S:g} s + poll {POLL_S:g} s)",
    *failover_slack.INVARIANTS,
]


@dataclass(frozen=True)
class Kill:
    point: str
    nth: int


@dataclass(frozen=True)
class Spec:
    number: int
    scenario: str
    kills: tuple[Kill, ...]
    restart_db_after_s: float | None  # restart PostgreSQL this long after the replicas started

    @property
    def name(self) -> str:
        return f"failover-{self.number:03d}/{self.scenario}"


def specs(count: int, seed: int, restarts: int) -> list[Spec]:
    rng = random.Random(seed)
    out = []
    for n in range(count):
        scenario = sorted(SCENARIOS, reverse=True)[n % len(SCENARIOS)]  # the rollback path first
        points = SCENARIOS[scenario][1]
        kills = tuple(Kill(rng.choice(points), rng.randint(1, 3)) for _ in range(rng.randint(2, 4)))
        restart = rng.uniform(0.5, 4.0) if n < restarts else None
        out.append(Spec(n + 1, scenario, kills, restart))
    return out


@dataclass
class TrialOutcome:
    kills: list[str] = field(default_factory=list)
    takeovers: list[float] = field(default_factory=list)
    violations: list[tuple[str, list[str]]] = field(default_factory=list)
    processes: int = 0
    restarted_db: bool = False
    refused_starts: int = 0


class _Trial:
    def __init__(self, spec: Spec, cluster: PrivateCluster, workdir: Path, package: Path) -> None:
        self.spec = spec
        self.cluster = cluster
        self.workdir = workdir
        self.package = package
        self.eid = f"{CHANGE_ID}-F{spec.number:03d}"
        self.url = cluster.create_database(f"failover_{spec.number:03d}")
        self.lock = threading.Lock()
        self.procs: dict[int, subprocess.Popen[bytes]] = {}
        self.logs: list[Path] = []
        self.log_of: dict[int, Path] = {}
        self.kills = list(spec.kills)
        self.count = 0
        self.pending_kill: tuple[str, float, str] | None = None  # (point, when, owner)
        self.heads: list[tuple[int, str]] = []
        self.out = TrialOutcome()
        self.fault_armed = False
        self._query = Peek(self.url)

    # ------------------------------------------------------------ processes

    def _spawn(self, args: list[str]) -> None:
        self.out.processes += 1
        log = self.workdir / f"process-{self.out.processes}.log"
        self.logs.append(log)
        env = _child_env()
        env["STAGEHOLD_LEASE_TTL"] = str(TTL_S)
        env["STAGEHOLD_LEASE_RENEW"] = str(TTL_S / 3)
        with log.open("wb") as out:
            proc = subprocess.Popen(
                [sys.executable, "-m", "bot.cli", *args, "--db", self.url, "--quiet"],
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=ROOT,
                env=env,
            )
        self.procs[proc.pid] = proc
        self.log_of[proc.pid] = log

    def _resume(self, sandbox_url: str) -> None:
        self._spawn(["resume", self.eid, "--sandbox", sandbox_url, "--auto-release"])

    # ------------------------------------------------------------ the database, read directly

    def _owner(self) -> str | None:
        rows = self._query("SELECT owner, expires_at FROM stagehold_lease WHERE execution_id = %s", self.eid)
        return str(rows[0][0]) if rows else None

    # ------------------------------------------------------------ killing the holder

    def _kill_holder(self, point: str) -> bool:
        owner = self._owner()
        if owner is None:
            return False
        pid = int(owner.split(":")[1])
        proc = self.procs.get(pid)
        if proc is None or proc.poll() is not None:
            return False
        os.kill(pid, signal.SIGKILL)
        proc.wait()
        self.pending_kill = (point, time.monotonic(), owner)
        self.out.kills.append(point)
        return True

    def hook(self, moment: str, event: Event) -> None:
        with self.lock:
            if not self.kills or self.pending_kill is not None:
                return
            where, when, kind = POINTS[self.kills[0].point]
            if where != "sandbox" or when != moment or kind != event.kind:
                return
            self.count += 1
            if self.count < self.kills[0].nth:
                return
            point = self.kills.pop(0).point
            self.count = 0
            killed = self._kill_holder(point)
        if killed and moment == "before":
            raise _Dropped(point)

    def _watch_ledger(self, seen: int, sandbox: TrialSandbox) -> int:
        rows = self._query(
            "SELECT seq, kind, body FROM stagehold_ledger WHERE execution_id = %s AND seq > %s ORDER BY seq",
            self.eid,
            seen,
        )
        for seq, kind, body in rows:
            seen = int(seq)
            s1_passed = kind == "stage.passed" and '"index":0' in body
            if self.spec.scenario == "fail-at-s2" and s1_passed and not self.fault_armed:
                sandbox.add_fault("error-rate-high")  # s2's evidence fails: the rollback path
                self.fault_armed = True
            with self.lock:
                if self.kills and self.pending_kill is None:
                    where, _, want = POINTS[self.kills[0].point]
                    if where == "ledger" and kind == want:
                        self.count += 1
                        if self.count >= self.kills[0].nth:
                            point = self.kills.pop(0).point
                            self.count = 0
                            self._kill_holder(point)
        return seen

    # ------------------------------------------------------------ one trial

    def run(self, sandbox: TrialSandbox) -> None:
        sandbox.hook = self.hook
        started = time.monotonic()
        self._spawn(
            [
                "rehearse",
                str(self.package),
                "--sandbox",
                sandbox.url,
                "--execution-id",
                self.eid,
                "--auto-release",
                "--speed",
                SPEED,
            ]
        )
        seen = 0
        waiting_replicas = True
        restart_at: float | None = None
        while True:
            now = time.monotonic()
            if now - started > TRIAL_TIMEOUT_S:
                self.out.violations.append(("trial finished", [f"ran over {TRIAL_TIMEOUT_S:g}s"]))
                break
            seen = self._watch_ledger(seen, sandbox)
            if waiting_replicas and seen > 0:
                for _ in range(REPLICAS - 1):
                    self._resume(sandbox.url)
                waiting_replicas = False
                if self.spec.restart_db_after_s is not None:  # once the execution runs on its replicas
                    restart_at = now + self.spec.restart_db_after_s
            if restart_at is not None and now >= restart_at:
                restart_at = None
                self.cluster.restart()
                self.out.restarted_db = True
            self._after_kill(sandbox)
            self._supervise(sandbox)
            if all(p.poll() is not None for p in self.procs.values()) and self.pending_kill is None:
                break
            time.sleep(0.02)
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        self._query.close()

    def _supervise(self, sandbox: TrialSandbox) -> None:
        """Start again, as a supervisor would, a replica that stopped because the database was restarting."""
        for pid, proc in list(self.procs.items()):
            log = self.log_of[pid]
            said = log.read_text(errors="replace") if proc.poll() == exits.INVALID else ""
            if "cannot open the ledger database" in said or "the ledger database does not answer" in said:
                del self.procs[pid]
                self.out.refused_starts += 1
                self._resume(sandbox.url)

    def _after_kill(self, sandbox: TrialSandbox) -> None:
        with self.lock:
            pending = self.pending_kill
        if pending is None:
            return
        point, killed_at, owner = pending
        if len([p for p in self.procs.values() if p.poll() is None]) < REPLICAS:
            head = self._query(
                "SELECT seq, hash FROM stagehold_ledger WHERE execution_id = %s ORDER BY seq DESC LIMIT 1", self.eid
            )
            if head:
                self.heads.append((int(head[0][0]), str(head[0][1])))
            self._resume(sandbox.url)  # three again
        current = self._owner()
        terminal = self._query(
            "SELECT 1 FROM stagehold_ledger WHERE execution_id = %s AND kind IN "
            "('execution.completed', 'execution.rolled_back', 'execution.needs_human', 'execution.abandoned')",
            self.eid,
        )
        if current is not None and current != owner:
            self.out.takeovers.append(time.monotonic() - killed_at)
        elif not terminal and time.monotonic() - killed_at < 60:
            return  # not yet taken over
        elif not terminal:
            self.out.violations.append(("lease moves to a survivor", [f"no takeover 60 s after the kill at {point}"]))
        with self.lock:
            self.pending_kill = None


def _judge(trial: _Trial, sandbox: TrialSandbox) -> None:
    from ledger.sql import SqlLedgerStore

    store = SqlLedgerStore(trial.url)
    try:
        entries = store.read(trial.eid)
    finally:
        store.close()
    v = trial.out.violations
    applied = sandbox.applied()
    sends = [e.key for e in sandbox.sends()]
    v.append(("effect once per transition", checks.effects(entries, applied)))
    v.append(("no blind retry", checks.no_blind_retry(entries, sends)))
    v.append(("ambiguity resolved", checks.ambiguity_resolved(entries)))
    v.append(("passed with evidence", checks.passed_with_evidence(entries)))
    v.append(("no checkpoint skipped", checks.checkpoints(entries)))
    v.append(("chain verifies", checks.chain(entries, trial.eid, trial.heads)))
    v.append(("live matches ledger", checks.live_matches_ledger(entries, sandbox.state)))
    traces = [log.name for log in trial.logs if log.exists() and "Traceback" in log.read_text(errors="replace")]
    v.append(("no traceback", [f"{name} printed a traceback" for name in traces]))
    expected = SCENARIOS[trial.spec.scenario][0]
    status = checks.folded(entries).status()
    codes = {p.returncode for p in trial.procs.values() if p.returncode is not None and p.returncode >= 0}
    same = (
        []
        if status == expected and len(codes) == 1
        else [f"ended {status} (expected {expected}), exit codes {sorted(codes)}"]
    )
    v.append(("same end", same))


def run(size: Size, workdir: Path) -> list[FamilyResult]:
    count = size.pick(1, 46)
    restarts = size.pick(1, 4)
    started = time.monotonic()
    rec = Recorder()
    workdir.mkdir(parents=True, exist_ok=True)
    package = plans.write_change(workdir / "change", plans.package(CHANGE_ID), plans.crash_drill())
    cluster = PrivateCluster().start()
    takeovers: list[float] = []
    by_point: dict[str, int] = {}
    kills = 0
    restarted = 0
    try:
        for spec in specs(count, size.seed, restarts):
            trial_dir = workdir / spec.name.replace("/", "-")
            trial_dir.mkdir(parents=True, exist_ok=True)
            sandbox = TrialSandbox(confirm_paths=_confirm_paths(package))
            sandbox.start()
            try:
                trial = _Trial(spec, cluster, trial_dir, package)
                trial.run(sandbox)
                _judge(trial, sandbox)
            finally:
                sandbox.stop()
            kills += len(trial.out.kills)
            for point in trial.out.kills:
                by_point[point] = by_point.get(point, 0) + 1
            takeovers += trial.out.takeovers
            restarted += int(trial.out.restarted_db)
            for invariant, problems in trial.out.violations:
                if problems:
                    rec.add(spec.name, invariant, problems)
            rec.trial_done(len(trial.out.kills))
        slack_takeovers: list[float] = []

        def judged(name: str, out: failover_slack.SlackTrialOutcome) -> None:
            nonlocal kills
            kills += len(out.kills)
            for point in out.kills:
                by_point[point] = by_point.get(point, 0) + 1
            slack_takeovers.extend(out.takeovers)
            for invariant, problems in out.violations:
                if problems:
                    rec.add(name, invariant, problems)
            rec.trial_done(len(out.kills))

        slack_trials = size.pick(1, 14)
        failover_slack.run_slack_trials(slack_trials, size.seed, cluster, workdir, TTL_S, judged)
    finally:
        cluster.stop()
    notes = _notes(takeovers, kills, count, restarted)
    notes.append("kills by point: " + ", ".join(f"{p} {n}" for p, n in sorted(by_point.items())))
    notes.append(
        f"{slack_trials} Slack trials (three serve replicas; the channel's poster killed between Slack's answer and its "
        f"database write): channel takeover p50 {_p50(slack_takeovers):.2f} s, max {max(slack_takeovers, default=float('nan')):.2f} s"
    )
    if rec.dropped:
        notes.append(f"{rec.dropped} further violation(s) not listed")
    title = "Failover across replicas"
    return [rec.result("failover", title, "kills", INVARIANTS, notes, size, started)]


def _p50(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


def _notes(takeovers: list[float], kills: int, trials: int, restarted: int) -> list[str]:
    budget = TTL_S + POLL_S
    within = sum(1 for t in takeovers if t <= budget + 1.0)
    return [
        f"{trials} engine trials, {kills} kills in all (of the execution's lease holder, and of the Slack channel's poster below), {restarted} PostgreSQL restart(s) (immediate stop, WAL recovery) mid-run",
        f"takeover after a kill (kill -> new owner in the lease table): p50 {statistics.median(takeovers) if takeovers else float('nan'):.2f} s, "
        f"p99 {_pct(takeovers, 0.99):.2f} s, max {max(takeovers, default=float('nan')):.2f} s, against TTL {TTL_S:g} s + poll {POLL_S:g} s = {budget:g} s "
        f"({within} of {len(takeovers)} within it plus 1 s)",
        "the dead process's lease is never expired by the harness: a survivor takes it when it lapses",
    ]
