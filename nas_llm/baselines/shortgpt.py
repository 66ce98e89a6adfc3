"""``shortgpt`` (Men et al. 2024, Eq. 1): drop the layers of lowest Block Influence.

BI_i = 1 - E_t[cos(h_i,t, h_{i+1},t)] from one dense pass; the number of dropped layers is the one
whose decoder-param ratio is nearest the request (a step is one whole layer).
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn as nn

from nas_llm.errors import ConfigError
from search_spaces import Ranking, SubnetError, SubnetSpace

from nas_llm.model.importance import LayerStats

from .base import Baseline, check_ratio, register, require


def depth_subnet(space: SubnetSpace, ratio: float, drop_order: list[int]):
    """Drop the first n layers of ``drop_order``, n the count nearest ``ratio`` (ties: fewer dropped)."""
    if not space.allow_layer_drop:
        raise SubnetError("this baseline drops layers, but this space disallows layer dropping")
    cands = [space.uniform(drop=drop_order[:n]) for n in range(min(len(drop_order), space.num_layers - 1) + 1)]
    return min(cands, key=lambda s: (abs(space.ratio(s) - ratio), -space.ratio(s)))


def n_to_drop(space: SubnetSpace, ratio: float) -> int:
    """How many (equal-sized) layers to drop to come nearest ``ratio`` (ties: fewer)."""
    sub = depth_subnet(space, ratio, list(range(space.num_layers)))
    return sum(not c.keep for c in sub.layers)


@register("shortgpt", paper="Men et al. 2024 (ShortGPT)", needs="stats", structure="depth", granularity=None,
          reform=None, head_unit=None)
def shortgpt(model: nn.Module, ratio: float, stats: list[LayerStats] | None, space: SubnetSpace | None = None,
             calib: torch.Tensor | None = None) -> Baseline:
    """Drop the layers of lowest Block Influence; their number is the one nearest ``ratio``."""
    check_ratio(ratio)
    require(stats, "shortgpt")
    space = space or SubnetSpace.from_model(model)
    if not all(st.n for st in stats):
        raise ConfigError("shortgpt needs Block Influence: pass stats=calibration_stats(model, ids)")
    bi = np.asarray([1.0 - st.cos_sum / st.n for st in stats])
    order = np.argsort(bi, kind="stable").tolist()  # lowest influence first
    subnet = depth_subnet(space, ratio, order)
    d = space.dims
    ranking = Ranking([np.arange(d.num_kv_heads)] * d.num_layers, [np.arange(d.intermediate)] * d.num_layers, bi, "shortgpt")
    return Baseline("shortgpt", ratio, subnet, ranking, info={"block_influence": bi.tolist()}, space=space)


__all__ = ["depth_subnet", "n_to_drop", "shortgpt"]
