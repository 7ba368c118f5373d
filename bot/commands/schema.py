"""``stagehold schema package|plan`` (JSON Schema for editors) and ``stagehold schema docs``
(regenerate ``docs/reference.md``, ``docs/schema/*.json`` and the README's phase diagram in a
checkout)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from bot import exits

# The README's phase diagram sits between these lines, generated from the transition table.
PHASES_BEGIN = "<!-- phases: generated from execution/transitions.py by `stagehold schema docs` -->"
PHASES_END = "<!-- end of phases -->"


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "schema",
        help="print the JSON Schema of a package or plan (for editors), or regenerate the reference docs",
        description="package|plan: print the JSON Schema for yaml-language-server. "
        "docs: regenerate docs/reference.md and docs/schema/*.json from the models, and the README's phase "
        "diagram from the transition table (run in a checkout).",
    )
    p.add_argument(
        "what",
        choices=["package", "plan", "docs"],
        metavar="package|plan|docs",
        help="which schema to print, or 'docs'",
    )
    p.add_argument("--root", default=".", metavar="DIR", help="for docs: the checkout to write into (default: .)")
    p.set_defaults(handler=cmd_schema)


def schema_text(which: str) -> str:
    from execution.contract.schema import json_schema

    return json.dumps(json_schema(which), indent=2, ensure_ascii=False) + "\n"


def reference_text(root: Path) -> str:
    from execution.contract.reference import EXAMPLE_DIR, render

    example = root / EXAMPLE_DIR
    return render(
        (example / "package.yaml").read_text(encoding="utf-8"), (example / "plan.yaml").read_text(encoding="utf-8")
    )


def readme_with_phases(readme: str) -> str:
    """``readme`` with the text between the phase markers replaced by the current diagram."""
    from execution.transitions import diagram

    begin, end = readme.index(PHASES_BEGIN) + len(PHASES_BEGIN), readme.index(PHASES_END)
    return readme[:begin] + "\n```mermaid\n" + diagram() + "```\n" + readme[end:]


def cmd_schema(args: argparse.Namespace) -> int:
    from execution.contract.reference import field_count
    from execution.contract.schema import FILE_NAMES

    if args.what != "docs":
        sys.stdout.write(schema_text(args.what))
        return exits.OK
    root = Path(args.root)
    try:
        text = reference_text(root)
        (root / "docs" / "schema").mkdir(parents=True, exist_ok=True)
        (root / "docs" / "reference.md").write_text(text, encoding="utf-8")
        for which, name in FILE_NAMES.items():
            (root / "docs" / "schema" / name).write_text(schema_text(which), encoding="utf-8")
        readme = root / "README.md"
        current = readme.read_text(encoding="utf-8") if readme.is_file() else ""
        if PHASES_BEGIN in current and PHASES_END in current:
            readme.write_text(readme_with_phases(current), encoding="utf-8")
    except OSError as exc:
        where = exc.filename or root
        print(f"stagehold: schema docs: {where}: {exc.strerror or exc} (run it in a checkout)", file=sys.stderr)
        return exits.INVALID
    print(f"wrote docs/reference.md ({field_count()} fields) and docs/schema/{', '.join(FILE_NAMES.values())}")
    return exits.OK
