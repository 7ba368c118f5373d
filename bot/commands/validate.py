"""``stagehold validate PACKAGE`` and ``stagehold digest PLAN``."""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

from bot import exits
from bot.clock import utc_now

if TYPE_CHECKING:
    from execution.contract import LoadedChange


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("validate", help="check a change package and the plan it pins")
    p.add_argument("package", metavar="PACKAGE", help="path to the change package YAML")
    p.add_argument("--keyring", metavar="FILE", help="trusted approver keys (default: the STAGEHOLD_KEYRING setting)")
    p.set_defaults(handler=cmd_validate)
    d = sub.add_parser("digest", help="print the SHA-256 of a plan file, for the package's plan_sha256")
    d.add_argument("plan", metavar="PLAN", help="path to the execution plan YAML")
    d.set_defaults(handler=cmd_digest)


def load_or_report(path: str, *, count: bool = False, now: datetime | None = None) -> LoadedChange | None:
    """The change, or None after printing every problem on stderr (and, with ``count``, how many)."""
    from execution.contract import InvalidChange, load_change

    try:
        return load_change(path, now=now)
    except InvalidChange as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        if count:
            n = len(exc.problems)
            print(f"invalid: {n} problem{'s' if n != 1 else ''}", file=sys.stderr)
        return None


def cmd_validate(args: argparse.Namespace) -> int:
    change = load_or_report(args.package, count=True, now=utc_now())
    if change is None:
        return exits.INVALID
    pkg, plan = change.package, change.plan
    print(f"valid: {pkg.id} {pkg.title!r}")
    print(f"  plan {plan.name} v{plan.version} sha256 {change.plan_sha256} (matches approval)")
    print(f"  window {pkg.window.opens.isoformat()} .. {pkg.window.closes.isoformat()}  channel {pkg.channel}")
    for stage in plan.stages:
        marks = [
            m
            for m, on in (
                ("hold", stage.hold_before),
                ("promotes", stage.promotes),
                ("retires-fallback", stage.retires_fallback),
                ("irreversible", stage.irreversible),
            )
            if on
        ]
        print(f"  stage {stage.id:<22} blast {stage.blast_radius:>5g}  {' '.join(marks)}")
    # Warnings do not make the package invalid: the exit code stays 0.
    for warning in change.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    return _report_approvals(change, args.keyring)


def _report_approvals(change: LoadedChange, keyring_arg: str | None) -> int:
    """Who signed, what does not count and why, what is missing. Exit 0 either way: the package is valid."""
    from bot.settings_error import SettingsError
    from execution.approvals import policy_of
    from execution.contract import InvalidChange
    from execution.contract.signatures import approvals_dir, read_signatures

    policy = ", ".join(r.describe() for r in policy_of(change.package))
    report = None
    try:
        keyring = keyring_arg or _keyring_setting()
        if keyring:
            from bot.keys import approvals_checker

            report = approvals_checker(keyring, utc_now)(change)
    except (SettingsError, InvalidChange) as exc:
        print(f"stagehold validate: keyring: {exc}", file=sys.stderr)
        return exits.INVALID
    if report is None:
        found, _ = read_signatures(change.package_path)
        print(
            f"  approvals ({policy}): not checked, no keyring (set STAGEHOLD_KEYRING or pass --keyring); "
            f"{len(found)} signature file(s) in {approvals_dir(change.package_path)}"
        )
        return exits.OK
    print(f"  approvals needed: {policy}; checked over package sha256 {report.package_sha256}")
    for f in report.signatures:
        who = f"{f.owner} as {f.role}" if f.owner else "unknown signer"
        print(f"    {f.status:<8} {f.source}: {who}{' (' + f.key + ')' if f.key else ''}: {f.detail}")
    for m in report.missing:
        print(f"    missing  {m}")
    print(
        "  APPROVED: a live run may start"
        if report.approved
        else "  NOT APPROVED: a live run will be refused; a rehearsal runs UNSIGNED"
    )
    return exits.OK


def _keyring_setting() -> str | None:
    """The STAGEHOLD_KEYRING setting. Without that variable and without a ``.env`` file nothing can
    set it, so the settings (pydantic-settings, longer to load than validating a package) are read
    only when one of the two is there; the settings then decide, as for every other command."""
    if not any(name.upper() == "STAGEHOLD_KEYRING" for name in os.environ) and not Path(".env").exists():
        return None
    from bot.settings import load_settings

    return load_settings().keyring


def cmd_digest(args: argparse.Namespace) -> int:
    try:
        print(hashlib.sha256(Path(args.plan).read_bytes()).hexdigest())
    except OSError as exc:
        print(f"{args.plan}: cannot read: {exc.strerror or exc}", file=sys.stderr)
        return exits.INVALID
    return exits.OK
