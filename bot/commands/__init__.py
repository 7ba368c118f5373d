"""Command groups of the ``stagehold`` CLI. Each module exposes ``register(subparsers)`` and sets
``handler`` on its parsers; handlers return an exit code from ``bot.exits``."""

from __future__ import annotations

import argparse
from collections.abc import Callable

from bot.commands import approve, db, execute, ledger, observe, probe, report, sandbox, schema, serve, validate

Register = Callable[["argparse._SubParsersAction[argparse.ArgumentParser]"], None]

COMMAND_GROUPS: list[Register] = [
    execute.register,
    observe.register,
    validate.register,
    schema.register,
    approve.register,
    probe.register,
    ledger.register,
    report.register,
    sandbox.register,
    serve.register,
    db.register,
]
