"""The per-channel outbox: order kept, channels independent, Slack errors sorted into retry or drop."""

from __future__ import annotations

import threading
import time
from typing import Any
from urllib.error import URLError

import pytest
from slack_sdk.errors import SlackApiError
from slack_sdk.web import SlackResponse

from handlers.notifier import call_web_api
from handlers.outbox import Operation, Outbox, Permanent, Transient


def test_order_is_kept_per_channel_and_a_blocked_channel_does_not_block_others() -> None:
    outbox = Outbox(pace_s=0.01, workers=2, backoff_base=0.01)
    delivered: list[tuple[str, int, float]] = []
    lock = threading.Lock()
    failures = {"A": 3}

    def op(channel: str, n: int) -> Operation:
        def run() -> bool:
            if channel == "A" and n == 0 and failures["A"] > 0:
                failures["A"] -= 1
                raise Transient("rate limited", retry_after=0.2)
            with lock:
                delivered.append((channel, n, time.monotonic()))
            return True

        return Operation(channel, run, f"{channel}{n}")

    outbox.start()
    try:
        began = time.monotonic()
        for n in range(5):
            outbox.put(op("A", n))
            outbox.put(op("B", n))
        assert outbox.wait_empty(10)
    finally:
        outbox.stop()
    a = [(n, t) for c, n, t in delivered if c == "A"]
    b = [(n, t) for c, n, t in delivered if c == "B"]
    assert [n for n, _ in a] == list(range(5)) and [n for n, _ in b] == list(range(5))
    assert a[0][1] - began >= 0.55  # three Retry-After waits of 0.2 s before A's head went out
    assert b[-1][1] < a[0][1]  # B was not held up behind A
    assert outbox.retried == 3 and outbox.delivered == 10


def test_permanent_failures_are_dropped_and_unexpected_ones_retried_then_dropped() -> None:
    outbox = Outbox(pace_s=0.0, workers=1, backoff_base=0.01)
    seen: list[str] = []
    attempts = {"boom": 0}

    def refused() -> bool:
        raise Permanent("invalid_blocks")

    def boom() -> bool:
        attempts["boom"] += 1
        raise RuntimeError("bug")

    def fine() -> bool:
        seen.append("fine")
        return True

    outbox.start()
    try:
        for run, name in ((refused, "refused"), (boom, "boom"), (fine, "fine")):
            outbox.put(Operation("C", run, name))
        assert outbox.wait_empty(10)
    finally:
        outbox.stop()
    assert seen == ["fine"] and attempts["boom"] == 5 and outbox.dropped == 2


def _error(status: int, data: dict[str, Any], headers: dict[str, str] | None = None) -> SlackApiError:
    response = SlackResponse(
        client=None,
        http_verb="POST",
        api_url="https://slack.test/api/chat.postMessage",
        req_args={},
        data=data,
        headers=headers or {},
        status_code=status,
    )
    return SlackApiError("failed", response)


@pytest.mark.parametrize(
    ("raised", "expected", "retry_after"),
    [
        (_error(429, {"ok": False, "error": "ratelimited"}, {"Retry-After": "7"}), Transient, 7.0),
        (_error(500, {"ok": False, "error": "internal_error"}), Transient, None),
        (_error(200, {"ok": False, "error": "not_in_channel"}), Transient, None),
        (_error(200, {"ok": False, "error": "invalid_blocks"}), Permanent, None),
        (URLError("connection refused"), Transient, None),
        (TimeoutError("timed out"), Transient, None),
    ],
)
def test_slack_errors_are_sorted(raised: Exception, expected: type[Exception], retry_after: float | None) -> None:
    def method(**kwargs: Any) -> Any:
        raise raised

    with pytest.raises(expected) as err:
        call_web_api(method, channel="C1")
    if isinstance(err.value, Transient):
        assert err.value.retry_after == retry_after
