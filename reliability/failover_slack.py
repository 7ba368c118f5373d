"""The failover family's Slack trials: three ``stagehold serve`` replicas, the one posting to the
channel SIGKILLed between Slack's answer and its own database write.

Each trial starts an unprotected four-stage rehearsal from a signed slash command to one replica
(the fake Slack Web API of the Slack tests records every call). When the fake has carried out the
chosen ``chat.postMessage`` or ``chat.update`` — and before its answer leaves — the harness kills
the replica holding the channel's delivery lease (its owner name carries its pid) and starts
another, so three run again. A survivor must take the channel over by itself, find the post whose
outcome was never recorded by reading the channel back, and deliver the rest.

Per trial: one root card, every message under it, no message posted twice (the metadata
reference of every message is unique), none lost (the thread's delivered position reaches the
ledger's head, no intent left, the final record is there), each intended transition took effect
once and the chain verifies.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from reliability import checks, plans
from reliability.crash import _child_env
from reliability.pgcluster import Peek, PrivateCluster
from reliability.target import TrialSandbox

CHANGE = "CHG-SLACKFAIL"
CHANNEL = "C0TRIALS"
INITIATOR = "U05OPS"
SECRET = "failover-trial-signing-secret"
TRIAL_TIMEOUT_S = 180.0

INVARIANTS = [
    "one root card, every message in its thread",
    "no Slack message posted twice (unique metadata references)",
    "no Slack message lost (delivered position at the ledger head, no intent left, final record posted)",
]


@dataclass
class SlackTrialOutcome:
    kills: list[str] = field(default_factory=list)
    takeovers: list[float] = field(default_factory=list)
    violations: list[tuple[str, list[str]]] = field(default_factory=list)


def _signed(body: str) -> dict[str, str]:
    ts = str(int(time.time()))
    digest = hmac.new(SECRET.encode(), f"v0:{ts}:{body}".encode(), hashlib.sha256).hexdigest()
    return {
        "Content-Type": "application/x-www-form-urlencoded",
        "X-Slack-Request-Timestamp": ts,
        "X-Slack-Signature": f"v0={digest}",
    }


class SlackTrial:
    def __init__(self, number: int, rng: random.Random, cluster: PrivateCluster, workdir: Path, ttl_s: float) -> None:
        from tests.slack.fake_slack import FakeSlack

        self.name = f"failover-slack-{number:03d}"
        self.workdir = workdir
        self.ttl_s = ttl_s
        self.url = cluster.create_database(f"failover_slack_{number:03d}")
        self.packages = workdir / "packages"
        plans.write_change(self.packages / "change", plans.package(CHANGE), plans.many_stages(4))
        self.fake = FakeSlack().start()
        self.fake.wall_clock_ts = True
        self.kill_at = [rng.randint(1, 12) for _ in range(rng.randint(1, 2))]  # nth Slack write
        self.writes = 0
        self.lock = threading.Lock()
        self.procs: dict[int, subprocess.Popen[str]] = {}
        self.logs: list[Path] = []
        self.pending: tuple[float, str] | None = None
        self.out = SlackTrialOutcome()
        self._query = Peek(self.url)

    # ------------------------------------------------------------ replicas

    def _spawn(self, sandbox_url: str) -> str:
        log = self.workdir / f"replica-{len(self.logs) + 1}.log"
        self.logs.append(log)
        env = _child_env()
        env.update(
            {
                "SLACK_BOT_TOKEN": "xoxb-test-token",
                "SLACK_SIGNING_SECRET": SECRET,
                "STAGEHOLD_SLACK_API_URL": self.fake.api_url,
                "STAGEHOLD_DATABASE_URL": self.url,
                "STAGEHOLD_PACKAGES_DIR": str(self.packages),
                "STAGEHOLD_HOST": "127.0.0.1",
                "STAGEHOLD_LEASE_TTL": str(self.ttl_s),
                "STAGEHOLD_LEASE_RENEW": str(self.ttl_s / 3),
                "STAGEHOLD_LEASE_POLL": "1",
            }
        )
        env.pop("SLACK_APP_TOKEN", None)
        with log.open("w") as err:
            proc = subprocess.Popen(
                [sys.executable, "-m", "bot.cli", "serve", "--port", "0", "--sandbox", sandbox_url],
                stdout=subprocess.PIPE,
                stderr=err,
                text=True,
                cwd=self.workdir,
                env=env,
            )
        assert proc.stdout is not None
        line = proc.stdout.readline()
        self.procs[proc.pid] = proc
        port = line.split("127.0.0.1:")[1].split(" ")[0] if "127.0.0.1:" in line else ""
        return f"http://127.0.0.1:{port}"

    def _channel_owner(self) -> str | None:
        rows = self._query("SELECT owner, expires_at FROM stagehold_slack_channel WHERE channel = %s", CHANNEL)
        return str(rows[0][0]) if rows and rows[0][1] > time.time() else None

    def before_answer(self, method: str, params: dict[str, Any]) -> None:
        if method not in ("chat.postMessage", "chat.update") or params.get("channel") != CHANNEL:
            return
        with self.lock:
            self.writes += 1
            if not self.kill_at or self.writes < self.kill_at[0] or self.pending is not None:
                return
            self.kill_at.pop(0)
            owner = self._channel_owner()
            proc = self.procs.get(int(owner.split(":")[1])) if owner else None
            if proc is None or proc.poll() is not None:
                return
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
            self.pending = (time.monotonic(), str(owner))
            self.out.kills.append(f"slack {method}")

    # ------------------------------------------------------------ one trial

    def run(self, sandbox: TrialSandbox) -> None:
        import httpx

        self.fake.before_answer = self.before_answer
        urls = [self._spawn(sandbox.url) for _ in range(3)]
        body = urlencode(
            {
                "command": "/stagehold",
                "text": f"start {CHANGE}",
                "user_id": INITIATOR,
                "channel_id": CHANNEL,
                "response_url": self.fake.response_url("start"),
            }
        )
        with httpx.Client(timeout=15.0) as http:
            http.post(f"{urls[0]}/slack/events", content=body.encode(), headers=_signed(body))
        started = time.monotonic()
        while time.monotonic() - started < TRIAL_TIMEOUT_S:
            with self.lock:
                pending = self.pending
            if pending is not None:
                killed_at, owner = pending
                if len([p for p in self.procs.values() if p.poll() is None]) < 3:
                    self._spawn(sandbox.url)
                current = self._channel_owner()
                if current is not None and current != owner:
                    self.out.takeovers.append(time.monotonic() - killed_at)
                    with self.lock:
                        self.pending = None
            elif self._delivered():
                break
            time.sleep(0.05)
        else:
            self.out.violations.append(("trial finished", [f"ran over {TRIAL_TIMEOUT_S:g}s"]))
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs.values():
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            if proc.stdout is not None:
                proc.stdout.close()

    def _delivered(self) -> bool:
        """The execution ended and its thread is delivered up to the ledger's head."""
        head = self._query(
            "SELECT max(seq), bool_or(kind IN ('execution.completed', 'execution.rolled_back', "
            "'execution.needs_human', 'execution.abandoned')) FROM stagehold_ledger"
        )
        thread = self._query("SELECT posted_seq FROM stagehold_slack_thread")
        return bool(head and head[0][0] and head[0][1] and thread and thread[0][0] >= head[0][0])

    def judge(self, sandbox: TrialSandbox) -> None:
        from ledger.sql import SqlLedgerStore

        store = SqlLedgerStore(self.url)
        try:
            (eid,) = store.executions() or ("?",)
            entries = store.read(eid)
        finally:
            store.close()
        v = self.out.violations
        roots = self.fake.roots(CHANNEL)
        messages = [m for (c, _), m in self.fake.messages.items() if c == CHANNEL]
        v.append(
            (
                "one root, one thread",
                [f"{len(roots)} root cards"]
                if len(roots) != 1
                else [
                    f"message {m.ts} outside the thread"
                    for m in messages
                    if m.ts != roots[0].ts and m.thread_ts != roots[0].ts
                ],
            )
        )
        refs = [m.metadata["event_payload"]["ref"] for m in messages if m.metadata]
        v.append(("no message twice", sorted({f"{r} posted {refs.count(r)} times" for r in refs if refs.count(r) > 1})))
        lost = []
        posted = self._query("SELECT posted_seq FROM stagehold_slack_thread WHERE execution_id = %s", eid)
        if not posted or not entries or posted[0][0] < entries[-1].seq:
            lost.append(f"delivered up to {posted[0][0] if posted else None} of {entries[-1].seq if entries else None}")
        if self._query("SELECT ref FROM stagehold_slack_intent"):
            lost.append("intents left unresolved")
        if not any(r == f"entry:{entries[-1].seq}:1" for r in refs) if entries else True:
            lost.append("no final record in the thread")
        v.append(("no message lost", lost))
        v.append(("effect once per transition", checks.effects(entries, sandbox.applied())))
        v.append(("chain verifies", checks.chain(entries, eid)))
        if checks.folded(entries).status() != "completed":
            v.append(("same end", [f"ended {checks.folded(entries).status()}, expected completed"]))
        self._query.close()
        self.fake.stop()


def run_slack_trials(
    count: int,
    seed: int,
    cluster: PrivateCluster,
    workdir: Path,
    ttl_s: float,
    each: Callable[[str, SlackTrialOutcome], None],
) -> None:
    rng = random.Random(seed + 1)
    for n in range(1, count + 1):
        trial_dir = workdir / f"failover-slack-{n:03d}"
        trial_dir.mkdir(parents=True, exist_ok=True)
        sandbox = TrialSandbox()
        sandbox.start()
        try:
            trial = SlackTrial(n, rng, cluster, trial_dir, ttl_s)
            trial.run(sandbox)
            trial.judge(sandbox)
        finally:
            sandbox.stop()
        each(trial.name, trial.out)
