"""``flap-ours``: FLAP's adaptive global structure *in our space* (granularity 64), the row of round 1.

An et al. 2024, "Fluctuation-based Adaptive Structured Pruning", Eq. 5 and 6: fluctuation
S_j = Var_n(X_{n,j}) * ||W_{:,j}||_2^2 on the o_proj/down_proj input channels (unbiased variance
over all calibration tokens); standardised per layer and kind, (S - mean)/std over that layer's
channels; a KV group scores the mean of its standardised channels; one global descending order
over all layers, the compression weight of a structure = its parameter count, cut where the kept
decoder parameters reach the ratio; then bias compensation (Eq. 7) via
``nas_llm.model.reform.reform(..., method="bias")``, which measures the means *sequentially*
through the already-pruned layers.

How it differs from the faithful ``flap`` (see :mod:`nas_llm.baselines.flap`): no squaring of the
attention metric, plain variance instead of FLAP's running estimator, widths rounded to the
64-granularity (the nearest allowed width, at least one block), sequential instead of dense
bias means, and a layer whose order removes *everything* is dropped (if the space allows).
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn as nn

from nas_llm.errors import ConfigError
from search_spaces import LayerChoice, Ranking, Subnet, SubnetSpace, get_family
from search_spaces.plan import head_channels

from nas_llm.model.importance import LayerStats

from .base import Baseline, check_ratio, register, require
from .global_order import cut, kept_counts, standardise


def _fluctuation(W: torch.Tensor, st: LayerStats, key: str) -> np.ndarray:
    """FLAP Eq. 5 per input channel: unbiased Var over tokens of X_j, times ||W_:,j||^2."""
    n = st.n
    mean = st.s[key] / n
    var = (st.sq[key] / n - mean**2).clamp_min(0) * n / max(n - 1, 1)
    return (var * (W.detach().double() ** 2).sum(0)).cpu().numpy()


def flap_metrics(model: nn.Module, stats: list[LayerStats]) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Standardised scores of ``flap-ours``: per layer, one per KV group (mean of its channels) and one per neuron."""
    fam = get_family(model)
    dims = fam.dims(model)
    attn, mlp = [], []
    for layer, st in zip(fam.decoder_layers(model), stats):
        if st.n < 2:
            raise ConfigError("FLAP needs calibration statistics of >= 2 tokens: pass stats=calibration_stats(model, ids)")
        ch = standardise(_fluctuation(fam.attn_linears(layer)["o"].weight, st, "o"))
        attn.append(np.asarray([ch[head_channels([g], dims)].mean() for g in range(dims.num_kv_heads)]))
        mlp.append(standardise(_fluctuation(fam.mlp_linears(layer)["down"].weight, st, "down")))
    return attn, mlp


def round_neurons(space: SubnetSpace, k: int) -> int:
    """Nearest allowed width to ``k`` kept neurons (ties round up), at least one block."""
    return min(space.neuron_choices, key=lambda c: (abs(c - k), -c))


@register("flap-ours", paper="An et al. 2024 (FLAP), in our space", needs="stats", structure="global", granularity=None,
          reform="bias", head_unit="kv-group")
def flap_ours(model: nn.Module, ratio: float, stats: list[LayerStats] | None, space: SubnetSpace | None = None,
              calib: torch.Tensor | None = None) -> Baseline:
    """FLAP's adaptive global structure, rounded to our space (see the module docstring)."""
    check_ratio(ratio)
    require(stats, "flap-ours")
    space = space or SubnetSpace.from_model(model)
    d = space.dims
    attn, mlp = flap_metrics(model, stats)
    L, G, I = d.num_layers, d.num_kv_heads, d.intermediate
    order, attn_cum, mlp_cum = kept_counts(attn, mlp)

    def subnet_at(k: int) -> Subnet:
        layers = []
        for i in range(L):
            a, m = int(attn_cum[k, i]), int(mlp_cum[k, i])
            keep = not (a == 0 and m == 0 and space.allow_layer_drop)
            layers.append(LayerChoice(max(a, 1), round_neurons(space, m), keep))
        if not any(c.keep for c in layers):  # everything gone: keep the layer of the top structure
            top = int(np.argmax(attn_cum[1] + mlp_cum[1]))
            layers[top] = LayerChoice(layers[top].kv_groups, layers[top].neurons, True)
        return Subnet(tuple(layers))

    best = cut(len(order), ratio, lambda k: space.ratio(subnet_at(k)))
    subnet = space.validate(subnet_at(best))
    w_attn = space.layer_params(G, I) - space.layer_params(G - 1, I)
    w_neuron = space.layer_params(G, I) - space.layer_params(G, I - 1)
    raw_kept = float((attn_cum[best].sum() * w_attn + mlp_cum[best].sum() * w_neuron) / (L * (G * w_attn + I * w_neuron)))
    return Baseline("flap-ours", ratio, subnet, Ranking.from_scores(attn, mlp, None, "flap-ours"), reform="bias",
                    info={"structures_kept": best, "raw_kept_fraction": raw_kept}, space=space)


__all__ = ["flap_metrics", "flap_ours", "round_neurons"]
