"""Signed checkpoints of an execution's chain (c2sp.org/tlog-checkpoint), and checking a chain against them.

A checkpoint is a signed note (``ledger.note``) whose text is three lines:

    stagehold/CHG-2041-20261128T220000Z      origin: the log name, '/', the execution id
    17                                       size: the sequence number of the head entry
    q1B0yZ...=                               root: base64 of the 32 bytes of that entry's hash

    — stagehold Az3grlgt...                  the bot's Ed25519 signature line

Rules:

* One execution's chain is one log; the checkpoint's size is the head's ``seq`` and its root is
  the head's hash (stagehold's chain is a hash chain, not an RFC 6962 Merkle tree: a later head
  commits to every earlier entry through the ``prev`` links, so the chain itself is the
  consistency proof between two checkpoints).
* The signing key's name is the log name for every execution (one verifier key checks them all);
  the origin adds the execution id, so a checkpoint of one execution never passes for another's.
* A chain agrees with a checkpoint when it verifies on its own and its entry at ``size`` carries
  the checkpoint's root. A chain shorter than a checkpoint was truncated; an entry at ``size``
  with another hash was rewritten; two trusted checkpoints of one size with different roots show
  a fork (the signer was shown two histories).
* Only checkpoints signed by the trusted key count; a checkpoint carrying that key's name and id
  whose signature fails is a forged witness, never silently skipped.
"""

from __future__ import annotations

import base64
import binascii
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ledger.chain import verify_chain
from ledger.entry import Entry
from ledger.note import SIGNATURE_PREFIX, NoteError, Signer, Verifier, check_note, check_text, parse_note, sign_note
from ledger.store import VerifyResult


@dataclass(frozen=True)
class Checkpoint:
    origin: str
    size: int
    root: bytes

    @property
    def root_hex(self) -> str:
        return self.root.hex()

    def text(self) -> str:
        return f"{self.origin}\n{self.size}\n{base64.b64encode(self.root).decode()}\n"


def origin_for(log_name: str, execution_id: str) -> str:
    return f"{log_name}/{execution_id}"


def checkpoint_of(log_name: str, execution_id: str, seq: int, head_hash: str) -> Checkpoint:
    return Checkpoint(origin_for(log_name, execution_id), seq, bytes.fromhex(head_hash))


def sign_checkpoint(signer: Signer, execution_id: str, seq: int, head_hash: str) -> str:
    """The signed note of the head ``(seq, head_hash)`` of ``execution_id``'s chain.

    >>> from ledger.note import generate_private_key, parse_note
    >>> note = sign_checkpoint(Signer("stagehold", generate_private_key()), "CHG-1", 3, "ab" * 32)
    >>> parse_note(note).text
    'stagehold/CHG-1\\n3\\nq6urq6urq6urq6urq6urq6urq6urq6urq6urq6urq6s=\\n'
    """
    return sign_note(checkpoint_of(signer.name, execution_id, seq, head_hash).text(), signer)


def parse_checkpoint(text: str) -> Checkpoint:
    """The origin, size and root of a checkpoint's note text (extension lines are allowed, ignored)."""
    check_text(text)
    lines = text[:-1].split("\n")
    if len(lines) < 3 or any(not line for line in lines):
        raise NoteError("a checkpoint is at least three non-empty lines: origin, size, root hash")
    origin, size_text, root_text = lines[0], lines[1], lines[2]
    if not size_text.isascii() or not size_text.isdigit() or (size_text != "0" and size_text.startswith("0")):
        raise NoteError(f"checkpoint size {size_text[:40]!r} is not a decimal number without leading zeros")
    try:
        root = base64.b64decode(root_text.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError, ValueError):
        raise NoteError("checkpoint root hash is not standard base64") from None
    if len(root) != 32:
        raise NoteError(f"checkpoint root hash is 32 bytes, not {len(root)}")
    return Checkpoint(origin, int(size_text), root)


# ---------------------------------------------------------------- reading a witness


def find_notes(text: str) -> list[tuple[int, str]]:
    """Every signed note in ``text`` with the line it starts on.

    The text may be a file of notes one after another, a paste of Slack messages, or notes inside
    code fences: a note is a run of non-empty lines, one blank line, then ``— `` signature lines.
    """
    # A code fence opening or closing on a note's own line (```origin ... signature```) is not part of it.
    lines = [_unfenced(line) for line in text.replace("\r\n", "\n").split("\n")]
    found: list[tuple[int, str]] = []
    i = 0
    while i < len(lines):
        if lines[i].startswith(SIGNATURE_PREFIX) and i >= 2 and lines[i - 1] == "" and _is_body(lines[i - 2]):
            end = i
            while end < len(lines) and lines[end].startswith(SIGNATURE_PREFIX):
                end += 1
            start = i - 2
            while start > 0 and _is_body(lines[start - 1]):
                start -= 1
            body = lines[start : i - 1]
            found.append((start + 1, "\n".join(body) + "\n\n" + "\n".join(lines[i:end]) + "\n"))
            i = end
        else:
            i += 1
    return found


def _unfenced(line: str) -> str:
    if line.startswith("```") and line.strip("`").strip():
        line = line.lstrip("`")
    if line.endswith("```") and line.strip("`").strip():
        line = line.rstrip("`")
    return line


def _is_body(line: str) -> bool:
    stripped = line.strip()
    return bool(stripped) and not line.startswith(SIGNATURE_PREFIX) and not stripped.startswith("```")


@dataclass(frozen=True)
class WitnessedHead:
    line: int
    checkpoint: Checkpoint


@dataclass(frozen=True)
class Witness:
    """The trusted checkpoints of one execution found in a witness text, and what was set aside."""

    heads: tuple[WitnessedHead, ...]
    other_origins: int
    untrusted: int
    forged: tuple[str, ...]


def read_witness(text: str, verifier: Verifier, execution_id: str) -> Witness:
    """Collect the checkpoints of ``execution_id`` signed by ``verifier`` (never raises).

    Notes of other executions are counted, notes with no signature of ``verifier`` are untrusted,
    and a note whose ``verifier`` signature fails (or that does not parse as a checkpoint) is
    listed in ``forged`` with its line.
    """
    origin = origin_for(verifier.name, execution_id)
    heads: list[WitnessedHead] = []
    other = untrusted = 0
    forged: list[str] = []
    for line, data in find_notes(text):
        try:
            note = parse_note(data)
        except NoteError as exc:
            forged.append(f"line {line}: not a signed note: {exc}")
            continue
        check = check_note(note, (verifier,))
        if check.failed:
            forged.append(f"line {line}: signature by {verifier.name} does not verify")
            continue
        if not check.verified:
            untrusted += 1
            continue
        try:
            cp = parse_checkpoint(note.text)
        except NoteError as exc:
            forged.append(f"line {line}: signed, but not a checkpoint: {exc}")
            continue
        if cp.origin != origin:
            other += 1
            continue
        heads.append(WitnessedHead(line, cp))
    return Witness(tuple(heads), other, untrusted, tuple(forged))


def check_against_witness(entries: Sequence[Entry], execution_id: str, heads: Sequence[WitnessedHead]) -> VerifyResult:
    """Whether the chain ``entries`` is the history the witnessed heads saw; names the first disagreement.

    Worked example: heads at seq 5 and 12 were witnessed; the database now holds a chain of 12
    entries that verifies on its own but whose entry 9 was rewritten (and 10-12 re-hashed). Entry 5
    still agrees, entry 12 does not: the result is not ok, ``first_bad_seq`` 12, and the reason says
    that the history after seq 5 is not what was witnessed.
    """
    own = verify_chain(entries, execution_id)
    if not own.ok:
        return own
    by_size: dict[int, WitnessedHead] = {}
    for head in sorted(heads, key=lambda h: (h.checkpoint.size, h.line)):
        seen = by_size.get(head.checkpoint.size)
        if seen is not None and seen.checkpoint.root != head.checkpoint.root:
            return VerifyResult(
                False,
                head.checkpoint.size,
                f"fork: the witness holds two signed heads of seq {head.checkpoint.size} with different hashes "
                f"(lines {seen.line} and {head.line})",
                own.checked,
                own.head_hash,
            )
        by_size.setdefault(head.checkpoint.size, head)
    agreed = 0
    for size, head in sorted(by_size.items()):
        since = f"; it agrees up to the witnessed head at seq {agreed}" if agreed else ""
        if size > len(entries):
            return VerifyResult(
                False,
                len(entries) + 1,
                f"truncated: the witness saw seq {size} (line {head.line}), the chain ends at {len(entries)}{since}",
                own.checked,
                own.head_hash,
            )
        if size >= 1 and entries[size - 1].hash != head.checkpoint.root_hex:
            return VerifyResult(
                False,
                size,
                f"rewritten: entry {size} differs from the head the witness saw (line {head.line}){since}",
                own.checked,
                own.head_hash,
            )
        agreed = size
    return VerifyResult(True, None, "ok", own.checked, own.head_hash)


def append_checkpoint(path: Path, note: str) -> None:
    """Append one signed checkpoint to an append-only file (opened O_APPEND, flushed to disk).

    A blank line separates notes so the file stays readable; ``find_notes`` reads it back.
    """
    data = (note + "\n").encode("utf-8")
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    finally:
        os.close(fd)
