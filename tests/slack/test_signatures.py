"""Requests not signed by Slack just now get 401 and change nothing; the health endpoint answers."""

from __future__ import annotations

import time

from tests.slack.conftest import CHANGE, INITIATOR, RELEASERS, SECRET, Harness, button_value, sign


def ledger_size(h: Harness) -> int:
    """Entries written on behalf of people (the engine's own roles keep sampling meanwhile)."""
    return sum(
        1 for eid in h.bot.engine.executions() for e in h.bot.engine.entries(eid) if not e.actor.startswith("role:")
    )


def listener_calls(h: Harness) -> int:
    return sum(
        len(h.fake.calls_of(m, ok=None)) for m in ("chat.postEphemeral", "views.open", "usergroups.users.list")
    ) + len(h.fake.responses)


def test_forged_stale_replayed_and_malformed_requests_are_refused(harness: Harness) -> None:
    h = harness
    response, name = h.slash(f"start {CHANGE}", INITIATOR)
    assert response.status_code == 200
    h.answer(name)
    card = h.hold_card("H1")
    h.bot.notifier.wait_idle(10)
    click = h.click_body("stagehold_release", button_value(card) or "", RELEASERS[0], card)
    before_ledger, before_calls = ledger_size(h), listener_calls(h)
    now = int(time.time())

    cases = {
        "forged (wrong secret)": h.post(click, secret="not-the-secret"),
        "signature of another body": h.post(click, signature=sign("payload=%7B%7D", now)),
        "timestamp 301 s old": h.post(click, ts=now - 301),
        # Ahead of the clock the gap shrinks while the requests are sent: leave a margin.
        "timestamp 310 s ahead": h.post(click, ts=now + 310),
        "malformed timestamp": h.http.post(
            f"{h.url}/slack/events",
            content=click.encode(),
            headers={
                "Content-Type": "application/x-www-form-urlencoded",
                "X-Slack-Request-Timestamp": "soon",
                "X-Slack-Signature": sign(click, now),
            },
        ),
        "no signature": h.http.post(
            f"{h.url}/slack/events",
            content=click.encode(),
            headers={"Content-Type": "application/x-www-form-urlencoded", "X-Slack-Request-Timestamp": str(now)},
        ),
    }
    for what, response in cases.items():
        assert response.status_code == 401, what
    # Bolt answers 401 before it starts any listener: once the answer is here, nothing of the
    # request is still running that could write or call Slack later.
    assert ledger_size(h) == before_ledger
    assert listener_calls(h) == before_calls

    # A genuine request within the window works once; the identical request replayed is refused.
    ts = now - 200
    assert h.post(click, ts=ts).status_code == 200
    h.fake.wait_for(lambda: h.fake.ephemerals(RELEASERS[0]), what="the genuine click answered")
    after_ledger = ledger_size(h)
    replay = h.post(click, ts=ts)
    assert replay.status_code == 401
    assert ledger_size(h) == after_ledger
    assert len(h.fake.ephemerals(RELEASERS[0])) == 1
    assert SECRET not in replay.text


def test_health_and_unknown_paths(harness: Harness) -> None:
    h = harness
    health = h.http.get(f"{h.url}/healthz")
    assert health.status_code == 200
    body = health.json()
    assert body["ok"] is True and body["executions"] == {"leased": 0} and "queued" in body["slack"]
    assert h.http.get(f"{h.url}/nope").status_code == 404
    assert h.http.get(f"{h.url}/slack/events").status_code == 405
    assert h.http.post(f"{h.url}/slack/events", content=b"x" * (1024 * 1024 + 10)).status_code == 413
