"""How well latency predictors track measurements: measured vs predicted over subnets spread in size.

:func:`sample_spread` draws subnets from ~0.2 to 1 of the dense size (``space.sample`` clusters near
one ratio), :func:`validate_predictors` times them sliced, in interleaved rounds, and reports each
predictor's Spearman rank correlation and mean absolute percentage error.
"""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import torch.nn as nn

from nas_llm.model.slicing import slice_model
from search_spaces import Ranking, Subnet, SubnetSpace, get_family

from .latency import mape, measure_interleaved, spearman
from .predictors import LatencyPredictor, checked_predict


def sample_spread(space: SubnetSpace, rng: np.random.Generator) -> Subnet:
    """A random subnet whose size is spread over the space: a scale f ~ U(0.3, 1) sets the mean width.

    ``space.sample`` draws every layer independently, so its subnets all sit near the same
    param ratio (~0.5) and a rank correlation then mostly measures noise; these span ~0.2-1.
    """
    d = space.dims
    f = rng.uniform(0.3, 1.0)
    layers = []
    for _ in range(d.num_layers):
        kv = int(np.clip(round(d.num_kv_heads * f * rng.uniform(0.7, 1.3)), 1, d.num_kv_heads))
        target = d.intermediate * f * rng.uniform(0.7, 1.3)
        n = min(space.neuron_choices, key=lambda c: abs(c - target))
        q = None
        if space.searches_heads:  # query heads per group spread the same way (None: all of them)
            q = int(np.clip(round(d.q_per_group * f * rng.uniform(0.7, 1.3)), 1, d.q_per_group))
        layers.append(space.choice(kv, n, bool(rng.random() >= 0.25 * (1 - f)), q))
    if not any(c.keep for c in layers):
        layers[0] = replace(layers[0], keep=True)
    return space.validate(Subnet(tuple(layers)))


def validate_predictors(model: nn.Module, predictors: dict[str, LatencyPredictor], subnets: list[Subnet],
                        ranking: Ranking | None = None, mode: str = "prefill", batch: int = 1, seq_len: int = 128,
                        rounds: int = 2, min_run_time: float = 0.2, progress: bool = True,
                        stat: str = "median") -> dict:
    """Measure ``subnets`` (sliced, interleaved rounds) and score each (set-up) predictor: Spearman, MAPE.

    ``stat`` is the per-round statistic of the measurement (see :func:`objectives.latency.measure_interleaved`);
    compare a table built with the same one.
    """
    d = get_family(model).dims(model)
    rank = ranking or Ranking.identity(d.num_layers, d.num_kv_heads, d.intermediate)
    # predictions first: a predictor returning garbage fails before minutes of timing
    preds = {name: [checked_predict(p, s) for s in subnets] for name, p in predictors.items()}
    builders = {f"s{i}": (lambda s=s: slice_model(model, rank.resolve(s))) for i, s in enumerate(subnets)}
    meas = measure_interleaved(builders, mode, batch, seq_len, rounds=rounds, min_run_time=min_run_time,
                               progress=progress, stat=stat)
    m = [meas[f"s{i}"].median_s for i in range(len(subnets))]
    out: dict = {"measured_s": m, "iqr_s": [meas[f"s{i}"].iqr_s for i in range(len(subnets))], "predictors": {}}
    for name, pr in preds.items():
        out["predictors"][name] = {"pred_s": pr, "spearman": spearman(pr, m), "mape": mape(pr, m)}
    return out
