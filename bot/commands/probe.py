"""``stagehold probe PACKAGE``: read a package's signals and read-backs from its real targets once.

Exit 0 when every check would pass now, 3 when one would not (or a read-back cannot be read),
2 for an invalid package or settings. Nothing is written to any target or to the ledger.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import TYPE_CHECKING

from bot import exits
from bot.clock import utc_now

if TYPE_CHECKING:
    from execution.probe import ProbeReport


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("probe", help="read every signal and read-back of a package once; act on nothing")
    p.add_argument("package", metavar="PACKAGE", help="path to the change package YAML")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.set_defaults(handler=cmd_probe)


def cmd_probe(args: argparse.Namespace) -> int:
    from bot.bootstrap import http_client, live_connector
    from bot.commands.validate import load_or_report
    from bot.settings import SettingsError, load_settings
    from execution.probe import probe
    from execution.project import State

    change = load_or_report(args.package)
    if change is None:
        return exits.INVALID
    try:
        settings = load_settings()
    except SettingsError as exc:
        print(f"stagehold: {exc}", file=sys.stderr)
        return exits.INVALID
    client = http_client(settings.http_timeout_s)
    try:
        connect = live_connector(settings.credentials(), client, utc_now, read_timeout_s=settings.http_timeout_s)
        state = State("probe", package=change.package, plan=change.plan)
        report = probe(change.plan, connect(state), utc_now)
    finally:
        client.close()
    if args.json:
        print(json.dumps({"package": change.package.id, **report.to_json()}, indent=2, ensure_ascii=False))
    else:
        _print(change.package.id, report)
    return exits.OK if report.passes else exits.HELD


def _print(package: str, report: ProbeReport) -> None:
    print(f"probe of {package}: {'every check passes now' if report.passes else 'NOT every check passes now'}")
    for check in report.checks:
        r = check.result
        age = "-" if r.age_s is None else f"{r.age_s:.1f}s"
        samples = "-" if r.samples is None else str(r.samples)
        value = "-" if r.value is None else json.dumps(r.value)
        print(
            f"  {r.outcome.value.upper():<8} {r.kind:<9} {r.signal:<24} value {value:<12} age {age:<8} "
            f"samples {samples:<6} '{r.condition}'  [{', '.join(check.stages)}]"
        )
        if r.outcome.value != "pass":
            print(f"           {r.detail}")
    for rb in report.readbacks:
        print(f"  {rb.status.upper():<10} read-back {rb.stage} ({rb.direction}) on {rb.target}: {rb.detail}")
