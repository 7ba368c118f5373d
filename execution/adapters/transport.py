"""The HTTP transport every adapter shares: one pooled client, plus one per distinct TLS setting.

Rules:
* httpx binds TLS files (CA bundle, client certificate) to a client, not to a request, so a target
  with its own TLS settings gets its own client; targets with the same files share one.
* The TLS clients inherit the shared client's timeout, redirect policy and pool limits, and closing
  the shared client closes them too, so a process owns exactly one thing to close.
* A TLS file that cannot be read is an error when the target is first used, not a fallback to
  the system's trust store or to no client certificate.
* No cookie is ever kept: a cookie one role's request was given would otherwise ride along on
  every later request to that host, whichever role sends it.
"""

from __future__ import annotations

import ssl
import threading
from http.cookiejar import DefaultCookiePolicy
from typing import Any

import httpx

from execution.adapters.keepalive import KeepAliveReads


class _NoCookies(httpx.Cookies):
    """A jar that refuses every cookie, and does not look at responses for them: httpx looks at
    every response (building two ``urllib`` objects each time), a tenth of a request's cost."""

    def __init__(self) -> None:
        super().__init__()
        # Should anything set a cookie directly, an empty list of allowed domains still refuses it.
        self.jar.set_policy(DefaultCookiePolicy(allowed_domains=[]))

    def extract_cookies(self, response: httpx.Response) -> None:
        return None


class CookielessClient(httpx.Client):
    """An ``httpx.Client`` whose jar is always an empty ``_NoCookies``."""

    def __init__(self, **kwargs: Any) -> None:
        self._no_cookies = _NoCookies()
        super().__init__(**kwargs)

    @property
    def cookies(self) -> httpx.Cookies:
        return self._no_cookies

    @cookies.setter
    def cookies(self, cookies: Any) -> None:
        return None  # nothing is kept


class TargetTransport(CookielessClient):
    """An ``httpx.Client`` that also hands out clients configured with a target's TLS files.

    Its plain-HTTP GETs (signal reads) go over ``KeepAliveReads``; the rest over httpx's transport.
    """

    def __init__(self, **kwargs: Any) -> None:
        if "transport" not in kwargs:  # (tests hand in their own)
            limits = kwargs.get("limits", httpx.Limits())
            fallback = httpx.HTTPTransport(limits=limits)
            kwargs = {**kwargs, "transport": KeepAliveReads(fallback, max_idle=limits.max_keepalive_connections or 20)}
        super().__init__(**kwargs)
        self._settings = {k: v for k, v in kwargs.items() if k != "transport"}
        self._tls: dict[tuple[str | None, str | None, str | None], httpx.Client] = {}
        self._tls_lock = threading.Lock()

    def with_tls(self, ca_bundle: str | None, client_cert: str | None, client_key: str | None) -> httpx.Client:
        key = (ca_bundle, client_cert, client_key)
        with self._tls_lock:
            client = self._tls.get(key)
            if client is None:
                client = CookielessClient(**{**self._settings, "verify": _context(ca_bundle, client_cert, client_key)})
                self._tls[key] = client
            return client

    def close(self) -> None:
        with self._tls_lock:
            clients, self._tls = list(self._tls.values()), {}
        for client in clients:
            client.close()
        super().close()


def _context(ca_bundle: str | None, client_cert: str | None, client_key: str | None) -> ssl.SSLContext:
    if client_key is not None and client_cert is None:
        raise ValueError("a client_key needs its client_cert")
    try:
        context = ssl.create_default_context(cafile=ca_bundle)
        if client_cert is not None:
            context.load_cert_chain(client_cert, client_key)
    except (OSError, ssl.SSLError) as exc:
        raise ValueError(f"cannot load the target's TLS files: {exc}") from None
    return context
