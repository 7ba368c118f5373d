"""``stagehold`` command line: one parser, one sub-module per command group under bot/commands.

Every command returns an exit code from ``bot.exits``; no exception escapes as a traceback.
Arguments are checked before any command runs: text that is not UTF-8 (a terminal in another
encoding, a pasted byte string) is a usage error naming the argument, never a crash when the
ledger is written.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from typing import Any, NoReturn

from bot import exits
from bot.commands import COMMAND_GROUPS
from bot.commands.db import database_refusal
from ledger.masking import mask_text


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:  # argparse exits 2 by default too; keep one line
        self.print_usage(sys.stderr)
        print(f"stagehold: {message}", file=sys.stderr)
        raise SystemExit(exits.INVALID)


def version() -> str:
    # Imported here: importlib.metadata alone costs more than the rest of parsing a command.
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as package_version

    try:
        return package_version("stagehold")
    except PackageNotFoundError:  # running from a checkout that was never installed
        return "unknown"


class _Version(argparse.Action):
    """``--version``, looking the version up only when it is asked for."""

    def __init__(self, option_strings: list[str], dest: str = argparse.SUPPRESS, **kwargs: Any) -> None:
        kwargs.setdefault("help", "show program's version number and exit")
        super().__init__(option_strings, dest, default=argparse.SUPPRESS, nargs=0, **kwargs)

    def __call__(self, parser: argparse.ArgumentParser, *_: Any) -> None:
        print(f"stagehold {version()}")
        parser.exit()


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="stagehold",
        description="Carry an approved change through staged execution, and know when not to advance.",
        epilog="Exit codes: 0 ok · 1 ledger tampering · 2 invalid input · 3 held for a human · 4 rolled back · "
        "5 needs a human · 6 abandoned · 70 internal error · 124 watch deadline · 130 interrupted.",
    )
    parser.add_argument("--version", action=_Version)
    sub: Any = parser.add_subparsers(dest="command", required=True, parser_class=_Parser, metavar="COMMAND")
    for register in COMMAND_GROUPS:
        register(sub)
    return parser


def undecodable_argument(argv: Sequence[str]) -> str | None:
    """A one-line complaint about the first argument that is not UTF-8 text, or None.

    Python hands undecodable bytes over as lone surrogates; they would fail much later, when the
    ledger encodes an entry. Example: ``["release", "X", "--as", "U\udcff"]`` ->
    ``argument 4 (after --as) is not UTF-8 text: b'U\\xff'``.
    """
    for index, arg in enumerate(argv):
        try:
            arg.encode("utf-8")
        except UnicodeEncodeError:
            raw = os.fsencode(arg) if isinstance(arg, str) else arg
            after = f" (after {argv[index - 1]})" if index and str(argv[index - 1]).startswith("-") else ""
            shown = repr(raw).encode("ascii", "backslashreplace").decode("ascii")
            return f"argument {index + 1}{after} is not UTF-8 text: {shown}"
    return None


def main(argv: Sequence[str] | None = None) -> int:
    arguments = list(sys.argv[1:] if argv is None else argv)
    problem = undecodable_argument(arguments)
    if problem is not None:
        print(f"stagehold: {problem}", file=sys.stderr)
        return exits.INVALID
    parser = build_parser()
    args = parser.parse_args(arguments)
    try:
        code: int = args.handler(args)
    except KeyboardInterrupt:
        print("stagehold: interrupted; the ledger holds everything recorded so far", file=sys.stderr)
        code = exits.INTERRUPTED
    except BrokenPipeError:
        code = 0
    except Exception as exc:  # a bug: one line for the operator, the traceback on request
        import sqlite3  # the read-only commands read a SQLite ledger with it directly

        from sqlalchemy.exc import InterfaceError, OperationalError

        refusal = database_refusal(exc)
        if refusal is not None:  # a missing grant or table is set-up, not a bug
            print(f"stagehold: {mask_text(refusal)[:400]}", file=sys.stderr)
            return exits.INVALID
        if isinstance(exc, OperationalError | InterfaceError | sqlite3.OperationalError):
            # The database went away (restarted, failed over, unreachable): nothing is acted on
            # without its ledger entry, so running the command again when it is back is safe.
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            print(
                f"stagehold: the ledger database does not answer ({mask_text(first)[:300]}); "
                "nothing was acted on without its ledger entry: run the command again when it is back",
                file=sys.stderr,
            )
            return exits.INVALID
        if os.environ.get("STAGEHOLD_DEBUG"):
            import traceback  # here: only a failing command pays for it

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
