"""Bolt over Socket Mode (an app-level ``xapp-`` token; no public URL needed).

Rules:
* Every WebSocket URL slack_sdk asks ``apps.connections.open`` for is checked first: an answer
  without one used to reach the connection as ``None`` and fail with an AttributeError logged
  every 10 s forever. Now it raises ``SocketModeUnusable`` — at start, out of ``start()``; later,
  through ``on_fatal`` so the process can say why and exit.
* ``stop()`` always ends, within ``close_wait_s``. slack_sdk's ``close()`` joins its session
  thread with no timeout, and that thread loops for as long as the connection state it was given
  is not marked terminated. A reconnect that completes while ``close()`` runs (slack_sdk's
  monitor reconnects every 10 s after Slack hangs up) installs a fresh state that ``close()``
  never marks, and the process never stopped: no lease handed back, killed by the supervisor.
  So ``stop()`` first refuses every further URL (no reconnect can start), then closes in a helper
  thread while marking whatever state is current as terminated; should ``close()`` still not
  return, it logs that and returns anyway — slack_sdk's threads are daemons, and handing the
  leases back matters more than a tidy WebSocket.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from slack_bolt import App
from slack_bolt.adapter.socket_mode import SocketModeHandler

CLOSE_WAIT_S = 8.0  # slack_sdk waits up to its 3 s receive timeout to disconnect; a SIGTERM grace is 30 s

_log = logging.getLogger("stagehold.slack.socket_mode")


class SocketModeUnusable(RuntimeError):
    """Slack's answer leaves Socket Mode nothing to connect to; retrying will not change that."""


class SocketModeClosing(RuntimeError):
    """``stop()`` has begun: no new connection is opened (slack_sdk logs this and gives up)."""


class SocketModeRunner:
    def __init__(
        self,
        app: App,
        app_token: str,
        on_fatal: Callable[[str], None] | None = None,
        close_wait_s: float = CLOSE_WAIT_S,
    ) -> None:
        self.handler = SocketModeHandler(app, app_token)
        self.on_fatal = on_fatal
        self.close_wait_s = close_wait_s
        self._closing = threading.Event()
        client = self.handler.client
        issue = client.issue_new_wss_url

        def checked_issue() -> str:
            if self._closing.is_set():
                raise SocketModeClosing("stagehold is stopping: no new Socket Mode connection")
            url = issue()
            if isinstance(url, str) and url.startswith(("wss://", "ws://")):
                return url
            reason = f"apps.connections.open answered without a WebSocket url (got {type(url).__name__})"
            if self.on_fatal is not None:
                self.on_fatal(reason)
            raise SocketModeUnusable(reason)

        # slack_sdk's client asks for a URL at connect and at every reconnect; the handler builds
        # that client itself, so the check wraps its method on the instance.
        setattr(client, "issue_new_wss_url", checked_issue)  # noqa: B010

    def start(self) -> SocketModeRunner:
        self.handler.connect()  # type: ignore[no-untyped-call]
        return self

    def stop(self) -> bool:
        """Close the connection; True if slack_sdk finished closing within ``close_wait_s``."""
        self._closing.set()
        client: Any = self.handler.client  # the builtin client; its state fields are untyped
        closer = threading.Thread(target=self.handler.close, name="stagehold-socket-close", daemon=True)
        closer.start()
        deadline = time.monotonic() + self.close_wait_s
        while closer.is_alive() and time.monotonic() < deadline:
            # A reconnect that finished after close() began left a state nothing else terminates
            # (and re-enabled reconnecting); mark whichever is current until the close returns.
            client.auto_reconnect_enabled = False
            client.current_session_state.terminated = True
            closer.join(0.05)
        if closer.is_alive():
            _log.warning("Socket Mode did not close within %.0f s; stopping without waiting for it", self.close_wait_s)
            return False
        # Such a reconnect's socket is not the one close() disconnected; no thread reads it now.
        client.disconnect()
        return True
