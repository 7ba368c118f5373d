"""``docs/reference.md``: the package and plan reference, generated from the models.

Rules:
* Walk the JSON Schema (``schema.py``), never a hand-kept list: every model reachable from
  ``ChangePackage`` and ``Plan`` gets a section, every field a row (type, required or default,
  example, description), so a field added to a model appears without touching this file.
* ``missing_docs`` lists fields without a description or an example; the reference test fails on
  any, so a new field is documented when it is added.
* The worked example is the text of ``examples/first-change`` as given, so the test that validates
  and rehearses the example from the reference's own text proves the reference works.
"""

from __future__ import annotations

import inspect
from typing import Any

from execution.contract import rules
from execution.contract.messages import FORMAT_WORDS, PATTERNS, flow
from execution.contract.schema import FILE_NAMES, cached_schema, resolve

EXAMPLE_DIR = "examples/first-change"
REGENERATE = "stagehold schema docs"
SECTION_TITLES = {"package": "Change package", "plan": "Execution plan"}


def _models_in_order(root: dict[str, Any]) -> list[str]:
    """Model names reachable from the root, depth first, each once (the root is called "")."""
    order: list[str] = []

    def visit(node: Any) -> None:
        if isinstance(node, dict):
            ref = node.get("$ref")
            if isinstance(ref, str):
                name = ref.rsplit("/", 1)[-1]
                if name not in order:
                    order.append(name)
                    visit(root["$defs"][name].get("properties", {}))
            for key, value in node.items():
                if key not in ("examples", "default"):
                    visit(value)
        elif isinstance(node, list):
            for value in node:
                visit(value)

    visit(root.get("properties", {}))
    return order


def _model(root: dict[str, Any], name: str) -> dict[str, Any]:
    return root if name == "" else dict(root["$defs"][name])


def missing_docs(roots: list[dict[str, Any]] | None = None) -> list[str]:
    """``Model.field`` of every field that has no description or no example (in the package and
    plan schemas unless ``roots`` names others)."""
    out = []
    for root in roots if roots is not None else [cached_schema("package"), cached_schema("plan")]:
        for name in ["", *_models_in_order(root)]:
            model = _model(root, name)
            for field, spec in model.get("properties", {}).items():
                what = [w for w in ("description", "examples") if not spec.get(w)]
                if what:
                    out.append(f"{name or root.get('title')}.{field}: no {' or '.join(what)}")
    return out


def type_words(root: dict[str, Any], node: dict[str, Any]) -> str:
    """A short type for the reference's tables, linking models to their sections."""
    ref = node.get("$ref")
    if isinstance(ref, str):
        name = ref.rsplit("/", 1)[-1]
        return f"[{name}](#{name.lower()})"
    options = [o for o in node.get("anyOf", []) if o.get("type") != "null"]
    if len(options) == 1:
        return type_words(root, options[0])
    if "const" in node:
        return f"exactly `{flow(node['const'])}`"
    if "enum" in node:
        return "one of " + ", ".join(f"`{flow(v)}`" for v in node["enum"])
    kind = node.get("type")
    if kind == "boolean":
        return "`true` or `false`"
    if kind in ("integer", "number"):
        words = "whole number" if kind == "integer" else "number"
        return words + (f" ≥ {flow(node['minimum'])}" if "minimum" in node else "")
    if kind == "string":
        if node.get("format") in ("condition", "duration"):
            return f"[{node['format']}](#values)"
        if node.get("format") == "date-time":
            return "[timestamp](#values)"
        if "pattern" in node:
            label = PATTERNS.get(node["pattern"], ("text",))[0]
            return f"[{label}](#values)"
        return "text"
    if kind == "array":
        return "list of " + type_words(root, node.get("items", {}))
    if kind == "object":
        if node.get("patternProperties"):
            value = next(iter(node["patternProperties"].values()))
            return "mapping of [name](#values) → " + type_words(root, value)
        return "mapping of text → any value"
    return "any value"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _default(spec: dict[str, Any], required: bool) -> str:
    if required:
        return "**required**"
    if "default" not in spec or spec["default"] is None or spec["default"] == [] or spec["default"] == {}:
        return "optional"
    return f"`{_cell(flow(spec['default']))}`"


def _section(root: dict[str, Any], name: str, where: str) -> list[str]:
    model = _model(root, name)
    title = name or str(root.get("title"))
    lines = [f"### {title}", ""]
    if model.get("description"):
        lines += [str(model["description"]).replace("``", "`"), ""]
    if where:
        lines += [where, ""]
    lines += ["| field | type | required / default | example | what it means and the rule it serves |"]
    lines += ["|---|---|---|---|---|"]
    required = set(model.get("required", []))
    for field, spec in model.get("properties", {}).items():
        examples = spec.get("examples") or []
        example = f"`{_cell(flow(examples[0]))}`" if examples else ""
        description = _cell(str(spec.get("description", "")).replace("``", "`"))
        lines.append(
            f"| `{field}` | {type_words(root, spec)} | {_default(spec, field in required)} | {example} | {description} |"
        )
    return [*lines, ""]


def _values() -> list[str]:
    lines = ["| value | written as |", "|---|---|"]
    for label, words in PATTERNS.values():
        lines.append(f"| {label} | {_cell(words)} |")
    lines.append(f'| timestamp | {FORMAT_WORDS["date-time"]}, quoted: `"2026-11-28T22:00:00Z"` |')
    return lines


def _rules() -> list[str]:
    """The numbered list of ``rules.py``'s docstring, where the rules are kept."""
    doc = inspect.getdoc(rules) or ""
    body = doc.split("Rules (the numbers match the README's list):", 1)[-1].strip()
    return body.split("\n\n", 1)[0].replace("``", "`").splitlines()


INTRO = f"""# Plan and package reference

<!-- Generated from the models by `{REGENERATE}`; do not edit by hand. -->

A change runs from two YAML files. The **change package** is the approved, read-only authority
to execute: scope, protected boundaries, window, approvers, who may release and roll back, and
the SHA-256 of the exact plan approved. The **execution plan** is the runbook: signals, stages,
preflight, actions, read-backs, verification and rollback. `stagehold validate PACKAGE` checks
both; `stagehold rehearse PACKAGE` runs the plan against the built-in sandbox, a simulated
control plane on loopback (the README's sandbox section says what it simulates).

Every field below comes from the models stagehold validates with; the same descriptions and
examples appear in editors (JSON Schema) and in validation messages.
"""

STEPS = """## Your first change, step by step

1. Copy the two files below into a folder (`first-change/package.yaml`, `first-change/plan.yaml`).
   Their first line points an editor at the schema; [Editor support](#editor-support) says how
   to point it at a copy of your own.
2. Change the plan to your system: targets, paths, signals, thresholds, stages.
3. Pin the plan: `stagehold digest first-change/plan.yaml` prints the SHA-256; put it in the
   package's `plan_sha256`. Any later byte changed in the plan (a comment included) must be
   approved again with a new digest.
4. Check both: `stagehold validate first-change/package.yaml` exits 0 and lists the stages, or
   prints every problem as `file:line: path: message` and exits 2. A window that has already
   closed is a warning and the exit code stays 0 (a live run would not start; a rehearsal would).
5. Rehearse: `stagehold rehearse first-change/package.yaml --auto-release` runs every stage
   against the sandbox; `--fault dependency-down@everyone` shows what a failing check does.

The example: one flag turned on for 10% of shoppers, then (after a human release, because the
blast radius widens) for everyone; each stage bakes while the checkout success ratio stays at or
above 0.99, and the way back (the old checkout) must stay healthy throughout.
"""

EDITORS = """## Editor support

stagehold publishes JSON Schema for both files, generated from the same models:

```sh
stagehold schema package > package.schema.json
stagehold schema plan > plan.schema.json
```

Editors that use [yaml-language-server](https://github.com/redhat-developer/yaml-language-server)
(VS Code with the Red Hat YAML extension, Neovim, Helix, JetBrains through LSP) then complete
field names, show these descriptions on hover and flag wrong types as you type. Point a file at
its schema with a first-line comment (the examples do this; the path is relative to the file):

```yaml
# yaml-language-server: $schema=../../docs/schema/plan.schema.json
```

or for every file of a kind, in VS Code's `settings.json`:

```json
"yaml.schemas": {
  "./docs/schema/package.schema.json": "**/package.yaml",
  "./docs/schema/plan.schema.json": "**/plan.yaml"
}
```

The schema catches shape and types; `stagehold validate` is still the judge (digest, scope,
protection, references, timing).
"""

VALUES = """## Values

stagehold reads YAML 1.2 (core schema): only `true` and `false` (also `True`, `TRUE`, `False`,
`FALSE`) are booleans. `yes`, `no`, `on`, `off`, `y` and `n` are text, so `two_person: no` is
refused with a message instead of silently switching two-person control off, and a stage may be
called `off`. Numbers with a leading zero are decimal (`012` is twelve). Anchors, aliases and
merge keys (`&a`, `*a`, `<<`), duplicate keys, files over 1 MiB, binary files and nesting deeper
than 40 levels are refused. Unknown fields are refused, with a suggestion when one is close.

Conditions are parsed by a small grammar, never evaluated: `< 0.01`, `<= 5`, `> 0`, `>= 0.99`,
`== 0`, `!= 0`, `== true`, `== false`, `between 0.98 and 1.02`. A reading of the wrong type (a
number where a boolean is expected) is an error outcome, never a pass. Quote conditions
(`pass: ">= 0.99"`): unquoted, a leading `>` starts a block of text in YAML.

Durations are a number and a unit: `250ms`, `30s`, `5m`, `2h`, `1d`.
"""


def render(example_package: str, example_plan: str) -> str:
    """The whole of ``docs/reference.md``, given the worked example's two files."""
    parts: list[str] = [INTRO, STEPS]
    for file_name, text in (("package.yaml", example_package), ("plan.yaml", example_plan)):
        parts.append(f"<!-- file: first-change/{file_name} -->\n```yaml\n{text.rstrip()}\n```\n")
    parts += [EDITORS, VALUES, "\n".join(_values()) + "\n"]
    parts.append("## Validation rules\n\n`stagehold validate` refuses a change that breaks any of these:\n")
    parts.append("\n".join(_rules()) + "\n")
    for which, where_root in (("package", "the package file"), ("plan", "the plan file")):
        root = cached_schema(which)
        body = [f"## {SECTION_TITLES[which]} fields", ""]
        body += _section(root, "", f"The top level of {where_root}; its schema: `docs/schema/{FILE_NAMES[which]}`.")
        for name in _models_in_order(root):
            body += _section(root, name, "")
        parts.append("\n".join(body))
    return "\n".join(parts).rstrip() + "\n"


def field_count() -> int:
    """How many fields the reference documents (for the command's summary line)."""
    total = 0
    for which in ("package", "plan"):
        root = cached_schema(which)
        for name in ["", *_models_in_order(root)]:
            total += len(resolve(root, _model(root, name)).get("properties", {}))
    return total
