"""``stagehold validate PACKAGE`` and ``stagehold digest PLAN``."""

from __future__ import annotations

import argparse
import hashlib
import sys
from pathlib import Path

from bot import exits
from bot.clock import utc_now
from execution.contract import InvalidChange, load_change


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("validate", help="check a change package and the plan it pins")
    p.add_argument("package", metavar="PACKAGE", help="path to the change package YAML")
    p.set_defaults(handler=cmd_validate)
    d = sub.add_parser("digest", help="print the SHA-256 of a plan file, for the package's plan_sha256")
    d.add_argument("plan", metavar="PLAN", help="path to the execution plan YAML")
    d.set_defaults(handler=cmd_digest)


def cmd_validate(args: argparse.Namespace) -> int:
    try:
        change = load_change(args.package, now=utc_now())
    except InvalidChange as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        n = len(exc.problems)
        print(f"invalid: {n} problem{'s' if n != 1 else ''}", file=sys.stderr)
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
    return exits.OK


def cmd_digest(args: argparse.Namespace) -> int:
    try:
        print(hashlib.sha256(Path(args.plan).read_bytes()).hexdigest())
    except OSError as exc:
        print(f"{args.plan}: cannot read: {exc.strerror or exc}", file=sys.stderr)
        return exits.INVALID
    return exits.OK
