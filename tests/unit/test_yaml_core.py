"""Package and plan files are read with YAML 1.2 core-schema rules.

YAML 1.1 (PyYAML's default) reads ``no``, ``off``, ``yes``, ``on``, ``y`` and ``n`` as booleans,
so ``two_person: no`` once validated and switched two-person control off without a word. Under
the core schema only ``true``/``false`` (and ``True``/``TRUE``/``False``/``FALSE``) are booleans;
everything else is text, and a yes/no field given text is a ``file:line`` problem that says what
to write.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from execution.contract import load_change
from execution.contract.source import parse_yaml
from tests.unit.test_contracts import PAYMENTS, TREASURY, Edit, line_of, make_variant, problems_of

YAML11_BOOLEANS = ["no", "No", "NO", "off", "Off", "OFF", "yes", "Yes", "on", "ON", "y", "n", "Y", "N"]


@pytest.mark.parametrize("word", YAML11_BOOLEANS)
def test_two_person_written_as_a_yaml11_word_is_refused(tmp_path: Path, word: str) -> None:
    v = make_variant(tmp_path, PAYMENTS, (Edit("package", "two_person: true", f"two_person: {word}"),))
    problems = [p for p in problems_of(v) if p.path == "authorities.two_person"]
    assert len(problems) == 1, problems
    [problem] = problems
    assert problem.file == v.shown("package")
    assert problem.line == line_of(v.text("package"), f"two_person: {word}")
    assert "true or false" in problem.message
    assert "two_person: true" in problem.message  # says what to write
    assert repr(word) in problem.message


@pytest.mark.parametrize("written", ["0", "1", '"false"', '"true"', "[true]", "null"])
def test_two_person_given_anything_but_a_boolean_is_refused(tmp_path: Path, written: str) -> None:
    v = make_variant(tmp_path, PAYMENTS, (Edit("package", "two_person: true", f"two_person: {written}"),))
    [problem] = [p for p in problems_of(v) if p.path == "authorities.two_person"]
    assert "true or false" in problem.message


@pytest.mark.parametrize(("written", "value"), [("TRUE", True), ("True", True), ("FALSE", False), ("False", False)])
def test_core_schema_case_variants_are_booleans(tmp_path: Path, written: str, value: bool) -> None:
    v = make_variant(tmp_path, PAYMENTS, (Edit("package", "two_person: true", f"two_person: {written}"),))
    assert load_change(v.package).package.authorities.two_person is value


@pytest.mark.parametrize("field", ["hold_before", "irreversible", "retires_fallback"])
def test_stage_flags_written_yes_are_refused_not_read_as_true(tmp_path: Path, field: str) -> None:
    v = make_variant(tmp_path, PAYMENTS, (Edit("plan", f"    {field}: true\n", f"    {field}: yes\n"),))
    problem = next(p for p in problems_of(v) if p.path.endswith(f".{field}") and "true or false" in p.message)
    assert problem.file == v.shown("plan")
    assert problem.line == line_of(v.text("plan"), f"{field}: yes")
    assert f"{field}: true" in problem.message


@pytest.mark.parametrize("word", ["off", "on", "yes", "no", "y", "n"])
def test_a_stage_may_be_called_off(tmp_path: Path, word: str) -> None:
    v = make_variant(tmp_path, TREASURY, (Edit("plan", "- id: shadow", f"- id: {word}"),))
    assert load_change(v.package).plan.stages[0].id == word


def test_core_schema_scalars() -> None:
    doc = parse_yaml(
        b"a: no\nb: 012\nc: 0o12\nd: 0x1F\ne: 2026-11-28T22:00:00Z\nf: 1_000\ng: ~\nh: 1.5e3\ni: on\nj: FALSE\n"
    )
    assert doc.data == {
        "a": "no",
        "b": 12,  # decimal: a leading zero is not octal in YAML 1.2
        "c": 10,
        "d": 31,
        "e": "2026-11-28T22:00:00Z",  # no implicit timestamps; pydantic parses the text
        "f": "1_000",
        "g": None,
        "h": 1500.0,
        "i": "on",
        "j": False,
    }
    assert doc.lines[("i",)] == 9


@pytest.mark.parametrize(
    "text",
    [
        "a: !!bool no\n",
        "a: !!null x\n",
        "a: !!int ''\n",
        "a: !!int x\n",
        "a: !!float x\n",
        "a: !!timestamp 2026-01-01\n",
    ],
)
def test_explicit_tags_that_do_not_fit_are_a_problem_with_a_line(text: str) -> None:
    from execution.contract.source import SourceError

    with pytest.raises(SourceError) as caught:
        parse_yaml(b"x: 1\n" + text.encode())
    assert caught.value.line == 2
    assert caught.value.message.startswith("cannot read value")


def test_window_written_without_quotes_still_reads(tmp_path: Path) -> None:
    v = make_variant(
        tmp_path,
        PAYMENTS,
        (Edit("package", 'opens: "2026-11-28T22:00:00Z"', "opens: 2026-11-28T22:00:00Z"),),
    )
    assert load_change(v.package).package.window.opens.isoformat() == "2026-11-28T22:00:00+00:00"
