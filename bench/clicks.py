"""Acknowledging a Release click: stagehold's Bolt app beside a no-op Bolt handler on the same stack.

Each side runs in a process of its own (``python -m bench.clicks serve stagehold|noop``), served as
``stagehold serve`` serves it: uvicorn, the signature and replay checks, Bolt's dispatch in a
worker thread, its Web API client pointed at a fake Slack on loopback. The stagehold side is the
whole bot (engine, scheduler, notifier) driving a rehearsal whose first hold card is up; the
no-op side is a Bolt app whose only listener acknowledges Release clicks and does nothing else.

This process sends signed Release clicks on that hold's button, by its two release authorities
in turn (the first click releases the hold, the rest are the repeats people send), on one
kept-alive connection, and times each click from sending to its acknowledgement:

* paced: one click every ``pace`` seconds, as people click;
* back to back: the next click as soon as the previous one is acknowledged (a burst).

The sides alternate, one repetition each in turn, so both see the same machine state.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx

from bench import Row, Size
from bench.measure import ROOT, percentile

TITLE = "acknowledging a Release click: stagehold's Bolt app vs a no-op Bolt handler on the same stack"
GOAL_RATIO = 1.5


@dataclass(frozen=True)
class Served:
    """What a serving process tells this one: where to click, and the button to click."""

    events_url: str
    secret: str
    value: str
    message: dict[str, Any]
    response_url: str
    users: list[str]


def _sign(secret: str, body: str, ts: int) -> str:
    return "v0=" + hmac.new(secret.encode(), f"v0:{ts}:{body}".encode(), hashlib.sha256).hexdigest()


def click_body(served: Served, user: str) -> str:
    """A Release click as Slack sends it; the trigger and action time make every body distinct."""
    m = served.message
    payload = {
        "type": "block_actions",
        "team": {"id": "T0BENCH"},
        "user": {"id": user, "team_id": "T0BENCH"},
        "api_app_id": "A0BENCH",
        "container": {"type": "message", "message_ts": m["ts"], "channel_id": m["channel"]},
        "trigger_id": secrets.token_hex(8),
        "channel": {"id": m["channel"]},
        "message": {"type": "message", "ts": m["ts"], "thread_ts": m["thread_ts"], "text": m["text"]},
        "response_url": served.response_url,
        "actions": [
            {
                "type": "button",
                "action_id": "stagehold_release",
                "value": served.value,
                "action_ts": f"{time.time():.6f}",
            }
        ],
    }
    return urlencode({"payload": json.dumps(payload)})


def ack_times_ms(served: Served, count: int, pace_s: float | None) -> list[float]:
    """Send ``count`` clicks on one kept-alive connection; each click's time to its ack, in ms."""
    times = []
    with httpx.Client(timeout=10.0) as http:
        http.get(served.events_url.replace("/slack/events", "/healthz"))  # connect before timing
        next_at = time.perf_counter()
        for i in range(count):
            if pace_s is not None:
                next_at += pace_s
                time.sleep(max(0.0, next_at - time.perf_counter()))
            body = click_body(served, served.users[i % len(served.users)])
            ts = int(time.time())
            headers = {
                "Content-Type": "application/x-www-form-urlencoded",
                "X-Slack-Request-Timestamp": str(ts),
                "X-Slack-Signature": _sign(served.secret, body, ts),
            }
            t0 = time.perf_counter()
            response = http.post(served.events_url, content=body.encode(), headers=headers)
            times.append((time.perf_counter() - t0) * 1000)
            if response.status_code != 200:
                raise RuntimeError(f"a click was answered {response.status_code}: {response.text[:200]}")
    return times


@contextmanager
def serving(mode: str) -> Iterator[Served]:
    """A serving process of ``mode`` (``stagehold`` or ``noop``), stopped (stdin closed) on exit."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "bench.clicks", "serve", mode],
        cwd=ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline()
        if not first:
            raise RuntimeError(
                f"bench.clicks serve {mode} did not start: {proc.stderr.read()[-800:] if proc.stderr else ''}"
            )
        yield Served(**json.loads(first))
    finally:
        if proc.stdin is not None:
            proc.stdin.close()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()


def run(size: Size) -> list[Row]:
    count = size.pick(smoke=20, full=200)
    pace = size.pick(smoke=0.02, full=0.05)
    figures: dict[tuple[str, str], list[list[float]]] = {}
    with serving("stagehold") as mine, serving("noop") as noop:
        for _ in range(size.repeats):
            for how, pace_s in (("paced", pace), ("back to back", None)):
                for side, served in (("stagehold", mine), ("noop", noop)):
                    figures.setdefault((side, how), []).append(ack_times_ms(served, count, pace_s))
    rows = []
    for how, label in (
        ("paced", f"paced, one click every {pace * 1000:.0f} ms"),
        ("back to back", "back to back on one keep-alive connection"),
    ):
        for q, name in ((0.99, "p99"), (0.5, "p50")):
            mine_q = [percentile(t, q) for t in figures[("stagehold", how)]]
            noop_q = [percentile(t, q) for t in figures[("noop", how)]]
            ratio = statistics.median(mine_q) / statistics.median(noop_q)
            rows.append(
                Row(
                    figure=f"ack of a Release click, {name}, {label} ({count} clicks)",
                    unit="ms",
                    stagehold=mine_q,
                    baseline=noop_q,
                    baseline_name="no-op Bolt handler, same stack",
                    goal=f"≤ {GOAL_RATIO}× the no-op handler" if name == "p99" else "",
                    met=ratio <= GOAL_RATIO if name == "p99" else None,
                )
            )
    return rows


# ---------------------------------------------------------------- the serving processes


def _serve_stagehold(workdir: Path) -> None:
    from reliability import plans
    from reliability.deliveries import CHANNEL, INITIATOR, RELEASERS, SECRET, _Bench, _wait

    bench = _Bench(workdir)
    try:
        change_id = "CHG-CLICKS"
        plans.write_change(bench.packages / change_id.lower(), plans.package(change_id), plans.crash_drill())
        bench.post(bench.slash(f"start {change_id}", INITIATOR), int(time.time()))
        eid = _wait(lambda: bench.bot.engine.find(change_id), 30, f"{change_id} to start")[0]
        card, value = bench.hold_card(eid, "H1")
        _announce(
            Served(
                events_url=bench.url,
                secret=SECRET,
                value=value,
                message={"ts": card.ts, "channel": CHANNEL, "thread_ts": card.thread_ts, "text": card.text},
                response_url=bench.fake.response_url("clicks"),
                users=list(RELEASERS),
            )
        )
        sys.stdin.read()  # until the measuring process closes it
    finally:
        bench.stop()


def _serve_noop() -> None:
    from slack_bolt import App

    from bot.app import HttpServer, SlackEndpoint, listener_client
    from bot.ops import OpsEndpoint
    from handlers.ids import RELEASE_ACTION
    from tests.slack.fake_slack import BOT_TOKEN, FakeSlack

    secret = "bench-signing-secret-" + secrets.token_hex(8)
    fake = FakeSlack().start()
    listeners = ThreadPoolExecutor(16, thread_name_prefix="noop-listener")
    app = App(
        name="noop",
        client=listener_client(BOT_TOKEN, fake.api_url),
        signing_secret=secret,
        listener_executor=listeners,
    )

    @app.action(RELEASE_ACTION)
    def on_release(ack: Any) -> None:
        ack()

    ops = OpsEndpoint(lambda: {"ok": True}, lambda: {"ok": True}, lambda: b"")
    server = HttpServer(SlackEndpoint(app, secret, ops), "127.0.0.1", 0).start()
    try:
        _announce(
            Served(
                events_url=f"http://127.0.0.1:{server.port}/slack/events",
                secret=secret,
                value=json.dumps({"e": "noop", "s": "stage", "h": "H1", "v": 1}),
                message={"ts": "1700000000.000100", "channel": "C0BENCH", "thread_ts": None, "text": "hold"},
                response_url=fake.response_url("clicks"),
                users=["U01DANA", "U02LEE"],
            )
        )
        sys.stdin.read()
    finally:
        server.stop()
        listeners.shutdown(wait=True)
        fake.stop()


def _announce(served: Served) -> None:
    print(json.dumps(served.__dict__), flush=True)


def main(argv: list[str]) -> int:
    if len(argv) != 2 or argv[0] != "serve" or argv[1] not in ("stagehold", "noop"):
        print("usage: python -m bench.clicks serve stagehold|noop", file=sys.stderr)
        return 2
    if argv[1] == "noop":
        _serve_noop()
    else:
        with tempfile.TemporaryDirectory(prefix="stagehold-clicks-") as workdir:
            _serve_stagehold(Path(workdir))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
