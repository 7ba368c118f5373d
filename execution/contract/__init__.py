"""Change contracts: the approved change package and the execution plan it pins.

The names below are loaded when first used: folding a recorded execution needs the models only,
not the YAML reader and the loader (``import execution.contract.models`` stays that cheap).
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from execution.contract.load import InvalidChange, LoadedChange, Problem, load_change
    from execution.contract.models import ChangePackage, Plan, Stage

__all__ = ["ChangePackage", "InvalidChange", "LoadedChange", "Plan", "Problem", "Stage", "load_change"]

_HOME = {
    "ChangePackage": "models",
    "Plan": "models",
    "Stage": "models",
    "InvalidChange": "load",
    "LoadedChange": "load",
    "Problem": "load",
    "load_change": "load",
}


def __getattr__(name: str) -> Any:
    home = _HOME.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(import_module(f"{__name__}.{home}"), name)
