"""The Slack app: Bolt wired to the handlers, served over Socket Mode or HTTP.

Rules:
* Socket Mode (``bot.socket_mode``) when an app-level token (``SLACK_APP_TOKEN``) is set — no
  public URL needed; otherwise HTTP behind uvicorn: ``POST /slack/events`` for commands and
  interactions, and ``GET /healthz``, ``GET /readyz`` and ``GET /metrics`` (``bot.ops``; in Socket
  Mode these are served alone on the same port). Bolt's ``dispatch`` is synchronous, so it runs in a worker thread
  (``asyncio.to_thread``) and never blocks the event loop.
* Every HTTP request is verified against the signing secret by Bolt's ``RequestVerification``
  (``v0=HMAC-SHA256(secret, "v0:{ts}:{body}")``, timestamps more than five minutes off refused):
  a bad one gets 401 and reaches no listener. Before that, this layer refuses a malformed
  timestamp and an exact replay of a request it already accepted (same signature within the
  five minutes); everything a replay could do is idempotent in the engine anyway.
* Two Web API clients: the listeners' client retries briefly itself (slack_sdk's connection,
  rate-limit and server-error retry handlers, two attempts each) because a person is waiting;
  the notifier's client has no retry handlers, since its outbox retries without holding a worker.
* The Web API base URL is a setting (``STAGEHOLD_SLACK_API_URL``), so tests and proxies can
  stand in for slack.com.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path
from typing import Any

import uvicorn
from apscheduler.triggers.cron import CronTrigger
from slack_bolt import App, BoltRequest
from slack_sdk import WebClient
from slack_sdk.http_retry import RetryHandler
from slack_sdk.http_retry.builtin_handlers import (
    ConnectionErrorRetryHandler,
    RateLimitErrorRetryHandler,
    ServerErrorRetryHandler,
)
from slack_sdk.signature import SignatureVerifier
from sqlalchemy import text

from bot.bootstrap import build_engine, process_owner
from bot.clock import utc_now
from bot.digest import Digest
from bot.keys import WitnessFile
from bot.metrics import Metrics
from bot.ops import PATHS as OPS_PATHS
from bot.ops import OpsEndpoint, reply
from bot.ops import lifespan as ops_lifespan
from bot.scheduler import Driver
from execution.adapters.base import Connection
from execution.approvals import ApprovalReport
from execution.contract import LoadedChange
from execution.model import Clock
from execution.project import State
from handlers import actions, commands
from handlers.directory import Directory
from handlers.notifier import Notifier
from handlers.repeats import WINDOW_S as REPEAT_WINDOW_S
from handlers.repeats import RepeatedClicks, Repeats
from handlers.review import ReportSettings
from handlers.services import Services
from ledger.note import Signer
from ledger.sql import SqlLedgerStore

log = logging.getLogger("stagehold.slack.app")

EVENTS_PATH = "/slack/events"
MAX_BODY = 1024 * 1024
SIGNATURE_WINDOW_S = 300
LISTENER_WORKERS = 16
WEB_API_TIMEOUT_S = 10
DIGEST_CLAIM_S = 24 * 3600.0


def listener_client(token: str, base_url: str) -> WebClient:
    retries: list[RetryHandler] = [
        ConnectionErrorRetryHandler(max_retry_count=2),
        RateLimitErrorRetryHandler(max_retry_count=2),
        ServerErrorRetryHandler(max_retry_count=2),
    ]
    return WebClient(token=token, base_url=_slash(base_url), timeout=WEB_API_TIMEOUT_S, retry_handlers=retries)


def delivery_client(token: str, base_url: str) -> WebClient:
    return WebClient(token=token, base_url=_slash(base_url), timeout=WEB_API_TIMEOUT_S, retry_handlers=[])


def _slash(url: str) -> str:
    return url if url.endswith("/") else url + "/"


class _SameToken(logging.Filter):
    # Bolt also reads SLACK_BOT_TOKEN from the environment and warns that the client's token wins;
    # the client was built from that same setting, so the warning says nothing.
    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("As you gave `client` as well")


_bolt_log = logging.getLogger("stagehold.slack.bolt")
_bolt_log.addFilter(_SameToken())


def build_app(
    client: WebClient, signing_secret: str, services: Services, listeners: ThreadPoolExecutor | None = None
) -> App:
    """The Bolt app with every stagehold listener. Bolt calls ``auth.test`` here."""
    app = App(
        name="stagehold",
        logger=_bolt_log,
        client=client,
        signing_secret=signing_secret,
        # Listeners run in Bolt's pool after ack(); enough workers that slow Slack answers to some
        # clicks never keep a new click from being acknowledged within 3 seconds.
        listener_executor=listeners or ThreadPoolExecutor(LISTENER_WORKERS, thread_name_prefix="stagehold-listener"),
    )
    commands.register(app, services)
    actions.register(app, services)
    return app


class ReplayGuard:
    """Refuse a validly signed request seen before (same signature inside the signature window)."""

    def __init__(self, signing_secret: str, clock: Callable[[], float] = time.time) -> None:
        self.verifier = SignatureVerifier(signing_secret)
        self.clock = clock
        self._seen: dict[str, float] = {}
        self._lock = threading.Lock()

    def admit(self, body: bytes, timestamp: str | None, signature: str | None) -> bool:
        """False for a malformed timestamp or a replay; bad signatures are left to Bolt (401)."""
        if timestamp is None or not (timestamp.isascii() and timestamp.isdigit()) or len(timestamp) > 12:
            return False
        if signature is None or not self.verifier.is_valid(body, timestamp, signature):
            return True
        now = self.clock()
        with self._lock:
            for sig, seen in list(self._seen.items()):
                if now - seen > 2 * SIGNATURE_WINDOW_S:
                    del self._seen[sig]
            if signature in self._seen:
                return False
            self._seen[signature] = now
        return True


Scope = dict[str, Any]
Receive = Callable[[], Any]
Send = Callable[[dict[str, Any]], Any]


class SlackEndpoint:
    """A small ASGI app: Bolt at ``POST /slack/events``; ``/healthz``, ``/readyz``, ``/metrics`` (``bot.ops``)."""

    def __init__(self, app: App, signing_secret: str, ops: OpsEndpoint) -> None:
        self.app = app
        self.ops = ops
        self.guard = ReplayGuard(signing_secret)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await ops_lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        method, path = scope["method"], scope["path"]
        if path in OPS_PATHS:
            await self.ops.serve(scope, send)
            return
        if path != EVENTS_PATH:
            await reply(send, 404, b'{"error": "not found"}', "application/json")
            return
        if method != "POST":
            await reply(send, 405, b'{"error": "method not allowed"}', "application/json")
            return
        raw = await _read_body(receive)
        if raw is None:
            await reply(send, 413, b'{"error": "request too large"}', "application/json")
            return
        headers: dict[str, list[str]] = {}
        for key, value in scope.get("headers", []):
            headers.setdefault(key.decode("latin-1").lower(), []).append(value.decode("latin-1"))
        timestamp = _first(headers, "x-slack-request-timestamp")
        signature = _first(headers, "x-slack-signature")
        if not self.guard.admit(raw, timestamp, signature):
            await reply(send, 401, b'{"error": "invalid request"}', "application/json")
            return
        request = BoltRequest(
            body=raw.decode("utf-8", errors="replace"),
            query=scope.get("query_string", b"").decode("latin-1"),
            headers=headers,  # type: ignore[arg-type]
        )
        response = await asyncio.to_thread(self.app.dispatch, request)
        out_headers = [(k.encode("latin-1"), v.encode("latin-1")) for k, vs in response.headers.items() for v in vs]
        body_bytes = response.body.encode("utf-8") if isinstance(response.body, str) else bytes(response.body or b"")
        await send({"type": "http.response.start", "status": response.status, "headers": out_headers})
        await send({"type": "http.response.body", "body": body_bytes})


def _first(headers: dict[str, list[str]], name: str) -> str | None:
    values = headers.get(name)
    return values[0] if values else None


async def _read_body(receive: Receive) -> bytes | None:
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return b"".join(chunks)
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > MAX_BODY:
            return None
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


class HttpServer:
    """uvicorn serving an ASGI app in a background thread; ``stop()`` shuts it down cleanly."""

    def __init__(self, asgi: Any, host: str, port: int) -> None:
        # IPPROTO_TCP named explicitly: asyncio sets TCP_NODELAY on accepted connections only when
        # the socket says it is TCP. Left at proto 0, Nagle holds the response body back behind its
        # headers until the client's delayed ACK, and each request on a keep-alive connection
        # waits about 40 ms.
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((host, port))  # bound here, so port 0 gives a known free port at once
        self.host = host
        self.port = int(self.sock.getsockname()[1])
        config = uvicorn.Config(
            asgi, interface="asgi3", lifespan="off", log_level="warning", access_log=False, timeout_graceful_shutdown=5
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(
            target=self.server.run, kwargs={"sockets": [self.sock]}, name="stagehold-http", daemon=True
        )

    def start(self, timeout: float = 10.0) -> HttpServer:
        self.thread.start()
        deadline = time.monotonic() + timeout
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError(f"the HTTP server did not start on {self.host}:{self.port}")
            time.sleep(0.01)
        return self

    def stop(self, timeout: float = 10.0) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=timeout)
        self.sock.close()


# ---------------------------------------------------------------- the assembled bot


class SlackBot:
    """Engine, scheduler, notifier and Bolt app wired together: ``stagehold serve`` runs one."""

    def __init__(
        self,
        *,
        store: SqlLedgerStore,
        connect: Callable[[State], Connection],
        bot_token: str,
        signing_secret: str,
        api_url: str,
        packages_dir: str | Path,
        clock: Clock = utc_now,
        owner: str | None = None,
        start_mode: str = "live",
        start_speed: float = 1.0,
        pace_s: float = 1.0,
        notifier_sweep_s: float = 30.0,
        driver_sweep_s: float = 15.0,
        directory_ttl_s: float = 60.0,
        report: ReportSettings | None = None,
        digest_channel: str | None = None,
        digest_trigger: CronTrigger | None = None,
        approvals: Callable[[LoadedChange], ApprovalReport | None] | None = None,
        witness: Signer | None = None,
        witness_file: str | None = None,
        repeat_window_s: float = REPEAT_WINDOW_S,
        lease_ttl_s: float = 10.0,
        lease_renew_s: float = 3.0,
        lease_poll_s: float = 2.0,
    ) -> None:
        self.store = store
        self.signing_secret = signing_secret
        owner = owner or process_owner()
        self.notifier = Notifier(
            store,
            delivery_client(bot_token, api_url),
            pace_s=pace_s,
            sweep_s=notifier_sweep_s,
            witness=witness,
            owner=owner,
            lease_ttl_s=lease_ttl_s,
            renew_s=lease_renew_s,
        )
        listeners: list[Any] = [self.notifier]
        if witness is not None and witness_file:
            listeners.append(WitnessFile(witness, Path(witness_file)))
        self.engine = build_engine(
            store, connect, listeners=listeners, clock=clock, owner=owner, lease_ttl_s=lease_ttl_s
        )
        self.metrics = Metrics(self.engine, clock, self.notifier.stats, self.notifier.slack.undelivered)
        self.engine.listeners.append(self.metrics)
        self.notifier.outbox.on_rate_limited = self.metrics.rate_limited.inc
        self.driver = Driver(
            self.engine,
            clock,
            sweep_seconds=driver_sweep_s,
            on_lag=self.metrics.scheduler_lag,
            coordination=store,
            renew_s=lease_renew_s,
            poll_s=lease_poll_s,
        )
        client = listener_client(bot_token, api_url)
        self.repeats = RepeatedClicks(self._record_repeats, clock, repeat_window_s)
        self.services = Services(
            engine=self.engine,
            wake=self.driver.wake,
            directory=Directory(client, ttl_s=directory_ttl_s),
            packages_dir=Path(packages_dir),
            threads=self.notifier.slack,
            start_mode=start_mode,
            start_speed=start_speed,
            report=report or ReportSettings(),
            repeats=self.repeats,
            **({"approvals": approvals} if approvals is not None else {}),
        )
        self.listeners = ThreadPoolExecutor(LISTENER_WORKERS, thread_name_prefix="stagehold-listener")
        self.app = build_app(client, signing_secret, self.services, self.listeners)
        self.digest_trigger = digest_trigger
        self.digest = (
            Digest(
                store,
                client,
                digest_channel,
                self.services.report,
                clock,
                self.notifier.slack.hold_card_times,
                claim=self._digest_claim(digest_channel),
            )
            if digest_channel and digest_trigger is not None
            else None
        )

    def _digest_claim(self, channel: str) -> Callable[[datetime], bool]:
        def claim(now: datetime) -> bool:
            # One lease row per scheduled minute: the first replica to take it posts that digest.
            slot = f"digest:{channel}:{now:%Y-%m-%dT%H:%M}"
            return self.store.acquire_lease(slot, self.engine.owner, now, DIGEST_CLAIM_S) is not None

        return claim

    def start(self, *, resume: bool = True) -> SlackBot:
        """Deliver anything not yet posted, resume every unfinished execution, then tick on schedule."""
        self.notifier.start()
        self.driver.start(resume=resume)
        if self.digest is not None and self.digest_trigger is not None:
            self.digest.schedule(self.driver.scheduler, self.digest_trigger)
        return self

    def stop(self) -> None:
        """Stop after the HTTP server: finish clicks in hand, stop ticking, hand leases back, stop posting."""
        self.listeners.shutdown(wait=True)
        self.repeats.close()
        self.driver.stop()
        for execution_id in self.engine.active():
            # Another process (or this one restarted) may then take over at once, not after the lease lapses.
            self.engine.let_go(execution_id)
        self.notifier.stop()

    def _record_repeats(self, repeats: Repeats) -> None:
        k = repeats.key
        self.engine.record_repeated_release(
            k.execution, k.hold, k.version, k.user, repeats.count, repeats.first_at, repeats.last_at
        )

    def endpoint(self) -> SlackEndpoint:
        return SlackEndpoint(self.app, self.signing_secret, self.ops())

    def ops(self) -> OpsEndpoint:
        return OpsEndpoint(self.health, self.ready, self.metrics.render)

    def ready(self) -> dict[str, Any]:
        """Ready to take Slack requests: the ledger database answers and executions are being driven."""
        if not self.driver.scheduler.running:
            return {"ok": False, "reason": "the scheduler is not running"}
        try:
            with self.store.engine.connect() as connection:
                connection.execute(text("SELECT 1"))
        except Exception as exc:
            first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            return {"ok": False, "reason": f"the ledger database does not answer: {first}"}
        return {"ok": True}

    def health(self) -> dict[str, Any]:
        """Liveness, from memory only: a database outage makes the replica unready, not dead."""
        return {"ok": True, "executions": {"leased": self.engine.leases_held()}, "slack": self.notifier.stats()}
