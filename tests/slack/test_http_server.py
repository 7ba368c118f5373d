"""The HTTP server's sockets: every accepted connection answers without Nagle's delay.

Slack sends interactions on kept-alive connections. A response written as headers then body is two
small writes; with Nagle on, the body waits for the client's delayed ACK (about 40 ms a request).
The check reads the option from the server's own accepted socket, so it does not depend on timing.
"""

from __future__ import annotations

import socket

import httpx

from bot.app import HttpServer
from tests.slack.conftest import Harness


def accepted_sockets(server: HttpServer) -> list[socket.socket]:
    connections = server.server.server_state.connections
    return [conn.transport.get_extra_info("socket") for conn in connections if conn.transport is not None]


def test_accepted_connections_have_tcp_nodelay(harness: Harness) -> None:
    h = harness
    with httpx.Client(timeout=10.0) as http:  # keep-alive: the connection stays open for the check
        for _ in range(3):
            assert http.get(f"{h.url}/healthz").status_code == 200
        sockets = accepted_sockets(h.server)
        assert sockets, "the server holds no open connection"
        for sock in sockets:
            assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0, sock
