"""Scale benchmark: many concurrent executions polling three signals, one process, a small pool.

    python -m bench.scale [--executions 1000] [--every 15] [--seconds 60] [--workers 8]
                          [--backends sqlite,postgres]

Starts the sandbox in a separate process, then for each ledger backend in turn: starts N
executions of a three-signal plan that bakes for an hour (so every execution keeps verifying),
lets the APScheduler driver run them at real speed for the measured period, and prints the
verification samples taken vs. due, the spacing between one execution's samples (ideal: the
interval), CPU per sample, threads and resident memory. Backends run back to back in one
invocation so their ratio is measured on the same machine state. The target is about 1,000
executions every 15 s on 2 cores without a thread per execution.

As a part of ``python -m bench`` (``run``) it reports, per backend, the p95 spacing of one
execution's samples against the interval.
"""

from __future__ import annotations

import argparse
import hashlib
import itertools
import secrets
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

import httpx
import psycopg
from psycopg import sql

from bench import Row, Size
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
    return ap.parse_args(argv)


def measure(args: argparse.Namespace) -> dict[str, dict[str, float]]:
    """Run each backend in turn against one sandbox; the figures ``run_backend`` returns, by backend."""
    port = _free_port()
    sandbox = subprocess.Popen(
        [sys.executable, "-m", "bot.cli", "sandbox", "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    tmp = Path(tempfile.mkdtemp(prefix="stagehold-bench-"))
    pg_db = f"stagehold_bench_{secrets.token_hex(4)}"
    results: dict[str, dict[str, float]] = {}
    created = False
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
        change = load_change(tmp / "package.yaml")
        for backend in [b.strip() for b in args.backends.split(",") if b.strip()]:
            if backend == "sqlite":
                results[backend] = run_backend(backend, f"sqlite:///{tmp / 'bench.db'}", change, args)
            elif backend == "postgres":
                with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
                    conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(pg_db)))
                created = True
                results[backend] = run_backend(backend, f"postgresql://postgres@127.0.0.1:5432/{pg_db}", change, args)
            else:
                raise ValueError(f"unknown backend {backend!r}")
    finally:
        sandbox.terminate()
        sandbox.wait(timeout=10)
        for f in tmp.iterdir():
            f.unlink()
        tmp.rmdir()
        if created:
            with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
                conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(pg_db)))
    return results


TITLE = "executions carried by one process: spacing of each execution's samples (3 signals each)"


def run(size: Size) -> list[Row]:
    """The ``python -m bench`` part: p95 sample spacing at a fixed load, per backend, against the interval."""
    executions = size.pick(smoke=10, full=1000)
    every = size.pick(smoke=2, full=15)
    seconds = size.pick(smoke=4, full=30)
    args = _arguments(["--executions", str(executions), "--every", str(every), "--seconds", str(seconds)])
    runs = [measure(args) for _ in range(size.repeats)]
    rows = []
    for backend, label in (("sqlite", "SQLite"), ("postgres", "PostgreSQL")):
        got = [r[backend] for r in runs]
        p95 = [g["p95"] for g in got]
        rows.append(
            Row(
                figure=f"p95 spacing of one execution's samples, {executions:,} executions × 3 signals / {every} s, {label}",
                unit="s",
                stagehold=p95,
                baseline=[float(every)] * len(got),
                baseline_name="the interval",
                goal=f"≤ interval + 1 s ({every + 1} s)",
                met=statistics.median(p95) <= every + 1,
                note=(
                    f"samples taken / due {min(g['ratio'] for g in got):.2f}–{max(g['ratio'] for g in got):.2f}; "
                    f"CPU per sample {statistics.median(g['cpu_ms'] for g in got):.1f} ms; "
                    f"resident memory {statistics.median(g['rss_mib'] for g in got):.0f} MiB"
                ),
            )
        )
    return rows


def main(argv: list[str] | None = None) -> int:
    args = _arguments(argv)
    try:
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
