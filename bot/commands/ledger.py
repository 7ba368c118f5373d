"""``stagehold ledger verify|head|checkpoint|export|verify-file``: audit the hash-chained ledger.

Rules: these commands only read. There is no subcommand (and no code path) that updates or deletes
a ledger entry. Entries were masked before they were written, so exports are not masked again: an
export must hash exactly as stored, or it would not verify on its own.

Exit codes: 0 everything verified; 1 (``TAMPERED``) a bad entry, gap, truncation or a rewrite
against a saved head; 2 (``INVALID``) usage, unknown execution, unreadable file or database.

For ``verify-file`` the line between 1 and 2 is whether the file is an export at all: once its
first line is a ledger entry, any later line that is not one (cut off mid-line, edited into
something else) is damage to an export, exit 1 — as is a last line cut off mid-entry. A file
that does not start with a ledger entry (empty, binary, another format) is the wrong input, exit 2.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import sys
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from bot import exits
from bot.commands.arguments import db_option, execution_argument
from ledger.chain import (
    EXPORT_KEYS,
    Canonical,
    export_line,
    format_ts,
    parse_ts,
    verify_canonical,
    verify_chain,
)
from ledger.entry import Entry
from ledger.exported import exported_item
from ledger.store import CorruptEntry, LedgerReader, VerifyResult

if TYPE_CHECKING:
    from bot.settings import Settings
    from ledger.sql import SqlLedgerStore
    from ledger.witness import Witness


class _Usage(Exception):
    """A problem the operator fixes (bad argument, file or database): one line, exit 2."""


class _Damaged(Exception):
    """An export whose later lines are not ledger entries: truncated or edited, exit 1."""

    def __init__(self, path: Path, lineno: int, message: str, after: tuple[str, int] | None) -> None:
        super().__init__(f"{path}:{lineno}: {message}")
        self.path = path
        self.lineno = lineno
        self.message = message
        self.after = after


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("ledger", help="verify, checkpoint and export the hash-chained ledger")
    lsub = p.add_subparsers(dest="ledger_command", required=True, metavar="SUBCOMMAND")

    v = lsub.add_parser("verify", help="recompute every hash and link (one execution or all)")
    v.add_argument("execution", nargs="?", metavar="EXECUTION", help="execution id; all executions when omitted")
    v.add_argument("--head", metavar="FILE", help="checkpoint written by 'ledger head'; detects truncation")
    v.add_argument(
        "--witness", metavar="FILE", help="signed checkpoints (a file, or text pasted from the Slack thread)"
    )
    v.add_argument("--vkey", help="verifier key of the checkpoints (default: STAGEHOLD_WITNESS_VKEY or the bot's key)")
    db_option(v)
    v.set_defaults(handler=cmd_verify)

    c = lsub.add_parser("checkpoint", help="sign the head of an execution's chain with the bot's key (a signed note)")
    execution_argument(c)
    c.add_argument("--key", metavar="FILE", help="the bot's Ed25519 key (default: the STAGEHOLD_WITNESS_KEY setting)")
    c.add_argument("--append", metavar="FILE", help="also append it here (default: the STAGEHOLD_WITNESS_FILE setting)")
    db_option(c)
    c.set_defaults(handler=cmd_checkpoint)

    h = lsub.add_parser("head", help="print a checkpoint of an execution's chain as one JSON line")
    execution_argument(h)
    db_option(h)
    h.set_defaults(handler=cmd_head)

    e = lsub.add_parser("export", help="write an execution's entries as JSON Lines that verify on their own")
    execution_argument(e)
    e.add_argument("--out", metavar="FILE", help="write here instead of standard output")
    db_option(e)
    e.set_defaults(handler=cmd_export)

    f = lsub.add_parser("verify-file", help="verify an exported JSON Lines file without a database")
    f.add_argument("file", metavar="FILE", help="a file written by 'ledger export'")
    f.add_argument("--head", metavar="FILE", help="checkpoint written by 'ledger head'")
    f.set_defaults(handler=cmd_verify_file)


# ---------------------------------------------------------------- handlers


def cmd_verify(args: argparse.Namespace) -> int:
    return _guarded(_verify, args)


def cmd_head(args: argparse.Namespace) -> int:
    return _guarded(_head, args)


def cmd_checkpoint(args: argparse.Namespace) -> int:
    return _guarded(_checkpoint, args)


def cmd_export(args: argparse.Namespace) -> int:
    return _guarded(_export, args)


def cmd_verify_file(args: argparse.Namespace) -> int:
    return _guarded(_verify_file, args)


def _guarded(fn: Callable[[argparse.Namespace], int], args: argparse.Namespace) -> int:
    try:
        code = fn(args)
    except Exception as exc:
        # A key problem can only come from bot.keys having been imported: most runs never need
        # it (or the cryptography it loads), so it is not imported just to name the exception.
        keys = sys.modules.get("bot.keys")
        if not isinstance(exc, _Usage) and not (keys is not None and isinstance(exc, keys.KeyProblem)):
            raise
        print(f"stagehold ledger: {exc}", file=sys.stderr)
        return exits.INVALID
    return code


def _verify(args: argparse.Namespace) -> int:
    for flag, given in (("--head", args.head), ("--witness", args.witness)):
        if given and not args.execution:
            raise _Usage(f"{flag} needs an EXECUTION: a checkpoint belongs to one execution")
    head = _read_head(args.head, args.execution) if args.head else None
    witness = _read_witness(args.witness, args.vkey, args.execution) if args.witness else None
    with _open_reader(args.db) as store:
        if args.execution:
            if head is None:
                # With a checkpoint, an execution whose rows are all gone is truncation, not a typo.
                _require_known(store, args.execution)
            names = [args.execution]
        else:
            names = store.executions()
            if not names:
                print("no executions in the ledger", file=sys.stderr)
                return exits.OK
        code = exits.OK
        for name in names:
            result = _verify_stored(store, name, head)
            if result.ok and witness is not None:
                result = _verify_witnessed(store, name, witness)
            print(_describe(name, result))
            if not result.ok:
                code = exits.TAMPERED
        return code


def _verified_head(args: argparse.Namespace) -> VerifyResult:
    with _open_reader(args.db) as store:
        _require_known(store, args.execution)
        # A checkpoint of a chain that is already damaged would bless the damage.
        result = _verify_stored(store, args.execution, None)
    if not result.ok:
        print(_describe(args.execution, result), file=sys.stderr)
    return result


def _head(args: argparse.Namespace) -> int:
    result = _verified_head(args)
    if not result.ok:
        return exits.TAMPERED
    print(json.dumps({"execution": args.execution, "seq": result.checked, "hash": result.head_hash}))
    return exits.OK


def _checkpoint(args: argparse.Namespace) -> int:
    from bot.keys import witness_signer
    from ledger.witness import append_checkpoint, sign_checkpoint

    settings = _settings()
    signer = witness_signer(args.key or settings.witness_key, settings.witness_name)
    result = _verified_head(args)
    if not result.ok:
        return exits.TAMPERED
    note = sign_checkpoint(signer, args.execution, result.checked, result.head_hash)
    target = args.append or settings.witness_file
    if target:
        try:
            append_checkpoint(Path(target), note)
        except OSError as exc:
            raise _Usage(f"{target}: cannot append: {exc.strerror or exc}") from None
    sys.stdout.write(note)
    return exits.OK


def _export(args: argparse.Namespace) -> int:
    with _open_reader(args.db) as store:
        _require_known(store, args.execution)
        try:
            entries = store.read(args.execution)
        except CorruptEntry as exc:
            print(_describe(args.execution, _corrupt(exc)), file=sys.stderr)
            return exits.TAMPERED
    lines = [export_line(e) for e in entries]
    if args.out:
        _write_atomically(Path(args.out), lines)
    else:
        sys.stdout.writelines(lines)
        sys.stdout.flush()
    result = verify_chain(entries, args.execution)
    if not result.ok:
        # Still exported: an auditor needs the evidence. The exit code says it does not verify.
        print(f"warning: exported, but {_describe(args.execution, result)}", file=sys.stderr)
        return exits.TAMPERED
    return exits.OK


def _verify_file(args: argparse.Namespace) -> int:
    path = Path(args.file)
    try:
        fh = path.open("rb")
    except OSError as exc:
        raise _Usage(f"{path}: cannot read: {exc.strerror or exc}") from None
    with fh:
        export = _Export(path, fh)
        try:
            items = export.items()
            first = next(items, None)
            if first is None:
                raise _Usage(f"{path}: no ledger entries in the file")
            execution = first[0]
            head = _read_head(args.head, execution) if args.head else None
            result = verify_canonical(itertools.chain([first], items), execution, head, export.decode)
        except _Damaged as exc:
            if exc.after is None:
                print(f"{path}: TAMPERED at line {exc.lineno}: {exc.message}")
            else:
                print(f"{exc.after[0]}: TAMPERED at {path}:{exc.lineno} (after seq {exc.after[1]}): {exc.message}")
            return exits.TAMPERED
        except OSError as exc:
            raise _Usage(f"{path}: cannot read: {exc.strerror or exc}") from None
    print(_describe(execution, result))
    return exits.OK if result.ok else exits.TAMPERED


# ---------------------------------------------------------------- store access


@contextmanager
def _open_reader(db: str | None) -> Iterator[LedgerReader]:
    """The ledger, to read only: a SQLite file through sqlite3 (SQLAlchemy is not even imported),
    any other database, or a file the reader declines, through the SQLModel store."""
    import sqlite3

    from ledger.sqlite_reader import open_reader

    url = db or _settings_url()
    reader = open_reader(url)
    if reader is None:
        with _open_store(url) as store:
            yield store
        return
    try:
        yield reader
    except sqlite3.Error as exc:
        raise _Usage(f"database error on {url}: {_first_line(exc)}") from None
    finally:
        reader.close()


@contextmanager
def _open_store(db: str | None) -> Iterator[SqlLedgerStore]:
    # Imported here so `verify-file` (no database) does not pay for SQLAlchemy.
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError, SQLAlchemyError

    from ledger.sql import SqlLedgerStore

    url = db or _settings_url()
    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError) as exc:
        raise _Usage(f"invalid database URL: {_first_line(exc)}") from None
    shown = parsed.render_as_string(hide_password=True)
    if parsed.drivername.startswith("sqlite"):
        # SQLite would silently create an empty database for a mistyped path; auditing that
        # would report "no executions" instead of the typo.
        database = parsed.database or ""
        if database in ("", ":memory:") or not Path(database).is_file():
            raise _Usage(f"{shown}: database file not found")
    try:
        store = SqlLedgerStore(url)
    except (SQLAlchemyError, ImportError, ValueError) as exc:
        raise _Usage(f"cannot open database {shown}: {_first_line(exc)}") from None
    try:
        yield store
    except SQLAlchemyError as exc:
        raise _Usage(f"database error on {shown}: {_first_line(exc)}") from None
    finally:
        store.close()


def _settings_url() -> str:
    return _settings().database_url


def _settings() -> Settings:
    from bot.settings import SettingsError, load_settings

    try:
        return load_settings()
    except SettingsError as exc:
        raise _Usage(str(exc)) from None


def _require_known(store: LedgerReader, execution: str) -> None:
    if store.head(execution) is None:
        raise _Usage(f"unknown execution '{execution}': the ledger has no entries for it")


def _verify_stored(store: LedgerReader, execution: str, head: tuple[int, str] | None) -> VerifyResult:
    return store.verify(execution, head)


def _verify_witnessed(store: LedgerReader, execution: str, witness: Witness) -> VerifyResult:
    from ledger.witness import check_against_witness

    try:
        entries = store.read(execution)
    except CorruptEntry as exc:
        return _corrupt(exc)
    result = check_against_witness(entries, execution, witness.heads)
    if result.ok:
        latest = max(h.checkpoint.size for h in witness.heads)
        print(f"{execution}: agrees with {len(witness.heads)} witnessed head(s), the latest at seq {latest}")
    return result


def _corrupt(exc: CorruptEntry) -> VerifyResult:
    return VerifyResult(False, exc.seq, exc.reason, 0, "")


def _describe(execution: str, result: VerifyResult) -> str:
    if result.ok:
        return f"{execution}: ok, {result.checked} entries, head {result.checked} {result.head_hash}"
    return f"{execution}: TAMPERED at seq {result.first_bad_seq}: {result.reason}"


def _first_line(exc: BaseException) -> str:
    # SQLAlchemy wraps the driver error with the statement and a help link; the driver's
    # first line ("connection refused", "database ... does not exist") is what the operator needs.
    orig = getattr(exc, "orig", None)
    text = str(orig if orig is not None else exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


# ---------------------------------------------------------------- files


def _read_head(path_text: str, execution: str) -> tuple[int, str]:
    path = Path(path_text)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise _Usage(f"{path}: cannot read: {exc.strerror or exc}") from None
    except (UnicodeDecodeError, ValueError) as exc:
        raise _Usage(f"{path}: not a head checkpoint (not JSON: {exc})") from None
    if not (
        isinstance(data, dict)
        and isinstance(data.get("execution"), str)
        and type(data.get("seq")) is int
        and data["seq"] >= 1
        and isinstance(data.get("hash"), str)
    ):
        raise _Usage(f'{path}: not a head checkpoint; expected {{"execution": ..., "seq": N, "hash": "..."}}')
    if data["execution"] != execution:
        raise _Usage(f"{path}: checkpoint is for execution '{data['execution']}', not '{execution}'")
    return data["seq"], data["hash"]


def _read_witness(path_text: str, vkey: str | None, execution: str) -> Witness:
    """The trusted checkpoints of ``execution`` in a witness file; a forged one or none at all is a usage error."""
    from bot.keys import witness_verifier
    from ledger.witness import read_witness

    settings = _settings()
    verifier = witness_verifier(vkey or settings.witness_vkey, settings.witness_key, settings.witness_name)
    path = Path(path_text)
    try:
        text = path.read_bytes().decode("utf-8")
    except OSError as exc:
        raise _Usage(f"{path}: cannot read: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise _Usage(f"{path}: not UTF-8 text") from None
    witness = read_witness(text, verifier, execution)
    if witness.forged:
        raise _Usage(f"{path}: witness cannot be trusted: {'; '.join(witness.forged[:3])}")
    if not witness.heads:
        raise _Usage(
            f"{path}: no checkpoint of '{execution}' signed by {verifier.name}+{verifier.key_hex} "
            f"({witness.other_origins} of other executions, {witness.untrusted} signed by other keys)"
        )
    return witness


def _write_atomically(path: Path, lines: list[str]) -> None:
    # A half-written export that verifies as "truncated" would send an auditor the wrong way.
    import tempfile  # here: only an export to a file needs it

    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    except OSError as exc:
        raise _Usage(f"{path}: cannot write: {exc.strerror or exc}") from None
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as fh:
            fh.writelines(lines)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        Path(tmp).unlink(missing_ok=True)
        raise _Usage(f"{path}: cannot write: {exc.strerror or exc}") from None


def _refuse_constant(name: str) -> object:
    raise ValueError(f"{name} is not valid JSON")


class _Export:
    """An export file read line by line (one line in memory at a time), as ``verify_canonical`` items.

    For verify-file the line between 1 and 2 is whether the file is an export at all: once a line
    was a ledger entry, a later line that is not one (cut off, edited into something else) is damage.
    """

    def __init__(self, path: Path, lines: Iterable[bytes]) -> None:
        self.path = path
        self.lines = lines
        self.lineno = 0
        self._items: list[Canonical | None] = [None, None]  # the item before the current one, and the current

    @property
    def previous(self) -> tuple[str, int] | None:
        """(execution, seq) of the entry on the line before the current one, if any."""
        item = self._items[0]
        return (item[0], item[1]) if item is not None else None

    def items(self) -> Iterator[Canonical]:
        kept = self._items
        for lineno, line in enumerate(self.lines, start=1):
            item = exported_item(line)
            if item is None:
                if not line.strip():
                    continue
                self.lineno = lineno
                kept[0] = kept[1]
                entry = self.decode(line)
                item = (entry.execution_id, entry.seq, entry.prev_hash, entry.hash, None, entry)
            else:
                self.lineno = lineno
                kept[0] = kept[1]
            kept[1] = item
            yield item

    def decode(self, line: bytes | Entry) -> Entry:
        """The entry on the current line, read as JSON; a line that is none is damage or wrong input."""
        if isinstance(line, Entry):
            return line
        where = f"{self.path}:{self.lineno}"
        cut = not line.endswith(b"\n") and line.lstrip().startswith(b"{")  # every exported line ends with \n
        try:
            try:
                text = line.decode("utf-8")
            except UnicodeDecodeError:
                raise _Usage(f"{where}: not UTF-8 text") from None
            return _parse_line(text.removesuffix("\n"), where)
        except _Usage as exc:
            message = str(exc).removeprefix(f"{where}: ")
            if cut and message.startswith("not a JSON line"):
                raise _Damaged(
                    self.path, self.lineno, "truncated: the last line ends mid-entry", self.previous
                ) from None
            if self.previous is not None:
                raise _Damaged(self.path, self.lineno, message, self.previous) from None
            raise


def _parse_line(line: str, where: str) -> Entry:
    try:
        data = json.loads(line, parse_constant=_refuse_constant)
    except ValueError as exc:
        raise _Usage(f"{where}: not a JSON line: {exc}") from None
    if not isinstance(data, dict):
        raise _Usage(f"{where}: expected a JSON object (one ledger entry per line)")
    missing = [k for k in EXPORT_KEYS if k not in data]
    extra = sorted(set(data) - set(EXPORT_KEYS))
    if missing or extra:
        detail = "; ".join(
            part
            for part in (
                f"missing {', '.join(missing)}" if missing else "",
                f"unexpected {', '.join(extra)}" if extra else "",
            )
            if part
        )
        raise _Usage(f"{where}: not a ledger entry ({detail})")
    for key in ("execution", "ts", "kind", "actor", "prev", "hash"):
        if not isinstance(data[key], str):
            raise _Usage(f"{where}: '{key}' must be a string")
    if type(data["seq"]) is not int:
        raise _Usage(f"{where}: 'seq' must be an integer")
    if not isinstance(data["body"], dict):
        raise _Usage(f"{where}: 'body' must be a JSON object")
    try:
        ts = parse_ts(data["ts"])
    except ValueError:
        ts = None
    if ts is None or format_ts(ts) != data["ts"]:
        # The hash covers the timestamp text; a reformatted one is not the exported entry.
        raise _Usage(f"{where}: 'ts' is not a canonical timestamp (YYYY-MM-DDTHH:MM:SS.ffffffZ)")
    return Entry(
        execution_id=data["execution"],
        seq=data["seq"],
        ts=ts,
        kind=data["kind"],
        actor=data["actor"],
        body=data["body"],
        prev_hash=data["prev"],
        hash=data["hash"],
    )
