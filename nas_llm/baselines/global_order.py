"""FLAP's adaptive global structure (AL-AM): one descending order over every layer's heads and neurons.

Both FLAP rows cut this order where the kept decoder parameters reach the ratio; they differ in
the scores fed in and in how kept counts become widths (``subnet_at``).
"""
from __future__ import annotations

from typing import Callable

import numpy as np


def kept_counts(attn: list[np.ndarray], mlp: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(order, attn_cum, mlp_cum): ``attn_cum[k, i]`` = head structures of layer i among the first k of the order.

    ``order`` sorts all structures (heads of every layer first, then neurons) by descending score,
    stably; memory is (N+1) x L ints (~46k x 30 for SmolLM2).
    """
    L = len(attn)
    scores = np.concatenate([np.concatenate(attn), np.concatenate(mlp)])
    layer_of = np.concatenate([np.concatenate([np.full(len(a), i) for i, a in enumerate(attn)]),
                               np.concatenate([np.full(len(m), i) for i, m in enumerate(mlp)])])
    is_attn = np.concatenate([np.ones(sum(len(a) for a in attn), bool), np.zeros(sum(len(m) for m in mlp), bool)])
    order = np.argsort(-scores, kind="stable")
    steps = np.arange(1, len(order) + 1)
    attn_cum = np.zeros((len(order) + 1, L), dtype=np.int32)
    mlp_cum = np.zeros((len(order) + 1, L), dtype=np.int32)
    np.add.at(attn_cum, (steps[is_attn[order]], layer_of[order][is_attn[order]]), 1)
    np.add.at(mlp_cum, (steps[~is_attn[order]], layer_of[order][~is_attn[order]]), 1)
    return order, attn_cum.cumsum(0), mlp_cum.cumsum(0)


def cut(n: int, ratio: float, ratio_at: Callable[[int], float]) -> int:
    """The k in [0, n] whose ratio (non-decreasing in k) is nearest ``ratio``; ties take fewer structures.

    Searched on the *realised* ratio of the rounded subnet, not on a raw cumulative sum, so every
    row of a table sits at the same parameter count whatever rounding its method needs.
    """
    lo, hi = 0, n
    while lo < hi:
        mid = (lo + hi) // 2
        if ratio_at(mid) >= ratio:
            hi = mid
        else:
            lo = mid + 1
    return min({max(lo - 1, 0), lo}, key=lambda k: (abs(ratio_at(k) - ratio), k))


def standardise(x: np.ndarray) -> np.ndarray:
    """(x - mean) / std over one layer's channels, std unbiased (FLAP's ``standarlization``, torch.std)."""
    sd = x.std(ddof=1)
    return (x - x.mean()) / (sd if sd > 0 else 1.0)


__all__ = ["cut", "kept_counts", "standardise"]
