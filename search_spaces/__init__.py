"""Search spaces: per-family declarations and the subnet space over heads, neurons and layers."""
from .family import Family, ModelDims, families, get_family, register_family
from .ranking import LayerPlan, Plan, Ranking
from .space import SubnetSpace
from .subnet import LayerChoice, Subnet, SubnetError

from . import llama, mistral, qwen2, qwen3  # noqa: F401,E402  (register the built-in families)

__all__ = [
    "Family", "ModelDims", "families", "get_family", "register_family",
    "LayerPlan", "Plan", "Ranking", "SubnetSpace", "LayerChoice", "Subnet", "SubnetError",
]
