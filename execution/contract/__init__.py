"""Change contracts: the approved change package and the execution plan it pins."""

from execution.contract.load import InvalidChange, LoadedChange, Problem, load_change
from execution.contract.models import ChangePackage, Plan, Stage

__all__ = ["ChangePackage", "InvalidChange", "LoadedChange", "Plan", "Problem", "Stage", "load_change"]
