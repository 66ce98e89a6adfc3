"""``owl-wanda-sp``: Wanda-sp with OWL's per-layer ratios (Yin et al. 2024, "Outlier Weighed Layerwise
Sparsity (OWL)"; official code luuyin/OWL, ``lib/prune_all.py:prune_wanda_outlier``).

OWL, as their code computes it on the dense model:

1. Per layer l, the Wanda score A_ij = |W_ij| * ||X_j||_2 of *every* weight of every linear in the
   layer (q, k, v, o, gate, up, down; X the linear's input), all concatenated.
2. Layer outlier ratio D_l = fraction of those scores above M * mean(scores) (``check_outlier_mean``).
3. Densities (kept fractions): r_l = (D_l - min D) / (max D - min D) * 2 lambda, then
   r_l <- r_l - mean(r) + (1 - sparsity): mean = the target, range 2 lambda; more outliers keep more.
   Paper defaults for LLaMA M = 5, lambda = 0.08 (their README; ``--Hyper_m 5 --Lamda 0.08``).

Adapted to structured widths (OWL itself prunes single weights): layer l keeps (KV groups, neurons)
whose share of the layer's parameters is nearest r_l + delta (KV groups rounded up as in our uniform
Wanda-sp, MLP at granularity 64, :func:`~nas_llm.baselines.base.layer_choice`), one shift delta for
all layers chosen so that the *realised* decoder-param ratio is nearest the request (rounding moves
it; OWL's mean-equals-target is the delta = 0 case). Which heads/neurons stay: Wanda-sp scores.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn as nn

from nas_llm.errors import ConfigError
from search_spaces import Ranking, Subnet, SubnetSpace, get_family

from nas_llm.model.importance import LayerStats, scores_from_stats

from .base import Baseline, check_ratio, layer_choice, register, require

M_DEFAULT = 5.0
LAMBDA_DEFAULT = 0.08
_INPUT_OF = {"q": "attn_in", "k": "attn_in", "v": "attn_in", "o": "o", "gate": "mlp_in", "up": "mlp_in", "down": "down"}


def outlier_ratios(model: nn.Module, stats: list[LayerStats], M: float = M_DEFAULT) -> np.ndarray:
    """D_l: fraction of the layer's Wanda scores |W_ij| ||X_j|| above M times their mean."""
    fam = get_family(model)
    out = []
    for i, (layer, st) in enumerate(zip(fam.decoder_layers(model), stats)):
        lins = {**fam.attn_linears(layer), **fam.mlp_linears(layer)}
        missing = sorted({_INPUT_OF[r] for r in lins} - set(st.sq))
        if missing:
            raise ConfigError(f"layer {i}: OWL needs the input norms of {missing}: pass stats=calibration_stats(model, ids)")
        scores = torch.cat([(lin.weight.detach().double().abs() * st.sq[_INPUT_OF[r]].sqrt()[None, :]).flatten()
                            for r, lin in lins.items()])
        out.append(float((scores > M * scores.mean()).double().mean()))
    return np.asarray(out)


def owl_densities(D: np.ndarray, ratio: float, lam: float = LAMBDA_DEFAULT) -> np.ndarray:
    """OWL's per-layer kept fractions: D min-max scaled to [0, 2 lambda], shifted to mean ``ratio``."""
    D = np.asarray(D, dtype=np.float64)
    span = D.max() - D.min()
    r = (D - D.min()) / span * 2 * lam if span > 0 else np.zeros_like(D)
    return r - r.mean() + ratio


def structured(space: SubnetSpace, densities: np.ndarray, ratio: float, heads: str = "ceil") -> tuple[Subnet, float]:
    """(subnet, delta): per-layer widths for ``densities + delta``, delta bisected to the nearest realised ratio."""
    def at(delta: float) -> Subnet:
        return Subnet(tuple(layer_choice(space, float(np.clip(d + delta, 1e-6, 1.0)), heads) for d in densities))

    lo, hi = -1.0, 1.0
    for _ in range(40):  # the realised ratio grows with delta (up to rounding): bisect for the crossing
        mid = (lo + hi) / 2
        if space.ratio(at(mid)) >= ratio:
            hi = mid
        else:
            lo = mid
    delta = min((lo, hi, 0.0), key=lambda t: (abs(space.ratio(at(t)) - ratio), abs(t)))
    return at(delta), delta


@register("owl-wanda-sp", paper="Yin et al. 2024 (OWL) ratios + Wanda-sp scores", needs="stats", structure="per-layer",
          granularity=None, reform=None, head_unit="kv-group/mqa-head")
def owl_wanda_sp(model: nn.Module, ratio: float, stats: list[LayerStats] | None, space: SubnetSpace | None = None,
                 calib: torch.Tensor | None = None, M: float = M_DEFAULT, lam: float = LAMBDA_DEFAULT,
                 heads: str = "ceil") -> Baseline:
    """Per-layer widths from OWL's outlier ratios, heads/neurons chosen by Wanda-sp (see the module docstring)."""
    check_ratio(ratio)
    require(stats, "owl-wanda-sp")
    space = space or SubnetSpace.from_model(model)
    D = outlier_ratios(model, stats, M)
    dens = owl_densities(D, ratio, lam)
    subnet, delta = structured(space, dens, ratio, heads)
    sc = scores_from_stats(model, stats, "wanda")
    info = {"outlier_ratio": D.tolist(), "density": dens.tolist(), "delta": delta, "M": M, "lambda": lam}
    return Baseline("owl-wanda-sp", ratio, subnet, Ranking.from_scores(sc.kv, sc.neurons, None, "owl-wanda-sp", sc.heads), info=info,
                    space=space)


__all__ = ["LAMBDA_DEFAULT", "M_DEFAULT", "outlier_ratios", "owl_densities", "owl_wanda_sp", "structured"]
