"""nas-llm: search, reform and export smaller, faster subnets of Hugging Face causal LMs."""
from search_spaces import LayerChoice, Plan, Ranking, Subnet, SubnetError, SubnetSpace, get_family

from .export import ExportError, export, load_subnet
from .loading import DEFAULT_MODEL, load_model
from .masking import masked
from .slicing import slice_model

__version__ = "0.1.0"

__all__ = [
    "LayerChoice", "Plan", "Ranking", "Subnet", "SubnetError", "SubnetSpace", "get_family",
    "ExportError", "export", "load_subnet", "DEFAULT_MODEL", "load_model", "masked", "slice_model",
]
