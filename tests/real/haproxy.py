"""A real HAProxy (Debian's package) in a temporary directory, in front of small loopback backends.

``HaproxyRig`` starts backends the test controls (``Backend``: a Python HTTP server counting its
hits, answering 200 or, on demand, 5xx, with a ``/health`` page that can be made to fail), writes
a haproxy.cfg with a frontend, one backend (``app``) holding those servers (health-checked every
200 ms with ``checks=True``), an admin stats page, HAProxy's built-in Prometheus exporter and a
Runtime API socket (UNIX and TCP), and runs ``haproxy -db`` in the foreground until ``stop()``.
Every port is a free loopback port chosen at start; nothing outlives the rig. ``Load`` sends a
bounded stream of requests through the frontend from a thread.

A missing ``haproxy`` binary is an error, never a skip: ``scripts/ci-deps`` installs it.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx

BACKEND = "app"
HEALTH = "/health"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def haproxy_binary() -> str:
    found = shutil.which("haproxy") or ("/usr/sbin/haproxy" if Path("/usr/sbin/haproxy").exists() else None)
    if found is None:
        raise RuntimeError("haproxy is not installed: run scripts/ci-deps (installs Debian's haproxy package)")
    return found


class _BackendServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # HAProxy's health checks close their connection with a reset: not an error here


class _BackendHandler(BaseHTTPRequestHandler):
    server_version = "rig-backend"
    sys_version = ""

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        backend: Backend = self.server.backend  # type: ignore[attr-defined]
        # HAProxy's health checks ask /health; they are not traffic, so they are not counted.
        status = (200 if backend.healthy else 503) if self.path == HEALTH else backend.hit()
        data = f"{backend.name}\n".encode()
        self.send_response(status)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("X-Backend", backend.name)
        self.end_headers()
        self.wfile.write(data)


@dataclass
class Backend:
    """One small HTTP server on loopback that answers with its name and counts what it served."""

    name: str
    status: int = 200  # what requests other than the health check are answered with
    healthy: bool = True  # whether /health answers 200 (else 503: HAProxy's check marks it DOWN)
    hits: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _server: ThreadingHTTPServer | None = None

    def hit(self) -> int:
        with self._lock:
            self.hits += 1
            return self.status

    def start(self) -> Backend:
        server = _BackendServer(("127.0.0.1", 0), _BackendHandler)
        server.backend = self  # type: ignore[attr-defined]
        self._server = server
        threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        return self

    @property
    def port(self) -> int:
        assert self._server is not None
        port: int = self._server.server_address[1]
        return port

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None


CONFIG = """\
global
    stats socket {socket} mode 600 level admin
    stats socket ipv4@127.0.0.1:{runtime_port} level admin
    pidfile {pidfile}

defaults
    mode http
    timeout connect 2s
    timeout client 5s
    timeout server 5s

frontend web
    bind 127.0.0.1:{frontend_port}
    default_backend {backend}

backend {backend}
    balance {balance}
{check_option}{servers}

listen stats
    bind 127.0.0.1:{stats_port}
    stats enable
    stats uri /stats
    stats admin if TRUE

frontend prometheus
    bind 127.0.0.1:{exporter_port}
    # One connection per scrape: once the listener is disabled, the very next scrape fails.
    option httpclose
    http-request use-service prometheus-exporter if {{ path /metrics }}
"""


class HaproxyRig:
    """HAProxy with backend ``app`` holding one server per name in ``weights`` (name → initial weight).

    With ``checks=True`` every server is health-checked (``GET /health`` every 200 ms; one failed
    check marks it DOWN, one good one UP again), so the exporter reports a failing server as DOWN.
    """

    def __init__(self, weights: Mapping[str, int], *, balance: str = "roundrobin", checks: bool = False) -> None:
        self.weights = dict(weights)
        self.balance = balance
        self.checks = checks
        self.backends: dict[str, Backend] = {}
        self.dir = Path(tempfile.mkdtemp(prefix="stagehold-haproxy-"))
        self.socket = str(self.dir / "admin.sock")
        self.runtime_port = free_port()
        self.frontend_port = free_port()
        self.stats_port = free_port()
        self.exporter_port = free_port()
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def runtime_tcp(self) -> str:
        return f"tcp://127.0.0.1:{self.runtime_port}"

    @property
    def frontend_url(self) -> str:
        return f"http://127.0.0.1:{self.frontend_port}"

    @property
    def stats_url(self) -> str:
        return f"http://127.0.0.1:{self.stats_port}"

    @property
    def exporter_url(self) -> str:
        return f"http://127.0.0.1:{self.exporter_port}"

    @property
    def exporter_address(self) -> str:
        """``HOST:PORT`` of the Prometheus exporter, as a scrape target."""
        return f"127.0.0.1:{self.exporter_port}"

    def start(self, timeout_s: float = 10.0) -> HaproxyRig:
        binary = haproxy_binary()
        for name in self.weights:
            self.backends[name] = Backend(name).start()
        health = " check inter 200ms fall 1 rise 1" if self.checks else ""
        servers = "\n".join(
            f"    server {name} 127.0.0.1:{self.backends[name].port} weight {weight}{health}"
            for name, weight in self.weights.items()
        )
        cfg = self.dir / "haproxy.cfg"
        cfg.write_text(
            CONFIG.format(
                socket=self.socket,
                runtime_port=self.runtime_port,
                pidfile=self.dir / "haproxy.pid",
                frontend_port=self.frontend_port,
                backend=BACKEND,
                balance=self.balance,
                check_option=f"    option httpchk GET {HEALTH}\n" if self.checks else "",
                servers=servers,
                stats_port=self.stats_port,
                exporter_port=self.exporter_port,
            )
        )
        check = subprocess.run([binary, "-c", "-f", str(cfg)], capture_output=True, text=True, timeout=30)
        if check.returncode != 0:
            raise RuntimeError(f"haproxy refused its configuration: {check.stdout}{check.stderr}")
        self._log = (self.dir / "haproxy.log").open("wb")
        self._proc = subprocess.Popen([binary, "-db", "-f", str(cfg)], stdout=self._log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise RuntimeError(f"haproxy exited {self._proc.returncode}: {self.log()}")
            try:
                if "Name: HAProxy" in self.command("show info"):
                    return self
            except OSError:
                pass
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"haproxy did not answer on its Runtime API within {timeout_s:g}s: {self.log()}")

    def log(self) -> str:
        path = self.dir / "haproxy.log"
        return path.read_text(errors="replace")[-2000:] if path.exists() else ""

    def command(self, line: str) -> str:
        """One Runtime API command over the UNIX socket (the test's own view, not stagehold's)."""
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(5.0)
            s.connect(self.socket)
            s.sendall(line.encode() + b"\n")
            chunks = []
            while chunk := s.recv(65536):
                chunks.append(chunk)
        return b"".join(chunks).decode()

    def weight(self, server: str) -> int:
        """``get weight app/SERVER`` answers ``N (initial M)``."""
        return int(self.command(f"get weight {BACKEND}/{server}").split()[0])

    def exporter(self, enabled: bool) -> None:
        """Stop (or start again) the exporter's listener through the Runtime API; the rest keeps
        serving, so the scrape target alone goes away (the exporter closes each connection after
        its answer, so no kept-alive connection outlives the listener)."""
        answer = self.command(f"{'enable' if enabled else 'disable'} frontend prometheus")
        if answer.strip() and "already" not in answer:  # "All sockets are already enabled."
            raise RuntimeError(f"haproxy refused to {'enable' if enabled else 'disable'} the exporter: {answer}")

    def traffic(self, requests: int) -> Counter[str]:
        """Send ``requests`` GETs through the frontend, a new connection each; count who answered."""
        seen: Counter[str] = Counter()
        with httpx.Client(timeout=5.0, headers={"Connection": "close"}) as client:
            for _ in range(requests):
                response = client.get(self.frontend_url + "/")
                seen[response.headers.get("x-backend", f"HTTP {response.status_code}")] += 1
        return seen

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
        if getattr(self, "_log", None) is not None:
            self._log.close()
        for backend in self.backends.values():
            backend.stop()
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> HaproxyRig:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


class Load:
    """A bounded loop of GETs through the rig's frontend from a thread: ``per_s`` requests a second
    for at most ``limit_s`` seconds (or until ``stop()``), each on a new connection so every request
    is balanced. ``seen`` counts who answered (the ``X-Backend`` header, or ``HTTP <status>``)."""

    def __init__(self, rig: HaproxyRig, per_s: float = 40.0, limit_s: float = 300.0) -> None:
        self.rig = rig
        self.interval_s = 1.0 / per_s
        self.limit_s = limit_s
        self.seen: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rig-load", daemon=True)

    def _run(self) -> None:
        deadline = time.monotonic() + self.limit_s
        due = time.monotonic()
        with httpx.Client(timeout=2.0, headers={"Connection": "close"}) as client:
            while not self._stop.is_set() and time.monotonic() < deadline:
                try:
                    response = client.get(self.rig.frontend_url + "/")
                    who = response.headers.get("x-backend", f"HTTP {response.status_code}")
                except httpx.HTTPError:
                    who = "no answer"
                with self._lock:
                    self.seen[who] += 1
                # Paced by a schedule, not a fixed pause, so slow answers do not lower the rate;
                # after a stall (more than a second behind) it starts afresh rather than bursting.
                due = max(due + self.interval_s, time.monotonic() - 1.0)
                self._stop.wait(max(0.0, due - time.monotonic()))

    def counts(self) -> Counter[str]:
        with self._lock:
            return Counter(self.seen)

    def start(self) -> Load:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
