"""Family 1: crash trials, and the negative control that runs them on an unsafe engine.

Each trial runs a four-stage rehearsal (``plans.crash_drill``) as a separate process,
``python -m bot.cli rehearse ... --sandbox URL --auto-release``, against a sandbox served from
this process. It SIGKILLs the process 1-3 times at chosen moments — while a release is acted on,
while a write is in flight or has landed without its answer, while a read-back waits, while the
stage bakes, while a rollback is sent — and each time restarts it with
``python -m bot.cli resume X --sandbox URL --auto-release``. The last process runs to the end.

The moments are exact: the sandbox calls back before and after every request, so "applied but
unanswered" is a kill after the write was applied and before its answer leaves; ledger moments
(a release recorded, a rollback started) are caught by watching the database.

A killed process leaves its lease behind; a restarted one would wait out its lifetime (STAGEHOLD_LEASE_TTL). The
harness expires the dead process's lease in the database instead of waiting (the process is
certainly dead: it was SIGKILLed and reaped).

Per trial: every intended transition took effect once (the sandbox's ``/applied`` log against the
ledger's ``action.intended`` keys), no send was repeated without a read-back showing the old
state, every ambiguous send was resolved, no stage passed without its evidence, no checkpoint was
skipped, the chain verifies (also against the head saved at each kill), the live documents match
the ledger, no process printed a traceback, and the end state and exit code equal those of an
uninterrupted run with the same faults.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from reliability import checks, plans, unsafe
from reliability.harness import ROOT, FamilyResult, Recorder, Size
from reliability.target import Event, TrialSandbox

SPEED = "600"
PROCESS_TIMEOUT_S = 90.0

CHANGE_ID = "CHG-CRASH"

# Scenario: the faults given to rehearse/resume, and the kill moments that can happen in it.
_FORWARD = ("gate", "apply-in-flight", "apply-landed", "read-back", "verify", "verify-recorded", "anywhere")
_RELEASE = ("release",)
_ROLLBACK = ("rollback-started", "rollback-in-flight", "rollback-landed")
SCENARIOS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "clean": ((), _FORWARD + _RELEASE),
    "fail-at-s2": (("error-rate-high@s2",), _FORWARD + _ROLLBACK),
    "fail-while-held-at-s3": (("error-rate-high@s3",), _FORWARD + _ROLLBACK),
    "degraded-at-s3": (("error-rate-degraded@s3",), _FORWARD + _RELEASE),
    "apply-timeout-from-s2": (("apply-timeout@s2",), _FORWARD + _RELEASE),
    "apply-timeout-then-fail-at-s2": (("apply-timeout@s2", "error-rate-high@s2"), _FORWARD + _ROLLBACK),
    "rollback-fails-at-s2": (("error-rate-high@s2", "rollback-fail@s2"), _FORWARD + _ROLLBACK),
    "readback-fails-at-s3": (("readback-fail@s3",), _FORWARD + _RELEASE),
    "snapshot-stale-at-s3": (("snapshot-stale@s3",), _FORWARD),
}

# With the read-back path down, a resumed process cannot reconcile the ledger with the target and
# (rightly) holds at once, where an uninterrupted run holds one step later. For these scenarios
# "the same end" means the same status and no stage further along than without the crash.
COARSE = frozenset({"readback-fails-at-s3"})
_RANK = {"pending": 0, "rolled_back": 0, "rolling_back": 1, "applying": 2, "live": 3, "passed": 4}

# The moment groups the issue names, for the report.
GROUP = {
    "release": "acting on a release",
    "gate": "applying",
    "apply-in-flight": "applying",
    "apply-landed": "applying",
    "read-back": "reading back",
    "verify": "verifying",
    "verify-recorded": "verifying",
    "rollback-started": "rolling back",
    "rollback-in-flight": "rolling back",
    "rollback-landed": "rolling back",
    "anywhere": "at a random delay",
}

INVARIANTS = [
    "each intended transition took effect once (sandbox /applied vs ledger keys)",
    "no re-send without a read-back showing the old state",
    "every ambiguous send resolved by read-back or held",
    "no stage passed without its consecutive passing samples or a release",
    "no checkpoint skipped (gate, earlier stages, release)",
    "chain verifies, also against the head saved at each kill",
    "live documents match the ledger",
    "no traceback",
    "end state and exit code equal an uninterrupted run",
]


@dataclass(frozen=True)
class Trigger:
    point: str
    source: str  # sandbox | ledger | delay
    nth: int = 1
    moment: str = ""  # before | after (sandbox)
    event: str = ""  # Event.kind (sandbox)
    kinds: tuple[str, ...] = ()  # ledger entry kinds
    delay_s: float = 0.0


def make_trigger(point: str, rng: random.Random, *, first: bool = False) -> Trigger:
    """A kill moment. The first of a trial is one that certainly comes (the first occurrence, an
    early delay), so every trial is killed at least once; later ones may come or not."""

    def nth(most: int) -> int:
        return 1 if first else rng.randint(1, most)

    if point == "release":
        return Trigger(point, "ledger", nth(2), kinds=("release.granted", "hold.released"))
    if point == "gate":
        return Trigger(point, "ledger", nth(3), kinds=("gate.checked",))
    if point == "verify-recorded":
        return Trigger(point, "ledger", nth(6), kinds=("verification.sampled",))
    if point == "rollback-started":
        return Trigger(point, "ledger", 1, kinds=("rollback.started",))
    if point == "anywhere":
        return Trigger(point, "delay", delay_s=rng.uniform(0.05, 0.5 if first else 1.5))
    sandbox = {
        "apply-in-flight": ("before", "write:apply", 3),
        "apply-landed": ("after", "write:apply", 3),
        "read-back": ("before", "get:confirm", 4),
        "verify": ("before", "get:verify", 8),
        "rollback-in-flight": ("before", "write:rollback", 2),
        "rollback-landed": ("after", "write:rollback", 2),
    }
    moment, event, most = sandbox[point]
    return Trigger(point, "sandbox", nth(most), moment=moment, event=event)


@dataclass(frozen=True)
class TrialSpec:
    number: int
    scenario: str
    triggers: tuple[Trigger, ...]
    # After the last kill, two resumes are started at once (an operator and the scheduler both
    # restarting it): only the lease holder may drive, the other waits and reports the same end.
    double_resume: bool = False

    @property
    def name(self) -> str:
        return f"crash-{self.number:04d}/{self.scenario}"


def trial_specs(count: int, seed: int) -> list[TrialSpec]:
    rng = random.Random(seed)
    names = sorted(SCENARIOS)
    specs = []
    for n in range(count):
        scenario = names[n % len(names)] if n < len(names) else rng.choice(names)
        points = SCENARIOS[scenario][1]
        kills = rng.randint(1, 3)
        chosen = tuple(make_trigger(rng.choice(points), rng, first=i == 0) for i in range(kills))
        specs.append(TrialSpec(n + 1, scenario, chosen, double_resume=rng.random() < 0.2))
    return specs


class _Dropped(Exception):
    """Raised in the sandbox after a kill "before" a request: the request is not served."""


@dataclass
class TrialRun:
    """What one trial did, for the checks and the report."""

    spec: TrialSpec | None
    scenario: str
    outcome: dict[str, Any] = field(default_factory=dict)
    exit_code: int | None = None
    kills: list[str] = field(default_factory=list)
    processes: int = 0
    violations: list[tuple[str, list[str]]] = field(default_factory=list)
    absorbed: int = 0
    ambiguous: int = 0
    resends: int = 0
    doubled: bool = False


class _Runner:
    """Runs one rehearsal (killing and resuming it as the triggers say) and judges the result."""

    def __init__(
        self, workdir: Path, package: Path, scenario: str, name: str, triggers: tuple[Trigger, ...], unsafe_build: bool
    ) -> None:
        self.workdir = workdir
        self.package = package
        self.scenario = scenario
        self.name = name
        self.triggers = list(triggers)
        self.unsafe_build = unsafe_build
        self.db = workdir / "ledger.db"
        self.url = f"sqlite:///{self.db}"
        self.eid = "CHG-CRASH-" + name.split("/")[0].upper()
        self.lock = threading.Lock()
        self.killed = threading.Event()
        self.proc: subprocess.Popen[bytes] | None = None
        self.trigger: Trigger | None = None
        self.count = 0
        self.armed_at = 0.0
        self.seen_seq = 0
        self.heads: list[tuple[int, str]] = []
        self.logs: list[Path] = []
        self.run = TrialRun(None, scenario)

    # ------------------------------------------------------------ processes

    def _module(self) -> str:
        return "reliability.unsafe_cli" if self.unsafe_build else "bot.cli"

    def _faults(self) -> list[str]:
        out = []
        for fault in SCENARIOS[self.scenario][0]:
            out += ["--fault", fault]
        return out

    def _spawn(self, args: list[str]) -> subprocess.Popen[bytes]:
        self.run.processes += 1
        log = self.workdir / f"process-{self.run.processes}.log"
        self.logs.append(log)
        cmd = [sys.executable, "-m", self._module(), *args, "--db", self.url, "--quiet", *self._faults()]
        with log.open("wb") as out:
            return subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT, env=_child_env())

    def _rehearse(self, url: str) -> subprocess.Popen[bytes]:
        return self._spawn(
            [
                "rehearse",
                str(self.package),
                "--sandbox",
                url,
                "--execution-id",
                self.eid,
                "--auto-release",
                "--speed",
                SPEED,
            ]
        )

    def _resume(self, url: str) -> subprocess.Popen[bytes]:
        return self._spawn(["resume", self.eid, "--sandbox", url, "--auto-release"])

    # ------------------------------------------------------------ killing

    def _kill(self, point: str | None) -> bool:
        """SIGKILL the running process and reap it; False if it had already ended on its own."""
        proc = self.proc
        if proc is None or self.killed.is_set() or proc.poll() is not None:
            return False
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        self.killed.set()
        if point is not None:
            self.run.kills.append(point)
        return True

    def hook(self, moment: str, event: Event) -> None:
        with self.lock:
            t = self.trigger
            if t is None or t.source != "sandbox" or t.moment != moment or t.event != event.kind:
                return
            self.count += 1
            if self.count < t.nth:
                return
            self.trigger = None
            killed = self._kill(t.point)
        if killed and moment == "before":
            raise _Dropped(t.point)

    def _arm(self, trigger: Trigger | None) -> None:
        with self.lock:
            self.trigger = trigger
            self.count = 0
            self.armed_at = time.monotonic()
            self.killed.clear()

    def _poll_ledger(self, conn: sqlite3.Connection | None) -> sqlite3.Connection | None:
        t = self.trigger
        if t is None or t.source != "ledger":
            return conn
        if conn is None:
            if not self.db.exists():
                return None
            conn = sqlite3.connect(self.db, timeout=5)
        try:
            rows = conn.execute(
                "SELECT seq, kind FROM stagehold_ledger WHERE execution_id = ? AND seq > ? ORDER BY seq",
                (self.eid, self.seen_seq),
            ).fetchall()
        except sqlite3.OperationalError:
            return conn  # the table is not created yet, or the writer holds a lock for a moment
        for seq, kind in rows:
            self.seen_seq = seq
            if kind in t.kinds:
                with self.lock:
                    if self.trigger is not t:
                        return conn
                    self.count += 1
                    if self.count >= t.nth:
                        self.trigger = None
                        self._kill(t.point)
                        return conn
        return conn

    def _wait(self, deadline: float) -> str:
        conn: sqlite3.Connection | None = None
        try:
            while True:
                with self.lock:  # every kill happens under this lock: never mistake a kill for an exit
                    if self.killed.is_set():
                        return "killed"
                    assert self.proc is not None
                    if self.proc.poll() is not None:
                        return "exited"
                conn = self._poll_ledger(conn)
                t = self.trigger
                if t is not None and t.source == "delay" and time.monotonic() - self.armed_at >= t.delay_s:
                    with self.lock:
                        if self.trigger is t:
                            self.trigger = None
                            self._kill(t.point)
                if time.monotonic() > deadline:
                    with self.lock:
                        self._kill(None)
                    return "timeout"
                time.sleep(0.002)
        finally:
            if conn is not None:
                conn.close()

    def _after_kill(self) -> bool:
        """Save a head checkpoint and expire the dead process's lease (it was SIGKILLed and reaped).

        Returns whether the execution exists: a process killed before it wrote ``execution.started``
        left nothing to resume, and the operator would simply rehearse again.
        """
        try:
            with sqlite3.connect(self.db, timeout=30) as conn:
                # Every lease the dead process held lapses: the execution's, and the short start
                # lease on the change if it died while starting (before ``execution.started``),
                # which would otherwise refuse the operator's new ``rehearse`` until it expires.
                conn.execute(
                    "UPDATE stagehold_lease SET expires_at = '2000-01-01T00:00:00.000000Z' "
                    "WHERE execution_id IN (?, ?)",
                    (self.eid, f"start:{CHANGE_ID}"),
                )
                row = conn.execute(
                    "SELECT seq, hash FROM stagehold_ledger WHERE execution_id = ? ORDER BY seq DESC LIMIT 1",
                    (self.eid,),
                ).fetchone()
                if row is None:
                    return False
                self.heads.append((int(row[0]), str(row[1])))
                return True
        except sqlite3.OperationalError:
            return False  # the tables were not created yet

    # ------------------------------------------------------------ one trial

    def execute(self, sandbox: TrialSandbox, double_resume: bool = False) -> None:
        sandbox.hook = self.hook
        self._arm(self.triggers.pop(0) if self.triggers else None)
        with self.lock:
            self.proc = self._rehearse(sandbox.url)
        twin: subprocess.Popen[bytes] | None = None
        while True:
            status = self._wait(time.monotonic() + PROCESS_TIMEOUT_S)
            if status == "timeout":
                self.run.violations.append(
                    ("process finished", [f"process {self.run.processes} ran over {PROCESS_TIMEOUT_S:g}s"])
                )
                if twin is not None:
                    twin.kill()
                    twin.wait()
                return
            if status == "exited":
                assert self.proc is not None
                self.run.exit_code = self.proc.returncode
                if twin is not None:
                    try:
                        code = twin.wait(timeout=PROCESS_TIMEOUT_S)
                    except subprocess.TimeoutExpired:
                        twin.kill()
                        code = twin.wait()
                    if code != self.run.exit_code:
                        self.run.violations.append(
                            (
                                "same end as uninterrupted",
                                [f"two resumes at once exited {self.run.exit_code} and {code}"],
                            )
                        )
                return
            exists = self._after_kill()
            self._arm(self.triggers.pop(0) if self.triggers else None)
            with self.lock:
                self.proc = self._resume(sandbox.url) if exists else self._rehearse(sandbox.url)
                if exists and double_resume and self.trigger is None:
                    twin = self._resume(sandbox.url)
                    self.run.doubled = True


def _child_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env.pop("STAGEHOLD_DATABASE_URL", None)
    env["STAGEHOLD_DEBUG"] = "1"  # an internal error prints its traceback, which the checks look for
    return env


def _confirm_paths(package: Path) -> frozenset[str]:
    from execution.contract import load_change

    change = load_change(package)
    paths = set()
    for s in change.plan.stages:
        if s.confirm.http:
            paths.add(s.confirm.http.path)
        if s.rollback and s.rollback.confirm.http:
            paths.add(s.rollback.confirm.http.path)
    return frozenset(paths)


def run_one(
    workdir: Path,
    package: Path,
    scenario: str,
    name: str,
    triggers: tuple[Trigger, ...],
    *,
    unsafe_build: bool = False,
    baseline: TrialRun | None = None,
    double_resume: bool = False,
) -> TrialRun:
    from ledger.sql import SqlLedgerStore

    shutil.rmtree(workdir, ignore_errors=True)
    workdir.mkdir(parents=True)
    runner = _Runner(workdir, package, scenario, name, triggers, unsafe_build)
    sandbox = TrialSandbox(confirm_paths=_confirm_paths(package))
    sandbox.start()
    try:
        runner.execute(sandbox, double_resume)
        applied = sandbox.applied()
        sends = [e.key for e in sandbox.sends()]
        documents: Callable[[str], Any] = sandbox.state
        run = runner.run
        store = SqlLedgerStore(runner.url)
        try:
            entries = store.read(runner.eid)
        finally:
            store.close()
        transition_of = unsafe.transition_of
        state = checks.folded(entries)
        run.outcome = checks.outcome(state)
        v = run.violations
        v.append(("effect once per transition", checks.effects(entries, applied, transition_of)))
        v.append(("no blind retry", checks.no_blind_retry(entries, sends, transition_of)))
        v.append(("ambiguity resolved", checks.ambiguity_resolved(entries)))
        v.append(("passed with evidence", checks.passed_with_evidence(entries)))
        v.append(("no checkpoint skipped", checks.checkpoints(entries)))
        v.append(("chain verifies", checks.chain(entries, runner.eid, runner.heads)))
        v.append(("live matches ledger", checks.live_matches_ledger(entries, documents)))
        tracebacks = [
            f"{log.name}: {_tail(log)}"
            for log in runner.logs
            if b"Traceback" in (text := log.read_bytes()) or b"internal error" in text
        ]
        v.append(("no traceback", tracebacks))
        if baseline is not None:
            same = []
            if scenario in COARSE:
                if run.outcome["status"] != baseline.outcome["status"]:
                    same.append(f"ended {run.outcome['status']}, uninterrupted run ended {baseline.outcome['status']}")
                ahead = [
                    s
                    for s, status in run.outcome["stages"].items()
                    if _RANK[status] > _RANK[baseline.outcome["stages"][s]]
                ]
                if ahead:
                    same.append(f"advanced further than the uninterrupted run at {', '.join(ahead)}")
            elif run.outcome != baseline.outcome:
                same.append(f"ended {run.outcome}, uninterrupted run ended {baseline.outcome}")
            if run.exit_code != baseline.exit_code:
                same.append(f"exit {run.exit_code}, uninterrupted run exit {baseline.exit_code}")
            v.append(("same end as uninterrupted", same))
        keys = Counter(transition_of(k) for k in sends)
        run.absorbed = sum(n - 1 for n in keys.values())
        run.ambiguous = sum(1 for e in entries if e.kind == "action.sent" and e.body.get("outcome") == "ambiguous")
        run.resends = sum(1 for e in entries if e.kind == "action.resend_intended")
        return run
    finally:
        sandbox.hook = None
        sandbox.stop()


def _tail(log: Path) -> str:
    lines = log.read_text(errors="replace").strip().splitlines()
    return " / ".join(lines[-3:])[:300]


# ---------------------------------------------------------------- baselines and the family

_baselines: dict[tuple[str, str], TrialRun] = {}
_baselines_lock = threading.Lock()


def _drill(workdir: Path) -> Path:
    path = workdir / "change" / "package.yaml"
    if not path.exists():
        plans.write_change(path.parent, plans.package(CHANGE_ID), plans.crash_drill())
    return path


def baselines(workdir: Path, workers: int) -> dict[str, TrialRun]:
    package = _drill(workdir)
    key = str(workdir)
    missing = [s for s in sorted(SCENARIOS) if (key, s) not in _baselines]

    def one(scenario: str) -> None:
        run = run_one(workdir / "baseline" / scenario, package, scenario, f"baseline/{scenario}", ())
        with _baselines_lock:
            _baselines[(key, scenario)] = run

    with ThreadPoolExecutor(max_workers=workers) as pool:
        list(pool.map(one, missing))
    return {s: _baselines[(key, s)] for s in SCENARIOS}


def _family(size: Size, workdir: Path, *, unsafe_build: bool) -> FamilyResult:
    workers = 3
    count = size.pick(20, 200)
    if unsafe_build:
        count = size.pick(8, 30)
    started = time.monotonic()
    shared = workdir.parent / "crash-baselines"  # the crash family and its negative control share them
    package = _drill(shared)
    base = baselines(shared, workers)
    rec = Recorder()
    for scenario, run in base.items():
        for invariant, found in run.violations:
            if found:
                rec.add(f"baseline/{scenario}", invariant, found)
    specs = trial_specs(count, size.seed)
    runs: list[TrialRun] = []
    lock = threading.Lock()
    tag = "unsafe" if unsafe_build else "safe"

    def one(spec: TrialSpec) -> None:
        run = run_one(
            workdir / tag / f"{spec.number:04d}",
            package,
            spec.scenario,
            spec.name,
            spec.triggers,
            unsafe_build=unsafe_build,
            baseline=base[spec.scenario],
            double_resume=spec.double_resume,
        )
        run.spec = spec
        for invariant, found in run.violations:
            if found:
                rec.add(spec.name, invariant, found)
        rec.trial_done()
        with lock:
            runs.append(run)

    with ThreadPoolExecutor(max_workers=workers) as pool:
        list(pool.map(one, specs))
    kills = Counter(k for r in runs for k in r.kills)
    groups = Counter(GROUP[k] for r in runs for k in r.kills)
    per_trial = Counter(len(r.kills) for r in runs)
    scenarios = Counter(r.scenario for r in runs)
    notes = [
        "scenarios (faults switched on as each stage is entered): "
        + ", ".join(f"{s} ×{n} ({' + '.join(SCENARIOS[s][0]) or 'no fault'})" for s, n in sorted(scenarios.items())),
        f"{sum(kills.values())} SIGKILLs, {sum(r.processes for r in runs)} processes "
        f"({sum(r.doubled for r in runs)} trials restarted by two resumes at once); kills per trial: "
        + ", ".join(f"{k}: {n}" for k, n in sorted(per_trial.items())),
        "kills by moment: " + ", ".join(f"{g} {n}" for g, n in sorted(groups.items())),
        "kills by point: " + ", ".join(f"{k} {n}" for k, n in sorted(kills.items())),
        f"{sum(r.absorbed for r in runs)} repeated sends of an already-sent key reached the sandbox "
        f"({sum(r.resends for r in runs)} re-send decisions after a read-back showed the old state); "
        f"{sum(r.ambiguous for r in runs)} ambiguous sends",
        "uninterrupted outcomes: "
        + "; ".join(f"{s}: {r.outcome.get('status')} (exit {r.exit_code})" for s, r in sorted(base.items())),
        "a killed process's lease is expired in the database instead of waiting out its lifetime (the failover family lets it lapse)",
        "readback-fails-at-s3: with the read-back path down a resumed process cannot reconcile and holds at once, "
        "a step earlier than the uninterrupted run; there the same end means the same status and exit code with no "
        "stage further along",
    ]
    if unsafe_build:
        notes.insert(
            0,
            "`python -m reliability.unsafe_cli` = the same CLI with every send under a fresh idempotency key and "
            "the read-back replaced by an assumption (ok answer = applied, no answer = not applied, so send again); "
            "the shipped package has no such switch",
        )
    if rec.dropped:
        notes.append(f"{rec.dropped} further violation(s) not listed")
    family = "negative-control" if unsafe_build else "crash"
    title = "Crash, unsafe build (negative control)" if unsafe_build else "Crash and resume"
    return rec.result(family, title, "trials", INVARIANTS, notes, size, started, negative_control=unsafe_build)


def run_crash(size: Size, workdir: Path) -> list[FamilyResult]:
    return [_family(size, workdir, unsafe_build=False)]


def run_negative(size: Size, workdir: Path) -> list[FamilyResult]:
    return [_family(size, workdir, unsafe_build=True)]
