"""Family 3: deliveries — the real bot over HTTP, clicks delivered again and again, forgeries refused.

The assembled bot (``bot.app.SlackBot``: engine, scheduler, notifier, Bolt listeners) is served by
uvicorn on loopback as ``stagehold serve`` serves it, with its Web API client pointed at a fake
Slack (the Slack tests' ``FakeSlack``, which records every call) and its engine at the sandbox.
Each trial starts an execution of the four-stage drill with a signed ``/stagehold start`` and
works its two protected holds from the hold cards the bot posts:

* the first hold: forged (wrong secret), stale (timestamp 301-3600 s old), tampered (body edited
  after signing: another user, another hold, another version) and unsigned requests first; then
  two release authorities click Release at the same moment;
* the second (irreversible, two releasers): each authority clicks once.

Every genuine click is delivered four times — twice at once, twice later inside the 300 s
signature window with its original timestamp — and clicked again by the same person (a fresh,
validly signed double click). The start command is delivered twice more as well.

Invariants: each genuine click has exactly one effect (one ``release.granted`` per person and
hold, one ``hold.released`` per hold); no bad request changes anything (401, and the hold stays
open with no release and no entry by anyone but the engine's roles); of two authorities clicking at
once exactly one releases a one-release hold; one start makes one execution; every execution
completes; the chain verifies.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx

from bot.bootstrap import http_client, live_connector, open_store
from bot.clock import utc_now
from execution.model import Credentials
from execution.sandbox import Sandbox
from ledger.chain import verify_chain
from reliability import plans
from reliability.harness import FamilyResult, Recorder, Size

CHANNEL = "C0TRIALS"
SECRET = "reliability-signing-secret-" + secrets.token_hex(8)
INITIATOR = "U05OPS"
RELEASERS = ("U01DANA", "U02LEE")
SPEED = 600.0

INVARIANTS = [
    "each genuine click (delivered 4 times, and double-clicked) has exactly one effect",
    "forged, stale, tampered and unsigned requests change nothing (401, hold untouched)",
    "two authorities clicking at the same moment: one release",
    "one start command (delivered 3 times) makes one execution; each execution completes; chain verifies",
]


def sign(body: str, ts: int, secret: str = SECRET) -> str:
    return "v0=" + hmac.new(secret.encode(), f"v0:{ts}:{body}".encode(), hashlib.sha256).hexdigest()


class _Bench:
    """Fake Slack, sandbox, the bot and its HTTP endpoint."""

    def __init__(self, workdir: Path, sandbox: Sandbox | None = None, credentials: Credentials | None = None) -> None:
        from bot.app import HttpServer, SlackBot
        from tests.slack.fake_slack import BOT_TOKEN, FakeSlack

        workdir.mkdir(parents=True, exist_ok=True)
        self.fake = FakeSlack().start()
        self.fake.memberships = {"S0CAB": [], "S0ONCALL": []}
        self.sandbox = sandbox or Sandbox(clock=utc_now)
        self.sandbox.start()
        packages = workdir / "packages"
        self.store = open_store(f"sqlite:///{workdir / 'ledger.db'}")
        self.client = http_client(5.0)
        self.packages = packages
        self.bot = SlackBot(
            store=self.store,
            connect=live_connector(credentials or Credentials({}), self.client, utc_now, self.sandbox.url),
            bot_token=BOT_TOKEN,
            signing_secret=SECRET,
            api_url=self.fake.api_url,
            packages_dir=packages,
            owner="reliability-bot",
            start_mode="rehearsal",
            start_speed=SPEED,
            pace_s=0.01,
            notifier_sweep_s=0.5,
            driver_sweep_s=0.5,
        )
        self.bot.start(resume=False)
        self.server = HttpServer(self.bot.endpoint(), "127.0.0.1", 0).start()
        self.http = httpx.Client(timeout=15.0)
        self.url = f"http://127.0.0.1:{self.server.port}/slack/events"
        self.eids: list[str] = []

    def stop(self) -> None:
        self.server.stop()
        self.bot.stop()
        self.http.close()
        self.client.close()
        self.store.close()
        self.sandbox.stop()
        self.fake.stop()

    def post(self, body: str, ts: int, signature: str | None = None, *, headers: bool = True) -> int:
        h = {"Content-Type": "application/x-www-form-urlencoded"}
        if headers:
            h["X-Slack-Request-Timestamp"] = str(ts)
            h["X-Slack-Signature"] = signature if signature is not None else sign(body, ts)
        return self.http.post(self.url, content=body.encode(), headers=h).status_code

    def slash(self, text: str, user: str) -> str:
        form = {
            "team_id": "T0TRIAL",
            "channel_id": CHANNEL,
            "user_id": user,
            "command": "/stagehold",
            "text": text,
            "api_app_id": "A0TRIAL",
            "response_url": self.fake.response_url(secrets.token_hex(6)),
            "trigger_id": secrets.token_hex(8),
        }
        return urlencode(form)

    def submit(self, view: dict[str, Any], user: str, reason: str) -> str:
        """The rollback form submitted: the view the bot opened, with a reason typed in."""
        payload = {
            "type": "view_submission",
            "team": {"id": "T0TRIAL"},
            "user": {"id": user, "team_id": "T0TRIAL"},
            "api_app_id": "A0TRIAL",
            "trigger_id": secrets.token_hex(8),
            "view": {
                "id": "V0TRIAL",
                "type": "modal",
                "callback_id": view.get("callback_id", ""),
                "private_metadata": view.get("private_metadata", ""),
                "state": {
                    "values": {
                        "stagehold_reason": {"stagehold_reason_input": {"type": "plain_text_input", "value": reason}}
                    }
                },
            },
        }
        return urlencode({"payload": json.dumps(payload)})

    def click(self, value: str, user: str, message: Any, action_id: str = "stagehold_release") -> str:
        payload = {
            "type": "block_actions",
            "team": {"id": "T0TRIAL"},
            "user": {"id": user, "team_id": "T0TRIAL"},
            "api_app_id": "A0TRIAL",
            "container": {"type": "message", "message_ts": message.ts, "channel_id": message.channel},
            "trigger_id": secrets.token_hex(8),
            "channel": {"id": message.channel},
            "message": {"type": "message", "ts": message.ts, "thread_ts": message.thread_ts, "text": message.text},
            "response_url": self.fake.response_url(secrets.token_hex(6)),
            "actions": [{"type": "button", "action_id": action_id, "value": value, "action_ts": f"{time.time():.6f}"}],
        }
        return urlencode({"payload": json.dumps(payload)})

    def hold_card(self, execution: str, hold: str, timeout: float = 30.0) -> tuple[Any, str]:
        """The posted card whose Release button is bound to ``hold`` of ``execution``."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for root in self.fake.roots(CHANNEL):
                for m in self.fake.thread(CHANNEL, root.ts):
                    for block in m.blocks:
                        for el in block.get("elements", []) if block.get("type") == "actions" else []:
                            if el.get("action_id") != "stagehold_release":
                                continue
                            bound = json.loads(el["value"])
                            if bound["e"] == execution and bound["h"] == hold:
                                return m, str(el["value"])
            time.sleep(0.05)
        raise TimeoutError(f"no hold card for {execution} {hold}")


def _tamper(body: str, edit: Callable[[dict[str, Any]], None]) -> str:
    """The same form with its ``payload`` JSON edited (after it was signed)."""
    from urllib.parse import parse_qs

    payload = json.loads(parse_qs(body)["payload"][0])
    edit(payload)
    return urlencode({"payload": json.dumps(payload)})


def _wait(predicate: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise TimeoutError(f"timed out waiting for {what}")


def _trial(bench: _Bench, n: int, rec: Recorder, counts: Counter[str]) -> None:
    name = f"delivery-{n:03d}"
    change_id = f"CHG-DLV{n:03d}"
    plans.write_change(bench.packages / change_id.lower(), plans.package(change_id), plans.crash_drill())
    engine = bench.bot.engine
    now = int(time.time())
    start = bench.slash(f"start {change_id}", INITIATOR)
    codes = [bench.post(start, now)]
    codes += [bench.post(start, now + 1)]  # the same command sent again a second later (a retry)
    codes += [bench.post(bench.slash(f"start {change_id}", INITIATOR), now)]  # typed twice
    counts["start deliveries"] += len(codes)
    eid = _wait(lambda: engine.find(change_id), 20, f"{change_id} to start")[0]
    card, value = bench.hold_card(eid, "H1")

    # Bad requests first: none may change anything.
    outsider_click = bench.click(value, "U0OUTSIDER", card)
    genuine_shape = bench.click(value, RELEASERS[0], card)
    bound = json.loads(value)

    def as_user(payload: dict[str, Any]) -> None:
        payload["user"]["id"] = RELEASERS[0]

    def as_version_9(payload: dict[str, Any]) -> None:
        payload["actions"][0]["value"] = json.dumps({**bound, "v": 9}, separators=(",", ":"), sort_keys=True)

    tampered_user = _tamper(outsider_click, as_user)
    tampered_value = _tamper(genuine_shape, as_version_9)
    other = bench.click(json.dumps({**bound, "h": "H2"}, separators=(",", ":"), sort_keys=True), RELEASERS[0], card)
    ts = int(time.time())
    bad: list[tuple[str, int]] = [
        ("forged", bench.post(genuine_shape, ts, sign(genuine_shape, ts, "not-the-secret"))),
        ("stale", bench.post(genuine_shape, ts - 301)),
        ("stale", bench.post(genuine_shape, ts - 3600)),
        ("from the future", bench.post(genuine_shape, ts + 400)),
        ("unsigned", bench.post(genuine_shape, ts, headers=False)),
        ("tampered user", bench.post(tampered_user, ts, sign(outsider_click, ts))),
        ("tampered value", bench.post(tampered_value, ts, sign(genuine_shape, ts))),
        ("signature of another request", bench.post(other, ts, sign(genuine_shape, ts))),
    ]
    for what, code in bad:
        counts["bad requests"] += 1
        if code != 401:
            rec.add(name, "bad requests change nothing", f"{what} request answered {code}, not 401")
    # A 401 is Bolt's answer before any listener starts: nothing of these requests runs later.
    state = engine.load(eid)
    hold = state.holds.get("H1")
    people = [e for e in engine.entries(eid) if not e.actor.startswith("role:") and e.kind != "execution.started"]
    if hold is None or hold.status != "open" or hold.releases or people:
        rec.add(name, "bad requests change nothing", f"after bad requests: H1 {hold and hold.status}, entries {people}")

    # Two authorities at the same moment, each click delivered four times and double-clicked.
    def genuine(user: str, message: Any, value: str, barrier: threading.Barrier | None) -> None:
        body = bench.click(value, user, message)
        ts = int(time.time()) - 5
        if barrier is not None:
            barrier.wait()
        with ThreadPoolExecutor(max_workers=2) as pool:
            first = list(pool.map(lambda _: bench.post(body, ts), range(2)))
        time.sleep(0.4)
        later = [bench.post(body, ts) for _ in range(2)]
        again = bench.post(bench.click(value, user, message), int(time.time()))
        counts["genuine clicks"] += 1
        counts["deliveries of genuine clicks"] += 4
        counts["double clicks"] += 1
        if sorted(first) != [200, 401] and first != [200, 200]:
            rec.add(name, "one effect per click", f"{user}: simultaneous deliveries answered {first}")
        if any(code != 401 for code in later):
            counts["later deliveries accepted"] += 1
        if again != 200:
            rec.add(name, "one effect per click", f"{user}: a fresh double click answered {again}")

    barrier = threading.Barrier(2)
    with ThreadPoolExecutor(max_workers=2) as pool:
        list(pool.map(lambda u: genuine(u, card, value, barrier), RELEASERS))
    card2, value2 = bench.hold_card(eid, "H2")
    for user in RELEASERS:
        genuine(user, card2, value2, None)
    final = _wait(lambda: (lambda s: s if s.terminal else None)(engine.load(eid)), 30, f"{eid} to finish")
    entries = engine.entries(eid)
    if final.status() != "completed":
        rec.add(name, "each execution completes", f"{eid} ended {final.status()}")
    if not verify_chain(entries, eid).ok:
        rec.add(name, "chain verifies", f"{eid} does not verify")
    if len(engine.find(change_id)) != 1:
        rec.add(name, "one start, one execution", f"{change_id} has executions {engine.find(change_id)}")
    granted = Counter((e.body["hold"], e.actor) for e in entries if e.kind == "release.granted")
    released = Counter(e.body["hold"] for e in entries if e.kind == "hold.released")
    for key, count in granted.items():
        if count != 1:
            rec.add(name, "one effect per click", f"{key[1]} granted a release of {key[0]} {count} times")
    if granted.get(("H1", RELEASERS[0]), 0) + granted.get(("H1", RELEASERS[1]), 0) != 1:
        rec.add(name, "one release of two simultaneous clicks", f"H1 releases: {dict(granted)}")
    if any(granted.get(("H2", u), 0) != 1 for u in RELEASERS):
        rec.add(name, "one effect per click", f"H2 releases: {dict(granted)}")
    for hold_id, count in released.items():
        if count != 1:
            rec.add(name, "one effect per click", f"{hold_id} released {count} times")
    counts["releases granted"] += sum(granted.values())
    counts["ignored repeat clicks"] += sum(
        1 for e in entries if e.kind == "release.ignored" and "repeats" not in e.body
    )
    bench.eids.append(eid)


def run(size: Size, workdir: Path) -> list[FamilyResult]:
    started = time.monotonic()
    workdir.mkdir(parents=True, exist_ok=True)
    rec = Recorder()
    counts: Counter[str] = Counter()
    trials = size.pick(2, 15)
    bench = _Bench(workdir)
    try:
        for n in range(1, trials + 1):
            try:
                _trial(bench, n, rec, counts)
            except TimeoutError as exc:
                rec.add(f"delivery-{n:03d}", "each execution completes", str(exc))
            rec.trial_done()
        # The double clicks counted rather than decided are recorded when their window ends; a
        # clean shutdown records the windows still open.
        bench.bot.repeats.close()
        counted = [e for eid in bench.eids for e in bench.bot.engine.entries(eid) if "repeats" in e.body]
        counts["counted repeat clicks"] = sum(int(e.body["repeats"]) for e in counted)
    finally:
        bench.stop()
    notes = [
        f"{counts['genuine clicks']} genuine clicks, {counts['deliveries of genuine clicks']} deliveries of them and "
        f"{counts['double clicks']} fresh double clicks; {counts['releases granted']} releases granted, "
        f"{counts['ignored repeat clicks']} repeats decided and recorded as ignored, "
        f"{counts['counted repeat clicks']} counted into one ignored entry per person and button",
        f"{counts['bad requests']} forged, stale, tampered or unsigned requests (all answered 401); "
        f"{counts['start deliveries']} deliveries of {trials} start commands",
        "exact re-deliveries are refused by the endpoint's replay guard (401); a fresh double click within seconds "
        "of the first is counted, not decided again, and the count recorded as one ignored entry",
    ]
    return [rec.result("deliveries", "Slack deliveries", "executions", INVARIANTS, notes, size, started)]
