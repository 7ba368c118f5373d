"""The operations endpoints every replica answers, in HTTP and in Socket Mode alike.

* ``GET /healthz`` — liveness: the process answers (with a few figures); 200 unless the answer
  itself fails.
* ``GET /readyz`` — readiness: the ledger database answers and the scheduler runs; 503 with the
  reason otherwise, so a load balancer stops sending Slack requests to a replica that lost the
  database (it also stops acting: every action needs a ledger append first).
* ``GET /metrics`` — Prometheus text format (``bot.metrics``).

In HTTP mode the Slack endpoint serves these beside ``POST /slack/events``; in Socket Mode no
Slack request arrives over HTTP, so this small ASGI app is served alone on ``STAGEHOLD_PORT``
(the image's HEALTHCHECK and an orchestrator's probes need it there).
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from typing import Any

log = logging.getLogger("stagehold.ops")

HEALTH_PATH = "/healthz"
READY_PATH = "/readyz"
METRICS_PATH = "/metrics"
PATHS = frozenset({HEALTH_PATH, READY_PATH, METRICS_PATH})
METRICS_TYPE = "text/plain; version=0.0.4; charset=utf-8"

Scope = dict[str, Any]
Receive = Callable[[], Any]
Send = Callable[[dict[str, Any]], Any]


class OpsEndpoint:
    def __init__(
        self,
        health: Callable[[], dict[str, Any]],
        ready: Callable[[], dict[str, Any]],
        metrics: Callable[[], bytes],
    ) -> None:
        self.health = health
        self.ready = ready
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        if scope["path"] not in PATHS:
            await reply(send, 404, b'{"error": "not found"}', "application/json")
            return
        await self.serve(scope, send)

    async def serve(self, scope: Scope, send: Send) -> None:
        """Answer one of ``PATHS``."""
        if scope["method"] not in ("GET", "HEAD"):
            await reply(send, 405, b'{"error": "method not allowed"}', "application/json")
            return
        path = scope["path"]
        try:
            if path == METRICS_PATH:
                await reply(send, 200, await asyncio.to_thread(self.metrics), METRICS_TYPE)
                return
            body = await asyncio.to_thread(self.health if path == HEALTH_PATH else self.ready)
        except Exception as exc:
            log.warning("%s failed: %s: %s", path, type(exc).__name__, str(exc).splitlines()[0] if str(exc) else "")
            await reply(send, 503, json.dumps({"ok": False, "reason": type(exc).__name__}).encode(), "application/json")
            return
        status = 200 if body.get("ok") else 503
        await reply(send, status, json.dumps(body).encode(), "application/json")


async def reply(send: Send, status: int, body: bytes, content_type: str) -> None:
    headers = [(b"content-type", content_type.encode()), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def lifespan(receive: Receive, send: Send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return
