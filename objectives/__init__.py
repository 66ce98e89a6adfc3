"""Objectives: what a search minimises or constrains. The plug-in point for users."""
from .base import OBJECTIVES, Constraint, Context, FunctionObjective, Objective, checked_score, get_objective
from .params import KVCacheBytes, Params, ParamsRatio, WeightBytes
from .registry import Registry, import_path

__all__ = [
    "OBJECTIVES", "Constraint", "Context", "FunctionObjective", "Objective", "checked_score", "get_objective",
    "KVCacheBytes", "Params", "ParamsRatio", "WeightBytes", "Registry", "import_path",
]
