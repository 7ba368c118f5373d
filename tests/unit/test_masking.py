"""Masking: nothing secret or account-like is written, posted, logged or exported in the clear."""

from __future__ import annotations

import re
import time
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from ledger.masking import MASK, mask

VISA = "4111111111111111"
MASTERCARD = "5500005555555559"
AMEX = "378282246310005"  # 15 digits


def luhn_valid(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch)
        if i % 2 == 1:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def visible_digits_of(card: str, masked: str) -> list[str]:
    """Every run of the card's digits that is still visible, longest first."""
    runs = re.findall(r"\d+", masked)
    return sorted((r for r in runs if r in card), key=len, reverse=True)


def assert_card_masked(card: str, masked: str) -> None:
    assert card not in re.sub(r"[ -]", "", masked), masked
    # At most the first 6 and last 4 remain visible.
    for run in re.findall(r"\d+", masked):
        assert len(run) <= 6 or run not in card, (run, masked)


# ---------------------------------------------------------------- card numbers


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (VISA, "411111******1111"),
        ("4111 1111 1111 1111", "411111******1111"),
        ("4111-1111-1111-1111", "411111******1111"),
        (AMEX, "378282*****0005"),
        ("3782 822463 10005", "378282*****0005"),
        ("pan=" + VISA + ".", "pan=411111******1111."),
        ("card " + MASTERCARD + " declined", "card 550000******5559 declined"),
        ("paid with *" + VISA + "*", "paid with *411111******1111*"),  # Slack bold
        ("`" + VISA + "`", "`411111******1111`"),
        ("ref:" + VISA + "/x", "ref:411111******1111/x"),
        ("4111111111111111111", "411111*********1111"),  # 19 digits
        ("12345678901234567890123", "123456*************0123"),  # a card inside a longer run
        ("123456789012", "123456789012"),  # 12 digits: not a card
        ("order 1234 5678 done", "order 1234 5678 done"),
    ],
)
def test_card_numbers_in_text(text: str, expected: str) -> None:
    assert mask(text) == expected


@pytest.mark.parametrize("value", [4111111111111111, 5500005555555559, 378282246310005])
def test_card_numbers_as_integers(value: int) -> None:
    masked = mask(value)
    assert isinstance(masked, str)
    assert_card_masked(str(value), masked)
    assert mask({"amount": 1250, "card": value})["amount"] == 1250


def test_small_numbers_and_booleans_pass_through() -> None:
    assert mask(42) == 42
    assert mask(0.01) == 0.01
    assert mask(True) is True
    assert mask(None) is None
    assert mask(123456789012) == 123456789012


# ---------------------------------------------------------------- credentials in free text


@pytest.mark.parametrize(
    ("text", "secret"),
    [
        ("Authorization: Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.sig", "eyJhbGciOiJIUzI1NiJ9"),
        ("authorization=Basic dXNlcjpwYXNzd29yZA==", "dXNlcjpwYXNzd29yZA"),
        ("sent header Bearer abcdef123456 to router", "abcdef123456"),
        ("bot token xoxb-1234567890-0987654321-AbCdEfGhIjKl in env", "xoxb-1234567890"),
        ("app token xapp-1-A0123456-789-abcdef0123", "A0123456-789"),
        ("user token xoxp-111111-222222-abcdef", "111111-222222"),
        ("password=hunter2 user=ops", "hunter2"),
        ("PASSWORD: 'correct horse battery'", "correct horse"),
        ('token="s3cr3t value"', "s3cr3t"),
        ("api_key=AKIA1234567890", "AKIA1234567890"),
        ("client_secret=abcd&x=1", "abcd"),
        ("https://x/cb?code=1&access_token=tok123abc&state=2", "tok123abc"),
        ("refresh_token: rrr111", "rrr111"),
        ("AWS_SECRET_ACCESS_KEY=wJalrXUtnFEMI", "wJalrXUtnFEMI"),
        ('{"access_token": "abc123xyz", "expires_in": 3600}', "abc123xyz"),
        ("postgresql://stagehold:s3cretpw@db.internal:5432/ledger", "s3cretpw"),
        (
            "key:\n-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEA7\nq1w2e3\n-----END RSA PRIVATE KEY-----\nafter",
            "MIIEowIBAAKCAQEA7",
        ),
        ("-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEA (cut off", "b3BlbnNzaC1rZXktdjEA"),
    ],
)
def test_credentials_in_text(text: str, secret: str) -> None:
    masked = mask(text)
    assert secret not in masked, masked
    assert MASK in masked


def test_text_around_credentials_survives() -> None:
    assert mask("password=hunter2 user=ops") == "password=*** user=ops"
    assert mask("key:\n-----BEGIN PRIVATE KEY-----\nabc\n-----END PRIVATE KEY-----\nafter") == "key:\n***\nafter"
    assert mask('{"access_token": "abc123xyz", "n": 1}') == '{"access_token": "***", "n": 1}'
    assert mask("checks passed: 3 of 3; tokens: 5") == "checks passed: 3 of 3; tokens: 5"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("IBAN DE89 3704 0044 0532 0130 00 for payout", "IBAN DE****************3000 for payout"),
        ("GB82WEST12345698765432", "GB****************5432"),
        ("NL91ABNA0417164300", "NL************4300"),
    ],
)
def test_iban_keeps_country_and_last_four(text: str, expected: str) -> None:
    assert mask(text) == expected


def test_words_that_look_like_an_iban_stay() -> None:
    assert mask("STAGEHOLD ROLLBACKREADY") == "STAGEHOLD ROLLBACKREADY"


# ---------------------------------------------------------------- structured data


@pytest.mark.parametrize(
    "key",
    [
        "token",
        "Token",
        "access_token",
        "password",
        "db_passwd",
        "secret",
        "client_secret",
        "Authorization",
        "api_key",
        "apiKey",
        "x-api-key",
        "credential",
        "cookie",
        "private_key",
        "signing_secret",
        "session_id",
        "cvv",
        "pin",
    ],
)
def test_sensitive_keys_are_blanked(key: str) -> None:
    masked = mask({key: "value-123", "other": "visible"})
    assert masked == {key: MASK, "other": "visible"}


def test_sensitive_key_keeps_none_and_booleans_but_blanks_structures() -> None:
    assert mask({"token": None, "password": False, "secret": {"a": 1}, "credential": [1, 2]}) == {
        "token": None,
        "password": False,
        "secret": MASK,
        "credential": MASK,
    }


@pytest.mark.parametrize(
    ("key", "value", "expected"),
    [
        ("iban", "DE89370400440532013000", "******************3000"),
        ("account_number", "12345678901", "*******8901"),
        ("card_number", 4111111111111111, "************1111"),
        ("pan", "4111111111111111", "************1111"),
        ("account_number", "1234", "****"),  # too short to show anything
    ],
)
def test_account_like_keys_keep_at_most_last_four(key: str, value: Any, expected: str) -> None:
    assert mask({key: value}) == {key: expected}


def test_plan_marked_sensitive_fields() -> None:
    data = {"merchant_ref": "M-778812", "Customer_Name": "Dana Lee", "amount": 12.5}
    assert mask(data, ["merchant_ref", "customer_name"]) == {
        "merchant_ref": MASK,
        "Customer_Name": MASK,
        "amount": 12.5,
    }
    assert mask(data) == data, "without the plan's list these are ordinary fields"


def test_nested_structures() -> None:
    data = {
        "request": {
            "headers": {"Authorization": "Bearer abc.def", "Accept": "application/json"},
            "json": {"cards": [VISA, {"note": "refund to 5500 0055 5555 5559 please"}]},
        },
        "evidence": [{"value": 0.004, "source": "prometheus"}, ("token=xyz123", 7)],
        "merchant": {"name": "ACME", "ref": "ignored"},
    }
    masked = mask(data, ["ref"])
    assert masked == {
        "request": {
            "headers": {"Authorization": MASK, "Accept": "application/json"},
            "json": {"cards": ["411111******1111", {"note": "refund to 550000******5559 please"}]},
        },
        "evidence": [{"value": 0.004, "source": "prometheus"}, ["token=***", 7]],
        "merchant": {"name": "ACME", "ref": MASK},
    }
    assert data["merchant"] == {"name": "ACME", "ref": "ignored"}, "the input is not modified"


# ---------------------------------------------------------------- idempotence


IDEMPOTENCE_CASES: list[Any] = [
    VISA,
    "4111 1111 1111 1111 and 5500-0055-5555-5559",
    "*" + VISA + "*",
    "12345678901234567890123",
    "Authorization: Bearer abc.def.ghi",
    "password='a b c' token=xyz",
    '{"access_token": "abc"}',
    "IBAN DE89 3704 0044 0532 0130 00",
    "-----BEGIN PRIVATE KEY-----\nabc\n-----END PRIVATE KEY-----",
    "postgresql://u:p4ss@h/db",
    {"iban": "DE89370400440532013000", "pan": 4111111111111111, "nested": [{"token": "x"}]},
    4111111111111111,
]


@pytest.mark.parametrize("value", IDEMPOTENCE_CASES)
def test_idempotent(value: Any) -> None:
    once = mask(value, ["nested"])
    assert mask(once, ["nested"]) == once


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(json_values)
def test_idempotent_on_arbitrary_data(value: Any) -> None:
    once = mask(value)
    assert mask(once) == once


# ---------------------------------------------------------------- no card survives (property)


@st.composite
def luhn_cards(draw: st.DrawFn) -> str:
    body = draw(st.text(alphabet="0123456789", min_size=15, max_size=15))
    body = draw(st.sampled_from("3456")) + body[1:]
    for check in "0123456789":
        if luhn_valid(body + check):
            return body + check
    raise AssertionError("unreachable: one check digit always fits")  # pragma: no cover


@st.composite
def grouped(draw: st.DrawFn, card: str) -> str:
    style = draw(st.sampled_from(["plain", "spaces", "dashes", "mixed"]))
    if style == "plain":
        return card
    groups = [card[i : i + 4] for i in range(0, 16, 4)]
    if style == "spaces":
        return " ".join(groups)
    if style == "dashes":
        return "-".join(groups)
    return "".join(g + draw(st.sampled_from(["", " ", "-"])) for g in groups[:-1]) + groups[-1]


surrounding = st.text(
    alphabet=st.characters(codec="utf-8") | st.sampled_from("0123456789 -*_:=/\n\"'`"),
    max_size=40,
)


@settings(max_examples=500, deadline=None)
@given(data=st.data(), card=luhn_cards(), before=surrounding, after=surrounding)
@example(data=None, card=VISA, before="*", after="*")
@example(data=None, card=VISA, before="1234", after="5678")
@example(data=None, card=VISA, before="4111 ", after=" 11")
def test_no_luhn_valid_card_survives_in_random_text(data: Any, card: str, before: str, after: str) -> None:
    assert luhn_valid(card)
    shown = data.draw(grouped(card)) if data is not None else card
    text = before + shown + after
    masked = mask(text)
    # Compare with separators removed, so a card regrouped by the surrounding text is still found.
    assert card not in re.sub(r"[\s-]", "", masked), (text, masked)
    assert mask(masked) == masked


@settings(max_examples=200, deadline=None)
@given(card=luhn_cards(), key=st.text(max_size=10))
def test_no_card_survives_as_a_value_anywhere(card: str, key: str) -> None:
    masked = mask({key: [int(card), card, {"x": card}]})
    flat = repr(masked)
    assert card not in flat, masked


# ---------------------------------------------------------------- cost


@pytest.mark.parametrize(
    "text",
    [
        "a." * 50_000,
        "a-" * 50_000,
        "a://b:" * 20_000,
        "1 " * 50_000,
        "1-" * 50_000,
        "password=" * 10_000,
        "x" * 200_000,
    ],
    ids=["dots", "dashes", "schemes", "spaced-digits", "dashed-digits", "assignments", "one-word"],
)
def test_masking_stays_linear_on_adversarial_text(text: str) -> None:
    # Masking runs on every Slack post and ledger append; a quadratic pattern here is a denial of service.
    started = time.perf_counter()
    mask(text)
    assert time.perf_counter() - started < 1.0


def test_digests_under_digest_keys_survive_intact() -> None:
    # A SHA-256 with a long digit run by chance must stay comparable after masking.
    digest = "1234567890123456789012345678901234567890123456789012345678901abc"
    masked = mask({"plan_sha256": digest, "head": digest, "note": "4111111111111111"})
    assert masked["plan_sha256"] == digest
    assert masked["head"] == digest
    assert masked["note"] == "411111******1111"


def test_digest_keys_do_not_shield_card_numbers() -> None:
    assert mask({"hash": "4111111111111111"})["hash"] == "4111111111111111"[:6] + "******" + "1111"
