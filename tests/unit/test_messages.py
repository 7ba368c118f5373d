"""Validation messages speak stagehold, not pydantic: what was expected, an example, what was given.

A table of bad inputs checks the exact words people read; a sweep puts wrong values of every kind
into every field of every bundled example and checks that no message leaks pydantic's wording.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from bot.cli import main
from execution.contract.load import Problem
from execution.contract.messages import did_you_mean, explain, flow
from execution.contract.schema import MODELS, cached_schema
from execution.contract.source import format_path, parse_yaml
from tests.unit.test_contract_fuzz import leaves, replaced
from tests.unit.test_contracts import (
    EXAMPLES,
    PAYMENTS,
    SORTER,
    TREASURY,
    Edit,
    line_of,
    make_variant,
    problems_of,
)

PYDANTIC_WORDS = (
    "Input should",
    "Field required",
    "type=",
    "pydantic",
    "validation error",
    "Value error",
    "Extra inputs",
    "should be a valid",
    "input_value",
    "errors.pydantic.dev",
)


def assert_in_our_voice(message: str) -> None:
    for words in PYDANTIC_WORDS:
        assert words not in message, f"pydantic wording {words!r} leaked: {message}"


# (example, edit, path, the whole message or the start of it, the line holding this text)
TABLE: dict[str, tuple[str, Edit, str, str, str]] = {
    "text-for-a-number": (
        PAYMENTS,
        Edit("plan", "blast_radius: 5\n", "blast_radius: five\n"),
        "stages[0].blast_radius",
        "expected a number ≥ 0, e.g. `blast_radius: 5`; got the text 'five'",
        "blast_radius: five",
    ),
    "number-for-a-name": (
        TREASURY,
        Edit("plan", "- id: shadow", "- id: 5"),
        "stages[0].id",
        "expected a name of letters, digits, '.', '_' or '-' (at most 63, starting with a letter or digit), "
        "e.g. `id: canary-5`; got the number 5",
        "- id: 5",
    ),
    "number-for-a-condition": (
        PAYMENTS,
        Edit("plan", 'pass: "< 3600"', "pass: 3600"),
        "rollback_readiness[1].pass",
        "expected a condition such as '< 0.01', '== true' or 'between 0.98 and 1.02', e.g. `pass: \"== true\"`; "
        "got the number 3600",
        "pass: 3600",
    ),
    "number-for-a-duration": (
        PAYMENTS,
        Edit("plan", "every: 30s", "every: 30"),
        "stages[0].verify.every",
        "expected a duration such as '30s', '5m' or '2h' (units ms, s, m, h, d), e.g. `every: 30s`; got the number 30",
        "every: 30",
    ),
    "yes-for-a-flag": (
        PAYMENTS,
        Edit("plan", "    hold_before: true\n", "    hold_before: yes\n"),
        "stages[1].hold_before",
        "expected true or false, e.g. `hold_before: true`; got the text 'yes' (YAML 1.2 reads 'yes' as text, "
        "not as a boolean)",
        "hold_before: yes",
    ),
    "one-for-a-flag": (
        PAYMENTS,
        Edit("package", "two_person: true", "two_person: 1"),
        "authorities.two_person",
        "expected true or false, e.g. `two_person: true`; got the number 1",
        "two_person: 1",
    ),
    "text-for-a-list": (
        PAYMENTS,
        Edit("package", "initiate: {users: [U05OPS]}", "initiate: {users: U05OPS}"),
        "authorities.initiate.users",
        "expected a list, each item a Slack id in capitals and digits, like U01DANA or S0CAB, "
        "e.g. `users: [U01DANA, U02LEE]`; got the text 'U05OPS'",
        "initiate:",
    ),
    "lowercase-slack-id": (
        PAYMENTS,
        Edit("package", "initiate: {users: [U05OPS]}", "initiate: {users: [u05ops]}"),
        "authorities.initiate.users[0]",
        "expected a Slack id in capitals and digits, like U01DANA or S0CAB, e.g. `users: [U01DANA, U02LEE]`; "
        "got the text 'u05ops'",
        "initiate:",
    ),
    "list-for-a-mapping": (
        PAYMENTS,
        Edit("package", 'window: {opens: "2026-11-28T22:00:00Z", closes: "2026-11-29T02:00:00Z"}', "window: [a, b]"),
        "window",
        'expected a mapping of fields (opens, closes), e.g. `window: {opens: "2026-11-28T22:00:00Z", '
        'closes: "2026-11-29T02:00:00Z"}`; got a list',
        "window: [a, b]",
    ),
    "empty-list": (
        PAYMENTS,
        Edit("package", "  targets: [payments-router]\n", "  targets: []\n"),
        "scope.targets",
        "expected a list, each item a name",
        "targets: []",
    ),
    "empty-checks": (
        "first-change",
        Edit(
            "plan",
            '      checks:\n        - {signal: checkout_success, pass: ">= 0.99", hold: ">= 0.98", min_samples: 100}\n',
            "      checks: []\n",
        ),
        "stages[0].verify.checks",
        "expected a list, each item a mapping of fields (signal, pass, hold, min_samples, consecutive_failure_limit) with at least 1 item",
        "checks: []",
    ),
    "not-a-path": (
        PAYMENTS,
        Edit("plan", "path: /parity", "path: parity"),
        "signals.settlement_parity.http.path",
        "expected a path that starts with '/' and has no spaces, e.g. `path: /parity`; got the text 'parity'",
        "path: parity",
    ),
    "not-a-url": (
        PAYMENTS,
        Edit("package", 'url: "https://router.payments.internal"', "url: router.payments.internal"),
        "targets.payments-router.url",
        "expected an http:// or https:// url without spaces",
        "url: router.payments.internal",
    ),
    "bad-name-key": (
        PAYMENTS,
        Edit("plan", "  vault_healthy:\n", "  vault healthy!:\n"),
        "signals.vault healthy!",
        "the text 'vault healthy!' cannot be used as a name here; expected a name of letters, digits",
        "vault healthy!",
    ),
    "method-not-allowed": (
        PAYMENTS,
        Edit("plan", "method: PUT", "method: GET"),
        "stages[0].action.http.method",
        "expected one of POST, PUT, PATCH, DELETE, e.g. `method: PUT`; got the text 'GET'",
        "method: GET",
    ),
    "reaction-continue": (
        PAYMENTS,
        Edit("plan", "fail: rollback,", "fail: continue,"),
        "stages[0].verify.on.fail",
        "expected one of hold, rollback, narrow, e.g. `fail: rollback`; got the text 'continue'",
        "fail: continue",
    ),
    "version-2": (
        PAYMENTS,
        Edit("plan", "stagehold: 1", "stagehold: 2"),
        "stagehold",
        "expected exactly 1, e.g. `stagehold: 1`; got the number 2",
        "stagehold: 2",
    ),
    "version-zero": (
        PAYMENTS,
        Edit("plan", "version: 7", "version: 0"),
        "version",
        "expected a whole number ≥ 1, e.g. `version: 7`; got the number 0",
        "version: 0",
    ),
    "fractional-version": (
        PAYMENTS,
        Edit("plan", "version: 7", "version: 7.5"),
        "version",
        "expected a whole number ≥ 1, e.g. `version: 7`; got the number 7.5",
        "version: 7.5",
    ),
    "missing-title": (
        PAYMENTS,
        Edit("package", "title: Move payment authorization to tokenization service v2\n", ""),
        "title",
        "required field is missing; expected text, e.g. `title: Move payment authorization to tokenization service v2`",
        "stagehold: 1",
    ),
    "missing-max-age": (
        PAYMENTS,
        Edit("plan", "    max_age: 120s\n", ""),
        "signals.settlement_parity.max_age",
        "required field is missing; expected a duration such as '30s', '5m' or '2h' (units ms, s, m, h, d), "
        "e.g. `max_age: 60s`",
        "settlement_parity:",
    ),
    "timestamp-not-a-time": (
        TREASURY,
        Edit("package", 'at: "2026-11-26T09:30:00Z"', 'at: "yesterday"'),
        "approved_by[0].at",
        'expected a timestamp with a time zone, like 2026-11-28T22:00:00Z, e.g. `at: "2026-11-27T16:02:00Z"`; '
        "got the text 'yesterday'",
        "yesterday",
    ),
    "misspelt-field": (
        PAYMENTS,
        Edit("plan", "    hold_before: true\n", "    hold_befor: true\n"),
        "stages[1].hold_befor",
        "unknown field 'hold_befor'; did you mean 'hold_before'?",
        "hold_befor",
    ),
    "misspelt-package-field": (
        PAYMENTS,
        Edit("package", "channel: C0CHANGES", "chanel: C0CHANGES"),
        "chanel",
        "unknown field 'chanel'; did you mean 'channel'?",
        "chanel",
    ),
    "misspelt-min-samples": (
        PAYMENTS,
        Edit("plan", "min_samples: 20", "minsamples: 20"),
        "stages[0].verify.checks[0].minsamples",
        "unknown field 'minsamples'; did you mean 'min_samples'?",
        "minsamples: 20",
    ),
    "unknown-field-far-from-any": (
        PAYMENTS,
        Edit("package", "channel: C0CHANGES\n", "channel: C0CHANGES\nescalate_to: everyone\n"),
        "escalate_to",
        "unknown field 'escalate_to'; the fields here are stagehold, kind, id, title, plan, plan_sha256, window, "
        "channel, scope, approved_by, approvals, authorities, targets",
        "escalate_to",
    ),
    "misspelt-signal-reference": (
        PAYMENTS,
        Edit("plan", "{signal: error_rate, pass:", "{signal: eror_rate, pass:"),
        "stages[0].verify.checks[0].signal",
        "signal 'eror_rate' is not defined under signals; did you mean 'error_rate'?",
        "eror_rate",
    ),
    "misspelt-readiness-reference": (
        PAYMENTS,
        Edit("plan", "{signal: legacy_healthy, pass:", "{signal: legacy_health, pass:"),
        "rollback_readiness[0].signal",
        "signal 'legacy_health' is not defined under signals; did you mean 'legacy_healthy'?",
        "legacy_health,",
    ),
    "misspelt-target-reference": (
        PAYMENTS,
        Edit(
            "plan",
            "http: {target: payments-router, path: /dependencies",
            "http: {target: payment-router, path: /dependencies",
        ),
        "signals.vault_healthy.http.target",
        "target 'payment-router' is not defined in the package; did you mean 'payments-router'?",
        "payment-router",
    ),
    "misspelt-rollback-to": (
        TREASURY,
        Edit("plan", "stages:\n", "rollback_to: shadw\nstages:\n"),
        "rollback_to",
        "rollback_to names stage 'shadw', which the plan does not have; did you mean 'shadow'?",
        "rollback_to: shadw",
    ),
    "two-sources": (
        PAYMENTS,
        Edit("plan", "  vault_healthy:\n", "  vault_healthy:\n    prometheus: {target: metrics, query: up}\n"),
        "signals.vault_healthy",
        "give exactly one of: prometheus, http, command, e.g. `signals: {legacy_healthy:",
        "vault_healthy:",
    ),
    "unquoted-condition": (
        "first-change",
        Edit("plan", 'pass: ">= 0.99",', "pass: >= 0.99,"),
        "(document)",
        'not valid YAML: found character that cannot start any token; quote conditions, e.g. pass: ">= 0.99"',
        "pass: >= 0.99",
    ),
    "explicit-bool-tag": (
        PAYMENTS,
        Edit("package", "two_person: true", "two_person: !!bool no"),
        "(document)",
        "cannot read value: 'no' does not fit its tag tag:yaml.org,2002:bool",
        "two_person",
    ),
}


@pytest.mark.parametrize("case", list(TABLE.values()), ids=list(TABLE))
def test_message_in_stagehold_voice(tmp_path: Path, case: tuple[str, Edit, str, str, str]) -> None:
    example, edit, path, message, line_text = case
    v = make_variant(tmp_path, example, (edit,))
    problems = problems_of(v)
    for p in problems:
        assert_in_our_voice(p.message)
    matches = [p for p in problems if p.path == path]
    assert matches, "\n".join(map(str, problems))
    problem = matches[0]
    assert problem.message.startswith(message), problem.message
    assert problem.file == v.shown(edit.file)
    assert problem.line == line_of(v.text(edit.file), line_text)


# ---------------------------------------------------------------- whole files of the wrong kind


def test_validating_a_plan_says_to_validate_its_package(capsys: pytest.CaptureFixture[str]) -> None:
    plan = EXAMPLES / PAYMENTS / "plan.yaml"
    assert main(["validate", str(plan)]) == 2
    err = capsys.readouterr().err.splitlines()
    line = line_of(plan.read_text(encoding="utf-8"), "kind: execution-plan")
    assert err == [
        f"{plan}:{line}: kind: this is an execution plan; validate the package that pins it "
        "(the change package whose `plan:` names this file)",
        "invalid: 1 problem",
    ]


def test_a_package_named_as_the_plan_says_so(tmp_path: Path) -> None:
    v = make_variant(tmp_path, PAYMENTS)
    v.plan.write_bytes(v.package.read_bytes())
    v.package.write_text(v.text("package").replace(v.package.read_text().split('plan_sha256: "')[1][:64], "0" * 64))
    problem = next(p for p in problems_of(v) if p.path == "kind")
    assert problem.message.startswith("this is a change package, not an execution plan")


def test_a_key_with_line_breaks_is_one_problem_on_one_line() -> None:
    """A hostile key (``\\r\\r``) used to split one problem over three output lines."""
    shown = str(Problem("package.yaml", 12, "scope.\r\r", "unknown field '\r\r'; the fields here are targets"))
    assert shown.splitlines() == [shown]
    assert "scope.\\r\\r" in shown


# ---------------------------------------------------------------- a closed window is a warning


def _validate_at(package: Path, now: datetime, monkeypatch: pytest.MonkeyPatch) -> int:
    monkeypatch.setattr("bot.commands.validate.utc_now", lambda: now)
    return main(["validate", str(package)])


def test_a_closed_window_is_a_warning_and_exit_0(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    package = EXAMPLES / PAYMENTS / "package.yaml"
    assert _validate_at(package, datetime(2026, 12, 1, 4, 30, tzinfo=UTC), monkeypatch) == 0
    out, err = capsys.readouterr()
    err = _without_query_window_advice(err)
    assert out.startswith("valid: CHG-2041")
    line = line_of(package.read_text(encoding="utf-8"), "window:")
    assert err == (
        f"warning: {package}:{line}: window.closes: the window closed at 2026-11-29T02:00:00Z (2d2h30m ago): "
        "a live run of this package will not start (rehearsals still run; they re-base the window); "
        "for a live run, have a package with a new window approved\n"
    )


@pytest.mark.parametrize("now", [datetime(2026, 11, 27, tzinfo=UTC), datetime(2026, 11, 28, 23, tzinfo=UTC)])
def test_no_warning_before_or_inside_the_window(
    now: datetime, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    assert _validate_at(EXAMPLES / PAYMENTS / "package.yaml", now, monkeypatch) == 0
    assert _without_query_window_advice(capsys.readouterr().err) == ""


def _without_query_window_advice(err: str) -> str:
    # The example's 1m rate windows are longer than its (absent) initial_delay: that advice is
    # about the plan, not about the change window these tests are for.
    return "".join(line for line in err.splitlines(True) if "(initial_delay)" not in line)


# ---------------------------------------------------------------- the sweep: every field, every wrong kind

WRONG_VALUES: list[Any] = [None, True, -1, 2.5, "", "not valid !", "no", [], [1, "x"], {}, {"zz_unknown": 1}]


@pytest.mark.parametrize("which", ["package", "plan"])
@pytest.mark.parametrize("example", [PAYMENTS, TREASURY, SORTER])
def test_no_pydantic_wording_anywhere(example: str, which: str) -> None:
    data = parse_yaml((EXAMPLES / example / f"{which}.yaml").read_bytes()).data
    root = cached_schema(which)
    seen = 0
    for path, _ in leaves(data):
        if not path:
            continue
        for value in WRONG_VALUES:
            try:
                MODELS[which].model_validate(replaced(data, path, value))
            except ValidationError as exc:
                for err in exc.errors(include_url=False):
                    loc, message = explain(err, root)
                    seen += 1
                    assert_in_our_voice(message)
                    assert message.strip(), (format_path(loc), err)
                    said = ("expected", "e.g.", "such as", "unknown field", "give exactly one of", "must be")
                    assert any(w in message for w in said), (format_path(loc), message)
    assert seen > 200


# ---------------------------------------------------------------- helpers


@pytest.mark.parametrize(
    ("value", "written"),
    [
        ("30s", "30s"),
        ("< 0.01", '"< 0.01"'),
        ("no", "no"),
        ("true", '"true"'),
        ("12", '"12"'),
        ("1e3", '"1e3"'),
        ("2026-11-28T22:00:00Z", '"2026-11-28T22:00:00Z"'),
        ({"tokenizer": 5, "on": True}, "{tokenizer: 5, on: true}"),
        ([1.5, None], "[1.5, null]"),
    ],
)
def test_examples_are_written_as_yaml_that_reads_back_the_same(value: Any, written: str) -> None:
    assert flow(value) == written
    assert parse_yaml(f"x: {written}\n".encode()).data == {"x": value}


def test_did_you_mean() -> None:
    assert did_you_mean("hold_befor", ["hold_before", "hold"]) == "; did you mean 'hold_before'?"
    assert did_you_mean("colour", ["id", "blast_radius"]) == ""
