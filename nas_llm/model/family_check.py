"""The on-the-spot check of a family inferred from a model's modules (``search_spaces.infer``).

An inferred family is a guess about roles; a wrong guess (a norm that couples heads, a projection that is
not what its name says) shows as masked and sliced subnets computing different logits. Before any search,
one random subnet that cuts KV groups, query heads and neurons and drops a layer is run both ways on a
few random tokens; a difference refuses the model with the number, instead of a search on a wrong space.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn as nn

from nas_llm.errors import UnsupportedModelError
from search_spaces import Ranking, Subnet, SubnetSpace, get_family

_CHECKED: set[int] = set()
TOLERANCE = 1e-4  # relative to the largest |logit|; fp32 masked vs sliced agree to ~1e-6


def check_family(model: nn.Module, tokens: int = 8, seed: int = 0) -> float | None:
    """Check ``model``'s family when it was inferred (declared families are tested in CI); returns the
    relative logit difference found, None when there was nothing to check."""
    fam = get_family(model)
    if not fam.inferred or id(model) in _CHECKED:
        return None
    from .masking import masked
    from .slicing import slice_model

    space = SubnetSpace.from_model(model, granularity=1)
    d = space.dims
    rng = np.random.default_rng(seed)
    layers = [space.choice(max(1, d.num_kv_heads - 1), max(1, d.intermediate // 2), True,
                           max(1, d.q_per_group - 1) if space.searches_heads else None) for _ in range(d.num_layers)]
    if d.num_layers > 1:  # drop one layer too
        i = int(rng.integers(d.num_layers))
        layers[i] = space.choice(layers[i].kv_groups, layers[i].neurons, False, layers[i].heads_per_group)
    subnet = space.validate(Subnet(tuple(layers)))
    ranking = Ranking.from_scores([rng.random(d.num_kv_heads) for _ in range(d.num_layers)],
                                  [rng.random(d.intermediate) for _ in range(d.num_layers)],
                                  head_scores=[rng.random(d.num_heads) for _ in range(d.num_layers)])
    plan = ranking.resolve(subnet)
    dev = next(model.parameters()).device
    ids = torch.as_tensor(rng.integers(0, d.vocab, (1, tokens)), device=dev)
    try:
        with torch.no_grad():
            with masked(model, plan):
                a = model(ids).logits.float()
            b = slice_model(model, plan)(ids).logits.float()
        diff = float((a - b).abs().max() / a.abs().max().clamp_min(1e-6))
    except (RuntimeError, ValueError, IndexError) as e:  # shapes the inference got wrong
        raise UnsupportedModelError(
            f"the family inferred for {type(model).__name__} ({fam.name}) fails its check: a subnet could not run "
            f"masked vs sliced ({type(e).__name__}: {str(e).splitlines()[0][:200]}). Declare the family by hand: "
            "search_spaces.register_family(Family(...)).") from e
    if not diff <= TOLERANCE:
        raise UnsupportedModelError(
            f"the family inferred for {type(model).__name__} ({fam.name}) fails its check: a subnet computes logits "
            f"{diff:.2e} (relative) apart masked vs sliced (allowed {TOLERANCE:g}), so some module couples what the "
            "inference took as separable (e.g. a norm over the whole attention width). Declare the family by hand: "
            "search_spaces.register_family(Family(...)).")
    _CHECKED.add(id(model))
    return diff


__all__ = ["check_family"]
