"""Per-family declarations: where heads, KV groups, MLP channels and decoder layers live.

A family is pure data. The engine (masking, slicing, export, importance) only ever asks a
``Family`` for modules by role, so supporting a new decoder family is one declaration in a
module of its own, registered with :func:`register_family` -- no edits across the engine.
"""
from __future__ import annotations

import copy
from dataclasses import MISSING, dataclass, fields
from typing import Any

import torch
import torch.nn as nn

from nas_llm.errors import UnsupportedModelError

from .registry import Registry


@dataclass(frozen=True)
class Family:
    """Where the prunable structures of one HF decoder family live (attribute paths)."""

    name: str
    architectures: tuple[str, ...]  # HF *ForCausalLM class names
    model_types: tuple[str, ...]  # config.model_type values
    layers: str = "model.layers"
    attn: str = "self_attn"
    q: str = "q_proj"
    k: str = "k_proj"
    v: str = "v_proj"
    o: str = "o_proj"
    mlp: str = "mlp"
    gate: str = "gate_proj"
    up: str = "up_proj"
    down: str = "down_proj"
    layer_norms: tuple[str, ...] = ("input_layernorm", "post_attention_layernorm")  # directly under the layer, any number
    head_norms: tuple[str, ...] = ()  # the q and k norms under the attention module (Qwen3 q_norm/k_norm)
    # how a q/k norm's weight is laid out, which says how a cut slices it: "shared" (head_dim,), one weight
    # for all heads, never sliced (Qwen3, Gemma3); "head" (heads, head_dim), per-head weights sliced by head
    # (Cohere); "width" (heads * head_dim,), one norm over the whole projection output (OLMo2): sliced by
    # channel, and its statistics then run over the kept heads only
    head_norm_layout: str = "shared"
    per_layer_config_lists: tuple[str, ...] = ("layer_types",)  # config lists indexed by layer
    inferred: bool = False  # read from a model's modules (search_spaces.infer), not declared

    # -- module access by role -------------------------------------------------------------
    def decoder_layers(self, model: nn.Module) -> nn.ModuleList:
        return _get(model, self.layers)

    def attention(self, layer: nn.Module) -> nn.Module:
        return _get(layer, self.attn)

    def mlp_module(self, layer: nn.Module) -> nn.Module:
        return _get(layer, self.mlp)

    def attn_linears(self, layer: nn.Module) -> dict[str, nn.Linear]:
        a = self.attention(layer)
        return {r: _get(a, getattr(self, r)) for r in ("q", "k", "v", "o")}

    def mlp_linears(self, layer: nn.Module) -> dict[str, nn.Linear]:
        m = self.mlp_module(layer)
        return {r: _get(m, getattr(self, r)) for r in ("gate", "up", "down")}

    def linears(self, layer: nn.Module) -> dict[str, nn.Linear]:
        """All seven projections of a layer by role: q, k, v, o, gate, up, down."""
        return {**self.attn_linears(layer), **self.mlp_linears(layer)}

    @property
    def sliced_norm_roles(self) -> tuple[str, ...]:
        """The q/k norms a head cut slices (``"q_norm"``, ``"k_norm"``): those not shared by all heads."""
        return ("q_norm", "k_norm")[: len(self.head_norms)] if self.head_norm_layout != "shared" else ()

    def _parent_attr(self, layer: nn.Module, role: str) -> tuple[nn.Module, str]:
        if role in ("q_norm", "k_norm"):
            return self.attention(layer), self.head_norms[("q_norm", "k_norm").index(role)]
        parent = self.attention(layer) if role in ("q", "k", "v", "o") else self.mlp_module(layer)
        return parent, getattr(self, role)

    def module(self, layer: nn.Module, role: str) -> nn.Module:
        """The module of a role: a projection (q ... down) or a sliced q/k norm (q_norm, k_norm)."""
        parent, attr = self._parent_attr(layer, role)
        return _get(parent, attr)

    def set_module(self, layer: nn.Module, role: str, new: nn.Module) -> None:
        parent, attr = self._parent_attr(layer, role)
        setattr(parent, attr, new)

    set_linear = set_module

    def config_with_layers(self, config: Any, n_layers: int) -> Any:
        """A copy of ``config`` for the first ``n_layers`` decoder layers (per-layer lists cut to match)."""
        cfg = copy.deepcopy(config)
        for name in self.per_layer_config_lists:
            lst = getattr(cfg, name, None)
            if isinstance(lst, (list, tuple)) and len(lst) >= n_layers:
                setattr(cfg, name, list(lst[:n_layers]))
        cfg.num_hidden_layers = n_layers
        return cfg

    def dims(self, model_or_config: Any) -> "ModelDims":
        """The dense shapes; pass the model when there is one (its modules say which maps have biases)."""
        if isinstance(model_or_config, nn.Module):
            return ModelDims.from_model(model_or_config, self)
        return ModelDims.from_config(model_or_config, self)


@dataclass(frozen=True)
class ModelDims:
    """The dense model's shapes: everything a parameter count or a search space needs."""

    num_layers: int
    hidden: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    intermediate: int
    vocab: int
    tied_embeddings: bool
    attention_bias: bool = False
    o_bias: bool = False
    mlp_bias: bool = False
    num_layer_norms: int = 2
    num_head_norms: int = 0
    head_norm_layout: str = "shared"  # see Family.head_norm_layout
    # parameters the count cannot derive from the shapes alone (read from modules; None: RMSNorm weights only)
    layer_norm_params: int | None = None  # all norms directly under one layer (LayerNorm biases, ...)
    outside_params: int | None = None  # everything outside the decoder layers: embeddings, head, final norm

    def cache_key(self) -> dict[str, Any]:
        """The shapes as a dict for on-disk cache keys: fields left at their default are omitted, so keys
        written before a field existed stay valid."""
        return {f.name: getattr(self, f.name) for f in fields(self)
                if f.default is MISSING or getattr(self, f.name) != f.default}

    @property
    def q_per_group(self) -> int:
        return self.num_heads // self.num_kv_heads

    @classmethod
    def from_model(cls, model: nn.Module, family: Family) -> "ModelDims":
        """Shapes from the config, biases and norm sizes from the modules of the first decoder layer."""
        return cls.from_config(model.config, family, _module_facts(family, model))

    @classmethod
    def from_config(cls, config: Any, family: Family, biases: dict[str, bool] | None = None) -> "ModelDims":
        """Shapes from the config; ``biases`` (see :func:`_module_biases`) default to a module skeleton's.

        Which maps carry a bias is a fact of the modelling code, not always of the config (Qwen2
        hard-codes q/k/v biases and has no config field), so it is read from modules: the model's,
        or a one-layer skeleton built on the meta device (no memory, no weights).
        """
        heads = config.num_attention_heads
        return cls(
            num_layers=config.num_hidden_layers,
            hidden=config.hidden_size,
            num_heads=heads,
            num_kv_heads=getattr(config, "num_key_value_heads", None) or heads,
            head_dim=getattr(config, "head_dim", None) or config.hidden_size // heads,
            intermediate=config.intermediate_size,
            vocab=config.vocab_size,
            tied_embeddings=bool(getattr(config, "tie_word_embeddings", False)),
            **(biases if biases is not None else _skeleton_facts(config, family)),
            num_layer_norms=len(family.layer_norms),
            num_head_norms=len(family.head_norms),
            head_norm_layout=family.head_norm_layout,
        )


def _numel(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def _module_facts(family: Family, model: nn.Module) -> dict[str, Any]:
    """ModelDims' fields read from modules: biases of the first layer's projections and, when they are
    not plain RMSNorm weights, the sizes of its norms and of everything outside the layers."""
    cfg, layers = model.config, family.decoder_layers(model)
    layer = layers[0]
    lin = family.linears(layer)
    out: dict[str, Any] = {"attention_bias": lin["q"].bias is not None, "o_bias": lin["o"].bias is not None,
                           "mlp_bias": lin["gate"].bias is not None}
    norms = sum(_numel(_get(layer, n)) for n in family.layer_norms)
    if norms != len(family.layer_norms) * cfg.hidden_size:
        out["layer_norm_params"] = norms
    tied = bool(getattr(cfg, "tie_word_embeddings", False))
    outside = _numel(model) - sum(_numel(lay) for lay in layers)
    if outside != cfg.vocab_size * cfg.hidden_size * (1 if tied else 2) + cfg.hidden_size:
        out["outside_params"] = outside
    return out


def _skeleton_facts(config: Any, family: Family) -> dict[str, Any]:
    """:func:`_module_facts` of a one-layer model built from ``config`` on the meta device; the config's
    own ``attention_bias`` / ``mlp_bias`` fields when transformers cannot build one."""
    from transformers import AutoModelForCausalLM

    try:
        with torch.device("meta"):
            skeleton = AutoModelForCausalLM.from_config(family.config_with_layers(config, 1))
        return _module_facts(family, skeleton)
    except (ValueError, KeyError):  # a config class transformers has no model class for
        attn = bool(getattr(config, "attention_bias", False))
        return {"attention_bias": attn, "o_bias": attn, "mlp_bias": bool(getattr(config, "mlp_bias", False))}


def _get(obj: Any, path: str) -> Any:
    for part in path.split("."):
        obj = getattr(obj, part)
    return obj


FAMILIES: Registry = Registry("family")


def register_family(family: Family) -> Family:
    """Make a family known to the engine; returns it so a module can keep a name for it."""
    FAMILIES.add(family.name, family)
    return family


def get_family(model_or_config: Any) -> Family:
    """The family of a model or config; an unknown one fails with the supported list."""
    config = getattr(model_or_config, "config", model_or_config)
    archs = list(getattr(config, "architectures", None) or [])
    if hasattr(model_or_config, "config"):
        archs.insert(0, type(model_or_config).__name__)
    model_type = getattr(config, "model_type", None)
    for _, fam in FAMILIES.items():
        if model_type in fam.model_types or any(a in fam.architectures for a in archs):
            return fam
    why = ""
    try:
        inferred = _infer(model_or_config, config)
    except UnsupportedModelError as e:
        inferred, why = None, f" It cannot be inferred from its modules either: {e}."
    if inferred is not None:
        return inferred
    supported = sorted(a for _, f in FAMILIES.items() for a in f.architectures if not f.inferred)
    raise UnsupportedModelError(
        f"unsupported architecture {archs[0] if archs else type(config).__name__!r} "
        f"(model_type={model_type!r}); declared: {', '.join(supported)}.{why} "
        "Add a family with search_spaces.register_family(Family(...))."
    )


def _infer(model_or_config: Any, config: Any) -> Family | None:
    """A family inferred from the modules (of the model, or of a one-layer skeleton on the meta device),
    registered so the next lookup finds it; None when there is no model class to look at. A model whose
    modules cannot be placed raises the inference's error (it names the role and the modules seen)."""
    from .infer import describe, infer_family

    model = model_or_config if isinstance(model_or_config, nn.Module) else None
    if model is None:
        from transformers import AutoModelForCausalLM

        try:
            cfg = copy.deepcopy(config)
            with torch.device("meta"):
                model = AutoModelForCausalLM.from_config(cfg)
        except (ValueError, KeyError, TypeError, AttributeError):
            return None
    if not hasattr(model, "config") or getattr(model.config, "model_type", None) in (None, ""):
        return None
    fam = infer_family(model)
    print(describe(fam), flush=True)
    return register_family(fam)
