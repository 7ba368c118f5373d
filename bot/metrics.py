"""``GET /metrics``: what the control room's own monitoring scrapes from every replica.

Rules:
* One registry per bot (not prometheus_client's process-global one), so several bots in one
  process (tests, a replica trial) each report only their own figures.
* Counters move with real events: every ledger entry this replica appends passes the engine
  listener here (transitions by kind, rollbacks started, evidence ages and stale readings); the
  scheduler reports how late each run started; the Slack outbox counts HTTP 429 answers.
* Gauges are read at scrape time from the live objects (open holds and their age from the
  ledger folds, Slack queue depth, leases this replica holds), so they cannot drift.
* Counters are per replica: sum them across replicas. Gauges about executions (open holds) are
  the same on every replica, since each reads the one ledger.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from datetime import datetime
from typing import Any, Protocol

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from execution import events as ev
from execution.project import State
from ledger.entry import Entry

# The *_created series (when each counter was made) say nothing a scraper needs and double the page.
disable_created_metrics()  # type: ignore[no-untyped-call]


class _Engine(Protocol):
    def active(self) -> list[str]: ...
    def load(self, execution_id: str) -> State: ...
    def leases_held(self) -> int: ...


class _Live(Collector):
    """Gauges computed when scraped."""

    def __init__(
        self,
        engine: _Engine,
        clock: Callable[[], datetime],
        slack: Callable[[], dict[str, int]],
        undelivered: Callable[[], int],
    ) -> None:
        self.engine = engine
        self.clock = clock
        self.slack = slack
        self.undelivered = undelivered

    def collect(self) -> Iterator[GaugeMetricFamily]:
        now = self.clock()
        holds = GaugeMetricFamily("stagehold_open_holds", "Executions waiting on an open hold.")
        ages = GaugeMetricFamily(
            "stagehold_hold_age_seconds", "How long each open hold has been open.", labels=["execution", "hold"]
        )
        active = GaugeMetricFamily("stagehold_active_executions", "Executions started and not finished.")
        count = 0
        executions = self.engine.active()
        for execution_id in executions:
            hold = self.engine.load(execution_id).hold
            if hold is not None:
                count += 1
                ages.add_metric([execution_id, hold.id], max(0.0, (now - hold.opened_at).total_seconds()))
        holds.add_metric([], count)
        active.add_metric([], len(executions))
        yield holds
        yield ages
        yield active
        stats = self.slack()
        queue = GaugeMetricFamily("stagehold_slack_queue_depth", "Slack messages waiting in this replica's outbox.")
        queue.add_metric([], stats.get("queued", 0))
        yield queue
        backlog = GaugeMetricFamily(
            "stagehold_slack_undelivered_entries", "Ledger entries not yet delivered to Slack, over every thread."
        )
        backlog.add_metric([], self.undelivered())
        yield backlog
        leases = GaugeMetricFamily("stagehold_leases_held", "Execution leases this replica holds (it drives those).")
        leases.add_metric([], self.engine.leases_held())
        yield leases


class Metrics:
    def __init__(
        self,
        engine: _Engine,
        clock: Callable[[], datetime],
        slack: Callable[[], dict[str, int]] = dict,
        undelivered: Callable[[], int] = int,
    ) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.transitions = Counter(
            "stagehold_transitions",
            "Ledger entries this replica appended, by kind (each one is a transition of an execution).",
            ["kind"],
            registry=self.registry,
        )
        self.rollbacks = Counter("stagehold_rollbacks", "Rollbacks this replica started.", registry=self.registry)
        self.evidence_age = Gauge(
            "stagehold_evidence_age_seconds",
            "Age of the newest reading of each signal when it was last judged.",
            ["execution", "signal"],
            registry=self.registry,
        )
        self.stale = Counter(
            "stagehold_evidence_stale",
            "Readings judged stale or without a sample time (never used as evidence).",
            ["signal"],
            registry=self.registry,
        )
        self.lag = Histogram(
            "stagehold_scheduler_lag_seconds",
            "How late a scheduled run of an execution started.",
            buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0),
            registry=self.registry,
        )
        self.rate_limited = Counter(
            "stagehold_slack_rate_limited", "HTTP 429 answers from Slack to this replica.", registry=self.registry
        )
        self.registry.register(_Live(engine, clock, slack, undelivered))

    def __call__(self, execution_id: str, entries: Sequence[Entry]) -> None:
        """Engine listener: called after each append, with what was written."""
        for entry in entries:
            self.transitions.labels(entry.kind).inc()
            if entry.kind == ev.ROLLBACK_STARTED:
                self.rollbacks.inc()
            if entry.kind in (ev.VERIFICATION_SAMPLED, ev.GATE_CHECKED):
                self._evidence(execution_id, entry.body.get("results") or ())

    def _evidence(self, execution_id: str, results: Any) -> None:
        for result in results:
            if not isinstance(result, dict):
                continue
            signal = str(result.get("signal", "?"))
            age = result.get("age_s")
            if isinstance(age, int | float):
                self.evidence_age.labels(execution_id, signal).set(float(age))
            if result.get("outcome") == "stale" or age is None:
                self.stale.labels(signal).inc()

    def scheduler_lag(self, seconds: float) -> None:
        self.lag.observe(max(0.0, seconds))

    def render(self) -> bytes:
        return generate_latest(self.registry)
