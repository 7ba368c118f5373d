"""Arguments several commands share, each with its help text and its check of what was typed."""

from __future__ import annotations

import argparse


def execution_argument(p: argparse.ArgumentParser) -> None:
    p.add_argument("execution", metavar="EXECUTION", help="execution id (see 'stagehold list')")


def db_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--db", metavar="URL", help="ledger database (default: the STAGEHOLD_DATABASE_URL setting)")


def user_id(text: str) -> str:
    """An ``--as`` value: a Slack user id (``U01DANA``) or another name without spaces or control
    characters, at most 100 characters — it is written to the ledger as the actor."""
    if not text or len(text) > 100 or any(c.isspace() or not c.isprintable() for c in text):
        raise argparse.ArgumentTypeError(
            "expected a user id such as U01DANA: no spaces or control characters, at most 100 characters"
        )
    return text


def reason_text(text: str) -> str:
    """A ``--reason``: one line of text a person reads later in the ledger."""
    if not text.strip() or len(text) > 1000 or any(not c.isprintable() for c in text):
        raise argparse.ArgumentTypeError("expected one line of text (1 to 1000 printable characters)")
    return text.strip()
