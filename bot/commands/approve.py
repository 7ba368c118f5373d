"""``stagehold approve PACKAGE --key KEY`` and ``stagehold keygen``: approvers sign packages.

Rules: an approver signs only a package that validates (its plan digest included), and signs the
exact bytes that were validated; who signs in which role comes from the keyring when it lists the
key, so a signature never claims what the keyring will refuse. Exit 0 signed; 2 anything wrong.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from bot import exits
from bot.clock import utc_now

if TYPE_CHECKING:
    from execution.contract.keyring import KeyringEntry
    from ledger.note import Signer


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    a = sub.add_parser("approve", help="sign a change package with an approver's Ed25519 key")
    a.add_argument("package", metavar="PACKAGE", help="path to the change package YAML")
    a.add_argument("--key", required=True, metavar="FILE", help="the approver's private key (PEM)")
    a.add_argument("--keyring", metavar="FILE", help="trusted keyring (default: the STAGEHOLD_KEYRING setting)")
    a.add_argument("--name", help="key name, when the keyring does not list the key")
    a.add_argument("--as", dest="as_user", metavar="USER", help="signer's Slack user id, when the keyring does not")
    a.add_argument("--role", help="role signed in, when the keyring does not list the key")
    a.set_defaults(handler=cmd_approve)

    k = sub.add_parser("keygen", help="make an Ed25519 key for an approver or the bot, and print its verifier key")
    k.add_argument("--name", required=True, help="key name (no spaces or '+'), e.g. dana or cab.example.com/dana")
    where = k.add_mutually_exclusive_group(required=True)
    where.add_argument("--out", metavar="FILE", help="write a new private key here (PEM, mode 0600; never overwrites)")
    where.add_argument(
        "--key", metavar="FILE", help="print the verifier key of an existing PEM key (e.g. from openssl)"
    )
    k.add_argument("--owner", metavar="USER", help="Slack user id, for the printed keyring entry")
    k.add_argument("--role", help="approver role, for the printed keyring entry")
    k.set_defaults(handler=cmd_keygen)


def cmd_approve(args: argparse.Namespace) -> int:
    from bot.keys import KeyProblem

    try:
        return _approve(args)
    except KeyProblem as exc:
        print(f"stagehold approve: {exc}", file=sys.stderr)
        return exits.INVALID


def _approve(args: argparse.Namespace) -> int:
    from bot.keys import KeyProblem, read_signer
    from execution.approvals import Statement, sign_approval
    from execution.contract import InvalidChange, load_change
    from execution.contract.signatures import write_signature
    from ledger.note import NoteError, Signer

    path = Path(args.package)
    before = _read_bytes(path)
    try:
        change = load_change(path)
    except InvalidChange as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        print("stagehold approve: refusing to sign a package that does not validate", file=sys.stderr)
        return exits.INVALID
    data = _read_bytes(path)
    if data != before:
        raise KeyProblem(f"{path}: changed while it was being checked; sign again")
    name, owner, role = _identity(args)
    signer = read_signer(args.key, name)
    entry = _keyring_entry(args, signer)
    if entry is not None:
        name, owner, role = _agree(args, entry)
        signer = Signer(name, signer.private_key)
    elif not (args.name and owner and role):
        raise KeyProblem("the keyring does not list this key: give --name, --as and --role")
    assert owner is not None and role is not None
    digest = hashlib.sha256(data).hexdigest()
    try:
        note = sign_approval(signer, Statement(change.package.id, digest, owner, role, utc_now()))
        written = write_signature(path, signer.verifier.key_hex, note)
    except (ValueError, NoteError) as exc:
        raise KeyProblem(str(exc)) from None
    except OSError as exc:
        raise KeyProblem(f"cannot write the approval: {exc.strerror or exc}") from None
    print(f"signed {change.package.id} sha256 {digest}")
    print(f"  as {owner} ({role}) with key {signer.verifier.name}+{signer.verifier.key_hex}")
    print(f"  wrote {written}")
    if entry is None:
        print(f"  note: no keyring lists this key; add it to count: {signer.verifier.vkey}", file=sys.stderr)
    return exits.OK


def _read_bytes(path: Path) -> bytes:
    from bot.keys import KeyProblem

    try:
        return path.read_bytes()
    except OSError as exc:
        raise KeyProblem(f"{path}: cannot read: {exc.strerror or exc}") from None


def _identity(args: argparse.Namespace) -> tuple[str, str | None, str | None]:
    from bot.keys import KeyProblem
    from ledger.note import NoteError, check_key_name

    name = args.name or "approver"
    try:
        check_key_name(name)
    except NoteError as exc:
        raise KeyProblem(str(exc)) from None
    return name, args.as_user, args.role


def _keyring_entry(args: argparse.Namespace, signer: Signer) -> KeyringEntry | None:
    from bot.keys import read_keyring

    keyring_path = args.keyring or _keyring_setting()
    if not keyring_path:
        return None
    public = signer.verifier.public_key
    for entry in read_keyring(keyring_path).keys:
        if entry.verifier.public_key == public:
            return entry
    return None


def _agree(args: argparse.Namespace, entry: KeyringEntry) -> tuple[str, str, str]:
    from bot.keys import KeyProblem

    v = entry.verifier
    claims = (("--name", args.name, v.name), ("--as", args.as_user, entry.owner), ("--role", args.role, entry.role))
    for flag, given, listed in claims:
        if given and given != listed:
            raise KeyProblem(f"{flag} {given}: the keyring lists this key as {listed}")
    return v.name, entry.owner, entry.role


def _keyring_setting() -> str | None:
    from bot.keys import KeyProblem
    from bot.settings import SettingsError, load_settings

    try:
        return load_settings().keyring
    except SettingsError as exc:
        raise KeyProblem(str(exc)) from None


def cmd_keygen(args: argparse.Namespace) -> int:
    from bot.keys import KeyProblem, read_signer
    from ledger.note import NoteError, Signer, check_key_name, generate_private_key, private_key_pem

    try:
        check_key_name(args.name)
        if args.out:
            key = generate_private_key()
            _write_new(Path(args.out), private_key_pem(key))
            signer = Signer(args.name, key)
            print(f"wrote {args.out} (keep it private; it never goes into the packages directory)", file=sys.stderr)
        else:
            signer = read_signer(args.key, args.name)
    except (KeyProblem, NoteError) as exc:
        print(f"stagehold keygen: {exc}", file=sys.stderr)
        return exits.INVALID
    print(signer.verifier.vkey)
    if args.owner or args.role:
        print("# keyring entry:", file=sys.stderr)
        print(f"  - vkey: {signer.verifier.vkey}", file=sys.stderr)
        print(f"    owner: {args.owner or 'UXXXXXXX'}", file=sys.stderr)
        print(f"    role: {args.role or 'ROLE'}", file=sys.stderr)
    return exits.OK


def _write_new(path: Path, data: bytes) -> None:
    from bot.keys import KeyProblem

    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise KeyProblem(f"{path}: already exists; a key is never overwritten") from None
    except OSError as exc:
        raise KeyProblem(f"{path}: cannot write: {exc.strerror or exc}") from None
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
