"""Uniform-width baselines: the same KV groups and MLP width in every layer, ranked by a per-structure score.

- ``magnitude`` (naive): structures ranked by sum |W| over their coupled weights
  (q,k,v rows + o columns; gate,up rows + down column); needs no calibration data.
- ``uniform-hybrid`` (this project): the same uniform widths, filled by the search's default ranking
  (``nas_llm.model.importance``, ``hybrid``: KV groups and query heads by OBS, neurons by Wanda-sp); with
  ``wanda-sp`` beside it, a table separates what a searched allocation gains from what the ranking gains.
- ``wanda-sp`` (An et al. 2024, FLAP, Sec. 5 / their ``prune_wanda_sp``; Wanda, Sun et al. 2023,
  Eq. 1 S_ij = |W_ij| * ||X_j||_2 made structured): channel score S_j = mean_i |W_ij| * ||X_j||_2
  on o/down input channels, a KV group sums its channels; the *same* ratio in every layer.

Remaining differences to FLAP's ``prune_wanda_sp`` (kept on purpose, so that the uniform rows
isolate the *score*): our statistics come from one dense pass (theirs are re-collected through
the already-pruned earlier layers), calibration is the protocol's (theirs: 128 C4 samples), and
the width follows :func:`~nas_llm.baselines.base.uniform_subnet` (KV groups rounded up, the MLP
takes the rest at granularity 64; theirs cuts ``int(ratio * heads)`` heads and neurons alike).
"""
from __future__ import annotations

import torch
import torch.nn as nn

from search_spaces import Ranking, SubnetSpace

from nas_llm.model.importance import DEFAULT_DAMP, LayerStats, fingerprint, importance_ranking, scores_from_stats

from .base import Baseline, memo, register, require, stats_or_empty, uniform_subnet


@register("magnitude", paper="naive magnitude baseline", needs="nothing", structure="uniform", granularity=None,
          reform=None, head_unit="kv-group/mqa-head")
def magnitude(model: nn.Module, ratio: float, stats: list[LayerStats] | None = None, space: SubnetSpace | None = None,
              heads: str = "ceil", calib: torch.Tensor | None = None) -> Baseline:
    """Uniform widths, ranked by weight magnitude (needs no calibration data)."""
    space = space or SubnetSpace.from_model(model)
    sc = scores_from_stats(model, stats_or_empty(model, stats), "magnitude")
    return Baseline("magnitude", ratio, uniform_subnet(space, ratio, heads), Ranking.from_scores(sc.kv, sc.neurons, None, "magnitude", sc.heads),
                    space=space)


@register("wanda-sp", paper="An et al. 2024 (FLAP), Sec. 5; Sun et al. 2023 (Wanda)", needs="stats", structure="uniform",
          granularity=None, reform=None, head_unit="kv-group/mqa-head")
def wanda_sp(model: nn.Module, ratio: float, stats: list[LayerStats] | None, space: SubnetSpace | None = None,
             heads: str = "ceil", calib: torch.Tensor | None = None) -> Baseline:
    """Uniform widths, ranked by Wanda-sp: mean_i |W_ij| * ||X_j||_2 on o/down input channels."""
    require(stats, "wanda-sp")
    space = space or SubnetSpace.from_model(model)
    sc = scores_from_stats(model, stats, "wanda")
    return Baseline("wanda-sp", ratio, uniform_subnet(space, ratio, heads), Ranking.from_scores(sc.kv, sc.neurons, None, "wanda-sp", sc.heads),
                    space=space)


@register("uniform-hybrid", paper="this project: uniform widths, the search's default ranking (OBS heads, Wanda-sp neurons)",
          needs="calib", structure="uniform", granularity=None, reform=None, head_unit="kv-group/mqa-head")
def uniform_hybrid(model: nn.Module, ratio: float, stats: list[LayerStats] | None = None, space: SubnetSpace | None = None,
                   heads: str = "ceil", calib: torch.Tensor | None = None) -> Baseline:
    """Uniform widths, ranked by ``hybrid`` importance (KV groups and query heads by OBS, neurons by Wanda-sp).

    Why a baseline: where the uniform subnet drops a KV group (60 / 50 % on SmolLM2), OBS picks the group far better
    than Wanda-sp, so uniform Wanda-sp alone would credit the search's allocation with the ranking's gain. Needs the
    calibration tokens (the OBS scores read input Hessians, which :func:`~nas_llm.baselines.calibration_stats` skips);
    the ranking is computed once per model and calibration.
    """
    require(calib, "uniform-hybrid", kind="calib")
    space = space or SubnetSpace.from_model(model)
    ranking = memo(fingerprint(model, calib, "hybrid", DEFAULT_DAMP),
                   lambda: importance_ranking(model, calib, method="hybrid", progress=False))
    return Baseline("uniform-hybrid", ratio, uniform_subnet(space, ratio, heads), ranking, space=space)


__all__ = ["magnitude", "uniform_hybrid", "wanda_sp"]
