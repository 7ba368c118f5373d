"""Scale benchmark: many concurrent executions polling three signals, one process, a small pool.

    python -m bench.scale [--executions 1000] [--every 15] [--seconds 60] [--workers 8]
                          [--backends sqlite,postgres]
    python -m bench.scale --ramp 1000,2000,3000 [--windows 3] [--window 15] [--backends ...] [--json]

Starts the sandbox in a separate process, then for each ledger backend in turn: starts N
executions of a three-signal plan that bakes for an hour (so every execution keeps verifying),
lets the APScheduler driver run them at real speed for the measured period, and prints the
verification samples taken vs. due, the spacing between one execution's samples (ideal: the
interval), CPU per sample, threads and resident memory. Backends run back to back in one
invocation so their ratio is measured on the same machine state.

``--ramp`` finds the headroom: one process carries the first number of executions, then more
are started in the same process up to each next number. At each step, after a warm-up of one
interval and five seconds, ``--windows`` consecutive windows of ``--window`` seconds are measured:
the p95 spacing of the samples ending in each window (so three figures per step, min / median /
max), the share of due samples taken, CPU per sample, and resident memory per execution (the
growth over the process before any execution, divided by the executions). The ramp stops at the
first step whose median p95 spacing exceeds the interval + 1 s; the last step within it is the
number one process carries.

As a part of ``python -m bench`` (``run``) it runs the ramp for each backend in a fresh process.
"""

from __future__ import annotations

import argparse
import hashlib
import itertools
import json
import os
import secrets
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import psycopg
from psycopg import sql

from bench import Row, Size
from bench.measure import child
from bot.bootstrap import open_runtime
from bot.clock import utc_now
from bot.scheduler import Driver
from execution.commands import start as start_entries
from execution.contract import LoadedChange, load_change
from execution.model import Credentials
from ledger.entry import Entry

PLAN = """stagehold: 1
kind: execution-plan
name: bench-three-signals
version: 1
signals:
  error_rate:
    prometheus: {target: metrics, query: 'sum(rate(authz_errors_total{svc="tokenizer"}[1m]))'}
    max_age: 60s
  parity: {http: {target: router, path: /parity, field: mismatch_ratio}, max_age: 60s}
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
      every: EVERY
      checks:
        - {signal: error_rate, pass: "< 0.01", hold: "< 0.02"}
        - {signal: parity, pass: "== 0"}
    rollback:
      action: {http: {target: router, method: PUT, path: /weights, json: {tokenizer: 0, legacy: 100}}}
      confirm: {http: {target: router, path: /weights, expect: {tokenizer: 0}}}
"""

PACKAGE = """stagehold: 1
kind: change-package
id: BENCH-1
title: scale benchmark
plan: plan.yaml
plan_sha256: "{digest}"
window: {{opens: "2026-01-01T00:00:00Z", closes: "2030-01-01T00:00:00Z"}}
channel: C0BENCH
scope: {{targets: [router], max_blast_radius: 100}}
approved_by: [{{user: U0APPROVER, role: change-authority, at: "2025-12-01T00:00:00Z"}}]
authorities:
  initiate: {{users: [U0OPS]}}
  release: {{users: [U0REL1, U0REL2]}}
  rollback: {{users: [U0RB]}}
targets:
  router: {{kind: http, url: "{url}"}}
  metrics: {{kind: prometheus, url: "{url}"}}
"""

PG_ADMIN = "host=127.0.0.1 port=5432 user=postgres dbname=postgres connect_timeout=5"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _rss_mib() -> float:
    with open("/proc/self/status", encoding="ascii") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def _pct(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))] if ordered else float("nan")


def run_backend(label: str, url: str, change: LoadedChange, args: argparse.Namespace) -> dict[str, float]:
    runtime = open_runtime(url)
    samples: dict[str, list[float]] = defaultdict(list)
    lock = threading.Lock()
    measuring = threading.Event()

    def count(execution_id: str, entries: Sequence[Entry]) -> None:
        if not measuring.is_set():
            return
        for e in entries:
            if e.kind == "verification.sampled":
                with lock:
                    samples[execution_id].append(time.monotonic())

    engine = runtime.engine(runtime.connector(Credentials({})), listeners=[count])
    first = start_entries(change, "U0OPS", (), utc_now())
    ids = []
    t0 = time.monotonic()
    for i in range(args.executions):
        # One change may have one running execution; the benchmark writes the same approved
        # start entry under many execution ids instead of approving a thousand packages.
        eid = f"BENCH-{i:05d}"
        runtime.store.append(eid, 1, first.append)
        ids.append(eid)
    setup = time.monotonic() - t0
    driver = Driver(engine, utc_now, workers=args.workers, sweep_seconds=30)
    driver.start(resume=False)
    for eid in ids:
        driver.wake(eid)
    warm = args.every + 5
    time.sleep(warm)  # apply, read-back and the first round of samples
    threads = threading.active_count()
    measuring.set()
    cpu0, m0 = time.process_time(), time.monotonic()
    time.sleep(args.seconds)
    cpu1, m1 = time.process_time(), time.monotonic()
    measuring.clear()
    driver.stop()
    with lock:
        done = sum(len(v) for v in samples.values())
        gaps = [b - a for v in samples.values() for a, b in itertools.pairwise(v)]
    due = args.executions * (m1 - m0) / args.every
    rss = _rss_mib()
    runtime.close()
    print(f"[{label}] executions {args.executions} (setup {setup:.1f}s), {args.workers} workers, {threads} threads")
    print(
        f"[{label}] samples {done} taken / {due:.0f} due = {done / due:.2f} of the target rate ({done / (m1 - m0):.1f}/s)"
    )
    if gaps:
        print(
            f"[{label}] spacing of one execution's samples: median {statistics.median(gaps):.2f}s, "
            f"p95 {_pct(gaps, 0.95):.2f}s, max {max(gaps):.2f}s (interval {args.every}s)"
        )
    print(f"[{label}] CPU {1000 * (cpu1 - cpu0) / max(done, 1):.2f} ms per sample; resident memory {rss:.0f} MiB")
    return {
        "ratio": done / due,
        "cpu_ms": 1000 * (cpu1 - cpu0) / max(done, 1),
        "p95": _pct(gaps, 0.95),
        "rss_mib": rss,
    }


def _arguments(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m bench.scale")
    ap.add_argument("--executions", type=int, default=1000)
    ap.add_argument("--every", type=int, default=15, help="verification interval, seconds")
    ap.add_argument("--seconds", type=float, default=60.0, help="measured period per backend")
    ap.add_argument("--workers", type=int, default=8)
    ap.add_argument("--backends", default="sqlite,postgres", help="comma-separated: sqlite, postgres")
    ap.add_argument("--ramp", help="comma-separated execution counts, ascending: measure the headroom")
    ap.add_argument("--windows", type=int, default=3, help="measured windows per ramp step")
    ap.add_argument("--window", type=float, default=15.0, help="seconds per measured window")
    ap.add_argument("--json", action="store_true", help="print the ramp's figures as one JSON line last")
    return ap.parse_args(argv)


@contextmanager
def _environment(args: argparse.Namespace) -> Iterator[tuple[LoadedChange, Callable[[str], str]]]:
    """A sandbox process and the benchmark's change; ``url_of(backend)`` makes a fresh ledger."""
    port = _free_port()
    sandbox = subprocess.Popen(
        [sys.executable, "-m", "bot.cli", "sandbox", "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    tmp = Path(tempfile.mkdtemp(prefix="stagehold-bench-"))
    databases: list[str] = []

    def url_of(backend: str) -> str:
        if backend == "sqlite":
            return f"sqlite:///{tmp / f'bench-{secrets.token_hex(4)}.db'}"
        if backend == "postgres":
            name = f"stagehold_bench_{secrets.token_hex(4)}"
            with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
                conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
            databases.append(name)
            return f"postgresql://postgres@127.0.0.1:5432/{name}"
        raise ValueError(f"unknown backend {backend!r}")

    try:
        for _ in range(100):
            try:
                httpx.get(f"{url}/healthz", timeout=0.5)
                break
            except httpx.HTTPError:
                time.sleep(0.1)
        plan = PLAN.replace("EVERY", f"{args.every}s")
        (tmp / "plan.yaml").write_text(plan, encoding="utf-8")
        digest = hashlib.sha256(plan.encode()).hexdigest()
        (tmp / "package.yaml").write_text(PACKAGE.format(digest=digest, url=url), encoding="utf-8")
        yield load_change(tmp / "package.yaml"), url_of
    finally:
        sandbox.terminate()
        sandbox.wait(timeout=10)
        shutil.rmtree(tmp, ignore_errors=True)
        for name in databases:
            with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
                conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def _backends(args: argparse.Namespace) -> list[str]:
    names = [b.strip() for b in args.backends.split(",") if b.strip()]
    for name in names:
        if name not in ("sqlite", "postgres"):
            raise ValueError(f"unknown backend {name!r}")
    return names


def measure(args: argparse.Namespace) -> dict[str, dict[str, float]]:
    """Run each backend in turn against one sandbox; the figures ``run_backend`` returns, by backend."""
    backends = _backends(args)
    with _environment(args) as (change, url_of):
        return {backend: run_backend(backend, url_of(backend), change, args) for backend in backends}


# ---------------------------------------------------------------- the headroom ramp


def ramp_backend(label: str, url: str, change: LoadedChange, args: argparse.Namespace) -> dict[str, Any]:
    """Carry more and more executions in this process; the figures of each step, up to the first miss."""
    steps = [int(n) for n in args.ramp.split(",")]
    runtime = open_runtime(url)
    store = runtime.store
    sampled: dict[str, list[float]] = defaultdict(list)
    lock = threading.Lock()

    def count(execution_id: str, entries: Sequence[Entry]) -> None:
        for e in entries:
            if e.kind == "verification.sampled":
                with lock:
                    sampled[execution_id].append(time.monotonic())

    engine = runtime.engine(runtime.connector(Credentials({})), listeners=[count])
    driver = Driver(engine, utc_now, workers=args.workers, sweep_seconds=30)
    driver.start(resume=False)
    rss_empty = _rss_mib()
    first = start_entries(change, "U0OPS", (), utc_now())
    figures: list[dict[str, Any]] = []
    carried = 0
    try:
        for target in steps:
            for i in range(carried, target):
                # One change may have one running execution; the benchmark writes the same approved
                # start entry under many execution ids instead of approving thousands of packages.
                eid = f"BENCH-{i:05d}"
                store.append(eid, 1, first.append)
                driver.wake(eid)
            # Warm-up: the new executions act, read back and sample once (a burst the steady state
            # never sees again), then one more interval.
            with lock:
                before = {eid: len(sampled.get(eid, ())) for eid in (f"BENCH-{i:05d}" for i in range(target))}
            deadline = time.monotonic() + 3 * args.every + 60
            while time.monotonic() < deadline:
                with lock:
                    if all(len(sampled.get(eid, ())) > n for eid, n in before.items()):
                        break
                time.sleep(0.2)
            carried = target
            time.sleep(args.every)
            windows = []
            for _ in range(args.windows):
                cpu0, m0, machine0 = time.process_time(), time.monotonic(), _machine_ticks()
                time.sleep(args.window)
                cpu1, m1, machine1 = time.process_time(), time.monotonic(), _machine_ticks()
                with lock:
                    ends = [(b, b - a) for v in sampled.values() for a, b in itertools.pairwise(v) if m0 <= b < m1]
                    taken = sum(1 for v in sampled.values() for t in v if m0 <= t < m1)
                due = target * (m1 - m0) / args.every
                windows.append(
                    {
                        "p95": _pct([gap for _, gap in ends], 0.95),
                        "taken": taken / due,
                        "cpu_ms": 1000 * (cpu1 - cpu0) / max(taken, 1),
                        "cores": (cpu1 - cpu0) / (m1 - m0),
                        "machine": _busy_cores(machine0, machine1),
                    }
                )
            rss = _rss_mib()
            step = {
                "executions": target,
                "p95": [w["p95"] for w in windows],
                "taken": [w["taken"] for w in windows],
                "cpu_ms": statistics.median(w["cpu_ms"] for w in windows),
                "cores": statistics.median(w["cores"] for w in windows),
                "machine": statistics.median(w["machine"] for w in windows),
                "rss_mib": rss,
                "kib_per_execution": 1024 * (rss - rss_empty) / target,
                "threads": threading.active_count(),
            }
            figures.append(step)
            print(
                f"[{label}] {target:,} executions: p95 spacing "
                + " / ".join(f"{p:.2f}" for p in step["p95"])
                + f" s (interval {args.every} s), samples taken / due "
                + " / ".join(f"{t:.2f}" for t in step["taken"])
                + f", CPU {step['cpu_ms']:.1f} ms per sample, {rss:.0f} MiB resident "
                f"({step['kib_per_execution']:.0f} KiB per execution), {step['threads']} threads",
                flush=True,
            )
            if statistics.median(step["p95"]) > args.every + 1:
                break
    finally:
        driver.stop()
        runtime.close()
    within = [f["executions"] for f in figures if statistics.median(f["p95"]) <= args.every + 1]
    return {"steps": figures, "carried": max(within, default=0), "every": args.every}


def _machine_ticks() -> tuple[int, int]:
    """(all, idle) CPU ticks of the whole machine so far, from /proc/stat (0, 0 where there is none)."""
    try:
        with open("/proc/stat", encoding="ascii") as fh:
            fields = [int(v) for v in fh.readline().split()[1:]]
    except OSError:
        return 0, 0
    return sum(fields), fields[3] + fields[4]  # idle + iowait


def _busy_cores(before: tuple[int, int], after: tuple[int, int]) -> float:
    """How many of the machine's cores were busy between two readings (everything: the database
    server and the sandbox target included)."""
    total, idle = after[0] - before[0], after[1] - before[1]
    return (os.cpu_count() or 1) * (1 - idle / total) if total > 0 else float("nan")


def ramp(args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    backends = _backends(args)
    with _environment(args) as (change, url_of):
        return {backend: ramp_backend(backend, url_of(backend), change, args) for backend in backends}


TITLE = "headroom: executions one process carries at 3 signals each, p95 sample spacing ≤ interval + 1 s"
GOAL_EXECUTIONS = 3000


def _core_bound(cpu_ms: float, every: float) -> str:
    """What the measured CPU per sample allows: one process runs Python on one core at a time."""
    per_core = 1000 / cpu_ms * every
    return f"CPU {cpu_ms:.1f} ms per sample: one core's worth carries at most {per_core:,.0f} executions"


def run(size: Size) -> list[Row]:
    """The ``python -m bench`` part: the ramp, each backend in a fresh process (its own memory)."""
    steps = size.pick(smoke="10", full="1000,2000,3000")
    # Windows of 12 s keep the whole ramp (two backends, three steps) near six minutes at most.
    every, window = size.pick(smoke=(2, 2.0), full=(15, 12.0))
    rows = []
    for backend, label in (("sqlite", "SQLite"), ("postgres", "PostgreSQL")):
        # One ramp per backend (its three windows per step give min / median / max): a full ramp
        # three times over would not fit the benchmark's time.
        found = child(
            "bench.scale",
            *("--ramp", steps, "--backends", backend, "--every", str(every), "--window", str(window), "--json"),
            timeout=1200,
        )[backend]
        carried, last = found["carried"], found["steps"][-1]
        missed = statistics.median(last["p95"]) > every + 1
        bound = (
            f"the bound: at {last['executions']:,} the median p95 spacing is {statistics.median(last['p95']):.1f} s"
            if missed
            else f"{last['executions']:,} is the ramp's largest step"
        )
        rows.append(
            Row(
                figure=f"executions one process carries (ramp {steps.replace(',', ' → ')}), {label}",
                unit="executions",
                stagehold=[float(carried)],
                lower_is_better=False,
                goal=f"≥ {GOAL_EXECUTIONS:,} per process",
                met=carried >= GOAL_EXECUTIONS,
                note=(
                    f"{bound}; {_core_bound(last['cpu_ms'], every)}; at that step the process kept "
                    f"{last['cores']:.2f} of a core busy and the machine {last['machine']:.2f} of its "
                    f"{os.cpu_count()} (the database server and the sandbox target included); resident memory "
                    f"{last['kib_per_execution']:.0f} KiB per execution at {last['executions']:,} executions "
                    f"({last['rss_mib']:.0f} MiB)"
                ),
            )
        )
        for step in found["steps"]:
            rows.append(
                Row(
                    figure=f"p95 spacing of one execution's samples at {step['executions']:,} executions, {label}",
                    unit="s",
                    stagehold=step["p95"],
                    baseline=[float(every)] * len(step["p95"]),
                    baseline_name="the interval",
                    goal=f"≤ interval + 1 s ({every + 1} s)",
                    met=statistics.median(step["p95"]) <= every + 1,
                    note=(
                        f"samples taken / due {min(step['taken']):.2f}–{max(step['taken']):.2f}; "
                        f"CPU per sample {step['cpu_ms']:.1f} ms; process {step['cores']:.2f} cores, machine "
                        f"{step['machine']:.2f}; {step['kib_per_execution']:.0f} KiB per execution"
                    ),
                )
            )
    return rows


def main(argv: list[str] | None = None) -> int:
    args = _arguments(argv)
    try:
        if args.ramp:
            found = ramp(args)
            if args.json:
                print(json.dumps(found))
            return 0
        results = measure(args)
    except ValueError as exc:
        print(exc, file=sys.stderr)
        return 2
    if "sqlite" in results and "postgres" in results:
        s, p = results["sqlite"], results["postgres"]
        print(f"postgres/sqlite: rate {p['ratio'] / s['ratio']:.2f}x, CPU per sample {p['cpu_ms'] / s['cpu_ms']:.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
