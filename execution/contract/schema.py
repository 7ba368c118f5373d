"""JSON Schema of the change package and the execution plan, generated from the models.

Rules:
* One source: the pydantic models and their ``Field(description=..., examples=[...])``. The
  schema feeds editors (yaml-language-server), ``docs/reference.md`` and the examples quoted in
  validation messages, so all three say the same.
* Stricter than pydantic's default output where editors would otherwise accept what ``validate``
  refuses: a mapping of names refuses keys that are not names.
* Examples and fields keep the order they were written in (pydantic would sort them).
"""

from __future__ import annotations

import copy
from functools import cache
from typing import Any

from pydantic.json_schema import GenerateJsonSchema, JsonSchemaValue

from execution.contract.models import MODELS as MODELS

DIALECT = "https://json-schema.org/draft/2020-12/schema"
FILE_NAMES = {"package": "package.schema.json", "plan": "plan.schema.json"}


class _InWrittenOrder(GenerateJsonSchema):
    def sort(self, value: JsonSchemaValue, parent_key: str | None = None) -> JsonSchemaValue:
        return value


def _close_name_maps(node: Any) -> None:
    if isinstance(node, dict):
        if "patternProperties" in node and "additionalProperties" not in node:
            node["additionalProperties"] = False
        for value in node.values():
            _close_name_maps(value)
    elif isinstance(node, list):
        for value in node:
            _close_name_maps(value)


@cache
def _schema(which: str) -> dict[str, Any]:
    model = MODELS[which]
    body = model.model_json_schema(by_alias=True, schema_generator=_InWrittenOrder)
    _close_name_maps(body)
    return {"$schema": DIALECT, **body}


def json_schema(which: str) -> dict[str, Any]:
    """The JSON Schema of ``"package"`` or ``"plan"`` (a fresh copy the caller may change)."""
    return copy.deepcopy(_schema(which))


def cached_schema(which: str) -> dict[str, Any]:
    """The shared schema, for readers that do not change it (messages, the reference)."""
    return _schema(which)


def resolve(root: dict[str, Any], node: dict[str, Any]) -> dict[str, Any]:
    """Follow ``$ref`` and drop the ``null`` branch of an optional value."""
    while True:
        if "$ref" in node:
            name = node["$ref"].rsplit("/", 1)[-1]
            node = root["$defs"][name]
            continue
        options = [o for o in node.get("anyOf", []) if o.get("type") != "null"]
        if len(options) == 1:
            node = options[0]
            continue
        return node


def walk(root: dict[str, Any], loc: tuple[str | int, ...]) -> tuple[str | None, dict[str, Any], dict[str, Any]]:
    """Along ``loc``: the last field's name, that field's schema (description, examples), and the
    resolved schema at the end of ``loc``. Parts past what the schema knows are ignored."""
    field_name: str | None = None
    field: dict[str, Any] = {}
    node = root
    for part in loc:
        here = resolve(root, node)
        if isinstance(part, int) and isinstance(here.get("items"), dict):
            node = here["items"]
        elif isinstance(part, str) and part in here.get("properties", {}):
            field_name, field = part, here["properties"][part]
            node = field
        elif isinstance(part, str) and here.get("patternProperties"):
            node = next(iter(here["patternProperties"].values()))
        else:
            break
    return field_name, field, resolve(root, node)
