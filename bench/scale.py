"""Scale benchmark: many concurrent executions polling three signals, one process, a small pool.

    python -m bench.scale [--executions 1000] [--every 15] [--seconds 60] [--db URL] [--workers 8]

Starts a sandbox in a separate process, starts N executions of a three-signal plan that bakes
for an hour (so every execution keeps verifying), lets the APScheduler driver run them for the
given time at real speed, and prints: verification ticks done vs. due, scheduling lag
percentiles, CPU seconds per tick, process threads and resident memory. The target is about
1,000 executions every 15 s on 2 cores without a thread per execution.
"""

from __future__ import annotations

import argparse
import hashlib
import resource
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

from bot.bootstrap import build_engine, http_client, live_connector, open_store
from bot.clock import utc_now
from bot.scheduler import Driver
from execution.commands import start as start_entries
from execution.contract import load_change
from execution.model import Credentials

PLAN = """stagehold: 1
kind: execution-plan
name: bench-three-signals
version: 1
signals:
  error_rate:
    prometheus: {target: metrics, query: 'sum(rate(authz_errors_total{svc="tokenizer"}[1m]))', samples: 'sum(increase(authz_requests_total{svc="tokenizer"}[1m]))'}
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


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.scale")
    ap.add_argument("--executions", type=int, default=1000)
    ap.add_argument("--every", type=int, default=15, help="verification interval, seconds")
    ap.add_argument("--seconds", type=float, default=60.0, help="measured period")
    ap.add_argument("--workers", type=int, default=8)
    ap.add_argument("--db", default=None, help="ledger URL (default: a fresh SQLite file)")
    args = ap.parse_args(argv)

    port = _free_port()
    sandbox = subprocess.Popen(
        [sys.executable, "-m", "bot.cli", "sandbox", "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    tmp = Path(tempfile.mkdtemp(prefix="stagehold-bench-"))
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
        store = open_store(args.db or f"sqlite:///{tmp / 'bench.db'}")
        client = http_client(10.0)
        ticks: list[float] = []
        lock = threading.Lock()

        def count(execution_id: str, entries: object) -> None:
            for e in entries:  # type: ignore[attr-defined]
                if e.kind == "verification.sampled":
                    with lock:
                        ticks.append(time.monotonic())

        engine = build_engine(store, live_connector(Credentials({}), client, utc_now), listeners=[count])
        t0 = time.monotonic()
        ids = []
        first = start_entries(change, "U0OPS", (), utc_now())
        for i in range(args.executions):
            # The engine refuses a second running execution of one change; the benchmark writes
            # the same approved start entry under many execution ids instead.
            eid = f"BENCH-{i:05d}"
            store.append(eid, 1, first)
            ids.append(eid)
        setup = time.monotonic() - t0
        driver = Driver(engine, utc_now, workers=args.workers, sweep_seconds=30)
        driver.start(resume=False)
        for eid in ids:
            driver.wake(eid)
        warm = args.every + 5
        time.sleep(warm)  # first ticks (apply + read-back) and the first round of samples
        with lock:
            ticks.clear()
        cpu1 = time.process_time()
        m0 = time.monotonic()
        time.sleep(args.seconds)
        m1 = time.monotonic()
        cpu2 = time.process_time()
        with lock:
            done = len(ticks)
        due = args.executions * args.seconds / args.every
        lag = []
        for eid in ids[:: max(1, len(ids) // 200)]:
            job = driver.scheduler.get_job(f"exec:{eid}")
            if job is not None and job.next_run_time is not None:
                lag.append((utc_now() - job.next_run_time).total_seconds())
        threads = threading.active_count()
        driver.stop()
        print(f"executions            {args.executions}  (setup {setup:.1f}s, {args.workers} workers, one process)")
        print(f"interval              {args.every}s, 3 signals each, measured {m1 - m0:.0f}s after {warm}s warm-up")
        print(f"verification ticks    {done} done / {due:.0f} due  ({done / due:.2f} of the target rate)")
        print(f"tick rate             {done / (m1 - m0):.1f}/s  (target {args.executions / args.every:.1f}/s)")
        print(
            f"CPU per tick          {1000 * (cpu2 - cpu1) / max(done, 1):.2f} ms  (process CPU {cpu2 - cpu1:.1f}s in {m1 - m0:.0f}s wall)"
        )
        if lag:
            overdue = [max(0.0, x) for x in lag]
            print(f"jobs overdue (sample) median {statistics.median(overdue):.2f}s  max {max(overdue):.2f}s")
        print(f"threads               {threads}")
        print(
            f"resident memory       {_rss_mib():.0f} MiB (peak {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB)"
        )
        print(
            f"ledger entries        {sum(engine.load(e).seq for e in ids[:50]) / 50:.0f} per execution (first 50 averaged)"
        )
        client.close()
        store.close()
    finally:
        sandbox.terminate()
        sandbox.wait(timeout=10)
        for f in tmp.iterdir():
            f.unlink()
        tmp.rmdir()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
