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
* A plan taught to the sandbox (``learn``, ``POST /plans``) is simulated as written: its signals
  answer values derived from the plan's conditions, its actions make their read-backs come true,
  and ``signal:NAME=MODE`` faults apply to its signals (rules in ``sandbox_world``). Command and
  HAProxy specs arrive through the rehearsal bridge (``/_sim/act``, ``/_sim/docs/...``,
  ``/_sim/signals/NAME``).
* The built-in world serves the bundled examples: the documents in ``_SEED``, backend and
  dependency health, ``/snapshots/latest``, ``/parity``, ``/feeds/*`` and, on ``/api/v1/query``,
  the first metric family a query mentions, in this order: ``authz_errors_total`` (error ratio),
  ``authz_requests_total`` (request count), ``forecast_variance`` (variance), ``forecast_points``
  (point count), ``sorter_misroutes_total`` (misroute ratio), ``sorter_parcels_total`` (parcel
  count), ``sorter_throughput`` (throughput per hour). The named faults act on this world. Where a
  taught signal reads a built-in value, that value stands when a named fault changed it or the
  plan accepts it; otherwise the derived value is served.
* The sandbox evaluates no PromQL: a query it neither recognises nor finds in the built-in world
  has no data.
* One lock guards all state; no answer ever carries a traceback, and nothing is logged to stderr.
"""

from __future__ import annotations

import contextlib
import copy
import hmac
import json
import random
import re
import socket
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, cast
from urllib.parse import parse_qs, urlsplit

from pydantic import ValidationError

from execution.adapters.http import select_field
from execution.contract.models import Plan
from execution.model import Clock
from execution.sandbox_faults import FAULTS, MODES
from execution.sandbox_world import (
    Effect,
    SignalModel,
    World,
    action_signature,
    drop_field,
    http_signature,
    labels_of,
    normal_form,
    set_field,
    timestamp_arguments,
)
from ledger.chain import format_ts

ROLES = ("executor", "rollback", "preflight", "verifier")

# How long a write under ``apply-timeout`` withholds its answer (any client gives up sooner).
HANG_SECONDS = 30.0
MAX_BODY_BYTES = 1024 * 1024
IDLE_CONNECTION_S = 60.0

_SEED: dict[str, dict[str, Any]] = {
    "/weights": {"tokenizer": 0, "legacy": 100},
    "/forecast/engines": {"primary": "legacy", "shadow": "none"},
    "/forecast/authority": {"authoritative": "legacy"},
    "/sorter/profile": {"profile": "v41", "zones": 8},
    "/backends/legacy/state": {"retired": False},
    "/backends/legacy-forecast/state": {"retired": False},
}

_FIXED = frozenset(
    {
        "/healthz",
        "/applied",
        "/faults",
        "/plans",
        "/snapshots/latest",
        "/parity",
        "/metrics",
        "/api/v1/query",
        "/api/v1/query_range",
    }
)
_SIGNAL_FAULT = re.compile(r"^signal:([A-Za-z0-9][A-Za-z0-9_.-]{0,62})(?:=([a-z-]+))?$")
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
        or (path.startswith("/_sim/") and path != "/_sim/act")
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
    headers: tuple[tuple[str, str], ...] = ()

    def encoded(self) -> bytes:
        if isinstance(self.body, str):
            return self.body.encode()
        return json.dumps(self.body).encode()


def _bad_query(message: str) -> _Reply:
    return _Reply(400, {"status": "error", "errorType": "bad_data", "error": message})


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
        self._signal_faults: dict[str, str] = {}  # signal name -> mode
        self._world = World()
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
        server.close_connections()
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
        named, signals = self._checked(names)
        with self._lock:
            self._faults, self._signal_faults = named, signals

    def add_fault(self, name: str) -> None:
        named, signals = self._checked([name])
        with self._lock:
            self._faults |= named
            self._signal_faults.update(signals)

    def clear_fault(self, name: str) -> None:
        named, signals = self._checked([name], clearing=True)
        with self._lock:
            self._faults -= named
            for signal in signals:
                self._signal_faults.pop(signal, None)

    def faults(self) -> list[str]:
        with self._lock:
            return self._active()

    def _active(self) -> list[str]:
        named = [f for f in FAULTS if f in self._faults]
        return named + [f"signal:{n}={m}" for n, m in sorted(self._signal_faults.items())]

    def learn(self, plan: Plan) -> list[str]:
        """Teach the sandbox a plan: its signals' values and its actions' effects. Returns its signals."""
        with self._lock:
            return self._world.learn(plan)

    def plans(self) -> dict[str, list[str]]:
        with self._lock:
            return self._world.plans()

    def applied(self) -> list[dict[str, Any]]:
        with self._lock:
            return copy.deepcopy(self._applied)

    def state(self, path: str) -> dict[str, Any] | None:
        with self._lock:
            doc = self._docs.get(path)
            return copy.deepcopy(doc) if doc is not None else None

    def _checked(self, names: Iterable[str], *, clearing: bool = False) -> tuple[set[str], dict[str, str]]:
        """Named faults and ``signal:NAME=MODE`` faults; ValueError names every one it refuses."""
        named: set[str] = set()
        signals: dict[str, str] = {}
        problems: list[str] = []
        for name in names:
            if not name.startswith("signal:"):
                if name in FAULTS:
                    named.add(name)
                else:
                    problems.append(f"unknown fault(s): {name}; known: {', '.join(FAULTS)}, signal:NAME=MODE")
                continue
            m = _SIGNAL_FAULT.match(name)
            if m is None or (m.group(2) is None and not clearing):
                problems.append(f"'{name}' is not signal:NAME=MODE (MODE one of {', '.join(MODES)})")
                continue
            signal, mode = m.group(1), m.group(2)
            if mode is not None:
                with self._lock:
                    why = self._world.refuses(signal, mode)
                if why:
                    problems.append(f"'{name}': {why}")
                    continue
            signals[signal] = mode or ""
        if problems:
            raise ValueError("; ".join(problems))
        return named, signals

    # ------------------------------------------------------------ request handling (no socket I/O)

    def _respond(self, method: str, target: str, headers: Mapping[str, str], raw: bytes) -> _Reply:
        split = urlsplit(target)
        path = split.path.rstrip("/") or "/"
        query = {k: v[-1] for k, v in parse_qs(split.query).items()}
        if method == "GET":
            return self._get(path, query)
        if method == "POST" and path == "/faults":
            return self._post_faults(raw)
        if method == "POST" and path == "/plans":
            return self._post_plan(raw)
        if method == "POST" and path in ("/api/v1/query", "/api/v1/query_range"):
            form = {k: v[-1] for k, v in parse_qs(raw.decode("utf-8", "replace")).items()}
            with self._lock:
                return self._query_locked(path, {**query, **form})
        if method in ("PUT", "POST", "PATCH", "DELETE"):
            if _is_reserved(path):
                return _error(405, f"{path} is read-only")
            return self._write(method, path, headers, raw)
        return _error(405, f"method {method} is not supported")

    def _level(self, name: str, faults: set[str] | None = None) -> float:
        normal, degraded, high = _LEVELS[name]
        active = self._faults if faults is None else faults
        if "error-rate-high" in active:
            return high
        if "error-rate-degraded" in active:
            return degraded
        return normal

    def _get(self, path: str, query: Mapping[str, str]) -> _Reply:
        with self._lock:
            if path == "/healthz":
                return _Reply(200, {"ok": True})
            if path == "/applied":
                return _Reply(200, {"applied": copy.deepcopy(self._applied)})
            if path == "/faults":
                return _Reply(200, {"active": self._active()})
            if path == "/plans":
                return _Reply(200, {"plans": self._world.plans()})
            if path == "/metrics":
                return _Reply(200, self._metrics_text(), "text/plain; version=0.0.4; charset=utf-8")
            if path in ("/api/v1/query", "/api/v1/query_range"):
                return self._query_locked(path, query)
            if path.startswith("/_sim/signals/"):
                return self._bridged_signal(path.removeprefix("/_sim/signals/"))
            reply = self._builtin(path, self._faults)
            models = self._world.http_models(path)
            if not models:
                return reply
            return self._signal_document(reply, self._builtin(path, set()), models)

    def _builtin(self, path: str, faults: set[str]) -> _Reply:
        """The built-in answer for ``path`` under ``faults`` (documents and the examples' signals)."""
        if _BACKEND_HEALTH.match(path):
            return _Reply(200, {"ok": True})
        if _DEPENDENCY_HEALTH.match(path):
            return _Reply(200, {"ok": "dependency-down" not in faults})
        if path == "/snapshots/latest":
            return self._snapshot(faults)
        if path == "/parity":
            return _Reply(200, {"mismatch_ratio": self._level("parity", faults), "compared": 1000})
        if _FEED.match(path):
            if "dependency-down" in faults:
                return _Reply(200, {"ratio": 0.6, "latency_seconds": 3600, "count": 500})
            return _Reply(200, {"ratio": 0.998, "latency_seconds": 120, "count": 500})
        doc = self._docs.get(path)
        if doc is None:
            return _error(404, "not found")
        if "readback-fail" in faults:
            return _error(500, "injected fault: readback-fail")
        return _Reply(200, copy.deepcopy(doc))

    def _signal_document(self, reply: _Reply, baseline: _Reply, models: list[SignalModel]) -> _Reply:
        """The built-in answer with the taught signals' fields laid over it.

        A built-in value stands where a named fault changed it (the fault must show) or where the
        plan accepts it; otherwise the value derived from the plan's conditions is served. A signal
        fault always wins.
        """
        if reply.status != 200 and baseline.status == 200:
            return reply  # a named fault broke this path (snapshot-missing, readback-fail): it must show
        doc: dict[str, Any] = dict(reply.body) if reply.status == 200 and isinstance(reply.body, dict) else {}
        base: dict[str, Any] = dict(baseline.body) if baseline.status == 200 and isinstance(baseline.body, dict) else {}
        now = self._clock()
        for model in models:
            spec = model.signal.http
            assert spec is not None
            mode = self._signal_faults.get(model.name)
            if mode == "error":
                return _error(500, f"injected fault: signal:{model.name}=error")
            found, current = select_field(doc, spec.field)
            was_found, before = select_field(base, spec.field)
            if mode == "no-data":
                drop_field(doc, spec.field)
            elif mode in ("fail", "degraded"):
                set_field(doc, spec.field, model.value(mode))
            elif not found or not (model.accepts(current) or not was_found or current != before):
                set_field(doc, spec.field, model.healthy)
            if spec.samples_field is not None and not select_field(doc, spec.samples_field)[0]:
                set_field(doc, spec.samples_field, model.samples)
            if spec.time_field is not None:
                at = now - timedelta(seconds=model.stale_age_s()) if mode == "stale" else now
                if mode == "stale" or not select_field(doc, spec.time_field)[0]:
                    set_field(doc, spec.time_field, format_ts(at))
        return _Reply(200, doc)

    def _bridged_signal(self, name: str) -> _Reply:
        """A command signal in a rehearsal: ``{"value": ...}`` for the bridge to read."""
        models = [m for m in self._world.models(name) if m.signal.command is not None]
        if not models:
            return _error(404, f"no taught plan reads signal {name!r} by command")
        mode = self._signal_faults.get(name)
        if mode == "error":
            return _error(500, f"injected fault: signal:{name}=error")
        if mode == "no-data":
            return _Reply(200, {})
        return _Reply(200, {"value": models[0].value(mode)})

    def _snapshot(self, faults: set[str]) -> _Reply:
        if "snapshot-missing" in faults:
            return _error(404, "no snapshot")
        age = 90_000 if "snapshot-stale" in faults else 120
        taken = self._clock() - timedelta(seconds=age)
        return _Reply(200, {"id": f"snap-{taken:%Y%m%dT%H%M%SZ}", "age_seconds": age})

    def _post_plan(self, raw: bytes) -> _Reply:
        try:
            body = json.loads(raw or b"null")
        except ValueError:
            return _error(400, "body must be JSON")
        if not isinstance(body, dict) or set(body) != {"plan"}:
            return _error(400, 'send {"plan": <the plan as JSON>}')
        try:
            plan = Plan.model_validate(body["plan"])
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"])
            return _error(400, f"not a valid plan: {where}: {first['msg']} ({exc.error_count()} problem(s))")
        return _Reply(200, {"plan": plan.name, "signals": self.learn(plan)})

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
        try:
            named, signals = self._checked(names, clearing=op == "clear")
        except ValueError as exc:
            return _error(400, str(exc))
        with self._lock:
            if op == "set":
                self._faults, self._signal_faults = named, signals
            elif op == "add":
                self._faults |= named
                self._signal_faults.update(signals)
            else:
                self._faults -= named
                for signal in signals:
                    self._signal_faults.pop(signal, None)
            return _Reply(200, {"active": self._active()})

    def _write(self, method: str, path: str, headers: Mapping[str, str], raw: bytes) -> _Reply:
        key = headers.get("idempotency-key", "").strip()
        if not key:
            return _error(400, "every write needs an Idempotency-Key header")
        direction = _direction(key)
        if direction is None:
            return _error(400, "Idempotency-Key must look like {execution}:{stage}:{apply|rollback}:{attempt}")
        body: dict[str, Any] | None = None
        form = headers.get("content-type", "").startswith("application/x-www-form-urlencoded")
        if form:
            fields = parse_qs(raw.decode("utf-8", "replace"), keep_blank_values=True)
            body = normal_form(fields)
        elif raw.strip() or method != "DELETE":
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
                return replace(first, body=copy.deepcopy(first.body), hang=hang)
            if direction == "rollback" and "rollback-fail" in self._faults:
                return _error(500, "injected fault: rollback-fail")
            if path == "/_sim/act":
                reply = self._act_bridged(body)
                if reply.status >= 400:
                    return reply
            else:
                effect = self._world.effect(http_signature(method, path, body))
                if method == "DELETE" and effect is None:
                    if self._docs.pop(path, None) is None:
                        return _error(404, "not found")
                    reply = _Reply(200, {"deleted": path})
                else:
                    if method != "DELETE":
                        assert body is not None
                        base = self._docs.get(path, {}) if method == "PATCH" else {}
                        self._docs[path] = {**copy.deepcopy(base), **copy.deepcopy(body)}
                    reply = self._take_effect(effect) if effect else _Reply(200, copy.deepcopy(self._docs[path]))
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
            return replace(reply, body=copy.deepcopy(reply.body), hang=hang)

    def _take_effect(self, effect: Effect) -> _Reply:
        """Apply a taught action: its read-back's expectations come true; answer as the plan expects."""
        doc = self._docs.setdefault(effect.doc, {})
        for field_path, value in effect.expect.items():
            set_field(doc, field_path, copy.deepcopy(value))
        headers = (("Location", effect.location),) if effect.location else ()
        return _Reply(effect.status, {**copy.deepcopy(doc), **copy.deepcopy(effect.answer)}, headers=headers)

    def _act_bridged(self, body: dict[str, Any] | None) -> _Reply:
        """A command or haproxy action in a rehearsal, sent by the bridge as ``{"kind", "spec"}``."""
        if (
            not isinstance(body, dict)
            or not isinstance(body.get("spec"), dict)
            or body.get("kind") not in ("command", "haproxy")
        ):
            return _error(400, 'send {"kind": "command"|"haproxy", "spec": {...}}')
        effect = self._world.effect(action_signature(str(body["kind"]), body["spec"]))
        if effect is None:
            return _error(404, f"no taught plan has this {body['kind']} action; teach the plan first (POST /plans)")
        return self._take_effect(effect)

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

    # ------------------------------------------------------------ the Prometheus HTTP API

    def _builtin_value(self, text: str, faults: set[str]) -> float | None:
        """The examples' metric families, matched by name (the sandbox evaluates no PromQL)."""
        answers: list[tuple[str, Callable[[], float]]] = [
            ("authz_errors_total", lambda: self._level("error_ratio", faults)),
            ("authz_requests_total", lambda: _COUNTS["requests"]),
            ("forecast_variance", lambda: self._level("variance", faults)),
            ("forecast_points", lambda: _COUNTS["points"]),
            ("sorter_misroutes_total", lambda: self._level("misroute", faults)),
            ("sorter_parcels_total", lambda: _COUNTS["parcels"]),
            ("sorter_throughput", lambda: self._level("throughput", faults)),
        ]
        for needle, value in answers:
            if needle in text:
                return value()
        return None

    def _sample(self, text: str) -> tuple[float, datetime] | str | None:
        """The value and sample time a query answers; None for no data, text for an error."""
        now = self._clock()
        found = self._world.prometheus_model(text)
        if found is None:
            if "no-data" in self._faults:
                return None
            value = self._builtin_value(text, self._faults)
            return None if value is None else (value, now)
        model, role = found
        mode = self._signal_faults.get(model.name)
        if mode == "error":
            return f"injected fault: signal:{model.name}=error"
        if mode == "no-data" or "no-data" in self._faults:
            return None
        at = now - timedelta(seconds=model.stale_age_s()) if mode == "stale" else now
        if role == "samples":
            return float(model.samples), at
        if mode in ("fail", "degraded"):
            return float(model.value(mode)), at
        builtin = self._builtin_value(text, self._faults)
        if builtin is not None and (model.accepts(builtin) or builtin != self._builtin_value(text, set())):
            return builtin, at
        return float(model.healthy), at

    def _query_locked(self, path: str, params: Mapping[str, str]) -> _Reply:
        text = params.get("query", "")
        if not text.strip():
            return _bad_query("missing query")
        stamps = timestamp_arguments(text)
        sample = self._sample(stamps[0] if stamps else text)
        if isinstance(sample, str):
            return _Reply(422, {"status": "error", "errorType": "execution", "error": sample})
        now = self._clock().timestamp()
        labels = labels_of(text)
        if path.endswith("query_range"):
            result: list[dict[str, Any]] = []
            if sample is not None:
                value, at = sample
                at_s = round(at.timestamp(), 3)  # Prometheus keeps milliseconds
                shown = at_s if stamps else value
                try:
                    start, end, step = (float(params[k]) for k in ("start", "end", "step"))
                except (KeyError, ValueError):
                    return _bad_query("a range query needs start, end and step as numbers")
                count = int((end - start) / step) + 1 if step > 0 and end >= start else -1
                if not 0 < count <= 11_000:  # Prometheus's own limit per series
                    return _bad_query("start, end and step give no points or more than 11,000")
                points = (start + i * step for i in range(count))
                values = [[t, _fmt(shown)] for t in points if t <= at_s]
                result = [{"metric": labels, "values": values}] if values else []
            return _Reply(200, {"status": "success", "data": {"resultType": "matrix", "result": result}})
        series: list[dict[str, Any]] = []
        if sample is not None:
            value, at = sample
            at_s = round(at.timestamp(), 3)  # Prometheus keeps milliseconds
            if stamps:  # timestamp(): the value is the sample's time, stamped with the query's time
                series = [{"metric": labels, "value": [now, _fmt(at_s)]}]
            else:
                series = [{"metric": labels, "value": [at_s, _fmt(value)]}]
        return _Reply(200, {"status": "success", "data": {"resultType": "vector", "result": series}})


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    sandbox: Sandbox

    def __init__(self, address: tuple[str, int], handler: type[BaseHTTPRequestHandler]) -> None:
        super().__init__(address, handler)
        self._open: set[socket.socket] = set()
        self._open_lock = threading.Lock()

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._open_lock:
            self._open.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self._open_lock:
            self._open.discard(request)
        super().shutdown_request(request)

    def close_connections(self) -> None:
        """End every kept-alive connection: a stopped sandbox answers nothing, not even on them."""
        with self._open_lock:
            open_now = list(self._open)
        for sock in open_now:
            with contextlib.suppress(OSError):  # the client closed it meanwhile
                sock.shutdown(socket.SHUT_RDWR)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that gave up (apply-timeout) breaks the pipe; that is expected, not news.
        pass


class _Handler(BaseHTTPRequestHandler):
    server_version = "stagehold-sandbox"
    sys_version = ""
    # HTTP/1.1 keeps connections alive, so polling clients reuse one instead of connecting for every
    # read. Every answer carries Content-Length, which keep-alive needs. Without TCP_NODELAY the body
    # (a second write after the headers) would wait for the client's delayed ACK, ~40 ms a request.
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    timeout = IDLE_CONNECTION_S  # an idle kept-alive connection is closed, freeing its thread

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _serve(self) -> None:
        sandbox = cast(_Server, self.server).sandbox
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            length = -1
        if length < 0 or length > MAX_BODY_BYTES:
            self.close_connection = True  # the body was not read, so the connection cannot go on
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
        for name, value in reply.headers:
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_PUT = do_POST = do_PATCH = do_DELETE = _serve
