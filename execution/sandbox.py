"""A simulated control plane, served over HTTP on loopback, for rehearsals and integration tests.

Rules:
* Every write to a control-plane document carries an ``Idempotency-Key`` of the form
  ``{execution}:{stage}:{direction}:{attempt}`` (direction ``apply`` or ``rollback``). A repeated
  key answers the first response and is never applied twice. Only applied writes are remembered
  by key: a refused write (bad credential, injected failure) can be sent again with the same key.
* With ``tokens``, an ``apply`` write must carry the executor's bearer token and a ``rollback``
  write the rollback token: rollback credentials can never drive forward progression.
* Faults (``FAULTS``) change what the endpoints answer; clearing a fault restores normal answers.
* ``timeout_ratio`` (seeded by ``seed``) makes that share of writes apply and then lose their
  answer: it is withheld for ``hang_seconds`` and the connection closed (0 drops it at once). A
  replay of the same key draws again. The ratio models a flaky answer path, not a fault switch.
* The sandbox cannot evaluate PromQL. ``/api/v1/query`` answers by the first metric family the
  query mentions, checked in this order: ``authz_errors_total`` (error ratio),
  ``authz_requests_total`` (request count), ``forecast_variance`` (variance), ``forecast_points``
  (point count), ``sorter_misroutes_total`` (misroute ratio), ``sorter_parcels_total`` (parcel
  count), ``sorter_throughput`` (throughput per hour). Anything else has no data.
* One lock guards all state; no answer ever carries a traceback, and nothing is logged to stderr.
"""

from __future__ import annotations

import copy
import hmac
import json
import random
import re
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, cast
from urllib.parse import parse_qs, urlsplit

from execution.model import Clock
from ledger.chain import format_ts

FAULTS = (
    "error-rate-high",
    "error-rate-degraded",
    "dependency-down",
    "snapshot-stale",
    "snapshot-missing",
    "no-data",
    "apply-timeout",
    "readback-fail",
    "rollback-fail",
)
ROLES = ("executor", "rollback", "preflight", "verifier")

# How long a write under ``apply-timeout`` withholds its answer (any client gives up sooner).
HANG_SECONDS = 30.0
MAX_BODY_BYTES = 1024 * 1024

_SEED: dict[str, dict[str, Any]] = {
    "/weights": {"tokenizer": 0, "legacy": 100},
    "/forecast/engines": {"primary": "legacy", "shadow": "none"},
    "/forecast/authority": {"authoritative": "legacy"},
    "/sorter/profile": {"profile": "v41", "zones": 8},
    "/backends/legacy/state": {"retired": False},
    "/backends/legacy-forecast/state": {"retired": False},
}

_FIXED = frozenset({"/healthz", "/applied", "/faults", "/snapshots/latest", "/parity", "/metrics", "/api/v1/query"})
_BACKEND_HEALTH = re.compile(r"^/backends/[^/]+/health$")
_DEPENDENCY_HEALTH = re.compile(r"^/dependencies/[^/]+/health$")
_FEED = re.compile(r"^/feeds/[^/]+$")

# Signal levels per fault: (normal, error-rate-degraded, error-rate-high).
_LEVELS: dict[str, tuple[float, float, float]] = {
    "error_ratio": (0.002, 0.015, 0.05),
    "variance": (0.01, 0.04, 0.12),
    "misroute": (0.001, 0.007, 0.02),
    "throughput": (5200.0, 4300.0, 3000.0),
    "parity": (0.0, 0.0005, 0.004),
}
_COUNTS = {"requests": 1200.0, "points": 400.0, "parcels": 900.0}
# Counter growth per second of sandbox time, so rate() over /metrics behaves like a live system.
_RATES = {"requests": 20.0, "points": 2.0, "parcels": 1.5}


def _is_reserved(path: str) -> bool:
    return (
        path in _FIXED
        or bool(_BACKEND_HEALTH.match(path))
        or bool(_DEPENDENCY_HEALTH.match(path))
        or bool(_FEED.match(path))
    )


def _direction(key: str) -> str | None:
    head, _, attempt = key.rpartition(":")
    head, _, direction = head.rpartition(":")
    execution, _, stage = head.rpartition(":")
    if not (execution and stage and attempt) or direction not in ("apply", "rollback"):
        return None
    return direction


def _fmt(value: float) -> str:
    return str(int(value)) if value.is_integer() else repr(value)


def _wall_clock() -> datetime:
    # The sandbox stands in for an outside system, which keeps its own time; the engine never
    # reads this clock, and tests inject one.
    return datetime.now(UTC)


@dataclass(frozen=True)
class _Reply:
    status: int
    body: Any
    content_type: str = "application/json"
    hang: bool = False

    def encoded(self) -> bytes:
        if isinstance(self.body, str):
            return self.body.encode()
        return json.dumps(self.body).encode()


def _error(status: int, message: str) -> _Reply:
    return _Reply(status, {"error": message})


class Sandbox:
    """The simulated target. ``start()`` serves it in a background thread; ``stop()`` ends it."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        tokens: dict[str, str] | None = None,
        clock: Clock | None = None,
        *,
        timeout_ratio: float = 0.0,
        hang_seconds: float = HANG_SECONDS,
        seed: int | None = None,
    ) -> None:
        unknown = sorted(set(tokens or {}) - set(ROLES))
        if unknown:
            raise ValueError(f"unknown role(s) in tokens: {', '.join(unknown)}; roles are {', '.join(ROLES)}")
        if not 0.0 <= timeout_ratio <= 1.0:
            raise ValueError("timeout_ratio must be between 0 and 1")
        if hang_seconds < 0:
            raise ValueError("hang_seconds must not be negative")
        self._timeout_ratio = timeout_ratio
        self.hang_seconds = hang_seconds
        self._random = random.Random(seed)
        self._host = host
        self._port = port
        self._tokens = dict(tokens) if tokens else None
        self._clock: Clock = clock or _wall_clock
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._docs: dict[str, dict[str, Any]] = copy.deepcopy(_SEED)
        self._faults: set[str] = set()
        self._applied: list[dict[str, Any]] = []
        self._replies: dict[str, _Reply] = {}
        self._counters = {"requests": 100_000.0, "errors": 200.0, "points": 4_000.0, "parcels": 50_000.0}
        self._counters["misroutes"] = 50.0
        self._counted_at: datetime | None = None
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------ lifecycle

    @property
    def url(self) -> str:
        if self._server is None:
            raise RuntimeError("the sandbox is not started")
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> Sandbox:
        if self._server is not None:
            return self
        self._stopping.clear()
        server = _Server((self._host, self._port), _Handler)
        server.sandbox = self
        self._server = server
        # A short poll keeps stop() prompt; the default half second adds up across a test suite.
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05}, name="stagehold-sandbox", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        server, thread = self._server, self._thread
        if server is None:
            return
        self._stopping.set()  # releases handlers held by apply-timeout
        server.shutdown()
        server.server_close()
        if thread is not None:
            thread.join(timeout=5)
        self._server = self._thread = None

    def __enter__(self) -> Sandbox:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    # ------------------------------------------------------------ faults and inspection

    def set_faults(self, names: Iterable[str]) -> None:
        wanted = self._checked(names)
        with self._lock:
            self._faults = wanted

    def add_fault(self, name: str) -> None:
        wanted = self._checked([name])
        with self._lock:
            self._faults |= wanted

    def clear_fault(self, name: str) -> None:
        wanted = self._checked([name])
        with self._lock:
            self._faults -= wanted

    def faults(self) -> list[str]:
        with self._lock:
            return [f for f in FAULTS if f in self._faults]

    def applied(self) -> list[dict[str, Any]]:
        with self._lock:
            return copy.deepcopy(self._applied)

    def state(self, path: str) -> dict[str, Any] | None:
        with self._lock:
            doc = self._docs.get(path)
            return copy.deepcopy(doc) if doc is not None else None

    @staticmethod
    def _checked(names: Iterable[str]) -> set[str]:
        wanted = set(names)
        unknown = sorted(wanted - set(FAULTS))
        if unknown:
            raise ValueError(f"unknown fault(s): {', '.join(unknown)}; known: {', '.join(FAULTS)}")
        return wanted

    # ------------------------------------------------------------ request handling (no socket I/O)

    def _respond(self, method: str, target: str, headers: Mapping[str, str], raw: bytes) -> _Reply:
        split = urlsplit(target)
        path = split.path.rstrip("/") or "/"
        query = {k: v[-1] for k, v in parse_qs(split.query).items()}
        if method == "GET":
            return self._get(path, query)
        if method == "POST" and path == "/faults":
            return self._post_faults(raw)
        if method == "POST" and path == "/api/v1/query":
            form = {k: v[-1] for k, v in parse_qs(raw.decode("utf-8", "replace")).items()}
            return self._query({**query, **form})
        if method in ("PUT", "POST", "PATCH", "DELETE"):
            if _is_reserved(path):
                return _error(405, f"{path} is read-only")
            return self._write(method, path, headers, raw)
        return _error(405, f"method {method} is not supported")

    def _level(self, name: str) -> float:
        normal, degraded, high = _LEVELS[name]
        if "error-rate-high" in self._faults:
            return high
        if "error-rate-degraded" in self._faults:
            return degraded
        return normal

    def _get(self, path: str, query: Mapping[str, str]) -> _Reply:
        with self._lock:
            faults = set(self._faults)
            if path == "/healthz":
                return _Reply(200, {"ok": True})
            if path == "/applied":
                return _Reply(200, {"applied": copy.deepcopy(self._applied)})
            if path == "/faults":
                return _Reply(200, {"active": [f for f in FAULTS if f in faults]})
            if _BACKEND_HEALTH.match(path):
                return _Reply(200, {"ok": True})
            if _DEPENDENCY_HEALTH.match(path):
                return _Reply(200, {"ok": "dependency-down" not in faults})
            if path == "/snapshots/latest":
                return self._snapshot(faults)
            if path == "/parity":
                return _Reply(200, {"mismatch_ratio": self._level("parity"), "compared": 1000})
            if _FEED.match(path):
                if "dependency-down" in faults:
                    return _Reply(200, {"ratio": 0.6, "latency_seconds": 3600, "count": 500})
                return _Reply(200, {"ratio": 0.998, "latency_seconds": 120, "count": 500})
            if path == "/metrics":
                return _Reply(200, self._metrics_text(), "text/plain; version=0.0.4; charset=utf-8")
            if path == "/api/v1/query":
                return self._query_locked(query)
            doc = self._docs.get(path)
            if doc is None:
                return _error(404, "not found")
            if "readback-fail" in faults:
                return _error(500, "injected fault: readback-fail")
            return _Reply(200, copy.deepcopy(doc))

    def _snapshot(self, faults: set[str]) -> _Reply:
        if "snapshot-missing" in faults:
            return _error(404, "no snapshot")
        age = 90_000 if "snapshot-stale" in faults else 120
        taken = self._clock() - timedelta(seconds=age)
        return _Reply(200, {"id": f"snap-{taken:%Y%m%dT%H%M%SZ}", "age_seconds": age})

    def _post_faults(self, raw: bytes) -> _Reply:
        try:
            body = json.loads(raw or b"null")
        except ValueError:
            return _error(400, "body must be JSON")
        ops = {k: body.get(k) for k in ("set", "add", "clear")} if isinstance(body, dict) else {}
        given = {k: v for k, v in ops.items() if v is not None}
        if len(given) != 1 or set(body) - set(given):
            return _error(400, 'send exactly one of {"set": [...]}, {"add": [...]}, {"clear": [...]}')
        ((op, names),) = given.items()
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            return _error(400, f"{op} needs a list of fault names")
        unknown = sorted(set(names) - set(FAULTS))
        if unknown:
            return _error(400, f"unknown fault(s): {', '.join(unknown)}; known: {', '.join(FAULTS)}")
        with self._lock:
            if op == "set":
                self._faults = set(names)
            elif op == "add":
                self._faults |= set(names)
            else:
                self._faults -= set(names)
            return _Reply(200, {"active": [f for f in FAULTS if f in self._faults]})

    def _write(self, method: str, path: str, headers: Mapping[str, str], raw: bytes) -> _Reply:
        key = headers.get("idempotency-key", "").strip()
        if not key:
            return _error(400, "every write needs an Idempotency-Key header")
        direction = _direction(key)
        if direction is None:
            return _error(400, "Idempotency-Key must look like {execution}:{stage}:{apply|rollback}:{attempt}")
        body: dict[str, Any] | None = None
        if raw.strip() or method != "DELETE":
            try:
                parsed = json.loads(raw)
            except ValueError:
                return _error(400, "body must be JSON")
            if not isinstance(parsed, dict):
                return _error(400, "body must be a JSON object")
            body = parsed
        with self._lock:
            refused = self._check_credential(direction, headers.get("authorization", ""))
            if refused is not None:
                return refused
            hang = "apply-timeout" in self._faults or self._lose_answer()
            first = self._replies.get(key)
            if first is not None:
                # The fault models a lost answer path, so a replay's answer is lost too.
                return _Reply(first.status, copy.deepcopy(first.body), hang=hang)
            if direction == "rollback" and "rollback-fail" in self._faults:
                return _error(500, "injected fault: rollback-fail")
            if method == "DELETE":
                if self._docs.pop(path, None) is None:
                    return _error(404, "not found")
                reply = _Reply(200, {"deleted": path})
            else:
                assert body is not None
                base = self._docs.get(path, {}) if method == "PATCH" else {}
                self._docs[path] = {**copy.deepcopy(base), **copy.deepcopy(body)}
                reply = _Reply(200, copy.deepcopy(self._docs[path]))
            self._replies[key] = reply
            self._applied.append(
                {
                    "key": key,
                    "method": method,
                    "path": path,
                    "body": copy.deepcopy(body),
                    "role": headers.get("x-stagehold-role"),
                    "at": format_ts(self._clock()),
                }
            )
            return _Reply(reply.status, copy.deepcopy(reply.body), hang=hang)

    def _lose_answer(self) -> bool:
        return self._timeout_ratio > 0 and self._random.random() < self._timeout_ratio

    def _check_credential(self, direction: str, authorization: str) -> _Reply | None:
        if self._tokens is None:
            return None
        role = "executor" if direction == "apply" else "rollback"
        expected = self._tokens.get(role)
        scheme, _, given = authorization.partition(" ")
        if (
            expected is None
            or scheme.lower() != "bearer"
            or not hmac.compare_digest(given.strip().encode(), expected.encode())
        ):
            return _error(403, f"an {direction} write needs the {role} credential")
        return None

    # ------------------------------------------------------------ metrics

    def _advance_counters(self) -> None:
        now = self._clock()
        last, self._counted_at = self._counted_at, now
        seconds = 0.0 if last is None else max(0.0, (now - last).total_seconds())
        c = self._counters
        requests, parcels = _RATES["requests"] * seconds, _RATES["parcels"] * seconds
        c["requests"] += requests
        c["errors"] += requests * self._level("error_ratio")
        c["points"] += _RATES["points"] * seconds
        c["parcels"] += parcels
        c["misroutes"] += parcels * self._level("misroute")

    def _metrics_text(self) -> str:
        self._advance_counters()
        c = self._counters
        families = [
            ("authz_requests_total", "counter", 'svc="tokenizer"', c["requests"]),
            ("authz_errors_total", "counter", 'svc="tokenizer"', c["errors"]),
            ("forecast_points_total", "counter", 'engine="v2"', c["points"]),
            ("forecast_variance_ratio", "gauge", 'engine="v2"', self._level("variance")),
            ("sorter_parcels_total", "counter", 'profile="v42"', c["parcels"]),
            ("sorter_misroutes_total", "counter", 'profile="v42"', c["misroutes"]),
            ("sorter_throughput_per_hour", "gauge", 'profile="v42"', self._level("throughput")),
        ]
        lines: list[str] = []
        for name, kind, labels, value in families:
            lines += [f"# HELP {name} stagehold sandbox {kind}", f"# TYPE {name} {kind}"]
            lines.append(f"{name}{{{labels}}} {_fmt(round(value, 6))}")
        return "\n".join(lines) + "\n"

    def _query(self, params: Mapping[str, str]) -> _Reply:
        with self._lock:
            return self._query_locked(params)

    def _query_locked(self, params: Mapping[str, str]) -> _Reply:
        text = params.get("query", "")
        if not text.strip():
            return _Reply(400, {"status": "error", "errorType": "bad_data", "error": "missing query"})
        answers: list[tuple[str, Callable[[], float]]] = [
            ("authz_errors_total", lambda: self._level("error_ratio")),
            ("authz_requests_total", lambda: _COUNTS["requests"]),
            ("forecast_variance", lambda: self._level("variance")),
            ("forecast_points", lambda: _COUNTS["points"]),
            ("sorter_misroutes_total", lambda: self._level("misroute")),
            ("sorter_parcels_total", lambda: _COUNTS["parcels"]),
            ("sorter_throughput", lambda: self._level("throughput")),
        ]
        result: list[dict[str, Any]] = []
        if "no-data" not in self._faults:
            for needle, value in answers:
                if needle in text:
                    result = [{"metric": {}, "value": [self._clock().timestamp(), _fmt(value())]}]
                    break
        return _Reply(200, {"status": "success", "data": {"resultType": "vector", "result": result}})


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    sandbox: Sandbox

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that gave up (apply-timeout) breaks the pipe; that is expected, not news.
        pass


class _Handler(BaseHTTPRequestHandler):
    server_version = "stagehold-sandbox"
    sys_version = ""

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _serve(self) -> None:
        sandbox = cast(_Server, self.server).sandbox
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            length = -1
        if length < 0 or length > MAX_BODY_BYTES:
            self._send(_error(413 if length > 0 else 400, "bad or oversized Content-Length"))
            return
        raw = self.rfile.read(length) if length else b""
        headers = {k.lower(): v for k, v in self.headers.items()}
        try:
            reply = sandbox._respond(self.command, self.path, headers, raw)
        except Exception:
            reply = _error(500, "internal error")
        if reply.hang:
            # Applied, but the answer never leaves: the client can only time out.
            sandbox._stopping.wait(sandbox.hang_seconds)
            self.close_connection = True
            return
        self._send(reply)

    def _send(self, reply: _Reply) -> None:
        data = reply.encoded()
        self.send_response(reply.status)
        self.send_header("Content-Type", reply.content_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_PUT = do_POST = do_PATCH = do_DELETE = _serve
