"""Apply a subnet to the dense model without copying weights: the cheap path for evaluation.

Attention heads are independent until ``o_proj`` and MLP neurons until ``down_proj``, so
zeroing the *input* channels of those two maps computes exactly what the sliced model
computes. The channel sets are the input cuts of :func:`nas_llm.model.slicing.layer_cuts` (the
same ones slicing removes); a dropped layer returns its input. Everything is undone on exit.
"""
from __future__ import annotations

from contextlib import ExitStack, contextmanager
from typing import Iterator

import torch
import torch.nn as nn

from search_spaces import Plan, get_family
from search_spaces.family import Family
from search_spaces.plan import check_plan

from .slicing import INPUT_CUT_ROLES, layer_cuts
from .swap import skipped


def _input_mask_hook(mask: torch.Tensor):
    def hook(module: nn.Module, args: tuple) -> tuple:
        return (args[0] * mask,) + tuple(args[1:])

    return hook


@contextmanager
def masked(model: nn.Module, plan: Plan, family: Family | None = None) -> Iterator[nn.Module]:
    """``with masked(model, plan): model(ids)`` computes as the sliced subnet would."""
    fam = family or get_family(model)
    dims = fam.dims(model)
    check_plan(plan, dims)
    handles = []
    with ExitStack() as stack:
        stack.callback(lambda: [h.remove() for h in handles])
        for layer, lp in zip(fam.decoder_layers(model), plan.layers):
            if not lp.keep:
                stack.enter_context(skipped(layer))
                continue
            lin = fam.linears(layer)
            for role, cut in layer_cuts(lp, dims).items():
                if role in INPUT_CUT_ROLES:
                    w = lin[role].weight
                    m = torch.zeros(w.shape[1], dtype=w.dtype, device=w.device)
                    m[cut.cols] = 1
                    handles.append(lin[role].register_forward_pre_hook(_input_mask_hook(m)))
        yield model
