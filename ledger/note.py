"""Signed notes (c2sp.org/signed-note) with Ed25519 keys: write, parse and verify them (pure).

Rules, from the specification, kept byte for byte so that outside tools (Go's ``sumdb/note``,
transparency-log witnesses) read what stagehold signs:

* A note is UTF-8 text ending in a newline, then a blank line, then one or more signature lines
  ``— <key name> <base64(key id || signature)>`` (em dash U+2014, a space, the name, a space).
* No ASCII control character other than newline anywhere in a note.
* A signature covers the text *including* its final newline, not the blank line. The text may
  itself hold blank lines: the signatures start after the *last* blank line.
* Key names are non-empty and hold no Unicode space and no ``+``.
* key id = the first four bytes, big-endian, of SHA-256(key name || 0x0A || 0x01 || 32-byte
  Ed25519 public key); 0x01 is the Ed25519 signature type.
* A verifier key is written ``<name>+<8 hex digits of the key id>+<base64(0x01 || public key)>``.
* Verifying: a signature from a key the verifier does not know (name *and* id must match) is
  ignored; a known key whose signature does not verify rejects the note.

Nothing here reads files or the clock; parsing failures raise ``NoteError`` (a ``ValueError``).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

# cryptography is imported by the functions that sign or check: reading a package's approval
# policy, or a note's text, should not pay for loading it.
if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

ED25519: Final = 0x01
SIGNATURE_PREFIX: Final = "— "
MAX_SIGNATURES: Final = 100
MAX_NOTE_BYTES: Final = 1_048_576


class NoteError(ValueError):
    """A note, key or verifier key that does not have the specified form; the message says why."""


def check_key_name(name: str) -> str:
    if not name:
        raise NoteError("key name is empty")
    if "+" in name or any(ch.isspace() for ch in name) or _has_control(name):
        raise NoteError(f"key name {name!r} may not contain spaces, '+' or control characters")
    return name


def key_id(name: str, public_key: bytes) -> int:
    """The recommended key id of an Ed25519 key named ``name``.

    >>> key_id("example.com/witness", bytes(32)) == int.from_bytes(
    ...     hashlib.sha256(b"example.com/witness\\n\\x01" + bytes(32)).digest()[:4], "big")
    True
    """
    digest = hashlib.sha256(name.encode("utf-8") + b"\n" + bytes([ED25519]) + public_key).digest()
    return int.from_bytes(digest[:4], "big")


def _has_control(text: str) -> bool:
    return any(ord(ch) < 0x20 and ch != "\n" for ch in text)


def _b64decode(text: str, what: str) -> bytes:
    try:
        return base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError, ValueError):
        raise NoteError(f"{what} is not standard base64") from None


# ---------------------------------------------------------------- keys


@dataclass(frozen=True)
class Verifier:
    """A named Ed25519 public key: what a note's reader trusts."""

    name: str
    public_key: bytes

    def __post_init__(self) -> None:
        check_key_name(self.name)
        if len(self.public_key) != 32:
            raise NoteError(f"an Ed25519 public key is 32 bytes, not {len(self.public_key)}")

    @property
    def key_id(self) -> int:
        return key_id(self.name, self.public_key)

    @property
    def key_hex(self) -> str:
        """The key id as 8 lower-case hex digits, as verifier keys and file names show it."""
        return f"{self.key_id:08x}"

    @property
    def vkey(self) -> str:
        return f"{self.name}+{self.key_hex}+{base64.b64encode(bytes([ED25519]) + self.public_key).decode()}"

    def verifies(self, text: bytes, signature: bytes) -> bool:
        from cryptography.exceptions import InvalidSignature
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

        try:
            Ed25519PublicKey.from_public_bytes(self.public_key).verify(signature, text)
        except (InvalidSignature, ValueError):
            return False
        return True


def parse_vkey(text: str) -> Verifier:
    """Read a verifier key ``name+hexid+base64(0x01||key)``; the id must match the key."""
    text = text.strip()
    name, sep1, rest = text.partition("+")
    id_hex, sep2, key_b64 = rest.partition("+")
    if not (sep1 and sep2):  # the base64 part may itself hold '+'; the name and id never do
        raise NoteError("a verifier key is NAME+KEYID+BASE64KEY")
    if len(id_hex) != 8 or any(c not in "0123456789abcdef" for c in id_hex):
        raise NoteError("the key id of a verifier key is 8 lower-case hex digits")
    raw = _b64decode(key_b64, "the key of a verifier key")
    if len(raw) != 33 or raw[0] != ED25519:
        raise NoteError("only Ed25519 verifier keys (type 0x01, 32 bytes) are supported")
    verifier = Verifier(check_key_name(name), raw[1:])
    if verifier.key_hex != id_hex:
        raise NoteError(f"key id {id_hex} does not match the key (expected {verifier.key_hex})")
    return verifier


@dataclass(frozen=True)
class Signer:
    """A named Ed25519 private key."""

    name: str
    private_key: Ed25519PrivateKey

    def __post_init__(self) -> None:
        check_key_name(self.name)

    @property
    def verifier(self) -> Verifier:
        from cryptography.hazmat.primitives import serialization

        raw = self.private_key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        return Verifier(self.name, raw)


def generate_private_key() -> Ed25519PrivateKey:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    return Ed25519PrivateKey.generate()


def private_key_pem(key: Ed25519PrivateKey) -> bytes:
    """PKCS#8 PEM, the form ``openssl genpkey -algorithm ed25519`` writes and reads."""
    from cryptography.hazmat.primitives import serialization

    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def load_private_key(pem: bytes, password: bytes | None = None) -> Ed25519PrivateKey:
    """An Ed25519 private key from PEM (PKCS#8, as openssl writes it); anything else is a ``NoteError``."""
    from cryptography.exceptions import UnsupportedAlgorithm
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    try:
        key = serialization.load_pem_private_key(pem, password=password)
    except TypeError as exc:  # encrypted without a password, or a password for a plain key
        raise NoteError(f"cannot open the key: {exc}") from None
    except (ValueError, UnsupportedAlgorithm):
        raise NoteError("not a PEM private key") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise NoteError(f"not an Ed25519 key ({type(key).__name__.removeprefix('_')})")
    return key


# ---------------------------------------------------------------- notes


@dataclass(frozen=True)
class NoteSignature:
    name: str
    key_id: int
    signature: bytes

    @property
    def key_hex(self) -> str:
        return f"{self.key_id:08x}"

    def line(self) -> str:
        blob = base64.b64encode(self.key_id.to_bytes(4, "big") + self.signature).decode()
        return f"{SIGNATURE_PREFIX}{self.name} {blob}\n"


@dataclass(frozen=True)
class Note:
    text: str
    signatures: tuple[NoteSignature, ...]

    def encode(self) -> str:
        return self.text + "\n" + "".join(s.line() for s in self.signatures)


def check_text(text: str) -> str:
    """A note text must end in a newline and hold no control characters but newlines."""
    if not text.endswith("\n"):
        raise NoteError("a note text ends with a newline")
    if _has_control(text):
        raise NoteError("a note may not contain control characters other than newline")
    if text.startswith("\n") and text.strip("\n") == "":
        raise NoteError("a note text may not be empty")
    return text


def sign_note(text: str, *signers: Signer) -> str:
    """The signed note of ``text`` with one signature line per signer, in order."""
    check_text(text)
    if not signers:
        raise NoteError("a signed note needs at least one signature")
    data = text.encode("utf-8")
    sigs = tuple(NoteSignature(s.name, s.verifier.key_id, s.private_key.sign(data)) for s in signers)
    return Note(text, sigs).encode()


def parse_note(data: str | bytes) -> Note:
    """Split a signed note into its text and signature lines; the signatures are not checked here."""
    if isinstance(data, bytes):
        if len(data) > MAX_NOTE_BYTES:
            raise NoteError(f"a note is at most {MAX_NOTE_BYTES} bytes")
        try:
            data = data.decode("utf-8")
        except UnicodeDecodeError:
            raise NoteError("a note is UTF-8 text") from None
    if len(data) > MAX_NOTE_BYTES:
        raise NoteError(f"a note is at most {MAX_NOTE_BYTES} bytes")
    if _has_control(data):
        raise NoteError("a note may not contain control characters other than newline")
    split = data.rfind("\n\n")
    if split < 0:
        raise NoteError("no blank line before the signatures")
    text, block = data[: split + 1], data[split + 2 :]
    check_text(text)
    if not block.endswith("\n"):
        raise NoteError("the last signature line does not end with a newline")
    lines = block[:-1].split("\n")
    if len(lines) > MAX_SIGNATURES:
        raise NoteError(f"more than {MAX_SIGNATURES} signatures")
    sigs = []
    for line in lines:
        if not line.startswith(SIGNATURE_PREFIX):
            raise NoteError(f"a signature line starts with '— ' (em dash, space): {line[:40]!r}")
        name, sep, blob = line[len(SIGNATURE_PREFIX) :].partition(" ")
        if not sep or " " in blob:
            raise NoteError("a signature line is '— NAME BASE64'")
        check_key_name(name)
        raw = _b64decode(blob, "a signature")
        if len(raw) < 5:
            raise NoteError("a signature holds a 4-byte key id and the signature bytes")
        sigs.append(NoteSignature(name, int.from_bytes(raw[:4], "big"), raw[4:]))
    return Note(text, tuple(sigs))


@dataclass(frozen=True)
class NoteCheck:
    """What each signature of a note showed against a set of trusted verifiers."""

    verified: tuple[Verifier, ...]
    failed: tuple[Verifier, ...]
    unknown: tuple[NoteSignature, ...]

    @property
    def trusted(self) -> bool:
        """The specification's acceptance: some known key verified and no known key failed."""
        return bool(self.verified) and not self.failed


def check_note(note: Note, verifiers: tuple[Verifier, ...] | list[Verifier]) -> NoteCheck:
    """Check every signature of ``note`` against ``verifiers`` (never raises)."""
    known = {(v.name, v.key_id): v for v in verifiers}
    data = note.text.encode("utf-8")
    verified: list[Verifier] = []
    failed: list[Verifier] = []
    unknown: list[NoteSignature] = []
    for sig in note.signatures:
        v = known.get((sig.name, sig.key_id))
        if v is None:
            unknown.append(sig)
        elif v.verifies(data, sig.signature):
            if v not in verified:
                verified.append(v)
        else:
            failed.append(v)
    return NoteCheck(tuple(verified), tuple(failed), tuple(unknown))
