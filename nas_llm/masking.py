"""Apply a subnet to the dense model without copying weights: the cheap path for evaluation.

Attention heads are independent until ``o_proj`` and MLP neurons until ``down_proj``, so
zeroing the *input* channels of those two maps computes exactly what the sliced model
computes. A dropped layer returns its input. Everything is undone on exit.
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import torch
import torch.nn as nn

from search_spaces import Plan, SubnetError, get_family
from search_spaces.family import Family, ModelDims


def head_channels(kv_groups, dims: ModelDims) -> list[int]:
    """``o_proj`` input / ``q_proj`` output channels of the query heads of the given KV groups.

    HF's ``repeat_kv`` gives query head h the KV head h // q_per_group, so KV group g owns
    query heads g*q_per_group ... (g+1)*q_per_group - 1.
    """
    qpg, hd = dims.q_per_group, dims.head_dim
    return [c for g in kv_groups for h in range(g * qpg, (g + 1) * qpg) for c in range(h * hd, (h + 1) * hd)]


def kv_channels(kv_groups, dims: ModelDims) -> list[int]:
    hd = dims.head_dim
    return [c for g in kv_groups for c in range(g * hd, (g + 1) * hd)]


def check_plan(plan: Plan, dims: ModelDims) -> None:
    if len(plan.layers) != dims.num_layers:
        raise SubnetError(f"plan has {len(plan.layers)} layers, the model has {dims.num_layers}")
    for i, lp in enumerate(plan.layers):
        if lp.keep and not lp.kv_groups:
            raise SubnetError(f"layer {i}: 0 KV groups kept; keep at least 1 or drop the layer")
        if lp.keep and not lp.neurons:
            raise SubnetError(f"layer {i}: 0 MLP neurons kept; keep at least one block or drop the layer")
        if any(not 0 <= g < dims.num_kv_heads for g in lp.kv_groups):
            raise SubnetError(f"layer {i}: KV group index outside [0, {dims.num_kv_heads - 1}]")
        if any(not 0 <= n < dims.intermediate for n in lp.neurons):
            raise SubnetError(f"layer {i}: neuron index outside [0, {dims.intermediate - 1}]")
    if not any(lp.keep for lp in plan.layers):
        raise SubnetError("all layers are dropped; keep at least one")


def _input_mask_hook(mask: torch.Tensor):
    def hook(module: nn.Module, args: tuple) -> tuple:
        return (args[0] * mask,) + tuple(args[1:])

    return hook


def _skip_layer(orig_forward):
    def forward(hidden_states, *args, **kwargs):
        # Under a KV cache the layer still runs so that the cache's per-layer bookkeeping
        # (sequence length is read from layer 0) stays right; its output is discarded.
        if kwargs.get("use_cache") and kwargs.get("past_key_values") is not None:
            orig_forward(hidden_states, *args, **kwargs)
        return hidden_states

    return forward


@contextmanager
def masked(model: nn.Module, plan: Plan, family: Family | None = None) -> Iterator[nn.Module]:
    """``with masked(model, plan): model(ids)`` computes as the sliced subnet would."""
    fam = family or get_family(model)
    dims = fam.dims(model.config)
    check_plan(plan, dims)
    layers = fam.decoder_layers(model)
    handles, patched = [], []
    try:
        for layer, lp in zip(layers, plan.layers):
            if not lp.keep:
                layer.forward = _skip_layer(layer.forward)
                patched.append(layer)
                continue
            lin = fam.attn_linears(layer)
            mlp = fam.mlp_linears(layer)
            w = lin["o"].weight
            if len(lp.kv_groups) < dims.num_kv_heads:
                m = torch.zeros(w.shape[1], dtype=w.dtype, device=w.device)
                m[head_channels(lp.kv_groups, dims)] = 1
                handles.append(lin["o"].register_forward_pre_hook(_input_mask_hook(m)))
            if len(lp.neurons) < dims.intermediate:
                wd = mlp["down"].weight
                m = torch.zeros(wd.shape[1], dtype=wd.dtype, device=wd.device)
                m[list(lp.neurons)] = 1
                handles.append(mlp["down"].register_forward_pre_hook(_input_mask_hook(m)))
        yield model
    finally:
        for h in handles:
            h.remove()
        for layer in patched:
            del layer.forward  # back to the class's forward
