"""Apply a subnet to the dense model without copying weights: the cheap path for evaluation.

Attention heads are independent until ``o_proj`` and MLP neurons until ``down_proj``, so
zeroing the *input* channels of those two maps computes exactly what the sliced model
computes. The channel sets are the input cuts of :func:`nas_llm.model.slicing.layer_cuts` (the
same ones slicing removes); a dropped layer returns its input. The one coupling across heads
is a q/k norm over the whole projection width (OLMo2): its statistics would still see the
removed heads, so its output is recomputed over the kept channels with the sliced norm.
Everything is undone on exit.
"""
from __future__ import annotations

from contextlib import ExitStack, contextmanager
from typing import Iterator

import torch
import torch.nn as nn

from search_spaces import Plan, get_family
from search_spaces.family import Family
from search_spaces.plan import check_plan

from .slicing import INPUT_CUT_ROLES, layer_cuts, sliced_norm
from .swap import skipped


def _input_mask_hook(mask: torch.Tensor):
    def hook(module: nn.Module, args: tuple) -> tuple:
        return (args[0] * mask,) + tuple(args[1:])

    return hook


def _kept_width_norm_hook(norm: nn.Module, rows: list[int]):
    """The norm's output as the sliced norm computes it on the kept channels, zero elsewhere."""
    small = sliced_norm(norm, rows)

    def hook(module: nn.Module, args: tuple, out: torch.Tensor) -> torch.Tensor:
        idx = torch.as_tensor(rows, device=out.device)
        new = torch.zeros_like(out)
        new[..., idx] = small(args[0].index_select(-1, idx))
        return new

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
            width_norms = fam.sliced_norm_roles if fam.head_norm_layout == "width" else ()
            for role, cut in layer_cuts(lp, dims, width_norms).items():
                mod = fam.module(layer, role)
                if role in INPUT_CUT_ROLES:
                    w = mod.weight
                    m = torch.zeros(w.shape[1], dtype=w.dtype, device=w.device)
                    m[cut.cols] = 1
                    handles.append(mod.register_forward_pre_hook(_input_mask_hook(m)))
                elif role in width_norms:
                    handles.append(mod.register_forward_hook(_kept_width_norm_hook(mod, cut.rows)))
        yield model
