"""``stagehold`` command line: one parser, one sub-module per command group under bot/commands.

Every command returns an exit code from ``bot.exits``; no exception escapes as a traceback.
"""

from __future__ import annotations

import argparse
import os
import sys
import traceback
from collections.abc import Sequence
from typing import Any, NoReturn

from bot import exits
from bot.commands import COMMAND_GROUPS
from ledger.masking import mask_text


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:  # argparse exits 2 by default too; keep one line
        self.print_usage(sys.stderr)
        print(f"stagehold: {message}", file=sys.stderr)
        raise SystemExit(exits.INVALID)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="stagehold", description="Carry an approved change through staged execution.")
    sub: Any = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    for register in COMMAND_GROUPS:
        register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        code: int = args.handler(args)
    except KeyboardInterrupt:
        print("stagehold: interrupted", file=sys.stderr)
        code = 130
    except BrokenPipeError:
        code = 0
    except Exception as exc:  # a bug: one line for the operator, the traceback on request
        if os.environ.get("STAGEHOLD_DEBUG"):
            traceback.print_exc()
        print(
            f"stagehold: internal error: {type(exc).__name__}: {mask_text(str(exc))[:300]} "
            "(set STAGEHOLD_DEBUG=1 for the traceback); the ledger is unchanged by this failure",
            file=sys.stderr,
        )
        code = exits.INTERNAL
    return code


def run() -> None:
    raise SystemExit(main())


if __name__ == "__main__":
    run()
