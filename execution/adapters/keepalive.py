"""Signal reads (GET over plain HTTP) on kept-alive ``http.client`` connections.

Why: a process carrying thousands of executions reads four documents per sample, hundreds a
second, and httpx's own transport (httpcore and h11) was half of the cost of a read; the standard
library's HTTP/1.1 client does the same exchange for a fraction of it. Everything else (actions
and read-backs that are not GETs, HTTPS, anything with a body) goes through httpx's transport
unchanged, so how an action's failure is classified (sent or not, ambiguous) never depends on
this module.

Rules:
* Only a GET without a body to an ``http://`` URL takes this path.
* A kept connection the peer has closed is noticed before it is used (it is readable at EOF) and
  dropped; a GET that fails on a reused connection before any answer is sent once more on a new
  one (a GET changes nothing, and the peer may have closed it just then).
* Failures surface as the httpx exceptions a caller already handles (``ConnectError``,
  ``ConnectTimeout``, ``ReadTimeout``, ``RemoteProtocolError``, ``ReadError``).
* The body is handed to httpx undecoded, so a compressed answer is decoded as httpx decodes it.
"""

from __future__ import annotations

import http.client
import select
import socket
import threading

import httpx

_RETRYABLE = (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError)


class KeepAliveReads(httpx.BaseTransport):
    def __init__(self, fallback: httpx.BaseTransport, max_idle: int) -> None:
        self._fallback = fallback
        self._max_idle = max_idle
        self._idle: dict[tuple[str, int], list[http.client.HTTPConnection]] = {}
        self._lock = threading.Lock()

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        url = request.url
        if request.method != "GET" or url.scheme != "http" or request.headers.get("content-length") not in (None, "0"):
            return self._fallback.handle_request(request)
        timeouts = request.extensions.get("timeout", {})
        key = (url.host, url.port or 80)
        kept = self._checkout(key)
        if kept is not None:
            try:
                return self._exchange(key, kept, request, timeouts)
            except _RETRYABLE:
                kept.close()  # closed by the peer as it was reused: once more, on a new connection
            except BaseException:
                kept.close()
                raise
        conn = http.client.HTTPConnection(key[0], key[1], timeout=timeouts.get("connect"))
        try:
            return self._exchange(key, conn, request, timeouts)
        except _RETRYABLE as exc:
            conn.close()
            raise httpx.RemoteProtocolError(f"{type(exc).__name__}: {exc}", request=request) from None
        except BaseException:
            conn.close()
            raise

    def _exchange(
        self,
        key: tuple[str, int],
        conn: http.client.HTTPConnection,
        request: httpx.Request,
        timeouts: dict[str, float | None],
    ) -> httpx.Response:
        try:
            if conn.sock is None:
                conn.connect()
            conn.sock.settimeout(timeouts.get("read"))
        except TimeoutError:
            raise httpx.ConnectTimeout("timed out connecting", request=request) from None
        except OSError as exc:
            raise httpx.ConnectError(f"{type(exc).__name__}: {exc}", request=request) from None
        try:
            conn.putrequest("GET", request.url.raw_path.decode("ascii"), skip_host=True, skip_accept_encoding=True)
            for name, value in request.headers.raw:
                conn.putheader(name, value)
            conn.endheaders()
            answer = conn.getresponse()
            body = answer.read()
        except _RETRYABLE:
            raise
        except TimeoutError:
            raise httpx.ReadTimeout("timed out reading", request=request) from None
        except http.client.HTTPException as exc:
            raise httpx.RemoteProtocolError(f"{type(exc).__name__}: {exc}", request=request) from None
        except OSError as exc:
            raise httpx.ReadError(f"{type(exc).__name__}: {exc}", request=request) from None
        if answer.will_close:
            conn.close()
        else:
            self._checkin(key, conn)
        return httpx.Response(
            answer.status,
            headers=answer.getheaders(),
            stream=httpx.ByteStream(body),
            extensions={"http_version": b"HTTP/1.1", "reason_phrase": answer.reason.encode("latin-1")},
        )

    def _checkout(self, key: tuple[str, int]) -> http.client.HTTPConnection | None:
        while True:
            with self._lock:
                idle = self._idle.get(key)
                conn = idle.pop() if idle else None
            if conn is None:
                return None
            if conn.sock is not None and not _closed_by_peer(conn.sock):
                return conn
            conn.close()

    def _checkin(self, key: tuple[str, int], conn: http.client.HTTPConnection) -> None:
        with self._lock:
            idle = self._idle.setdefault(key, [])
            if len(idle) < self._max_idle:
                idle.append(conn)
                return
        conn.close()

    def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, {}
        for conns in idle.values():
            for conn in conns:
                conn.close()
        self._fallback.close()


def _closed_by_peer(sock: socket.socket) -> bool:
    """An idle connection is readable only when the peer closed it (or sent what it should not)."""
    readable, _, _ = select.select([sock], [], [], 0)
    return bool(readable)
