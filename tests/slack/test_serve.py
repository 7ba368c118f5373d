"""``stagehold serve`` as a process: HTTP mode against the fake Slack, and one-line setting errors."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections import deque
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlencode

import httpx
import pytest

from execution.sandbox import Sandbox
from tests.slack.conftest import SECRET, sign
from tests.slack.fake_slack import APP_TOKEN, BOT_TOKEN, FakeSlack

STAGEHOLD = [sys.executable, "-m", "bot.cli"]
ROOT = Path(__file__).resolve().parents[2]


def environment(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLACK_", "STAGEHOLD_"))}
    env.update(
        {
            "PYTHONPATH": str(ROOT),
            "STAGEHOLD_DATABASE_URL": f"sqlite:///{tmp_path / 'serve.db'}",
            "STAGEHOLD_PACKAGES_DIR": str(tmp_path / "packages"),
            "STAGEHOLD_HOST": "127.0.0.1",
        }
    )
    env.update(extra)
    return env


@pytest.fixture
def serving(tmp_path: Path, fake_slack: FakeSlack, sandbox: Sandbox) -> Iterator[tuple[subprocess.Popen[str], str]]:
    env = environment(
        tmp_path,
        SLACK_BOT_TOKEN=BOT_TOKEN,
        SLACK_SIGNING_SECRET=SECRET,
        STAGEHOLD_SLACK_API_URL=fake_slack.api_url,
    )
    proc = subprocess.Popen(
        [*STAGEHOLD, "serve", "--port", "0", "--sandbox", sandbox.url],
        cwd=tmp_path,  # no stray .env
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        found = re.search(r"on 127\.0\.0\.1:(\d+)", line)
        assert found, f"no listening line: {line!r} {proc.stderr.read() if proc.stderr else ''}"
        yield proc, f"http://127.0.0.1:{found.group(1)}"
    finally:
        end(proc)


def end(proc: subprocess.Popen[str]) -> None:
    """Kill a serve process still running and close its pipes."""
    if proc.poll() is None:
        proc.kill()
    proc.wait(timeout=10)
    for stream in (proc.stdout, proc.stderr):
        if stream is not None:
            stream.close()


def test_serve_answers_health_and_a_signed_help_then_stops_on_sigterm(
    serving: tuple[subprocess.Popen[str], str], fake_slack: FakeSlack
) -> None:
    proc, url = serving
    with httpx.Client(timeout=10.0) as http:
        health = http.get(f"{url}/healthz")
        assert health.status_code == 200 and health.json()["ok"] is True
        body = urlencode({"command": "/stagehold", "text": "help", "user_id": "U09NOBODY", "channel_id": "C0CHANGES"})
        ts = int(time.time())
        headers = {
            "Content-Type": "application/x-www-form-urlencoded",
            "X-Slack-Request-Timestamp": str(ts),
            "X-Slack-Signature": sign(body, ts),
        }
        answer = http.post(f"{url}/slack/events", content=body.encode(), headers=headers)
        assert answer.status_code == 200
        assert "/stagehold start CHANGE_ID" in answer.json()["blocks"][-1]["text"]["text"]
        headers["X-Slack-Signature"] = sign(body, ts, "wrong-secret")
        assert http.post(f"{url}/slack/events", content=body.encode(), headers=headers).status_code == 401
    assert fake_slack.calls_of("auth.test")  # Bolt checked the token against the configured API URL
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=20) == 0
    assert proc.stderr is not None and "stopping" in proc.stderr.read()


@pytest.mark.parametrize(
    ("settings", "expected"),
    [
        ({}, "stagehold: missing setting: set SLACK_BOT_TOKEN"),
        ({"SLACK_BOT_TOKEN": BOT_TOKEN}, "stagehold: missing setting: set SLACK_SIGNING_SECRET"),
        (
            {"SLACK_BOT_TOKEN": BOT_TOKEN, "SLACK_SIGNING_SECRET": SECRET},
            "stagehold: missing setting: set STAGEHOLD_CREDENTIAL_PREFLIGHT",
        ),
        (
            {
                "SLACK_BOT_TOKEN": BOT_TOKEN,
                "SLACK_SIGNING_SECRET": SECRET,
                **{f"STAGEHOLD_CREDENTIAL_{role}": "x" for role in ("PREFLIGHT", "EXECUTOR", "VERIFIER", "ROLLBACK")},
                "STAGEHOLD_REPORT_CHANNEL": "C0REVIEW",
                "STAGEHOLD_REPORT_SCHEDULE": "0 9 * * 1",
            },
            "stagehold: invalid setting STAGEHOLD_REPORT_SCHEDULE: name the day of week (mon, tue, ..., sun; "
            "ranges like mon-fri), not '1': cron counts 0 as Sunday and APScheduler as Monday",
        ),
    ],
)
def test_missing_settings_fail_with_one_line(tmp_path: Path, settings: dict[str, str], expected: str) -> None:
    done = subprocess.run(
        [*STAGEHOLD, "serve"],
        cwd=tmp_path,
        env=environment(tmp_path, **settings),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert done.stderr.strip() == expected
    assert done.stdout == ""


def test_a_token_slack_refuses_fails_with_one_line(tmp_path: Path, fake_slack: FakeSlack, sandbox: Sandbox) -> None:
    env = environment(
        tmp_path,
        SLACK_BOT_TOKEN="xoxb-not-the-token",
        SLACK_SIGNING_SECRET=SECRET,
        STAGEHOLD_SLACK_API_URL=fake_slack.api_url,
    )
    done = subprocess.run(
        [*STAGEHOLD, "serve", "--port", "0", "--sandbox", sandbox.url],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "Slack did not accept SLACK_BOT_TOKEN" in lines[0], done.stderr


def serve_socket_mode(
    tmp_path: Path, fake: FakeSlack, sandbox: Sandbox, app_token: str, timeout: float
) -> subprocess.CompletedProcess[str]:
    """Run ``stagehold serve`` in Socket Mode against the fake Slack until it exits by itself."""
    env = environment(tmp_path, SLACK_BOT_TOKEN=BOT_TOKEN, SLACK_APP_TOKEN=app_token)
    env["STAGEHOLD_SLACK_API_URL"] = fake.api_url
    return subprocess.run(
        [*STAGEHOLD, "serve", "--port", "0", "--sandbox", sandbox.url],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_socket_mode_is_chosen_when_an_app_token_is_set(
    tmp_path: Path, fake_slack: FakeSlack, sandbox: Sandbox
) -> None:
    done = serve_socket_mode(tmp_path, fake_slack, sandbox, "xapp-1-not-accepted", 60)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines()[-1] == (
        "stagehold: Socket Mode did not connect (invalid_auth); check SLACK_APP_TOKEN (scope connections:write)"
    )
    opened = fake_slack.calls_of("apps.connections.open", ok=None)
    assert opened and opened[0].token == "xapp-1-not-accepted"  # no signing secret needed in this mode


def test_socket_mode_without_a_url_from_slack_is_one_clear_error_and_exit(
    tmp_path: Path, fake_slack: FakeSlack, sandbox: Sandbox
) -> None:
    # apps.connections.open says ok but gives no WebSocket url (the fake's default): this used to
    # log an AttributeError every 10 s forever while claiming to serve.
    done = serve_socket_mode(tmp_path, fake_slack, sandbox, APP_TOKEN, 30)
    assert done.returncode == 2
    assert done.stderr.strip() == (
        "stagehold: Socket Mode did not connect (apps.connections.open answered without a WebSocket url "
        "(got NoneType)); check SLACK_APP_TOKEN (scope connections:write)"
    )
    assert "serving" not in done.stdout
    assert len(fake_slack.calls_of("apps.connections.open", ok=None)) == 1


def test_a_reconnect_without_a_url_stops_serve_with_its_reason(
    tmp_path: Path, fake_slack: FakeSlack, sandbox: Sandbox
) -> None:
    # A good start, then Slack drops the connection and the next URL never comes.
    fake_slack.socket_urls = deque([fake_slack.ws_url, None])
    done = serve_socket_mode(tmp_path, fake_slack, sandbox, APP_TOKEN, 60)
    assert "stagehold: serving Slack over Socket Mode" in done.stdout
    assert done.returncode == 2, done.stderr
    assert (
        "stagehold: Socket Mode lost its connection and cannot reconnect (apps.connections.open answered "
        "without a WebSocket url (got NoneType)); stopping"
    ) in done.stderr.splitlines()
    assert "AttributeError" not in done.stderr
    assert fake_slack.socket_handshakes == 1
    assert len(fake_slack.calls_of("apps.connections.open", ok=None)) == 2
