"""Identifiers shared by cards and listeners: action ids, the modal's callback id, button values.

Rules:
* A button's ``value`` binds one execution, stage, hold and evidence version as compact JSON
  (``{"e":…,"h":…,"s":…,"v":…}``); a click therefore names exactly what the person saw.
* Values are parsed strictly: exactly those keys, each of the expected type and shape, and no
  more than Slack's 2,000 characters. Anything else raises ``InvalidButton`` — the listener
  answers that the button is not one stagehold issued, and never guesses.
* The value is not a credential: who may release is decided by the engine at click time.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

RELEASE_ACTION = "stagehold_release"
ROLLBACK_ACTION = "stagehold_rollback"
ROLLBACK_MODAL = "stagehold_rollback_reason"
REASON_BLOCK = "stagehold_reason"
REASON_INPUT = "stagehold_reason_input"
SLASH_COMMAND = "/stagehold"

MAX_VALUE = 2000  # Slack's limit on a button value and on a modal's private_metadata is larger
_EXECUTION = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,199}$")
_STAGE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")
_HOLD = re.compile(r"^H[1-9][0-9]{0,8}$")
_CHANNEL = re.compile(r"^[CGD][A-Z0-9]{2,30}$")
_TS = re.compile(r"^[0-9]{1,12}\.[0-9]{1,9}$")


class InvalidButton(ValueError):
    """A button value or modal metadata that stagehold did not issue (or that was altered)."""


@dataclass(frozen=True)
class HoldRef:
    """What a Release or Rollback button on a hold card is bound to."""

    execution: str
    stage: str | None
    hold: str
    version: int

    def encode(self) -> str:
        return json.dumps(
            {"e": self.execution, "h": self.hold, "s": self.stage, "v": self.version},
            separators=(",", ":"),
            sort_keys=True,
        )


def decode(value: object) -> HoldRef:
    """Parse a button value strictly; raise ``InvalidButton`` saying what is wrong."""
    if not isinstance(value, str) or not value:
        raise InvalidButton("the button carries no value")
    if len(value) > MAX_VALUE:
        raise InvalidButton("the button value is longer than Slack allows")
    try:
        data = json.loads(value)
    except ValueError:
        raise InvalidButton("the button value is not JSON") from None
    return _from_mapping(data)


def _from_mapping(data: Any) -> HoldRef:
    if not isinstance(data, dict) or set(data) != {"e", "h", "s", "v"}:
        raise InvalidButton("the button value does not have the fields stagehold writes")
    e, h, s, v = data["e"], data["h"], data["s"], data["v"]
    if not isinstance(e, str) or not _EXECUTION.match(e):
        raise InvalidButton("the button names no valid execution")
    if not isinstance(h, str) or not _HOLD.match(h):
        raise InvalidButton("the button names no valid hold")
    if s is not None and (not isinstance(s, str) or not _STAGE.match(s)):
        raise InvalidButton("the button names no valid stage")
    # bool is an int in Python; a JSON true must not pass as version 1.
    if isinstance(v, bool) or not isinstance(v, int) or not 1 <= v <= 1_000_000:
        raise InvalidButton("the button names no valid evidence version")
    return HoldRef(execution=e, stage=s, hold=h, version=v)


@dataclass(frozen=True)
class ModalContext:
    """The rollback modal's ``private_metadata``: the hold card clicked and where to answer."""

    ref: HoldRef
    channel: str | None
    thread_ts: str | None

    def encode(self) -> str:
        return json.dumps(
            {"b": json.loads(self.ref.encode()), "c": self.channel, "t": self.thread_ts},
            separators=(",", ":"),
            sort_keys=True,
        )


def decode_modal(value: object) -> ModalContext:
    if not isinstance(value, str) or not value or len(value) > MAX_VALUE:
        raise InvalidButton("the form carries no stagehold context")
    try:
        data = json.loads(value)
    except ValueError:
        raise InvalidButton("the form context is not JSON") from None
    if not isinstance(data, dict) or set(data) != {"b", "c", "t"}:
        raise InvalidButton("the form context does not have the fields stagehold writes")
    channel, ts = data["c"], data["t"]
    if channel is not None and (not isinstance(channel, str) or not _CHANNEL.match(channel)):
        raise InvalidButton("the form names no valid channel")
    if ts is not None and (not isinstance(ts, str) or not _TS.match(ts)):
        raise InvalidButton("the form names no valid message")
    return ModalContext(_from_mapping(data["b"]), channel, ts)
