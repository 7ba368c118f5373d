"""From a breaching sample to the rollback sent: how long a bad signal stays live.

Several executions verify an error-rate check every 2 s against the sandbox, driven by the
APScheduler driver as ``stagehold serve`` drives them. Once every one of them is verifying, the
sandbox's error rate is made to breach the check (the ``error-rate-high`` fault) and each
execution is timed, from the moment the fault was set, to its first failing sample and to its
rollback action sent and answered. The executions start a fraction of an interval apart, so the
breach meets each at another phase of its poll: the median is the typical wait, the max the worst. The bound to compare with is one poll interval (the breach
can land just after a sample) plus one second for reacting.
"""

from __future__ import annotations

import hashlib
import statistics
import tempfile
import threading
import time
from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path

from bench import Row, Size
from bench.measure import percentile
from bench.scale import PACKAGE
from bot.bootstrap import open_runtime
from bot.clock import utc_now
from bot.scheduler import Driver
from execution.commands import start as start_entries
from execution.contract import load_change
from execution.model import Credentials
from execution.sandbox import Sandbox
from ledger.entry import Entry

TITLE = "breaching sample → rollback sent: how long a bad signal stays live (poll 2 s)"
EVERY_S = 2

PLAN = """stagehold: 1
kind: execution-plan
name: bench-reaction
version: 1
signals:
  error_rate: {prometheus: {target: metrics, query: 'max(authz_errors_total{svc="tokenizer"})'}, max_age: 60s}
  legacy_ok: {http: {target: router, path: /backends/legacy/health, field: ok}, max_age: 60s}
rollback_readiness:
  - {signal: legacy_ok, pass: "== true"}
stages:
  - id: canary
    blast_radius: 5
    action: {http: {target: router, method: PUT, path: /weights, json: {tokenizer: 5, legacy: 95}}}
    confirm: {http: {target: router, path: /weights, expect: {tokenizer: 5}}}
    verify:
      bake: 1h
      every: EVERYs
      checks:
        - {signal: error_rate, pass: "< 0.01"}
      on: {fail: rollback}
    rollback:
      action: {http: {target: router, method: PUT, path: /weights, json: {tokenizer: 0, legacy: 100}}}
      confirm: {http: {target: router, path: /weights, expect: {tokenizer: 0}}}
"""


class Timeline:
    """When each execution's entries were appended, by this process's monotonic clock."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.sampled: dict[str, list[tuple[float, str]]] = {}
        self.rolled_back: dict[str, float] = {}

    def __call__(self, execution_id: str, entries: Sequence[Entry]) -> None:
        now = time.monotonic()
        with self.lock:
            for e in entries:
                if e.kind == "verification.sampled":
                    self.sampled.setdefault(execution_id, []).append((now, str(e.body.get("outcome"))))
                elif e.kind == "action.sent" and e.body.get("direction") == "rollback":
                    self.rolled_back.setdefault(execution_id, now)


def _wait(predicate: object, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return
        time.sleep(0.05)
    raise RuntimeError(f"timed out after {timeout:.0f} s waiting for {what}")


def trial(executions: int) -> tuple[list[float], list[float]]:
    """Seconds from the breach to each execution's rollback sent, and from its failing sample to it."""
    with tempfile.TemporaryDirectory(prefix="stagehold-reaction-") as tmp, Sandbox(clock=utc_now) as sandbox:
        folder = Path(tmp)
        plan = PLAN.replace("EVERY", str(EVERY_S))
        (folder / "plan.yaml").write_text(plan, encoding="utf-8")
        digest = hashlib.sha256(plan.encode()).hexdigest()
        (folder / "package.yaml").write_text(PACKAGE.format(digest=digest, url=sandbox.url), encoding="utf-8")
        change = load_change(folder / "package.yaml")
        runtime = open_runtime(f"sqlite:///{folder / 'ledger.db'}")
        store = runtime.store
        timeline = Timeline()
        engine = runtime.engine(runtime.connector(Credentials({})), listeners=[timeline])
        driver = Driver(engine, utc_now, sweep_seconds=30)
        driver.start(resume=False)
        try:
            first = start_entries(change, "U0OPS", (), utc_now())
            ids = [f"REACT-{i:03d}" for i in range(executions)]
            # Started a fraction of an interval apart, so their samples fall at every phase of the
            # poll and the breach lands at a different moment of each one's interval.
            t0 = utc_now()
            for i, eid in enumerate(ids):
                store.append(eid, 1, first.append)
                driver.wake(eid, t0 + timedelta(seconds=EVERY_S * i / executions))

            def verifying() -> bool:
                with timeline.lock:
                    return all(len(timeline.sampled.get(eid, [])) >= 2 for eid in ids)

            _wait(verifying, 60, "every execution to verify")
            breach = time.monotonic()
            sandbox.add_fault("error-rate-high")

            def rolled_back() -> bool:
                with timeline.lock:
                    return all(eid in timeline.rolled_back for eid in ids)

            _wait(rolled_back, 30, "every execution's rollback")
        finally:
            driver.stop()
            runtime.close()
    to_rollback, reaction = [], []
    for eid in ids:
        sent = timeline.rolled_back[eid]
        failing = next(t for t, outcome in timeline.sampled[eid] if t >= breach and outcome == "fail")
        to_rollback.append(sent - breach)
        reaction.append(sent - failing)
    return to_rollback, reaction


def run(size: Size) -> list[Row]:
    executions = size.pick(smoke=3, full=20)
    trials = [trial(executions) for _ in range(size.repeats)]
    bound = [float(EVERY_S + 1)] * len(trials)
    return [
        Row(
            figure=f"breaching sample → rollback sent, max of {executions} executions (poll {EVERY_S} s)",
            unit="s",
            stagehold=[max(t) for t, _ in trials],
            baseline=bound,
            baseline_name="poll + 1 s",
            goal=f"≤ poll + 1 s ({EVERY_S + 1} s)",
            met=statistics.median(max(t) for t, _ in trials) <= EVERY_S + 1,
            note="median "
            + " / ".join(f"{statistics.median(t):.2f}" for t, _ in trials)
            + " s per repetition; the breach lands anywhere in a poll interval",
        ),
        Row(
            figure="reaction: failing sample recorded → rollback sent and answered, p50",
            unit="ms",
            stagehold=[1000 * percentile(r, 0.5) for _, r in trials],
            note="max " + " / ".join(f"{1000 * max(r):.0f}" for _, r in trials) + " ms per repetition",
        ),
    ]
