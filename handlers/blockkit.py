"""A checker of Slack's documented Block Kit limits, applied to every card before it is sent.

Rules:
* Every problem is reported with its JSON path (``blocks[3].fields[10]``) and the limit broken,
  so a failing card says exactly what to fix; ``check_*`` raises ``BlockKitError`` with all of them.
* Only the block and element types stagehold renders are accepted; an unknown type is a problem,
  not a pass, so a template cannot drift into something this checker never looked at.
* Limits (Slack's reference): 50 blocks per message, 100 per modal; section text 3,000 and at most
  10 fields of 2,000; header text 150 (plain_text); context at most 10 elements; actions at most
  25 elements; button text 75, value 2,000, url 3,000; action_id and block_id 255 (block_id unique
  in a message); confirm dialog title 100, text 300, confirm/deny 30; modal title/submit/close 24,
  private_metadata 3,000, callback_id 255; input label and hint 2,000; plain_text_input
  placeholder 150 and lengths up to 3,000; message fallback text 40,000.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

MAX_BLOCKS_MESSAGE = 50
MAX_BLOCKS_MODAL = 100
MAX_SECTION_TEXT = 3000
MAX_FIELDS = 10
MAX_FIELD_TEXT = 2000
MAX_HEADER_TEXT = 150
MAX_CONTEXT_ELEMENTS = 10
MAX_ACTIONS_ELEMENTS = 25
MAX_BUTTON_TEXT = 75
MAX_BUTTON_VALUE = 2000
MAX_URL = 3000
MAX_ID = 255
MAX_CONFIRM_TITLE = 100
MAX_CONFIRM_TEXT = 300
MAX_CONFIRM_BUTTON = 30
MAX_MODAL_TEXT = 24
MAX_PRIVATE_METADATA = 3000
MAX_LABEL = 2000
MAX_PLACEHOLDER = 150
MAX_INPUT_LENGTH = 3000
MAX_MESSAGE_TEXT = 40000


@dataclass(frozen=True)
class Problem:
    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}"


class BlockKitError(ValueError):
    def __init__(self, problems: Sequence[Problem]) -> None:
        super().__init__("; ".join(str(p) for p in problems))
        self.problems = list(problems)


class _Checker:
    def __init__(self) -> None:
        self.problems: list[Problem] = []
        self.block_ids: set[str] = set()

    def add(self, path: str, message: str) -> None:
        self.problems.append(Problem(path, message))

    def length(self, path: str, value: Any, limit: int, *, required: bool = True) -> None:
        if value is None:
            if required:
                self.add(path, "is missing")
            return
        if not isinstance(value, str):
            self.add(path, f"must be a string, not {type(value).__name__}")
            return
        if required and not value:
            self.add(path, "must not be empty")
        if len(value) > limit:
            self.add(path, f"is {len(value)} characters; the limit is {limit}")

    def text_object(self, path: str, obj: Any, limit: int, *, plain_only: bool = False) -> None:
        if not isinstance(obj, Mapping):
            self.add(path, "must be a text object")
            return
        kind = obj.get("type")
        allowed = ("plain_text",) if plain_only else ("plain_text", "mrkdwn")
        if kind not in allowed:
            self.add(f"{path}.type", f"must be {' or '.join(allowed)}, not {kind!r}")
        self.length(f"{path}.text", obj.get("text"), limit)

    def block_id(self, path: str, block: Mapping[str, Any]) -> None:
        if "block_id" not in block:
            return
        bid = block["block_id"]
        self.length(f"{path}.block_id", bid, MAX_ID)
        if isinstance(bid, str):
            if bid in self.block_ids:
                self.add(f"{path}.block_id", f"{bid!r} is not unique in this message")
            self.block_ids.add(bid)

    def confirm(self, path: str, obj: Any) -> None:
        if not isinstance(obj, Mapping):
            self.add(path, "must be a confirmation dialog object")
            return
        self.text_object(f"{path}.title", obj.get("title"), MAX_CONFIRM_TITLE, plain_only=True)
        self.text_object(f"{path}.text", obj.get("text"), MAX_CONFIRM_TEXT)
        self.text_object(f"{path}.confirm", obj.get("confirm"), MAX_CONFIRM_BUTTON, plain_only=True)
        self.text_object(f"{path}.deny", obj.get("deny"), MAX_CONFIRM_BUTTON, plain_only=True)
        if "style" in obj and obj["style"] not in ("primary", "danger"):
            self.add(f"{path}.style", "must be primary or danger")

    def element(self, path: str, el: Any) -> None:
        if not isinstance(el, Mapping):
            self.add(path, "must be an element object")
            return
        kind = el.get("type")
        if kind == "button":
            self.text_object(f"{path}.text", el.get("text"), MAX_BUTTON_TEXT, plain_only=True)
            self.length(f"{path}.action_id", el.get("action_id"), MAX_ID)
            if "value" in el:
                self.length(f"{path}.value", el["value"], MAX_BUTTON_VALUE)
            if "url" in el:
                self.length(f"{path}.url", el["url"], MAX_URL)
            if "style" in el and el["style"] not in ("primary", "danger"):
                self.add(f"{path}.style", "must be primary or danger")
            if "confirm" in el:
                self.confirm(f"{path}.confirm", el["confirm"])
        elif kind == "plain_text_input":
            self.length(f"{path}.action_id", el.get("action_id"), MAX_ID)
            if "placeholder" in el:
                self.text_object(f"{path}.placeholder", el["placeholder"], MAX_PLACEHOLDER, plain_only=True)
            for key in ("min_length", "max_length"):
                if key in el:
                    n = el[key]
                    if isinstance(n, bool) or not isinstance(n, int) or not 0 <= n <= MAX_INPUT_LENGTH:
                        self.add(f"{path}.{key}", f"must be an integer from 0 to {MAX_INPUT_LENGTH}")
        else:
            self.add(f"{path}.type", f"element type {kind!r} is not one stagehold renders")

    def block(self, path: str, block: Any) -> None:
        if not isinstance(block, Mapping):
            self.add(path, "must be a block object")
            return
        self.block_id(path, block)
        kind = block.get("type")
        if kind == "section":
            has_text = "text" in block
            fields = block.get("fields")
            if not has_text and not fields:
                self.add(path, "a section needs text or fields")
            if has_text:
                self.text_object(f"{path}.text", block["text"], MAX_SECTION_TEXT)
            if fields is not None:
                if not isinstance(fields, list):
                    self.add(f"{path}.fields", "must be a list")
                else:
                    if len(fields) > MAX_FIELDS:
                        self.add(f"{path}.fields", f"has {len(fields)} fields; the limit is {MAX_FIELDS}")
                    for i, f in enumerate(fields):
                        self.text_object(f"{path}.fields[{i}]", f, MAX_FIELD_TEXT)
            if "accessory" in block:
                self.element(f"{path}.accessory", block["accessory"])
        elif kind == "header":
            self.text_object(f"{path}.text", block.get("text"), MAX_HEADER_TEXT, plain_only=True)
        elif kind == "context":
            elements = block.get("elements")
            if not isinstance(elements, list) or not elements:
                self.add(f"{path}.elements", "a context needs at least one element")
                return
            if len(elements) > MAX_CONTEXT_ELEMENTS:
                self.add(f"{path}.elements", f"has {len(elements)} elements; the limit is {MAX_CONTEXT_ELEMENTS}")
            for i, el in enumerate(elements):
                self.text_object(f"{path}.elements[{i}]", el, MAX_SECTION_TEXT)
        elif kind == "actions":
            elements = block.get("elements")
            if not isinstance(elements, list) or not elements:
                self.add(f"{path}.elements", "an actions block needs at least one element")
                return
            if len(elements) > MAX_ACTIONS_ELEMENTS:
                self.add(f"{path}.elements", f"has {len(elements)} elements; the limit is {MAX_ACTIONS_ELEMENTS}")
            for i, el in enumerate(elements):
                self.element(f"{path}.elements[{i}]", el)
        elif kind == "divider":
            pass
        elif kind == "input":
            self.text_object(f"{path}.label", block.get("label"), MAX_LABEL, plain_only=True)
            if "hint" in block:
                self.text_object(f"{path}.hint", block["hint"], MAX_LABEL, plain_only=True)
            self.element(f"{path}.element", block.get("element"))
        else:
            self.add(f"{path}.type", f"block type {kind!r} is not one stagehold renders")

    def blocks(self, blocks: Any, limit: int) -> None:
        if not isinstance(blocks, list):
            self.add("blocks", "must be a list")
            return
        if len(blocks) > limit:
            self.add("blocks", f"has {len(blocks)} blocks; the limit is {limit}")
        for i, block in enumerate(blocks):
            self.block(f"blocks[{i}]", block)


def message_problems(blocks: Any, text: str | None = None) -> list[Problem]:
    checker = _Checker()
    checker.blocks(blocks, MAX_BLOCKS_MESSAGE)
    if text is not None:
        checker.length("text", text, MAX_MESSAGE_TEXT)
    return checker.problems


def view_problems(view: Any) -> list[Problem]:
    checker = _Checker()
    if not isinstance(view, Mapping):
        return [Problem("view", "must be an object")]
    if view.get("type") != "modal":
        checker.add("view.type", "must be modal")
    checker.text_object("view.title", view.get("title"), MAX_MODAL_TEXT, plain_only=True)
    for key in ("submit", "close"):
        if key in view:
            checker.text_object(f"view.{key}", view[key], MAX_MODAL_TEXT, plain_only=True)
    checker.length("view.callback_id", view.get("callback_id"), MAX_ID)
    if "private_metadata" in view:
        checker.length("view.private_metadata", view["private_metadata"], MAX_PRIVATE_METADATA, required=False)
    checker.blocks(view.get("blocks"), MAX_BLOCKS_MODAL)
    return checker.problems


def check_message(blocks: Any, text: str | None = None) -> None:
    problems = message_problems(blocks, text)
    if problems:
        raise BlockKitError(problems)


def check_view(view: Any) -> None:
    problems = view_problems(view)
    if problems:
        raise BlockKitError(problems)
