"""Socket Mode's stop always ends, so ``serve`` hands its leases back on SIGTERM.

slack_sdk's ``close()`` joins its session thread with no timeout; a reconnect that lands while it
runs leaves that thread looping on a connection state nothing marks terminated. These tests open
real WebSockets to the fake Slack and make that interleaving happen on purpose.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from slack_bolt import App
from slack_sdk import WebClient

from bot.socket_mode import SocketModeClosing, SocketModeRunner
from tests.slack.fake_slack import APP_TOKEN, BOT_TOKEN, FakeSlack

Open = Callable[[float], SocketModeRunner]


@pytest.fixture
def open_runner(fake_slack: FakeSlack) -> Iterator[Open]:
    """Connect a runner to the fake Slack, which hangs up every WebSocket once it is open."""
    fake_slack.socket_urls = deque([fake_slack.ws_url])
    opened: list[SocketModeRunner] = []

    def open_(close_wait_s: float) -> SocketModeRunner:
        app = App(
            client=WebClient(token=BOT_TOKEN, base_url=fake_slack.api_url),
            signing_secret="not-used-in-socket-mode",
            token_verification_enabled=False,
        )
        runner = SocketModeRunner(app, APP_TOKEN, close_wait_s=close_wait_s)
        runner.handler.client.web_client = WebClient(token=APP_TOKEN, base_url=fake_slack.api_url)
        opened.append(runner.start())
        return runner

    yield open_
    for runner in opened:
        runner.stop()


def stop_within(runner: SocketModeRunner, seconds: float) -> bool | None:
    """``runner.stop()`` on a thread: its answer, or None if it had not returned after ``seconds``."""
    answer: list[bool] = []
    thread = threading.Thread(target=lambda: answer.append(runner.stop()), daemon=True)
    thread.start()
    thread.join(seconds)
    return answer[0] if answer else None


def wait_until(condition: Callable[[], bool], seconds: float = 5.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def test_a_reconnect_landing_while_it_closes_does_not_keep_serve_from_stopping(
    fake_slack: FakeSlack, open_runner: Open
) -> None:
    runner = open_runner(8.0)
    client: Any = runner.handler.client
    wait_until(lambda: not client.is_connected())  # Slack hung up; slack_sdk's monitor will reconnect
    disconnect = client.disconnect
    reconnected = threading.Event()

    def reconnect_then_disconnect() -> None:
        # close() has just marked the connection state terminated and now disconnects. In between,
        # slack_sdk's monitor thread completes its reconnect: a new connection (this one stays
        # open) and a new state, which the session thread starts reading; then close() closes
        # that socket, and the session thread waits on a state nobody marks terminated.
        if not reconnected.is_set():
            reconnected.set()
            fake_slack.socket_hold_s = 30.0
            monitor = threading.Thread(target=client.connect, daemon=True)
            monitor.start()
            monitor.join(5)
            time.sleep(0.3)  # the session thread polls for a new connection every 0.1 s
        disconnect()

    client.disconnect = reconnect_then_disconnect
    assert stop_within(runner, 20.0) is True  # slack_sdk's close() alone never returns here
    assert reconnected.is_set() and fake_slack.socket_handshakes == 2
    assert not client.is_connected()


def test_stop_returns_and_says_so_when_slack_sdk_never_finishes_closing(
    open_runner: Open, caplog: pytest.LogCaptureFixture
) -> None:
    runner = open_runner(2.0)
    never = threading.Event()
    runner.handler.close = never.wait  # type: ignore[assignment]
    started = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="stagehold.slack.socket_mode"):
        assert stop_within(runner, 10.0) is False
    assert 1.9 < time.monotonic() - started < 6.0
    assert "Socket Mode did not close within 2 s; stopping without waiting for it" in caplog.text
    never.set()


def test_no_reconnect_is_started_once_stop_has_begun(fake_slack: FakeSlack, open_runner: Open) -> None:
    runner = open_runner(8.0)
    assert runner.stop() is True
    asked = len(fake_slack.calls_of("apps.connections.open", ok=None))
    client: Any = runner.handler.client
    with pytest.raises(SocketModeClosing):
        client.connect_to_new_endpoint(force=True)  # what slack_sdk's monitor does after a hang-up
    assert len(fake_slack.calls_of("apps.connections.open", ok=None)) == asked
