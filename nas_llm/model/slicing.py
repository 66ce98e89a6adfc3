"""Physically slice a model to a subnet: real smaller ``nn.Linear``s and dropped layers removed.

Only shapes change; the stock transformers forward already infers the head count from the
projection width (``view(..., -1, head_dim)``), and the query/KV ratio is unchanged because
whole KV groups go with their query heads. The per-layer shapes are recorded in
``config.nas_llm`` so that :func:`nas_llm.load_subnet` can rebuild the model from stock classes.
"""
from __future__ import annotations

import copy
from typing import Any

import torch
import torch.nn as nn

from search_spaces import Plan, get_family
from search_spaces.family import Family, ModelDims

from search_spaces.plan import check_plan, head_channels, kv_channels

FORMAT_VERSION = 1


def _sliced_linear(lin: nn.Linear, rows=None, cols=None) -> nn.Linear:
    w = lin.weight.detach()
    b = None if lin.bias is None else lin.bias.detach()
    if rows is not None:
        idx = torch.as_tensor(rows, device=w.device)
        w = w.index_select(0, idx)
        b = None if b is None else b.index_select(0, idx)
    if cols is not None:
        w = w.index_select(1, torch.as_tensor(cols, device=w.device))
    new = nn.Linear(w.shape[1], w.shape[0], bias=b is not None, device="meta", dtype=w.dtype)
    new.weight = nn.Parameter(w.clone())
    if b is not None:
        new.bias = nn.Parameter(b.clone())
    return new


def resize_layer(layer: nn.Module, fam: Family, dims: ModelDims, kv_groups: int, neurons: int, device: Any = "meta") -> None:
    """Give a layer empty projections of a subnet's shapes (used when rebuilding from disk)."""
    hd, h = dims.head_dim, dims.hidden
    q_out, kv_out = kv_groups * dims.q_per_group * hd, kv_groups * hd
    lin, mlp = fam.attn_linears(layer), fam.mlp_linears(layer)
    shapes = {"q": (h, q_out), "k": (h, kv_out), "v": (h, kv_out), "o": (q_out, h), "gate": (h, neurons), "up": (h, neurons), "down": (neurons, h)}
    old = {**lin, **mlp}
    for role, (fin, fout) in shapes.items():
        ref = old[role]
        fam.set_linear(layer, role, nn.Linear(fin, fout, bias=ref.bias is not None, device=device, dtype=ref.weight.dtype))


def _set_layers(model: nn.Module, fam: Family, layers: list[nn.Module]) -> None:
    parent_path, _, attr = fam.layers.rpartition(".")
    parent = model
    for part in parent_path.split(".") if parent_path else []:
        parent = getattr(parent, part)
    setattr(parent, attr, nn.ModuleList(layers))


def layer_record(config: Any) -> list[dict] | None:
    rec = getattr(config, "nas_llm", None)
    return None if not rec else rec.get("layers")


def update_config(config: Any, fam: Family, dims: ModelDims, layers: list[dict], extra: dict | None = None) -> None:
    """Write per-layer shapes into ``config.nas_llm`` and make the stock fields consistent.

    The stock fields keep the dense shapes (a valid config for any subnet), except for a
    *uniform* subnet whose shapes the stock config accepts: then they get those shapes and the
    folder also loads with plain ``AutoModelForCausalLM.from_pretrained``. Non-uniform subnets
    are rebuilt by ``nas_llm.load_subnet`` from ``config.nas_llm["layers"]``.
    """
    src = [r["source_layer"] for r in layers]
    for name in fam.per_layer_config_lists:
        lst = getattr(config, name, None)
        if isinstance(lst, (list, tuple)) and len(lst) == dims.num_layers:
            setattr(config, name, [lst[i] for i in src])
    config.num_hidden_layers = len(layers)
    config.head_dim = dims.head_dim
    shapes = {(r["num_attention_heads"], r["num_key_value_heads"], r["intermediate_size"]) for r in layers}
    dense = (dims.num_heads, dims.num_kv_heads, dims.intermediate)
    candidates = [shapes.pop(), dense] if len(shapes) == 1 else [dense]
    for heads, kv, inter in candidates:
        config.num_attention_heads, config.num_key_value_heads, config.intermediate_size = heads, kv, inter
        try:
            if hasattr(config, "validate"):
                config.validate()
            break
        except Exception:  # the stock validator rejects e.g. hidden % heads != 0: keep dense fields
            continue
    old = getattr(config, "nas_llm", None) or {}
    config.nas_llm = {
        "format": FORMAT_VERSION,
        "dense": old.get("dense") or {"num_hidden_layers": dims.num_layers, "num_attention_heads": dims.num_heads,
                                       "num_key_value_heads": dims.num_kv_heads, "intermediate_size": dims.intermediate},
        "layers": layers,
        **(extra or {}),
    }


def mark_nonstock(config: Any) -> None:
    """Reset the stock shape fields to the dense ones, so plain ``from_pretrained`` fails loudly.

    Call this after adding tensors a stock class cannot hold (e.g. a bias on ``down_proj`` from
    bias compensation): stock loading must not silently drop them; ``load_subnet`` handles them.
    """
    dense = config.nas_llm["dense"]
    config.num_attention_heads = dense["num_attention_heads"]
    config.num_key_value_heads = dense["num_key_value_heads"]
    config.intermediate_size = dense["intermediate_size"]
    config.nas_llm = {**config.nas_llm, "nonstock": True}


def slice_model(model: nn.Module, plan: Plan, inplace: bool = False, subnet: Any = None) -> nn.Module:
    """A physically smaller copy of ``model`` (or the model itself with ``inplace=True``)."""
    fam = get_family(model)
    if layer_record(model.config) is not None:
        raise ValueError("this model is already sliced; slice the dense model instead")
    dims = fam.dims(model.config)
    check_plan(plan, dims)
    new = model if inplace else copy.deepcopy(model)
    kept, record = [], []
    for i, (layer, lp) in enumerate(zip(fam.decoder_layers(new), plan.layers)):
        if not lp.keep:
            continue
        lin, mlp = fam.attn_linears(layer), fam.mlp_linears(layer)
        q_ch, kv_ch, neurons = head_channels(lp.kv_groups, dims), kv_channels(lp.kv_groups, dims), list(lp.neurons)
        fam.set_linear(layer, "q", _sliced_linear(lin["q"], rows=q_ch))
        fam.set_linear(layer, "k", _sliced_linear(lin["k"], rows=kv_ch))
        fam.set_linear(layer, "v", _sliced_linear(lin["v"], rows=kv_ch))
        fam.set_linear(layer, "o", _sliced_linear(lin["o"], cols=q_ch))
        fam.set_linear(layer, "gate", _sliced_linear(mlp["gate"], rows=neurons))
        fam.set_linear(layer, "up", _sliced_linear(mlp["up"], rows=neurons))
        fam.set_linear(layer, "down", _sliced_linear(mlp["down"], cols=neurons))
        fam.attention(layer).layer_idx = len(kept)  # KV-cache slot of the layer in the smaller model
        kept.append(layer)
        record.append({
            "source_layer": i,
            "num_attention_heads": len(lp.kv_groups) * dims.q_per_group,
            "num_key_value_heads": len(lp.kv_groups),
            "intermediate_size": len(neurons),
        })
    _set_layers(new, fam, kept)
    extra = {"subnet": subnet.to_dict()} if subnet is not None else {}
    update_config(new.config, fam, dims, record, extra)
    new._nas_llm_plan = plan  # written to subnet.json by export()
    return new
