"""Key files and the keys named by settings: approver keys, the keyring, the bot's witness key.

Every failure is a ``KeyProblem`` with one line naming the file or setting (the CLI exits 2).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from datetime import datetime
from pathlib import Path

from execution import events as ev
from execution.approvals import ApprovalReport
from execution.contract import InvalidChange, LoadedChange
from execution.contract.keyring import Keyring, load_keyring
from execution.contract.signatures import approval_report
from ledger.entry import Entry
from ledger.note import NoteError, Signer, Verifier, load_private_key, parse_vkey
from ledger.witness import append_checkpoint, sign_checkpoint

log = logging.getLogger("stagehold.witness")


class KeyProblem(Exception):
    """A key, keyring or witness setting that cannot be used; the message is one line."""


def read_signer(path: str | Path, name: str) -> Signer:
    """The Ed25519 private key in the PEM file ``path``, under key name ``name``."""
    try:
        pem = Path(path).read_bytes()
    except OSError as exc:
        raise KeyProblem(f"{path}: cannot read: {exc.strerror or exc}") from None
    try:
        return Signer(name, load_private_key(pem))
    except NoteError as exc:
        raise KeyProblem(f"{path}: {exc}") from None


def read_keyring(path: str | Path) -> Keyring:
    try:
        return load_keyring(path)
    except InvalidChange as exc:
        raise KeyProblem("keyring: " + "; ".join(str(p) for p in exc.problems[:5])) from None


def witness_signer(key_file: str | None, name: str) -> Signer:
    if not key_file:
        raise KeyProblem("no witness key: set STAGEHOLD_WITNESS_KEY to the bot's Ed25519 key file (stagehold keygen)")
    return read_signer(key_file, name)


def witness_verifier(vkey: str | None, key_file: str | None, name: str) -> Verifier:
    """The verifier key of the bot's checkpoints: given as text, or derived from the bot's own key."""
    if vkey:
        try:
            return parse_vkey(vkey)
        except NoteError as exc:
            raise KeyProblem(f"witness verifier key: {exc}") from None
    if key_file:
        return witness_signer(key_file, name).verifier
    raise KeyProblem("no witness verifier key: pass --vkey (or set STAGEHOLD_WITNESS_VKEY or STAGEHOLD_WITNESS_KEY)")


def approvals_checker(
    keyring_path: str | None, clock: Callable[[], datetime]
) -> Callable[[LoadedChange], ApprovalReport | None]:
    """What a start checks: the package's approvals against the keyring, read afresh each time (so a
    revocation counts at once). No keyring configured: None, which a live start refuses. A bad
    keyring raises ``InvalidChange`` naming its file and line."""

    def check(change: LoadedChange) -> ApprovalReport | None:
        if not keyring_path:
            return None
        report, _problems = approval_report(change, load_keyring(keyring_path), clock())
        return report

    return check


class WitnessFile:
    """Engine listener: append a signed checkpoint to an append-only file at every hold, stage
    passed and end (``STAGEHOLD_WITNESS_FILE``). A failed write is logged, never blocks the engine."""

    def __init__(self, signer: Signer, path: Path) -> None:
        self.signer = signer
        self.path = path

    def __call__(self, execution_id: str, entries: Sequence[Entry]) -> None:
        for entry in entries:
            if entry.kind in ev.WITNESSED:
                try:
                    append_checkpoint(self.path, sign_checkpoint(self.signer, execution_id, entry.seq, entry.hash))
                except OSError as exc:
                    log.warning("witness file %s: %s", self.path, exc.strerror or exc)
