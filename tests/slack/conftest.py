"""The Slack test bench: a fake Slack Web API, the rehearsal sandbox, and the real bot served over HTTP.

Every test talks to the bot the way Slack does: signed, form-encoded requests to
``POST /slack/events`` on a uvicorn server on a free loopback port. The bot's Web API client is
pointed at the fake (started first: Bolt calls ``auth.test`` while it is built), and its engine
drives a change package derived from the payments example against the sandbox at rehearsal speed.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest
import yaml

from bot.app import HttpServer, SlackBot
from bot.bootstrap import http_client, live_connector, open_store
from bot.clock import utc_now
from execution.model import Credentials
from execution.project import State
from execution.sandbox import Sandbox
from handlers.ids import RELEASE_ACTION, ROLLBACK_ACTION, ROLLBACK_MODAL
from tests.slack.fake_slack import BOT_TOKEN, FakeSlack, Message

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "payments-cutover"
SECRET = "test-signing-secret-" + "7f3a9c1d2e"
CHANNEL = "C0CHANGES"
CHANGE = "CHG-2041"
SPEED = 20.0

INITIATOR = "U05OPS"
RELEASERS = ("U01DANA", "U02LEE")
RESPONDER = "U03RESP"
OPERATOR = "U06SRE"
OUTSIDER = "U09NOBODY"
CAB_MEMBER = "U07CAB"
ONCALL_MEMBER = "U08ONCALL"


# ---------------------------------------------------------------- packages


def write_package(
    directory: Path,
    change_id: str = CHANGE,
    *,
    bake: str = "20s",
    every: str = "10s",
    max_age: str | None = "10m",
    expiry: str = "2h",
    remind: str = "15m",
    extra_checks: int = 0,
    stages: int | None = None,
    initiators: tuple[str, ...] | None = None,
) -> Path:
    """The payments example with faster stages (and optionally more checks), its digest re-pinned."""
    plan = yaml.safe_load((EXAMPLE / "plan.yaml").read_text())
    package = yaml.safe_load((EXAMPLE / "package.yaml").read_text())
    # A windowless query: the example's 1m rate window would read pre-change data for 3 s at x20
    # after every stage, samples that never count toward the bake (DESIGN rule 11). These tests
    # are about Slack, so the bake is left as short as it was.
    plan["signals"]["error_rate"]["prometheus"]["query"] = 'max(authz_errors_total{svc="tokenizer"})'
    if max_age is not None:
        for signal in plan["signals"].values():
            signal["max_age"] = max_age
    for i in range(extra_checks):
        plan["signals"][f"error_rate_{i:02d}"] = json.loads(json.dumps(plan["signals"]["error_rate"]))
    plan["holds"] = {"expiry": expiry, "remind_before": remind}
    for stage in plan["stages"]:
        if True in stage["verify"]:  # YAML 1.1 reads the key "on" as a boolean
            stage["verify"]["on"] = stage["verify"].pop(True)
        stage["verify"]["bake"] = bake
        stage["verify"]["every"] = every
        stage["verify"]["checks"] += [
            {"signal": f"error_rate_{i:02d}", "pass": "< 0.01", "hold": "< 0.02"} for i in range(extra_checks)
        ]
    if stages is not None:
        plan["stages"] = plan["stages"][:stages]
    folder = directory / change_id.lower()
    folder.mkdir(parents=True, exist_ok=True)
    plan_bytes = yaml.safe_dump(plan, sort_keys=False).encode()
    (folder / "plan.yaml").write_bytes(plan_bytes)
    package["id"] = change_id
    if initiators is not None:
        package["authorities"]["initiate"] = {"users": list(initiators)}
    package["plan_sha256"] = hashlib.sha256(plan_bytes).hexdigest()
    path = folder / "package.yaml"
    path.write_text(yaml.safe_dump(package, sort_keys=False))
    return path


# ---------------------------------------------------------------- signed requests


def sign(body: str, ts: int, secret: str = SECRET) -> str:
    base = f"v0:{ts}:{body}".encode()
    return "v0=" + hmac.new(secret.encode(), base, hashlib.sha256).hexdigest()


@dataclass
class Harness:
    fake: FakeSlack
    sandbox: Sandbox
    bot: SlackBot
    server: HttpServer
    packages: Path
    db_url: str
    http: httpx.Client = field(default_factory=lambda: httpx.Client(timeout=10.0))
    _n: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.port}"

    # ------------------------------------------------------------ requests as Slack sends them

    def post(
        self,
        body: str,
        *,
        ts: int | None = None,
        signature: str | None = None,
        secret: str = SECRET,
        content_type: str = "application/x-www-form-urlencoded",
    ) -> httpx.Response:
        ts = int(time.time()) if ts is None else ts
        headers = {
            "Content-Type": content_type,
            "X-Slack-Request-Timestamp": str(ts),
            "X-Slack-Signature": signature if signature is not None else sign(body, ts, secret),
        }
        return self.http.post(f"{self.url}/slack/events", content=body.encode(), headers=headers)

    def _response_url(self) -> str:
        self._n += 1
        return self.fake.response_url(f"r{self._n}")

    def slash_body(self, text: str, user: str, channel: str = CHANNEL) -> tuple[str, str]:
        response_url = self._response_url()
        form = {
            "token": "legacy-verification-token",
            "team_id": "T0TEST",
            "team_domain": "stagehold-test",
            "channel_id": channel,
            "channel_name": "changes",
            "user_id": user,
            "user_name": user.lower(),
            "command": "/stagehold",
            "text": text,
            "api_app_id": "A0TEST",
            "response_url": response_url,
            "trigger_id": f"{secrets.randbelow(10**6)}.{secrets.randbelow(10**6)}.{secrets.token_hex(8)}",
        }
        return urlencode(form), response_url.rsplit("/", 1)[1]

    def slash(self, text: str, user: str) -> tuple[httpx.Response, str]:
        body, name = self.slash_body(text, user)
        return self.post(body), name

    def answer(self, name: str, timeout: float = 15.0) -> dict[str, Any]:
        """The message the bot sent to a slash command's response_url."""
        found = self.fake.wait_for(
            lambda: [b for n, b in self.fake.responses if n == name], timeout, f"an answer on response_url {name}"
        )
        return dict(found[0])

    def click_body(self, action_id: str, value: str, user: str, message: Message) -> str:
        payload = {
            "type": "block_actions",
            "team": {"id": "T0TEST", "domain": "stagehold-test"},
            "user": {"id": user, "username": user.lower(), "team_id": "T0TEST"},
            "api_app_id": "A0TEST",
            "token": "legacy-verification-token",
            "container": {
                "type": "message",
                "message_ts": message.ts,
                "channel_id": message.channel,
                "is_ephemeral": False,
                "thread_ts": message.thread_ts,
            },
            "trigger_id": f"{secrets.randbelow(10**6)}.{secrets.randbelow(10**6)}.{secrets.token_hex(8)}",
            "channel": {"id": message.channel, "name": "changes"},
            "message": {"type": "message", "ts": message.ts, "thread_ts": message.thread_ts, "text": message.text},
            "response_url": self._response_url(),
            "actions": [
                {
                    "type": "button",
                    "action_id": action_id,
                    "block_id": "stagehold_hold_actions",
                    "value": value,
                    "text": {"type": "plain_text", "text": "Release"},
                    "action_ts": f"{time.time():.6f}",
                }
            ],
        }
        return urlencode({"payload": json.dumps(payload)})

    def click(self, card: Message, user: str, action: str = "release", value: str | None = None) -> httpx.Response:
        action_id = RELEASE_ACTION if action == "release" else ROLLBACK_ACTION
        return self.post(self.click_body(action_id, value if value is not None else button_value(card), user, card))

    def submit_body(self, view: dict[str, Any], user: str, reason: str) -> str:
        payload = {
            "type": "view_submission",
            "team": {"id": "T0TEST", "domain": "stagehold-test"},
            "user": {"id": user, "username": user.lower(), "team_id": "T0TEST"},
            "api_app_id": "A0TEST",
            "token": "legacy-verification-token",
            "trigger_id": f"{secrets.randbelow(10**6)}.{secrets.randbelow(10**6)}.{secrets.token_hex(8)}",
            "view": {
                "id": "V000001",
                "type": "modal",
                "callback_id": view.get("callback_id", ROLLBACK_MODAL),
                "private_metadata": view.get("private_metadata", ""),
                "state": {
                    "values": {
                        "stagehold_reason": {"stagehold_reason_input": {"type": "plain_text_input", "value": reason}}
                    }
                },
            },
        }
        return urlencode({"payload": json.dumps(payload)})

    def settle(self) -> None:
        """Every acknowledged click handled and its repeats recorded, as a clean shutdown does."""
        self.bot.listeners.shutdown(wait=True)
        self.bot.repeats.close()

    # ------------------------------------------------------------ what the bot did

    def execution(self) -> State:
        found = self.bot.engine.find(CHANGE)
        assert found, "no execution started"
        return self.bot.engine.load(found[-1])

    def kinds(self) -> list[str]:
        return [e.kind for e in self.bot.engine.entries(self.execution().execution_id)]

    def root(self) -> Message:
        return self.fake.wait_for(lambda: self.fake.roots(CHANNEL), 15, "the root card")[0]  # type: ignore[no-any-return]

    def hold_card(self, hold_id: str, *, version: int | None = None, timeout: float = 15.0) -> Message:
        """The hold card for ``hold_id`` once it shows open buttons (at ``version`` if given)."""

        def find() -> Message | None:
            root = self.fake.roots(CHANNEL)
            if not root:
                return None
            for m in self.fake.thread(CHANNEL, root[0].ts):
                value = button_value(m)
                if value is None:
                    continue
                bound = json.loads(value)
                if bound["h"] == hold_id and (version is None or bound["v"] == version):
                    return m
            return None

        return self.fake.wait_for(find, timeout, f"hold card {hold_id}")  # type: ignore[no-any-return]

    def wait_state(self, predicate: Any, timeout: float = 20.0, what: str = "execution state") -> State:
        return self.fake.wait_for(  # type: ignore[no-any-return]
            lambda: (lambda s: s if predicate(s) else None)(self.execution()), timeout, what
        )


def button_value(card: Message, action_id: str = RELEASE_ACTION) -> str | None:
    for block in card.blocks:
        if block.get("type") == "actions":
            for el in block["elements"]:
                if el.get("action_id") == action_id:
                    return str(el["value"])
    return None


def card_text(card: Message) -> str:
    return json.dumps(card.blocks, ensure_ascii=False)


# ---------------------------------------------------------------- fixtures


@pytest.fixture
def fake_slack() -> Iterator[FakeSlack]:
    fake = FakeSlack().start()
    fake.memberships = {"S0CAB": [CAB_MEMBER], "S0ONCALL": [ONCALL_MEMBER]}
    try:
        yield fake
    finally:
        fake.stop()


@pytest.fixture
def sandbox() -> Iterator[Sandbox]:
    box = Sandbox(port=0, clock=utc_now).start()
    try:
        yield box
    finally:
        box.stop()


@pytest.fixture
def packages(tmp_path: Path) -> Path:
    directory = tmp_path / "packages"
    write_package(directory)
    return directory


@dataclass
class BotFactory:
    fake: FakeSlack
    sandbox: Sandbox
    packages: Path
    db_url: str
    started: list[Harness] = field(default_factory=list)
    resources: dict[int, tuple[httpx.Client, Any]] = field(default_factory=dict)

    def __call__(
        self, *, pace_s: float = 0.02, resume: bool = True, speed: float = SPEED, **bot_options: Any
    ) -> Harness:
        store = open_store(self.db_url)
        client = http_client(5.0)
        bot = SlackBot(
            store=store,
            connect=live_connector(Credentials({}), client, utc_now, self.sandbox.url),
            bot_token=BOT_TOKEN,
            signing_secret=SECRET,
            api_url=self.fake.api_url,
            packages_dir=self.packages,
            pace_s=pace_s,
            notifier_sweep_s=0.5,
            driver_sweep_s=1.0,
            # One identity across restarts (the lease carries over at once) unless a test names replicas.
            **{"start_mode": "rehearsal", "start_speed": speed, "owner": "stagehold-test", **bot_options},
        )
        bot.start(resume=resume)
        server = HttpServer(bot.endpoint(), "127.0.0.1", 0).start()
        harness = Harness(self.fake, self.sandbox, bot, server, self.packages, self.db_url)
        self.started.append(harness)
        self.resources[id(harness)] = (client, store)
        return harness

    def stop(self, harness: Harness) -> None:
        """Stop one bot as a process shutdown would: server, scheduler, notifier, connections."""
        if harness not in self.started:
            return
        self.started.remove(harness)
        harness.server.stop()
        harness.bot.stop()
        client, store = self.resources.pop(id(harness))
        client.close()
        store.close()
        harness.http.close()

    def stop_all(self) -> None:
        for harness in list(self.started):
            self.stop(harness)


@pytest.fixture
def make_bot(fake_slack: FakeSlack, sandbox: Sandbox, packages: Path, tmp_path: Path) -> Iterator[BotFactory]:
    factory = BotFactory(fake_slack, sandbox, packages, f"sqlite:///{tmp_path / 'ledger.db'}")
    try:
        yield factory
    finally:
        factory.stop_all()


@pytest.fixture
def harness(make_bot: BotFactory) -> Harness:
    return make_bot()
