"""``stagehold serve``: the Slack bot — engine, scheduler and notifier in one process.

Order of start: settings -> ledger store -> engine (the notifier listening) -> scheduler (every
unfinished execution is resumed: reconciled against the live target, then driven) -> Bolt app
(which checks the bot token with ``auth.test``) -> Socket Mode if ``SLACK_APP_TOKEN`` is set,
otherwise HTTP on ``--port`` / ``STAGEHOLD_PORT`` (in Socket Mode that port serves only
``/healthz``, ``/readyz`` and ``/metrics``). SIGTERM and SIGINT stop it cleanly: the
server first (no new clicks), then the scheduler, then the notifier; whatever Slack has not yet
received is posted by the next start, from the ledger.

With ``STAGEHOLD_REPORT_CHANNEL`` set, the checkpoint-review digest is posted there on
``STAGEHOLD_REPORT_SCHEDULE`` (``bot.digest``).

Missing settings fail at once with one line naming what to set (exit 2).
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from types import FrameType
from typing import TYPE_CHECKING

from bot import exits
from bot.clock import utc_now

if TYPE_CHECKING:
    from bot.app import HttpServer
    from bot.socket_mode import SocketModeRunner

CREDENTIALS = (
    "STAGEHOLD_CREDENTIAL_PREFLIGHT",
    "STAGEHOLD_CREDENTIAL_EXECUTOR",
    "STAGEHOLD_CREDENTIAL_VERIFIER",
    "STAGEHOLD_CREDENTIAL_ROLLBACK",
)


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("serve", help="run the Slack bot (Socket Mode with SLACK_APP_TOKEN, else HTTP)")
    p.add_argument("--port", type=int, metavar="N", help="HTTP port (default: STAGEHOLD_PORT or 3000)")
    p.add_argument("--host", metavar="ADDRESS", help="HTTP address (default: STAGEHOLD_HOST or 0.0.0.0)")
    p.add_argument(
        "--sandbox",
        metavar="URL",
        help="rehearsal server: executions started from Slack run against this sandbox, with compressed time",
    )
    p.add_argument(
        "--speed", type=float, default=60.0, metavar="N", help="time compression with --sandbox (default 60)"
    )
    p.set_defaults(handler=cmd_serve)


def _fail(message: str) -> int:
    print(f"stagehold: {message}", file=sys.stderr)
    return exits.INVALID


def cmd_serve(args: argparse.Namespace) -> int:
    # Bolt, slack_sdk and uvicorn load only here: every other command starts without them.
    from slack_bolt.error import BoltError
    from slack_sdk.errors import SlackApiError

    from bot.app import HttpServer, SlackBot
    from bot.bootstrap import open_runtime, process_owner
    from bot.digest import ScheduleError, parse_schedule
    from bot.keys import KeyProblem, approvals_checker, witness_signer
    from bot.logs import configure as configure_logs
    from bot.settings import SettingsError, load_settings
    from bot.socket_mode import SocketModeRunner, SocketModeUnusable
    from execution.model import Credentials
    from handlers.review import ReportSettings

    # A long-running service logs its own warnings (Slack retries, dropped messages) to stderr.
    configure_logs("text")
    owner = process_owner()  # this replica's lease owner name, also on every JSON log line
    try:
        settings = load_settings()
        configure_logs(settings.log_format, owner)
        settings.require("SLACK_BOT_TOKEN")
        socket_mode = settings.slack_app_token is not None and settings.slack_app_token.get_secret_value() != ""
        if not socket_mode:
            settings.require("SLACK_SIGNING_SECRET")
        if args.sandbox is None:
            settings.require(*CREDENTIALS)
        elif not args.speed > 0:
            return _fail("--speed must be greater than zero")
        digest_trigger = parse_schedule(settings.report_schedule) if settings.report_channel else None
        witness = witness_signer(settings.witness_key, settings.witness_name) if settings.witness_key else None
        runtime = open_runtime(settings.database_url, settings.http_timeout_s)
    except ScheduleError as exc:
        return _fail(f"invalid setting STAGEHOLD_REPORT_SCHEDULE: {exc}")
    except (SettingsError, KeyProblem) as exc:
        return _fail(str(exc))
    assert settings.slack_bot_token is not None
    if args.sandbox:
        connect = runtime.connector(Credentials({}), args.sandbox.rstrip("/"))
        mode, speed = "rehearsal", float(args.speed)
    else:
        connect = runtime.connector(settings.credentials(), read_timeout_s=settings.http_timeout_s)
        mode, speed = "live", 1.0
    secret = settings.slack_signing_secret.get_secret_value() if settings.slack_signing_secret else ""
    try:
        bot = SlackBot(
            store=runtime.store,
            connect=connect,
            bot_token=settings.slack_bot_token.get_secret_value(),
            signing_secret=secret,
            api_url=settings.slack_api_url,
            packages_dir=settings.packages_dir,
            start_mode=mode,
            start_speed=speed,
            report=ReportSettings(settings.report_period_s, settings.report_fast_release_s),
            digest_channel=settings.report_channel,
            digest_trigger=digest_trigger,
            approvals=approvals_checker(settings.keyring, utc_now),
            witness=witness,
            witness_file=settings.witness_file,
            owner=owner,
            lease_ttl_s=settings.lease_ttl_s,
            lease_renew_s=settings.lease_renew_s,
            lease_poll_s=settings.lease_poll_s,
            # Each replica looks for threads with undelivered entries as often as for lapsed leases.
            notifier_sweep_s=settings.lease_poll_s,
        )
    except BoltError as exc:
        runtime.close()
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        return _fail(f"Slack did not accept SLACK_BOT_TOKEN ({first}); check the token and STAGEHOLD_SLACK_API_URL")

    stop = threading.Event()
    fatal: list[str] = []  # why the bot cannot go on serving (set from Slack's threads)

    def on_fatal(reason: str) -> None:
        fatal.append(reason)
        stop.set()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
    server: HttpServer | SocketModeRunner | None = None
    ops_server: HttpServer | None = None
    host = args.host or settings.http_host
    port = args.port if args.port is not None else settings.http_port
    try:
        bot.start()
        if socket_mode:
            assert settings.slack_app_token is not None
            # No Slack request comes over HTTP here, but probes and the metrics scraper still do.
            try:
                ops_server = HttpServer(bot.ops(), host, port).start()
            except OSError as exc:
                return _fail(f"cannot listen on {host}:{port}: {exc.strerror or exc}")
            try:
                runner = SocketModeRunner(bot.app, settings.slack_app_token.get_secret_value())
                server = runner.start()
            except (SlackApiError, OSError, SocketModeUnusable) as exc:
                reason = exc.response.get("error") if isinstance(exc, SlackApiError) else str(exc)
                return _fail(f"Socket Mode did not connect ({reason}); check SLACK_APP_TOKEN (scope connections:write)")
            runner.on_fatal = on_fatal  # from now on, a reconnect that cannot work stops the process
            print(
                f"stagehold: serving Slack over Socket Mode (GET /healthz, /readyz, /metrics on {host}:{ops_server.port})",
                flush=True,
            )
        else:
            try:
                server = HttpServer(bot.endpoint(), host, port).start()
            except OSError as exc:
                return _fail(f"cannot listen on {host}:{port}: {exc.strerror or exc}")
            print(
                f"stagehold: serving Slack over HTTP on {host}:{server.port} (POST /slack/events, GET /healthz, /readyz, /metrics)",
                flush=True,
            )
        stop.wait()
        if fatal:
            return _fail(f"Socket Mode lost its connection and cannot reconnect ({fatal[0]}); stopping")
        print("stagehold: stopping", file=sys.stderr, flush=True)
        return exits.OK
    finally:
        if server is not None:
            server.stop()
        if ops_server is not None:
            ops_server.stop()
        bot.stop()
        runtime.close()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
