"""Apply a plan to a model *for a call*: sliced projections swapped in, dropped layers skipped, all restored.

The perplexity objective scores thousands of subnets on one dense model; copying the model per
subnet (``slice_model``) would cost more than the forward. Here the kept layers get the projections
of :func:`nas_llm.model.slicing.sliced_projections` (the same primitive ``slice_model`` keeps) for
the duration of a ``with`` block, so a 50 % subnet also costs about half. Masking shares
:func:`skipped` for dropped layers.
"""
from __future__ import annotations

from contextlib import ExitStack, contextmanager
from typing import Iterator

import torch
import torch.nn as nn

from search_spaces import Plan, get_family
from search_spaces.family import Family

from search_spaces.plan import query_heads

from .slicing import set_query_groups, sliced_projections


@contextmanager
def swapped(layer: nn.Module, fam: Family, new: dict[str, nn.Module], groups: tuple[int, int] | None = None) -> Iterator[None]:
    """Put ``new`` projections (and sliced q/k norms) by role into ``layer``; the originals are back on exit.
    ``groups``: the layer's (query heads, KV heads) while swapped, when a cut changes their ratio."""
    old = {role: fam.module(layer, role) for role in new}
    attn = fam.attention(layer)
    old_groups = getattr(attn, "num_key_value_groups", None)
    try:
        for role, mod in new.items():
            fam.set_module(layer, role, mod)
        if groups is not None:
            set_query_groups(layer, fam, *groups)
        yield
    finally:
        for role in new:
            fam.set_module(layer, role, old[role])
        if old_groups is not None:
            attn.num_key_value_groups = old_groups


def _skip(orig_forward):
    def forward(hidden_states, *args, **kwargs):
        # Under a KV cache the layer still runs so that the cache's per-layer bookkeeping
        # (sequence length is read from layer 0) stays right; its output is discarded.
        if kwargs.get("use_cache") and kwargs.get("past_key_values") is not None:
            orig_forward(hidden_states, *args, **kwargs)
        return hidden_states

    return forward


@contextmanager
def skipped(layer: nn.Module) -> Iterator[None]:
    """``layer`` returns its input (a dropped layer); its class's forward is back on exit."""
    layer.forward = _skip(layer.forward)
    try:
        yield
    finally:
        del layer.forward  # back to the class's forward


@contextmanager
def _fed(layer: nn.Module, inject: dict) -> Iterator[None]:
    """``layer``'s input hidden state is replaced by ``inject["h"]`` (read at each call)."""
    def feed(module, args, kwargs):
        h = inject["h"]
        if args:
            return (h,) + tuple(args[1:]), kwargs
        return args, {**kwargs, "hidden_states": h}

    handle = layer.register_forward_pre_hook(feed, with_kwargs=True)
    try:
        yield
    finally:
        handle.remove()


@contextmanager
def plan_swapped(model: nn.Module, plan: Plan, first: int = 0, weights: dict[tuple[int, str], torch.Tensor] | None = None,
                 start: int = 0, inject: dict | None = None) -> Iterator[nn.Module]:
    """Run ``model`` as the subnet ``plan`` for the duration of the block.

    Dropped layers return their input; kept layers from ``first`` on get sliced projections (kept
    layers before ``first`` stay dense: the caller knows they are unchanged). ``weights[(layer, "o" |
    "down")]`` replaces the sliced weight of that map (e.g. reformed weights, already cut to the kept
    columns). The layers before ``start`` are skipped too, and with ``inject`` layer ``start`` takes its
    input from ``inject["h"]``, read at each call (a cached hidden state: prefix reuse). Everything is restored on exit.
    """
    fam = get_family(model)
    dims = fam.dims(model)
    weights = weights or {}
    with ExitStack() as stack:
        for i, (layer, lp) in enumerate(zip(fam.decoder_layers(model), plan.layers)):
            if inject is not None and i == start:  # also when this layer is dropped: its skip passes the state on
                stack.enter_context(_fed(layer, inject))
            if i < start or not lp.keep:
                stack.enter_context(skipped(layer))
            elif i >= first:
                mine = {role: w for (j, role), w in weights.items() if j == i}
                stack.enter_context(swapped(layer, fam, sliced_projections(layer, fam, lp, dims, mine),
                                            (len(query_heads(lp, dims)), len(lp.kv_groups))))
        yield model


__all__ = ["plan_swapped", "skipped", "swapped"]
