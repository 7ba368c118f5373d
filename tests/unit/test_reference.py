"""``docs/reference.md`` and the JSON Schema: generated from the models, current, complete, usable.

The reference is what a new user writes a plan from, so its worked example is validated and
rehearsed from the reference's own text, and the published schema must accept every bundled
example and refuse what ``validate`` refuses for shape.
"""

from __future__ import annotations

import json
import re
import typing
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from pydantic import BaseModel, Field

from bot import exits
from bot.cli import main
from bot.commands.schema import reference_text, schema_text
from execution.contract.messages import PATTERNS
from execution.contract.models import ChangePackage, Plan
from execution.contract.reference import missing_docs
from execution.contract.schema import FILE_NAMES, json_schema
from execution.contract.source import parse_yaml

ROOT = Path(__file__).resolve().parents[2]
REFERENCE = ROOT / "docs" / "reference.md"
EXAMPLES = ROOT / "examples"
EXAMPLE_NAMES = sorted(p.name for p in EXAMPLES.iterdir() if (p / "package.yaml").is_file())
REGENERATE = "run `.venv/bin/stagehold schema docs` in the checkout and commit the result"


# ---------------------------------------------------------------- current and complete


def test_reference_is_up_to_date() -> None:
    assert REFERENCE.read_text(encoding="utf-8") == reference_text(ROOT), (
        f"docs/reference.md is out of date with the models or examples/first-change: {REGENERATE}"
    )


@pytest.mark.parametrize("which", ["package", "plan"])
def test_published_schema_is_up_to_date(which: str) -> None:
    published = ROOT / "docs" / "schema" / FILE_NAMES[which]
    assert published.read_text(encoding="utf-8") == schema_text(which), (
        f"docs/schema/{FILE_NAMES[which]} is out of date with the models: {REGENERATE}"
    )


def test_every_field_has_a_description_and_an_example() -> None:
    missing = missing_docs()
    assert not missing, (
        "every model field needs Field(description=..., examples=[...]) — the reference, the schema "
        "and validation messages are built from them:\n" + "\n".join(missing)
    )


def test_a_field_without_a_description_is_caught() -> None:
    class Documented(BaseModel):
        a: int = Field(description="an a", examples=[1])

    class NewField(BaseModel):
        b: Documented = Field(description="a b", examples=[{"a": 1}])
        c: str = ""  # added without a description or an example

    assert missing_docs([NewField.model_json_schema()]) == ["NewField.c: no description or examples"]
    assert missing_docs([Documented.model_json_schema()]) == []


def _models(root: type[BaseModel]) -> list[type[BaseModel]]:
    """Every model reachable from ``root`` through field annotations (independent of the schema)."""
    seen: list[type[BaseModel]] = []

    def visit(tp: Any) -> None:
        if isinstance(tp, type) and issubclass(tp, BaseModel):
            if tp not in seen:
                seen.append(tp)
                for info in tp.model_fields.values():
                    visit(info.annotation)
            return
        for arg in typing.get_args(tp):
            visit(arg)

    visit(root)
    return seen


@pytest.mark.parametrize("root", [ChangePackage, Plan])
def test_every_field_of_every_model_is_in_the_reference(root: type[BaseModel]) -> None:
    text = REFERENCE.read_text(encoding="utf-8")
    for model in _models(root):
        heading = "Plan" if model is Plan else "ChangePackage" if model is ChangePackage else model.__name__
        section = text.split(f"\n### {heading}\n", 1)
        assert len(section) == 2, f"no section for {heading}"
        body = section[1].split("\n### ", 1)[0]
        for name, info in model.model_fields.items():
            shown = info.alias or name
            row = next((line for line in body.splitlines() if line.startswith(f"| `{shown}` |")), None)
            assert row is not None, f"{heading}.{shown} is not in the reference"
            assert info.description and info.description.split(":")[0].replace("``", "`")[:30] in row


def test_every_pattern_in_the_schemas_has_words() -> None:
    found: set[str] = set()

    def visit(node: Any) -> None:
        if isinstance(node, dict):
            if isinstance(node.get("pattern"), str):
                found.add(node["pattern"])
            found.update(k for k in node.get("patternProperties", {}))
            for value in node.values():
                visit(value)
        elif isinstance(node, list):
            for value in node:
                visit(value)

    visit([json_schema("package"), json_schema("plan")])
    assert found - set(PATTERNS) == set(), "add words for these patterns to execution/contract/messages.py PATTERNS"


@pytest.mark.parametrize("which", ["package", "plan"])
def test_every_example_fits_its_own_field(which: str) -> None:
    """An example shown in the reference and in messages is itself valid for its field."""
    root = json_schema(which)
    wrong = []
    for model in [root, *root.get("$defs", {}).values()]:
        for field, spec in model.get("properties", {}).items():
            check = jsonschema.Draft202012Validator(
                {"$defs": root.get("$defs", {}), **spec}, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER
            )
            for example in spec.get("examples", []):
                wrong += [f"{model.get('title')}.{field}: {e.message}" for e in check.iter_errors(example)]
    assert wrong == []


# ---------------------------------------------------------------- the worked example, from the doc text


def example_files_from_reference() -> dict[str, str]:
    text = REFERENCE.read_text(encoding="utf-8")
    blocks = dict(re.findall(r"<!-- file: first-change/(\S+) -->\n```yaml\n(.*?)```\n", text, re.S))
    assert set(blocks) == {"package.yaml", "plan.yaml"}, "the worked example's two files must be in the reference"
    return blocks


@pytest.fixture
def from_the_doc(tmp_path: Path) -> Path:
    folder = tmp_path / "first-change"
    folder.mkdir()
    for name, text in example_files_from_reference().items():
        (folder / name).write_text(text, encoding="utf-8")
    return folder / "package.yaml"


def test_worked_example_from_the_reference_validates(from_the_doc: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["validate", str(from_the_doc)]) == exits.OK
    out, _ = capsys.readouterr()
    assert "(matches approval)" in out
    assert "stage ten-percent" in out and "stage everyone" in out


def test_worked_example_from_the_reference_rehearses_to_completion(
    from_the_doc: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    code = main(
        [
            "rehearse",
            str(from_the_doc),
            "--auto-release",
            "--quiet",
            "--db",
            f"sqlite:///{tmp_path / 'l.db'}",
            "--out",
            str(out),
        ]
    )
    assert code == exits.OK, capsys.readouterr()
    state = json.loads((out / "state.json").read_text(encoding="utf-8"))
    assert [(s["id"], s["status"]) for s in state["stages"]] == [("ten-percent", "passed"), ("everyone", "passed")]


def test_worked_example_catches_a_failing_check(
    from_the_doc: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The fault the reference suggests trying ends in a rollback, as it says."""
    code = main(
        [
            "rehearse",
            str(from_the_doc),
            "--auto-release",
            "--quiet",
            "--fault",
            "dependency-down@everyone",
            "--db",
            f"sqlite:///{tmp_path / 'l.db'}",
        ]
    )
    assert code == exits.ROLLED_BACK, capsys.readouterr()


def test_worked_example_is_the_bundled_first_change() -> None:
    for name, text in example_files_from_reference().items():
        assert (EXAMPLES / "first-change" / name).read_text(encoding="utf-8").rstrip() == text.rstrip()


# ---------------------------------------------------------------- the schema, as an editor uses it


def validator(which: str) -> jsonschema.Draft202012Validator:
    schema = json.loads((ROOT / "docs" / "schema" / FILE_NAMES[which]).read_text(encoding="utf-8"))
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER)


@pytest.mark.parametrize("example", EXAMPLE_NAMES)
@pytest.mark.parametrize("which", ["package", "plan"])
def test_schema_accepts_every_bundled_example(example: str, which: str) -> None:
    data = parse_yaml((EXAMPLES / example / f"{which}.yaml").read_bytes()).data
    errors = [e.message for e in validator(which).iter_errors(data)]
    assert errors == []


def test_examples_point_editors_at_the_schema() -> None:
    for example in EXAMPLE_NAMES:
        for which in ("package", "plan"):
            first = (EXAMPLES / example / f"{which}.yaml").read_text(encoding="utf-8").splitlines()[0]
            assert first == f"# yaml-language-server: $schema=../../docs/schema/{FILE_NAMES[which]}"


@pytest.mark.parametrize(
    ("which", "path", "value"),
    [
        ("package", ("authorities", "two_person"), "no"),
        ("package", ("escalate_to",), "everyone"),
        ("package", ("channel",), "#changes"),
        ("package", ("targets", "bad name!"), {"kind": "http", "url": "https://x.internal"}),
        ("plan", ("stages", 0, "hold_befor"), True),
        ("plan", ("stages", 0, "verify", "every"), 30),
        ("plan", ("stages", 0, "verify", "every"), "soon"),
        ("plan", ("stages", 0, "verify", "checks", 0, "pass"), ">> 1"),
        ("plan", ("stages", 0, "verify", "on", "fail"), "continue"),
        ("plan", ("stagehold",), 2),
    ],
)
def test_schema_refuses_what_validate_refuses_for_shape(which: str, path: tuple[Any, ...], value: Any) -> None:
    data = parse_yaml((EXAMPLES / "payments-cutover" / f"{which}.yaml").read_bytes()).data
    node = data
    for part in path[:-1]:
        node = node[part]
    node[path[-1]] = value
    assert list(validator(which).iter_errors(data)), f"the schema accepts {path} = {value!r}"


# ---------------------------------------------------------------- the command


@pytest.mark.parametrize("which", ["package", "plan"])
def test_schema_command_prints_the_schema(which: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["schema", which]) == exits.OK
    printed = json.loads(capsys.readouterr().out)
    assert printed == json_schema(which)
    assert printed["$schema"] == "https://json-schema.org/draft/2020-12/schema"


def test_schema_docs_writes_the_reference_into_a_checkout(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "examples" / "first-change").mkdir(parents=True)
    for name in ("package.yaml", "plan.yaml"):
        (tmp_path / "examples" / "first-change" / name).write_bytes((EXAMPLES / "first-change" / name).read_bytes())
    assert main(["schema", "docs", "--root", str(tmp_path)]) == exits.OK
    assert (tmp_path / "docs" / "reference.md").read_text(encoding="utf-8") == REFERENCE.read_text(encoding="utf-8")
    assert "wrote docs/reference.md" in capsys.readouterr().out


def test_schema_docs_outside_a_checkout_is_a_one_line_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["schema", "docs", "--root", str(tmp_path)]) == exits.INVALID
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "run it in a checkout" in err
