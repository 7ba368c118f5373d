"""A real Prometheus (Debian's ``prometheus`` binary) and tiny exporters, on loopback, for tests.

``Exporter`` serves ``/metrics`` text the test sets and can be stopped (its scrapes then fail, so
``up`` drops to 0 and Prometheus marks its series stale) and started again on the same port.
``PrometheusServer`` runs ``prometheus`` in a temporary directory with a config scraping the
given exporters (or any ``HOST:PORT`` serving ``/metrics``, such as HAProxy's exporter) every
second, waits until it is ready, and is stopped by the test (or at exit of the ``with`` block). Nothing here sleeps to assert a negative: waits poll with a deadline.

A missing ``prometheus`` binary is a failure, never a skip: ``scripts/ci-deps`` installs it.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx
import pytest

SCRAPE_INTERVAL_S = 1


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def prometheus_binary() -> str:
    found = shutil.which("prometheus")
    if found is None:
        pytest.fail(
            "the prometheus binary is missing: run scripts/ci-deps (Debian's prometheus package)", pytrace=False
        )
    return found


class _Quiet(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass


class Exporter:
    """``/metrics`` on a loopback port, with series the test sets: ``set("app_value", 1.0, shard="a")``."""

    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        self._series: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def set(self, name: str, value: float, **labels: str) -> Exporter:
        with self._lock:
            self._series[(name, tuple(sorted(labels.items())))] = value
        return self

    def text(self) -> str:
        with self._lock:
            items = sorted(self._series.items())
        lines = []
        for (name, labels), value in items:
            inner = ",".join(f'{k}="{v}"' for k, v in labels)
            lines.append(f"{name}{{{inner}}} {value!r}")
        return "\n".join(lines) + "\n"

    def start(self) -> Exporter:
        exporter = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                body = exporter.text().encode() if self.path.startswith("/metrics") else b"not found\n"
                self.send_response(200 if self.path.startswith("/metrics") else 404)
                self.send_header("Content-Type", "text/plain; version=0.0.4")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self._server = _Quiet(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None


class PrometheusServer:
    """``prometheus`` scraping ``jobs`` (job name -> exporters or ``HOST:PORT`` addresses) every second
    from a temp dir; stopped, it can be started again on the same port and data."""

    def __init__(self, workdir: Path, jobs: Mapping[str, Sequence[Exporter | str]], *, port: int | None = None) -> None:
        self.workdir = workdir
        self.jobs = jobs
        self.port = port or free_port()
        self._process: subprocess.Popen[bytes] | None = None
        self.log = workdir / "prometheus.log"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _config(self) -> str:
        lines = [
            "global:",
            f"  scrape_interval: {SCRAPE_INTERVAL_S}s",
            f"  scrape_timeout: {SCRAPE_INTERVAL_S}s",
            f"  evaluation_interval: {SCRAPE_INTERVAL_S}s",
            "scrape_configs:",
        ]
        for job, exporters in self.jobs.items():
            targets = ", ".join(f'"{e if isinstance(e, str) else e.address}"' for e in exporters)
            lines += [f"  - job_name: {job}", "    static_configs:", f"      - targets: [{targets}]"]
        return "\n".join(lines) + "\n"

    def start(self, ready_within_s: float = 30.0) -> PrometheusServer:
        config = self.workdir / "prometheus.yml"
        config.write_text(self._config(), encoding="utf-8")
        (self.workdir / "data").mkdir(exist_ok=True)
        args = [
            prometheus_binary(),
            f"--config.file={config}",
            f"--storage.tsdb.path={self.workdir / 'data'}",
            f"--web.listen-address=127.0.0.1:{self.port}",
            "--log.level=warn",
        ]
        with self.log.open("ab") as log:
            self._process = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        self._wait(lambda: self._get("/-/ready") == 200, ready_within_s, "prometheus did not become ready")
        return self

    def _get(self, path: str) -> int | None:
        if self._process is not None and self._process.poll() is not None:
            raise AssertionError(f"prometheus exited with {self._process.returncode}: {self.log.read_text()[-2000:]}")
        try:
            return httpx.get(self.url + path, timeout=2.0).status_code
        except httpx.HTTPError:
            return None

    def query(self, promql: str) -> list[dict[str, Any]]:
        answer = httpx.get(self.url + "/api/v1/query", params={"query": promql}, timeout=5.0).json()
        assert answer["status"] == "success", answer
        return list(answer["data"]["result"])

    def wait_until(self, what: str, condition: Callable[[], bool], within_s: float = 30.0) -> None:
        self._wait(condition, within_s, f"timed out waiting for {what}")

    def wait_for_series(self, promql: str, count: int = 1, within_s: float = 30.0) -> None:
        """Until ``promql`` answers at least ``count`` series (a scrape has happened)."""
        self.wait_until(f"{count} series of {promql}", lambda: len(self.query(promql)) >= count, within_s)

    @staticmethod
    def _wait(condition: Callable[[], bool], within_s: float, message: str) -> None:
        deadline = time.monotonic() + within_s
        while time.monotonic() < deadline:
            if condition():
                return
            time.sleep(0.1)
        raise AssertionError(message)

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def stop(self) -> None:
        if self._process is None:
            return
        if self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait(timeout=5)
        self._process = None

    def __enter__(self) -> PrometheusServer:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


def poll(read: Callable[[], Any], done: Callable[[Any], bool], within_s: float, what: str) -> Any:
    """Call ``read`` until ``done(result)``; fail with the last result after ``within_s``."""
    deadline = time.monotonic() + within_s
    last = read()
    while not done(last):
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {within_s:g}s waiting for {what}; last: {last!r}")
        time.sleep(0.2)
        last = read()
    return last
