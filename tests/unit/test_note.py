"""Signed notes (c2sp.org/signed-note): byte-for-byte with the published Go test vector, and every malformed form refused."""

from __future__ import annotations

import base64
import hashlib

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from ledger.note import (
    NoteError,
    Signer,
    Verifier,
    check_note,
    generate_private_key,
    key_id,
    load_private_key,
    parse_note,
    parse_vkey,
    private_key_pem,
    sign_note,
)

# The example of golang.org/x/mod/sumdb/note (its package documentation and tests): a public test vector.
GO_VKEY = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW"
GO_SEED = base64.b64decode("AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz")[1:]
GO_TEXT = "If you think cryptography is the answer to your problem,\nthen you don't know what your problem is.\n"
GO_NOTE = (
    GO_TEXT
    + "\n— PeterNeumann x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM=\n"
)


def go_signer() -> Signer:
    return Signer("PeterNeumann", Ed25519PrivateKey.from_private_bytes(GO_SEED))


def test_signing_reproduces_the_published_note_byte_for_byte() -> None:
    assert sign_note(GO_TEXT, go_signer()) == GO_NOTE
    assert go_signer().verifier.vkey == GO_VKEY


def test_key_id_is_sha256_of_name_newline_type_and_key() -> None:
    v = parse_vkey(GO_VKEY)
    expected = hashlib.sha256(b"PeterNeumann\n\x01" + v.public_key).digest()[:4]
    assert key_id("PeterNeumann", v.public_key) == int.from_bytes(expected, "big") == 0xC74F20A3


def test_the_published_note_verifies_and_an_altered_one_does_not() -> None:
    v = parse_vkey(GO_VKEY)
    check = check_note(parse_note(GO_NOTE), [v])
    assert check.trusted and check.verified == (v,)
    altered = check_note(parse_note(GO_NOTE.replace("cryptography", "cryptographY")), [v])
    assert not altered.trusted and altered.failed == (v,)


def test_a_key_with_the_same_name_but_another_id_is_ignored_not_failed() -> None:
    other = Signer("PeterNeumann", generate_private_key()).verifier
    check = check_note(parse_note(GO_NOTE), [other])
    assert check.verified == () and check.failed == () and len(check.unknown) == 1
    assert not check.trusted


def test_verifier_key_whose_base64_holds_a_plus() -> None:
    v = parse_vkey("TEST+7997405c+AQcC+FTVKf0jlTdHDY3rbevmnKxxPjigCXlVtGe6RIr6")
    assert v.name == "TEST" and v.key_hex == "7997405c"


@pytest.mark.parametrize(
    ("vkey", "message"),
    [
        ("PeterNeumann+c74f20a4+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW", "does not match"),
        ("PeterNeumann+c74f20a3+AhpcmQcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW", "only Ed25519"),
        ("PeterNeumann+c74f20a3", "is NAME"),
        ("PeterNeumann+C74F20A3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW", "lower-case hex"),
        ("Peter Neumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW", "spaces"),
        ("PeterNeumann+c74f20a3+not base64!", "base64"),
    ],
)
def test_bad_verifier_keys(vkey: str, message: str) -> None:
    with pytest.raises(NoteError, match=message):
        parse_vkey(vkey)


@pytest.mark.parametrize(
    ("note", "message"),
    [
        (GO_TEXT, "no blank line"),
        (GO_TEXT + "\n— PeterNeumann x08go", "does not end with a newline"),
        (GO_TEXT + "\n-- PeterNeumann AAAAAAAA\n", "starts with '— '"),
        (GO_TEXT + "\n— PeterNeumann\n", "'— NAME BASE64'"),
        (GO_TEXT + "\n— PeterNeumann AAAA\n", "4-byte key id"),
        (GO_TEXT + "\n— PeterNeumann ####\n", "base64"),
        ("tab\there\n\n— a AAAAAAAA\n", "control characters"),
        ("\n\n— a AAAAAAAAAA==\n", "empty"),
        (b"\xff\xfe\n\n- x\n", "UTF-8"),
    ],
)
def test_malformed_notes_are_refused(note: str | bytes, message: str) -> None:
    with pytest.raises(NoteError, match=message):
        parse_note(note)


def test_text_may_hold_blank_lines_the_last_one_separates() -> None:
    signer = Signer("example.com/poet", generate_private_key())
    text = "first stanza\n\nsecond stanza\n"
    note = parse_note(sign_note(text, signer))
    assert note.text == text
    assert check_note(note, [signer.verifier]).trusted


def test_several_signers_each_verify() -> None:
    a, b = Signer("a.example", generate_private_key()), Signer("b.example", generate_private_key())
    note = parse_note(sign_note("hello\n", a, b))
    check = check_note(note, [a.verifier, b.verifier])
    assert set(check.verified) == {a.verifier, b.verifier}


def test_pem_round_trip_and_refusals() -> None:
    key = generate_private_key()
    loaded = load_private_key(private_key_pem(key))
    assert Signer("x", loaded).verifier == Signer("x", key).verifier
    with pytest.raises(NoteError, match="not a PEM"):
        load_private_key(b"-----BEGIN PRIVATE KEY-----\nnope\n-----END PRIVATE KEY-----\n")
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    other = ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    with pytest.raises(NoteError, match="not an Ed25519 key"):
        load_private_key(other)


def test_verifier_refuses_short_keys_and_bad_names() -> None:
    with pytest.raises(NoteError, match="32 bytes"):
        Verifier("x", b"\x00" * 31)
    with pytest.raises(NoteError, match="'\\+'"):
        Verifier("a+b", b"\x00" * 32)
