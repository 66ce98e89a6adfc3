"""Published structured-pruning baselines, expressed as subnets of *our* space.

Every baseline returns a :class:`Baseline` (a ``Subnet`` + the ``Ranking`` that resolves it +
the weight update the method applies afterwards), so slicing, export, evaluation and latency
are literally the same code for the baselines and for the search. Each hits the requested
decoder-parameter ratio within one granularity step (:func:`ratio_step`).

Methods (X_j = input channel j of ``o_proj``/``down_proj`` over the N calibration tokens):

- ``magnitude`` (naive): uniform widths, structures ranked by sum |W| over their coupled weights
  (q,k,v rows + o columns; gate,up rows + down column).
- ``wanda-sp`` (An et al. 2024, FLAP, Sec. 5 / their ``prune_wanda_sp``; Wanda, Sun et al. 2023,
  Eq. 1 S_ij = |W_ij| * ||X_j||_2 made structured): channel score
  S_j = mean_i |W_ij| * ||X_j||_2, a KV group sums its channels; the *same* ratio in every layer.
- ``flap`` (An et al. 2024, "Fluctuation-based Adaptive Structured Pruning", Eq. 5 and 6):
  fluctuation S_j = Var_n(X_{n,j}) * ||W_{:,j}||_2^2; standardised per layer and kind
  (S - mean)/std over that layer's channels (their ``standarlization``), a head-structure scores
  the mean of its standardised channels; one global descending order over all layers with the
  compression weight of a structure = its parameter count (FLAP's 512/3 for LLaMA heads vs
  neurons), cut where the cumulative kept parameters reach the ratio; then bias compensation
  (Eq. 7: b' = W_{:,pruned} mean(X_pruned)) via ``nas_llm.model.reform.reform(..., method="bias")``.
- ``shortgpt`` (Men et al. 2024, Eq. 1): Block Influence BI_i = 1 - E_t[cos(h_i,t, h_{i+1},t)];
  drop the n layers of lowest BI, n chosen to hit the ratio.

Adaptations to our space (documented, tested): widths are multiples of the granularity (64);
uniform methods keep ``ceil(ratio * G)`` KV groups (GQA groups are the smallest head structure
that can be removed; rounding up never cuts attention harder than the ratio) and fit the MLP
width to the ratio; FLAP keeps >= 1 KV group
and >= 1 neuron block in a layer unless its global order removes *everything* in that layer, in
which case the layer is dropped (if the space allows). Rounding moves the parameter count, so
FLAP's cut point is searched on the *rounded* subnet's exact ratio instead of the raw cumsum.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch
import torch.nn as nn

from nas_llm.errors import ConfigError
from search_spaces import LayerChoice, Plan, Ranking, Subnet, SubnetError, SubnetSpace, get_family

from nas_llm.model.importance import LayerStats, collect_stats, scores_from_stats
from search_spaces.plan import head_channels

__all__ = ["Baseline", "BASELINES", "baseline", "calibration_stats", "flap", "flap_metrics", "magnitude",
           "ratio_step", "shortgpt", "uniform_subnet", "wanda_sp"]


@dataclass(frozen=True)
class Baseline:
    """A baseline's choice in our space, and the weight update its paper applies after pruning."""

    method: str
    ratio: float  # requested decoder-param ratio
    subnet: Subnet
    ranking: Ranking
    reform: str | None = None  # "bias" for FLAP; None = plain slicing
    info: dict = field(default_factory=dict)

    def plan(self) -> Plan:
        return self.ranking.resolve(self.subnet)


def calibration_stats(model: nn.Module, input_ids: torch.Tensor, batch_size: int = 4, progress: bool = True) -> list[LayerStats]:
    """One dense pass serving every baseline (no input Hessians: none of them needs one)."""
    return collect_stats(model, input_ids, batch_size=batch_size, hessian=False, progress=progress)


def ratio_step(space: SubnetSpace) -> float:
    """Decoder-param ratio of one granularity block of neurons in *every* layer: the tolerance."""
    d = space.dims
    per_layer = space.layer_params(d.num_kv_heads, space.neuron_choices[1]) - space.layer_params(d.num_kv_heads, space.neuron_choices[0])
    return d.num_layers * per_layer / space.params(space.dense())


def _check_ratio(ratio: float) -> None:
    if not 0 < ratio <= 1:
        raise ConfigError(f"ratio must be in (0, 1] (kept fraction of decoder parameters), got {ratio}")


HEAD_ROUNDING = ("ceil", "nearest", "keep")


def uniform_subnet(space: SubnetSpace, ratio: float, heads: str = "ceil") -> Subnet:
    """Same widths in every layer: KV groups from ``ratio * G``, MLP width fitted to the ratio.

    With few KV groups (SmolLM2 has 3) ``ratio * G`` is rarely an integer. ``heads="ceil"``
    (default) rounds up: attention is never cut harder than the ratio, the MLP takes the rest
    (measured on SmolLM2 to be the stronger choice, see benchmarks/RESULTS.md); ``"nearest"``
    rounds to the nearest count, ``"keep"`` keeps all heads (MLP-only). If the MLP cannot
    absorb the rest within half a granularity step, the next KV count that can is used.
    """
    _check_ratio(ratio)
    if heads not in HEAD_ROUNDING:
        raise ConfigError(f"heads must be one of {', '.join(HEAD_ROUNDING)}, got {heads!r}")
    G = space.dims.num_kv_heads
    want = {"ceil": min(G, max(1, math.ceil(ratio * G - 1e-9))), "nearest": min(G, max(1, round(ratio * G))), "keep": G}[heads]
    half = ratio_step(space) / 2 + 1e-9
    cands = []
    for kv in range(1, G + 1):
        s = min((space.uniform(kv, n) for n in space.neuron_choices), key=lambda s: abs(space.ratio(s) - ratio))
        err = abs(space.ratio(s) - ratio)
        cands.append((err > half, abs(kv - want), err, s))
    return min(cands, key=lambda c: c[:3])[3]


def _stats_or_empty(model: nn.Module, stats: list[LayerStats] | None) -> list[LayerStats]:
    return stats if stats is not None else [LayerStats() for _ in get_family(model).decoder_layers(model)]


def magnitude(model: nn.Module, ratio: float, stats: list[LayerStats] | None = None, space: SubnetSpace | None = None,
              heads: str = "ceil") -> Baseline:
    """Uniform widths, ranked by weight magnitude (needs no calibration data)."""
    space = space or SubnetSpace.from_model(model)
    sc = scores_from_stats(model, _stats_or_empty(model, stats), "magnitude")
    return Baseline("magnitude", ratio, uniform_subnet(space, ratio, heads), Ranking.from_scores(sc.kv, sc.neurons, None, "magnitude"))


def wanda_sp(model: nn.Module, ratio: float, stats: list[LayerStats], space: SubnetSpace | None = None,
             heads: str = "ceil") -> Baseline:
    """Uniform widths, ranked by Wanda-sp: mean_i |W_ij| * ||X_j||_2 on o/down input channels."""
    if stats is None:
        raise ConfigError("wanda-sp needs calibration statistics: pass stats=calibration_stats(model, ids)")
    space = space or SubnetSpace.from_model(model)
    sc = scores_from_stats(model, stats, "wanda")
    return Baseline("wanda-sp", ratio, uniform_subnet(space, ratio, heads), Ranking.from_scores(sc.kv, sc.neurons, None, "wanda-sp"))


def _fluctuation(W: torch.Tensor, st: LayerStats, key: str) -> np.ndarray:
    """FLAP Eq. 5 per input channel: unbiased Var over tokens of X_j, times ||W_:,j||^2."""
    n = st.n
    mean = st.s[key] / n
    var = (st.sq[key] / n - mean**2).clamp_min(0) * n / max(n - 1, 1)
    return (var * (W.detach().double() ** 2).sum(0)).cpu().numpy()


def _standardise(x: np.ndarray) -> np.ndarray:
    """(x - mean) / std over one layer's channels, std unbiased (torch.std, as in FLAP's code)."""
    sd = x.std(ddof=1)
    return (x - x.mean()) / (sd if sd > 0 else 1.0)


def flap_metrics(model: nn.Module, stats: list[LayerStats]) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Standardised FLAP scores: per layer, one per KV group (mean of its channels) and one per neuron."""
    fam = get_family(model)
    dims = fam.dims(model)
    attn, mlp = [], []
    for layer, st in zip(fam.decoder_layers(model), stats):
        if st.n < 2:
            raise ConfigError("FLAP needs calibration statistics of >= 2 tokens: pass stats=calibration_stats(model, ids)")
        ch = _standardise(_fluctuation(fam.attn_linears(layer)["o"].weight, st, "o"))
        attn.append(np.asarray([ch[head_channels([g], dims)].mean() for g in range(dims.num_kv_heads)]))
        mlp.append(_standardise(_fluctuation(fam.mlp_linears(layer)["down"].weight, st, "down")))
    return attn, mlp


def _round_neurons(space: SubnetSpace, k: int) -> int:
    """Nearest allowed width to ``k`` kept neurons (ties round up), at least one block."""
    return min(space.neuron_choices, key=lambda c: (abs(c - k), -c))


def flap(model: nn.Module, ratio: float, stats: list[LayerStats], space: SubnetSpace | None = None) -> Baseline:
    """FLAP's adaptive global structure, rounded to our space (see the module docstring)."""
    _check_ratio(ratio)
    if stats is None:
        raise ConfigError("flap needs calibration statistics: pass stats=calibration_stats(model, ids)")
    space = space or SubnetSpace.from_model(model)
    d = space.dims
    attn, mlp = flap_metrics(model, stats)
    L, G, I = d.num_layers, d.num_kv_heads, d.intermediate
    # one global order: (score, layer, is_attn, index); compression weight = params of the structure
    w_attn = space.layer_params(G, I) - space.layer_params(G - 1, I)
    w_neuron = space.layer_params(G, I) - space.layer_params(G, I - 1)
    scores = np.concatenate([np.concatenate(attn), np.concatenate(mlp)])
    layer_of = np.concatenate([np.repeat(np.arange(L), G), np.concatenate([np.full(len(m), i) for i, m in enumerate(mlp)])])
    is_attn = np.concatenate([np.ones(L * G, bool), np.zeros(sum(len(m) for m in mlp), bool)])
    order = np.argsort(-scores, kind="stable")
    # kept counts per layer after the first k structures of the order: cumulative, vectorised
    attn_cum = np.zeros((len(order) + 1, L), dtype=np.int32)
    mlp_cum = np.zeros((len(order) + 1, L), dtype=np.int32)
    # memory is (N+1) x L ints (~46k x 30 for SmolLM2): fine
    np.add.at(attn_cum, (np.arange(1, len(order) + 1)[is_attn[order]], layer_of[order][is_attn[order]]), 1)
    np.add.at(mlp_cum, (np.arange(1, len(order) + 1)[~is_attn[order]], layer_of[order][~is_attn[order]]), 1)
    attn_cum, mlp_cum = attn_cum.cumsum(0), mlp_cum.cumsum(0)

    def subnet_at(k: int) -> Subnet:
        layers = []
        for i in range(L):
            a, m = int(attn_cum[k, i]), int(mlp_cum[k, i])
            keep = not (a == 0 and m == 0 and space.allow_layer_drop)
            layers.append(LayerChoice(max(a, 1), _round_neurons(space, m), keep))
        if not any(c.keep for c in layers):  # everything gone: keep the layer of the top structure
            top = int(layer_of[order[0]])
            layers[top] = LayerChoice(layers[top].kv_groups, layers[top].neurons, True)
        return Subnet(tuple(layers))

    # the rounded ratio is non-decreasing in k: bisect for the first k reaching the target
    lo, hi = 0, len(order)
    while lo < hi:
        mid = (lo + hi) // 2
        if space.ratio(subnet_at(mid)) >= ratio:
            hi = mid
        else:
            lo = mid + 1
    best = min({max(lo - 1, 0), lo}, key=lambda k: (abs(space.ratio(subnet_at(k)) - ratio), k))
    subnet = space.validate(subnet_at(best))
    raw_kept = float(np.where(is_attn[order[:best]], w_attn, w_neuron).sum() / (L * (G * w_attn + I * w_neuron)))
    ranking = Ranking.from_scores(attn, mlp, None, "flap")
    return Baseline("flap", ratio, subnet, ranking, reform="bias", info={"structures_kept": best, "raw_kept_fraction": raw_kept})


def shortgpt(model: nn.Module, ratio: float, stats: list[LayerStats], space: SubnetSpace | None = None) -> Baseline:
    """Drop the layers of lowest Block Influence; their number is the one nearest ``ratio``."""
    _check_ratio(ratio)
    if stats is None:
        raise ConfigError("shortgpt needs calibration statistics: pass stats=calibration_stats(model, ids)")
    space = space or SubnetSpace.from_model(model)
    if not space.allow_layer_drop:
        raise SubnetError("shortgpt drops layers, but this space disallows layer dropping")
    bi = np.asarray([1.0 - st.cos_sum / st.n for st in stats]) if all(st.n for st in stats) else None
    if bi is None:
        raise ConfigError("shortgpt needs Block Influence: pass stats=calibration_stats(model, ids)")
    L = space.num_layers
    order = np.argsort(bi, kind="stable")  # lowest influence first
    cands = [space.uniform(drop=order[:n].tolist()) for n in range(L)]
    subnet = min(cands, key=lambda s: (abs(space.ratio(s) - ratio), -space.ratio(s)))
    d = space.dims
    ranking = Ranking([np.arange(d.num_kv_heads)] * L, [np.arange(d.intermediate)] * L, bi, "shortgpt")
    return Baseline("shortgpt", ratio, subnet, ranking, info={"block_influence": bi.tolist()})


BASELINES: dict[str, Callable[..., Baseline]] = {"magnitude": magnitude, "wanda-sp": wanda_sp, "flap": flap, "shortgpt": shortgpt}


def baseline(name: str, model: nn.Module, ratio: float, stats: list[LayerStats] | None = None, space: SubnetSpace | None = None) -> Baseline:
    """``BASELINES[name]`` with a clear error for unknown names."""
    if name not in BASELINES:
        import difflib

        near = difflib.get_close_matches(name, BASELINES, n=1)
        raise ConfigError(f"unknown baseline {name!r}; choose one of {', '.join(BASELINES)}" + (f" (did you mean {near[0]!r}?)" if near else ""))
    return BASELINES[name](model, ratio, stats=stats, space=space)
