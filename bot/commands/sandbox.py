"""``stagehold sandbox``: serve the simulated control plane for rehearsals until interrupted."""

from __future__ import annotations

import argparse
import sys
import time

from bot import exits
from bot.clock import utc_now
from execution.sandbox_faults import FAULTS, MODES


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("sandbox", help="serve a simulated control plane on loopback for rehearsals")
    p.add_argument("--host", default="127.0.0.1", metavar="ADDRESS", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8099, metavar="N", help="port to listen on (default 8099; 0 picks one)")
    p.add_argument(
        "--package",
        action="append",
        default=[],
        metavar="PACKAGE",
        help="teach the sandbox this package's plan at start (repeatable); rehearsals teach theirs too",
    )
    p.add_argument(
        "--fault",
        action="append",
        default=[],
        metavar="FAULT",
        help=f"start with this fault active (repeatable): {', '.join(FAULTS)}, or signal:NAME={'|'.join(MODES)}",
    )
    p.set_defaults(handler=cmd_sandbox)


def cmd_sandbox(args: argparse.Namespace) -> int:
    from execution.contract import InvalidChange, load_change
    from execution.sandbox import Sandbox

    sandbox = Sandbox(host=args.host, port=args.port, clock=utc_now)
    for path in args.package:
        try:
            change = load_change(path)
        except InvalidChange as exc:
            for problem in exc.problems:
                print(problem, file=sys.stderr)
            return exits.INVALID
        sandbox.learn(change.plan)
    try:
        sandbox.set_faults(args.fault)
    except ValueError as exc:
        print(f"stagehold: {exc}", file=sys.stderr)
        return exits.INVALID
    try:
        sandbox.start()
    except OSError as exc:
        print(f"stagehold: cannot listen on {args.host}:{args.port}: {exc.strerror or exc}", file=sys.stderr)
        return exits.INVALID
    print(f"sandbox serving at {sandbox.url}", flush=True)
    for name, signals in sandbox.plans().items():
        print(f"  plan {name}: {', '.join(signals)}", flush=True)
    if args.fault:
        print(f"  faults: {', '.join(args.fault)}", flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        print("sandbox stopped", file=sys.stderr)
    finally:
        sandbox.stop()
    return exits.OK
