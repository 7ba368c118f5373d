"""A fake Slack Web API on loopback: records every call, answers like Slack, fails on demand.

Implements what stagehold uses: ``auth.test``, ``chat.postMessage`` (increasing ``ts``),
``chat.update``, ``chat.postEphemeral``, ``views.open``, ``usergroups.users.list`` (configurable
memberships), the three steps of ``files_upload_v2`` (``files.getUploadURLExternal``, the upload
URL, ``files.completeUploadExternal``), ``response_url`` endpoints, and for Socket Mode
``apps.connections.open`` (with ``APP_TOKEN``) and a WebSocket handshake that then hangs up.

Failures are injected per method: ``fail(method, status, times, retry_after)`` answers the next
``times`` calls with that HTTP status (429 with ``Retry-After``), ``storm(method, seconds)``
answers 429 to every call for a while, ``break_upload(fault)`` breaks the next file upload
without a Slack API error. Failed calls are recorded too (``Call.status``).
"""

from __future__ import annotations

import base64
import hashlib
import json
import threading
import time
from collections import deque
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

_WS_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
APP_TOKEN = "xapp-1-A0TEST-1-" + "0123456789abcdef"
BOT_TOKEN = "xoxb-test-token"


@dataclass
class Call:
    method: str
    params: dict[str, Any]
    status: int
    at: float
    token: str | None

    @property
    def ok(self) -> bool:
        return self.status == 200


@dataclass
class _Failure:
    status: int
    retry_after: float | None


@dataclass
class Message:
    channel: str
    ts: str
    thread_ts: str | None
    text: str
    blocks: list[dict[str, Any]]
    metadata: dict[str, Any] | None
    history: list[dict[str, Any]] = field(default_factory=list)  # earlier versions (chat.update)


class FakeSlack:
    def __init__(self, token: str = BOT_TOKEN) -> None:
        self.token = token
        self.calls: list[Call] = []
        self.messages: dict[tuple[str, str], Message] = {}
        self.memberships: dict[str, list[str]] = {}
        self.broken_groups: set[str] = set()
        self.responses: list[tuple[str, dict[str, Any]]] = []
        self.uploads: dict[str, bytes] = {}
        # Upload answers that are not Slack API errors, used once each in order (see ``break_upload``).
        self.upload_faults: deque[str] = deque()
        # What apps.connections.open hands out, in order (the last one again and again): a
        # WebSocket URL (``ws_url``: a handshake that then hangs up) or None (ok, but no url).
        self.socket_urls: deque[str | None] = deque([None])
        self.socket_handshakes = 0
        self.socket_hold_s = 0.0  # how long a WebSocket stays open before the fake hangs up
        self._failures: dict[str, deque[_Failure]] = {}
        self._storms: dict[str, tuple[float, float]] = {}
        self._delays: dict[str, float] = {}
        self._lost: dict[str, int] = {}  # method -> calls whose effect happens but whose answer is lost
        self._refused: dict[str, str] = {}  # method -> the error every call of it gets (ok: false)
        # Called with (method, params) after a call took effect and before its answer is sent:
        # a trial can kill the caller there, as if it died between Slack's answer and its own write.
        self.before_answer: Callable[[str, dict[str, Any]], None] | None = None
        self._lock = threading.Lock()
        self._ts = 1_700_000_000_000_100
        self.wall_clock_ts = False  # True: message ts follow the wall clock, as Slack's do
        self._ids = 0
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------ lifecycle

    def start(self) -> FakeSlack:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                fake._handle(self)

            def do_GET(self) -> None:
                fake._handshake(self)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    @property
    def root(self) -> str:
        assert self._server is not None
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    @property
    def api_url(self) -> str:
        return f"{self.root}/api/"

    @property
    def ws_url(self) -> str:
        return self.root.replace("http://", "ws://", 1) + "/socket"

    def response_url(self, name: str) -> str:
        return f"{self.root}/response/{name}"

    # ------------------------------------------------------------ failure injection

    def fail(self, method: str, status: int, times: int = 1, retry_after: float | None = None) -> None:
        with self._lock:
            queue = self._failures.setdefault(method, deque())
            for _ in range(times):
                queue.append(_Failure(status, retry_after))

    def storm(self, method: str, seconds: float, retry_after: float = 1.0) -> None:
        """Answer every call of ``method`` with 429 for ``seconds``."""
        with self._lock:
            self._storms[method] = (time.monotonic() + seconds, retry_after)

    def calm(self) -> None:
        """End every storm and pending injected failure."""
        with self._lock:
            self._storms.clear()
            self._failures.clear()

    def break_upload(self, fault: str) -> None:
        """Make the next file upload fail without a Slack API error: ``no-upload-url``
        (files.getUploadURLExternal says ok but gives no URL), ``upload-201`` (the upload URL answers
        201, not 200) or ``complete-without-files`` (files.completeUploadExternal says ok, no files)."""
        assert fault in ("no-upload-url", "upload-201", "complete-without-files"), fault
        with self._lock:
            self.upload_faults.append(fault)

    def _upload_fault(self, fault: str) -> bool:
        if self.upload_faults and self.upload_faults[0] == fault:
            self.upload_faults.popleft()
            return True
        return False

    def lose_answer(self, method: str, times: int = 1) -> None:
        """Carry out the next ``times`` calls of ``method`` but answer HTTP 500, as when Slack's
        answer is lost on the way (or the caller died before it could record it)."""
        with self._lock:
            self._lost[method] = self._lost.get(method, 0) + times

    def refuse(self, method: str, error: str) -> None:
        """Answer every call of ``method`` with ``ok: false`` and ``error`` (e.g. ``missing_scope``)."""
        with self._lock:
            self._refused[method] = error

    def delay(self, method: str, seconds: float) -> None:
        """Answer ``method`` only after ``seconds`` (a slow Slack)."""
        with self._lock:
            self._delays[method] = seconds

    # ------------------------------------------------------------ inspection

    def calls_of(self, method: str, *, ok: bool | None = True) -> list[Call]:
        with self._lock:
            return [c for c in self.calls if c.method == method and (ok is None or c.ok == ok)]

    def all_calls(self) -> list[Call]:
        with self._lock:
            return list(self.calls)

    def thread(self, channel: str, root_ts: str) -> list[Message]:
        """Messages posted in the thread of ``root_ts``, in posting order."""
        with self._lock:
            return sorted(
                (m for m in self.messages.values() if m.channel == channel and m.thread_ts == root_ts),
                key=lambda m: m.ts,
            )

    def roots(self, channel: str) -> list[Message]:
        with self._lock:
            return sorted(
                (m for m in self.messages.values() if m.channel == channel and m.thread_ts is None), key=lambda m: m.ts
            )

    def message(self, channel: str, ts: str) -> Message:
        with self._lock:
            return self.messages[(channel, ts)]

    def ephemerals(self, user: str | None = None) -> list[Call]:
        return [c for c in self.calls_of("chat.postEphemeral") if user is None or c.params.get("user") == user]

    def wait_for(self, predicate: Callable[[], Any], timeout: float = 15.0, what: str = "condition") -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = predicate()
            if value:
                return value
            time.sleep(0.02)
        raise AssertionError(f"timed out after {timeout}s waiting for {what}")

    # ------------------------------------------------------------ serving

    def _next_ts(self) -> str:
        self._ts += 100
        if self.wall_clock_ts:
            self._ts = max(self._ts, time.time_ns() // 1000)
        whole, frac = divmod(self._ts, 1_000_000)
        return f"{whole}.{frac:06d}"

    def _next_id(self, prefix: str) -> str:
        self._ids += 1
        return f"{prefix}{self._ids:06d}"

    def _handle(self, request: BaseHTTPRequestHandler) -> None:
        length = int(request.headers.get("Content-Length") or 0)
        raw = request.rfile.read(length) if length else b""
        path = urlsplit(request.path).path
        if path.startswith("/response/"):
            body = json.loads(raw or b"{}")
            with self._lock:
                self.responses.append((path.rsplit("/", 1)[1], body))
            self._send(request, 200, "ok", "text/plain")
            return
        if path.startswith("/upload/"):
            with self._lock:
                created = self._upload_fault("upload-201")
                self.uploads[path.rsplit("/", 1)[1]] = raw
            self._send(request, 201 if created else 200, f"OK - {len(raw)}", "text/plain")
            return
        if not path.startswith("/api/"):
            self._send(request, 404, json.dumps({"ok": False, "error": "not_found"}))
            return
        method = path[len("/api/") :]
        params = self._params(request, raw)
        auth = request.headers.get("Authorization") or ""
        token = auth[len("Bearer ") :] if auth.startswith("Bearer ") else params.get("token")
        with self._lock:
            pause = self._delays.get(method, 0.0)
        if pause:
            time.sleep(pause)
        with self._lock:
            failure = self._failure(method)
            if failure is not None:
                self.calls.append(Call(method, params, failure.status, time.time(), token))
        if failure is not None:
            headers = {"Retry-After": f"{failure.retry_after:g}"} if failure.retry_after is not None else {}
            error = "ratelimited" if failure.status == 429 else "internal_error"
            self._send(request, failure.status, json.dumps({"ok": False, "error": error}), headers=headers)
            return
        with self._lock:
            answer = self._answer(method, params, token)
            lost = self._lost.get(method, 0) > 0 and answer.get("ok") is True
            if lost:
                self._lost[method] -= 1
            self.calls.append(Call(method, params, 500 if lost else 200, time.time(), token))
        hook = self.before_answer
        if hook is not None:
            hook(method, params)
        try:
            if lost:
                self._send(request, 500, json.dumps({"ok": False, "error": "internal_error"}))
                return
            self._send(request, 200, json.dumps(answer))
        except (BrokenPipeError, ConnectionResetError):
            pass  # the caller is gone (killed while it waited)

    def _handshake(self, request: BaseHTTPRequestHandler) -> None:
        """A WebSocket opening handshake (RFC 6455), then a close frame, as when Slack drops a
        Socket Mode connection and the client must ask for a new URL."""
        key = request.headers.get("Sec-WebSocket-Key") or ""
        if urlsplit(request.path).path != "/socket" or not key:
            self._send(request, 404, json.dumps({"ok": False, "error": "not_found"}))
            return
        accept = base64.b64encode(hashlib.sha1((key + _WS_GUID).encode()).digest()).decode()
        with self._lock:
            self.socket_handshakes += 1
        request.send_response(101, "Switching Protocols")
        request.send_header("Upgrade", "websocket")
        request.send_header("Connection", "Upgrade")
        request.send_header("Sec-WebSocket-Accept", accept)
        request.end_headers()
        request.wfile.flush()
        time.sleep(self.socket_hold_s)
        request.close_connection = True
        try:
            request.wfile.write(b"\x88\x00")  # a close frame (FIN, opcode 8, no payload): Slack hangs up
            request.wfile.flush()
        except OSError:
            pass  # the client closed its end first

    def _failure(self, method: str) -> _Failure | None:
        storm = self._storms.get(method)
        if storm is not None:
            until, retry_after = storm
            if time.monotonic() < until:
                return _Failure(429, retry_after)
            del self._storms[method]
        queue = self._failures.get(method)
        if queue:
            return queue.popleft()
        return None

    @staticmethod
    def _params(request: BaseHTTPRequestHandler, raw: bytes) -> dict[str, Any]:
        ctype = request.headers.get("Content-Type") or ""
        query = {k: v[0] for k, v in parse_qs(urlsplit(request.path).query).items()}
        if "json" in ctype:
            return {**query, **json.loads(raw or b"{}")}
        form = {k: v[0] for k, v in parse_qs(raw.decode("utf-8")).items()}
        out: dict[str, Any] = {**query, **form}
        for key in ("blocks", "view", "metadata", "files"):
            if isinstance(out.get(key), str):
                with suppress(ValueError):
                    out[key] = json.loads(out[key])
        return out

    def _answer(self, method: str, p: dict[str, Any], token: str | None) -> dict[str, Any]:
        if method == "apps.connections.open" and token == APP_TOKEN:
            url = self.socket_urls.popleft() if len(self.socket_urls) > 1 else self.socket_urls[0]
            return {"ok": True, **({"url": url} if url else {})}
        if token != self.token:
            return {"ok": False, "error": "invalid_auth"}
        if method in self._refused:
            return {"ok": False, "error": self._refused[method]}
        if method == "auth.test":
            return {
                "ok": True,
                "url": "https://stagehold-test.slack.com/",
                "team": "Test",
                "user": "stagehold",
                "team_id": "T0TEST",
                "user_id": "U0BOT",
                "bot_id": "B0BOT",
            }
        if method == "chat.postMessage":
            channel = p.get("channel")
            if not channel:
                return {"ok": False, "error": "channel_not_found"}
            ts = self._next_ts()
            blocks = p.get("blocks") or []
            self.messages[(channel, ts)] = Message(
                channel, ts, p.get("thread_ts"), p.get("text", ""), blocks, p.get("metadata")
            )
            return {"ok": True, "channel": channel, "ts": ts, "message": {"ts": ts, "text": p.get("text", "")}}
        if method == "chat.update":
            key = (p.get("channel", ""), p.get("ts", ""))
            message = self.messages.get(key)
            if message is None:
                return {"ok": False, "error": "message_not_found"}
            message.history.append({"text": message.text, "blocks": message.blocks})
            message.text, message.blocks = p.get("text", ""), p.get("blocks") or []
            return {"ok": True, "channel": key[0], "ts": key[1]}
        if method in ("conversations.history", "conversations.replies"):
            return self._read_channel(method, p)
        if method == "chat.postEphemeral":
            return {"ok": True, "message_ts": self._next_ts()}
        if method == "views.open":
            return {"ok": True, "view": {**(p.get("view") or {}), "id": self._next_id("V")}}
        if method == "usergroups.users.list":
            group = p.get("usergroup", "")
            if group in self.broken_groups:
                return {"ok": False, "error": "missing_scope"}
            if group not in self.memberships:
                return {"ok": False, "error": "no_such_subteam"}
            return {"ok": True, "users": list(self.memberships[group])}
        if method == "files.getUploadURLExternal":
            file_id = self._next_id("F")
            if self._upload_fault("no-upload-url"):
                return {"ok": True, "file_id": file_id}
            return {"ok": True, "upload_url": f"{self.root}/upload/{file_id}", "file_id": file_id}
        if method == "files.completeUploadExternal":
            if self._upload_fault("complete-without-files"):
                return {"ok": True}
            files = p.get("files") or []
            return {"ok": True, "files": [{"id": f.get("id"), "title": f.get("title")} for f in files]}
        return {"ok": False, "error": "unknown_method"}

    def _read_channel(self, method: str, p: dict[str, Any]) -> dict[str, Any]:
        """conversations.history (top-level messages, newest first) and conversations.replies (a
        thread, root first); ``metadata`` only with ``include_all_metadata``, as Slack does."""
        channel = p.get("channel", "")
        oldest = float(p.get("oldest") or 0)
        with_metadata = str(p.get("include_all_metadata", "")).lower() in ("1", "true")
        if method == "conversations.history":
            found = [m for (c, _), m in self.messages.items() if c == channel and m.thread_ts in (None, m.ts)]
            found.sort(key=lambda m: float(m.ts), reverse=True)
        else:
            root = p.get("ts", "")
            if (channel, root) not in self.messages:
                return {"ok": False, "error": "thread_not_found"}
            found = [m for (c, _), m in self.messages.items() if c == channel and (m.ts == root or m.thread_ts == root)]
            found.sort(key=lambda m: float(m.ts))
        out = []
        for m in found:
            if float(m.ts) < oldest:
                continue
            item: dict[str, Any] = {"type": "message", "ts": m.ts, "text": m.text}
            if m.thread_ts:
                item["thread_ts"] = m.thread_ts
            if with_metadata and m.metadata:
                item["metadata"] = m.metadata
            out.append(item)
        return {"ok": True, "messages": out, "has_more": False, "response_metadata": {"next_cursor": ""}}

    @staticmethod
    def _send(
        request: BaseHTTPRequestHandler,
        status: int,
        body: str,
        content_type: str = "application/json",
        headers: dict[str, str] | None = None,
    ) -> None:
        data = body.encode("utf-8")
        request.send_response(status)
        request.send_header("Content-Type", content_type)
        request.send_header("Content-Length", str(len(data)))
        for key, value in (headers or {}).items():
            request.send_header(key, value)
        request.end_headers()
        request.wfile.write(data)
