"""Search spaces: per-family declarations and the subnet space over heads, neurons and layers."""
from .family import FAMILIES, Family, ModelDims, get_family, register_family
from .registry import Registry, UnknownNameError, import_path
from .plan import LayerPlan, Plan, check_plan, head_channels, kv_channels
from .ranking import Ranking
from .space import SubnetSpace
from .subnet import LayerChoice, Subnet, SubnetError

from . import llama, mistral, qwen2, qwen3  # noqa: F401,E402  (register the built-in families)

__all__ = [
    "FAMILIES", "Family", "ModelDims", "get_family", "register_family", "Registry", "UnknownNameError", "import_path",
    "LayerPlan", "Plan", "check_plan", "head_channels", "kv_channels", "Ranking", "SubnetSpace", "LayerChoice", "Subnet", "SubnetError",
]
