"""Signal reads over kept-alive connections, against a real local HTTP server."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest

from execution.adapters.transport import TargetTransport


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args: Any) -> None:
        pass

    def _answer(self, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        if self.path.startswith("/last"):
            self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(data)
        if self.path.startswith("/last"):
            self.close_connection = True

    def do_GET(self) -> None:
        if self.path.startswith("/slow"):
            time.sleep(0.5)
        self._answer({"port": self.client_address[1], "path": self.path, "auth": self.headers.get("authorization")})

    def do_PUT(self) -> None:
        length = int(self.headers.get("content-length") or 0)
        self._answer({"port": self.client_address[1], "put": json.loads(self.rfile.read(length))})


class _Server(ThreadingHTTPServer):
    daemon_threads = True


@pytest.fixture
def server() -> Iterator[_Server]:
    srv = _Server(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()


def _url(srv: _Server, path: str) -> str:
    return f"http://127.0.0.1:{srv.server_address[1]}{path}"


def test_reads_reuse_one_connection_and_carry_query_and_headers(server: _Server) -> None:
    with TargetTransport(timeout=5.0) as client:
        answers = [
            client.get(_url(server, "/q"), params={"query": 'sum(x{a="b"})'}, headers={"Authorization": "Bearer r"})
            for _ in range(5)
        ]
    assert {a.json()["port"] for a in answers} == {answers[0].json()["port"]}, "one kept-alive connection"
    assert answers[0].json()["path"] == "/q?query=sum%28x%7Ba%3D%22b%22%7D%29"
    assert all(a.status_code == 200 and a.json()["auth"] == "Bearer r" for a in answers)


def test_a_connection_the_server_closed_is_replaced_and_the_read_answers(server: _Server) -> None:
    with TargetTransport(timeout=5.0) as client:
        first = client.get(_url(server, "/last")).json()["port"]  # the server closes after answering
        second = client.get(_url(server, "/q")).json()["port"]
        kept = client.get(_url(server, "/q")).json()["port"]
    assert second != first and kept == second


def test_a_put_is_sent_by_httpx_not_on_the_kept_read_connections(server: _Server) -> None:
    with TargetTransport(timeout=5.0) as client:
        read = client.get(_url(server, "/q"))
        put = client.put(_url(server, "/w"), json={"weight": 5})
    assert put.json()["put"] == {"weight": 5}
    assert "network_stream" in put.extensions and "network_stream" not in read.extensions


def test_failures_are_the_httpx_errors_callers_handle(server: _Server) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]  # nothing listens here once the socket is closed
    with TargetTransport(timeout=5.0) as client:
        with pytest.raises(httpx.ConnectError):
            client.get(f"http://127.0.0.1:{closed}/q")
        with pytest.raises(httpx.ReadTimeout):
            client.get(_url(server, "/slow"), timeout=0.1)
        assert client.get(_url(server, "/q")).status_code == 200  # the client still reads afterwards
