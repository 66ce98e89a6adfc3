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

from search_spaces import Plan, get_family
from search_spaces.family import Family
from search_spaces.plan import check_plan, head_channels


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
