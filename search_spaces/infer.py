"""Families recognised from the modules: a decoder nobody declared, read by role.

When no declared family matches (declared ones keep priority), :func:`infer_family` looks at one decoder
layer: the attention and MLP projections under their LLaMA names or the common variants, every norm
directly under the layer (some families have four), q/k norms under the attention module and how their
weight is laid out (one ``head_dim`` vector shared by all heads, one per head, or one over the whole
projection width). What it cannot place is refused naming the role and the module names it saw, e.g. a
fused ``qkv_proj`` (each of q, k, v must be its own map for a head cut to slice it). The engine then checks
the inferred family on the spot (``nas_llm.model.family_check``: masked == sliced logits) before a search.
"""
from __future__ import annotations

from typing import Any

import torch.nn as nn

from nas_llm.errors import UnsupportedModelError

from .family import Family, _get

LAYER_LISTS = ("model.layers", "model.decoder.layers", "transformer.h", "transformer.layers", "gpt_neox.layers",
               "model.transformer.layers", "layers")
ATTN = ("self_attn", "attention", "attn", "self_attention")
MLP = ("mlp", "feed_forward", "ffn")
ROLES = {"q": ("q_proj", "query", "wq", "q"), "k": ("k_proj", "key", "wk", "k"), "v": ("v_proj", "value", "wv", "v"),
         "o": ("o_proj", "out_proj", "dense", "wo", "o"), "gate": ("gate_proj", "w1", "gate"),
         "up": ("up_proj", "w3", "up"), "down": ("down_proj", "w2", "down")}
FUSED = ("qkv_proj", "query_key_value", "c_attn", "Wqkv", "wqkv", "gate_up_proj", "c_fc")
HEAD_NORMS = (("q_norm", "k_norm"), ("q_layernorm", "k_layernorm"))


def _children(module: nn.Module) -> dict[str, nn.Module]:
    return dict(module.named_children())


def _layer_list(model: nn.Module, n_layers: int) -> str:
    for path in LAYER_LISTS:
        try:
            obj = _get(model, path)
        except AttributeError:
            continue
        if isinstance(obj, nn.ModuleList) and len(obj) == n_layers:
            return path
    for name, mod in model.named_modules():  # any ModuleList of the right length
        if isinstance(mod, nn.ModuleList) and len(mod) == n_layers and name:
            return name
    raise UnsupportedModelError(f"cannot find the decoder layers: no ModuleList of {n_layers} layers "
                                f"(config.num_hidden_layers) among {', '.join(LAYER_LISTS)}")


def _child(parent: nn.Module, names: tuple[str, ...], what: str, where: str) -> str:
    kids = _children(parent)
    for n in names:
        if n in kids:
            return n
    raise UnsupportedModelError(f"cannot find the {what} module under {where}: looked for {', '.join(names)}; "
                                f"saw {', '.join(kids) or 'nothing'}")


def _roles(parent: nn.Module, roles: tuple[str, ...], where: str) -> dict[str, str]:
    kids = _children(parent)
    found = {r: next((n for n in ROLES[r] if isinstance(kids.get(n), nn.Linear)), None) for r in roles}
    missing = [r for r, n in found.items() if n is None]
    if missing:
        fused = [n for n in kids if n in FUSED]
        why = f" ({', '.join(fused)} is fused: each role must be its own map for a cut to slice it)" if fused else ""
        raise UnsupportedModelError(
            f"cannot place the projection role(s) {', '.join(missing)} under {where}{why}: looked for "
            f"{'; '.join(f'{r}: ' + '/'.join(ROLES[r]) for r in missing)}; saw {', '.join(kids) or 'nothing'}")
    return found  # type: ignore[return-value]


def _head_norm_layout(attn: nn.Module, names: tuple[str, str], config: Any, where: str) -> str:
    heads = config.num_attention_heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
    w = getattr(_get(attn, names[0]), "weight", None)
    shape = tuple(w.shape) if w is not None else ()
    if shape == (head_dim,):
        return "shared"
    if shape == (heads, head_dim):
        return "head"
    if shape == (heads * head_dim,):
        return "width"
    raise UnsupportedModelError(f"{where}.{names[0]}: q/k norm weight of shape {shape}; expected ({head_dim},) shared, "
                                f"({heads}, {head_dim}) per head or ({heads * head_dim},) over the width")


def infer_family(model: nn.Module) -> Family:
    """A :class:`Family` read from ``model``'s modules (see the module docstring); raises
    :class:`UnsupportedModelError` naming what was not found."""
    cfg = model.config
    if getattr(cfg, "num_hidden_layers", None) is None:
        raise UnsupportedModelError("config.num_hidden_layers is missing; a decoder family cannot be inferred without it")
    layers = _layer_list(model, cfg.num_hidden_layers)
    layer = _get(model, layers)[0]
    where = f"{layers}[0]"
    attn = _child(layer, ATTN, "attention", where)
    mlp = _child(layer, MLP, "MLP", where)
    a = _roles(_get(layer, attn), ("q", "k", "v", "o"), f"{where}.{attn}")
    m = _roles(_get(layer, mlp), ("gate", "up", "down"), f"{where}.{mlp}")
    for field in ("hidden_size", "num_attention_heads", "intermediate_size", "vocab_size"):
        if getattr(cfg, field, None) is None:
            raise UnsupportedModelError(f"config.{field} is missing; a decoder family cannot be inferred without it")
    norms = tuple(n for n, mod in _children(layer).items() if "norm" in type(mod).__name__.lower() or "norm" in n.lower())
    if not norms:
        raise UnsupportedModelError(f"no norm directly under {where} (saw {', '.join(_children(layer))})")
    akids = _children(_get(layer, attn))
    head = next((pair for pair in HEAD_NORMS if all(n in akids for n in pair)), None)
    layout = _head_norm_layout(_get(layer, attn), head, cfg, f"{where}.{attn}") if head else "shared"
    lists = tuple(k for k, v in cfg.to_dict().items() if isinstance(v, (list, tuple)) and len(v) == cfg.num_hidden_layers)
    archs = tuple(cfg.architectures or ()) + (type(model).__name__,)
    return Family(name=f"auto-{cfg.model_type}", architectures=tuple(dict.fromkeys(archs)), model_types=(cfg.model_type,),
                  layers=layers, attn=attn, mlp=mlp, **a, **m, layer_norms=norms, head_norms=head or (),
                  head_norm_layout=layout, per_layer_config_lists=lists, inferred=True)


def describe(fam: Family) -> str:
    """One line saying what was inferred."""
    qk = f", q/k norms {'/'.join(fam.head_norms)} ({fam.head_norm_layout})" if fam.head_norms else ""
    return (f"nas-llm: {fam.model_types[0]} is not a declared family; inferred from its modules: layers {fam.layers}, "
            f"attention {fam.attn}.{{{fam.q},{fam.k},{fam.v},{fam.o}}}, MLP {fam.mlp}.{{{fam.gate},{fam.up},{fam.down}}}, "
            f"norms {', '.join(fam.layer_norms)}{qk}")


__all__ = ["describe", "infer_family"]
