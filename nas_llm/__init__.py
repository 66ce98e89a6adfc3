"""nas-llm: search, reform and export smaller, faster subnets of Hugging Face causal LMs.

The names below are imported lazily (PEP 562), so ``import nas_llm.errors`` or
``import nas_llm.model`` from a lower layer never pulls in the whole package.
"""
from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "LayerChoice": "search_spaces", "Plan": "search_spaces", "Ranking": "search_spaces", "Subnet": "search_spaces",
    "SubnetError": "search_spaces", "SubnetSpace": "search_spaces", "get_family": "search_spaces",
    "ExportError": "nas_llm.model.export", "export": "nas_llm.model.export", "load_subnet": "nas_llm.model.export",
    "GGUFError": "nas_llm.model.gguf", "export_gguf": "nas_llm.model.gguf",
    "DEFAULT_MODEL": "nas_llm.model.loading", "load_model": "nas_llm.model.loading",
    "masked": "nas_llm.model.masking", "slice_model": "nas_llm.model.slicing",
    "NasLLMError": "nas_llm.errors",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'nas_llm' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])
