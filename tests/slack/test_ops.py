"""The operations surface: /healthz, /readyz and /metrics over real HTTP, in HTTP mode and in
Socket Mode, with metric values that move with real events; JSON logs."""

from __future__ import annotations

import json
import re
import signal
import subprocess
from collections import deque

import httpx
import psycopg
import pytest
from prometheus_client.parser import text_string_to_metric_families

from execution.sandbox import Sandbox
from tests.conftest import PG_ADMIN_DSN
from tests.slack.conftest import CHANGE, INITIATOR, RELEASERS, BotFactory, Harness
from tests.slack.fake_slack import APP_TOKEN, BOT_TOKEN, FakeSlack
from tests.slack.test_serve import STAGEHOLD, end, environment


def scrape(url: str) -> dict[str, float]:
    """Every sample of ``/metrics`` as ``name{labels}`` -> value (labels sorted, as text)."""
    response = httpx.get(f"{url}/metrics", timeout=10)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            labels = ",".join(f"{k}={v}" for k, v in sorted(sample.labels.items()))
            out[f"{sample.name}{{{labels}}}"] = sample.value
    return out


def test_metrics_move_with_a_real_execution_over_http(harness: Harness) -> None:
    h = harness
    before = scrape(h.url)
    assert before["stagehold_open_holds{}"] == 0
    assert before["stagehold_leases_held{}"] == 0
    assert not any(k.startswith("stagehold_transitions_total") for k in before)
    assert httpx.get(f"{h.url}/healthz").json()["ok"] is True
    ready = httpx.get(f"{h.url}/readyz")
    assert ready.status_code == 200 and ready.json() == {"ok": True}

    response, name = h.slash(f"start {CHANGE}", INITIATOR)
    assert response.status_code == 200
    h.answer(name)
    h.hold_card("H1")  # the execution waits on its first hold: one open hold, driven by this replica
    during = scrape(h.url)
    assert during["stagehold_open_holds{}"] == 1
    execution_id = h.execution().execution_id
    assert during[f"stagehold_hold_age_seconds{{execution={execution_id},hold=H1}}"] >= 0
    assert during["stagehold_leases_held{}"] == 1
    assert during["stagehold_transitions_total{kind=execution.started}"] == 1
    assert during["stagehold_transitions_total{kind=hold.opened}"] == 1
    assert during["stagehold_transitions_total{kind=verification.sampled}"] >= 1
    assert any(k.startswith("stagehold_evidence_age_seconds{execution=") for k in during)
    assert during["stagehold_scheduler_lag_seconds_count{}"] >= 1

    h.click(h.hold_card("H1"), RELEASERS[0])
    h.wait_state(lambda s: s.open_hold == "H2", 30, "hold H2")
    after = scrape(h.url)
    assert after["stagehold_transitions_total{kind=hold.released}"] == 1
    assert after["stagehold_transitions_total{kind=hold.opened}"] == 2
    assert after["stagehold_open_holds{}"] == 1
    assert f"stagehold_hold_age_seconds{{execution={execution_id},hold=H2}}" in after
    assert f"stagehold_hold_age_seconds{{execution={execution_id},hold=H1}}" not in after


def test_rate_limits_from_slack_are_counted(make_bot: BotFactory, fake_slack: FakeSlack) -> None:
    h = make_bot()
    assert scrape(h.url)["stagehold_slack_rate_limited_total{}"] == 0
    fake_slack.fail("chat.postMessage", 429, times=2, retry_after=0.1)
    response, name = h.slash(f"start {CHANGE}", INITIATOR)
    assert response.status_code == 200
    h.answer(name)
    h.root()
    assert h.bot.notifier.wait_idle(20)
    assert scrape(h.url)["stagehold_slack_rate_limited_total{}"] == 2


@pytest.mark.postgres
def test_readyz_says_503_while_the_database_refuses_and_200_when_it_is_back(pg_url: str, make_bot: BotFactory) -> None:
    # pg_url first: the bot stops before its database is dropped.
    make_bot.db_url = pg_url
    h = make_bot()
    assert httpx.get(f"{h.url}/readyz").status_code == 200
    name = pg_url.rsplit("/", 1)[1]
    with psycopg.connect(PG_ADMIN_DSN, autocommit=True) as admin:
        admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false')
        admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (name,))
        try:
            down = httpx.get(f"{h.url}/readyz", timeout=20)
            assert down.status_code == 503
            assert "the ledger database does not answer" in down.json()["reason"]
            assert httpx.get(f"{h.url}/healthz").status_code == 200  # alive, just not ready
        finally:
            admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')
    assert httpx.get(f"{h.url}/readyz", timeout=20).status_code == 200


def test_socket_mode_serves_health_readiness_and_metrics_on_its_port(
    tmp_path, fake_slack: FakeSlack, sandbox: Sandbox
) -> None:
    # Slack keeps handing out a WebSocket URL (the fake hangs up each time; slack_sdk reconnects).
    fake_slack.socket_urls = deque([fake_slack.ws_url])
    env = environment(
        tmp_path,
        SLACK_BOT_TOKEN=BOT_TOKEN,
        SLACK_APP_TOKEN=APP_TOKEN,
        STAGEHOLD_SLACK_API_URL=fake_slack.api_url,
        STAGEHOLD_LOG_FORMAT="json",
    )
    proc = subprocess.Popen(
        [*STAGEHOLD, "serve", "--port", "0", "--sandbox", sandbox.url],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None and proc.stderr is not None
        line = proc.stdout.readline()
        found = re.search(r"Socket Mode \(GET /healthz, /readyz, /metrics on 127\.0\.0\.1:(\d+)\)", line)
        assert found, f"no serving line: {line!r}"
        url = f"http://127.0.0.1:{found.group(1)}"
        assert httpx.get(f"{url}/healthz", timeout=10).json()["ok"] is True
        assert httpx.get(f"{url}/readyz", timeout=10).status_code == 200
        metrics = scrape(url)
        assert metrics["stagehold_open_holds{}"] == 0 and "stagehold_leases_held{}" in metrics
        assert httpx.post(f"{url}/slack/events", content=b"x", timeout=10).status_code == 404  # no Slack over HTTP here
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0
        logged = [json.loads(x) for x in proc.stderr.read().splitlines() if x.startswith("{")]
        assert logged, "no JSON log line"
        assert all({"ts", "level", "logger", "message", "replica"} <= set(x) for x in logged)
    finally:
        end(proc)
