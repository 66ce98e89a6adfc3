"""What every baseline shares: the ``Baseline`` value, the ``BASELINES`` registry and the width arithmetic.

A baseline is a function ``(model, ratio, *, stats, space, calib) -> Baseline`` registered with
its traits (:data:`TRAITS`), so callers (``benchmarks/quality.py``, the search's seeds) read what a
method needs and does instead of guessing from its name.
"""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
from typing import Any, Callable

import torch
import torch.nn as nn
from tqdm.auto import tqdm

from nas_llm.errors import ConfigError
from search_spaces import LayerChoice, Plan, Ranking, Subnet, SubnetSpace, get_family
from search_spaces.plan import query_channels
from search_spaces.registry import Registry

from nas_llm.model.importance import LayerStats, collect_stats
from nas_llm.model.reform import bias_shift, reform
from nas_llm.model.slicing import mark_nonstock, slice_model

# trait -> allowed values; every registration declares all of them
TRAITS = {
    "needs": ("nothing", "stats", "calib"),  # calibration it reads: none, LayerStats of a dense pass, or token ids
    "structure": ("uniform", "per-layer", "global", "depth"),  # how widths are allocated
    "granularity": (None, 1),  # None: the space's (64); 1: its own neuron-level space
    "reform": (None, "bias", "bias-dense"),  # weight update the paper applies after pruning
    # smallest removable attention structure: a KV group; "kv-group/mqa-head": the query head on MQA models
    # (one KV group, see head_units); None: whole layers only
    "head_unit": ("kv-group", "kv-group/mqa-head", None),
}
BASELINES: Registry = Registry("baseline")


def register(name: str, *, paper: str, **traits: Any) -> Callable:
    """``@register("flap", paper=..., needs=..., structure=..., granularity=..., reform=..., head_unit=...)``."""
    for k, allowed in TRAITS.items():
        if k not in traits or traits[k] not in allowed:
            raise ConfigError(f"baseline {name!r}: trait {k}={traits.get(k)!r} must be one of {allowed}")
    return BASELINES.register(name, paper=paper, method=name, **traits)


@dataclass(frozen=True)
class Baseline:
    """A baseline's choice in our space, and the weight update its paper applies after pruning."""

    method: str
    ratio: float  # requested decoder-param ratio
    subnet: Subnet
    ranking: Ranking
    reform: str | None = None  # see TRAITS["reform"]
    info: dict = field(default_factory=dict)
    space: SubnetSpace | None = None  # the space ``subnet`` lives in (granularity 1 for faithful FLAP)
    means: list[tuple[torch.Tensor, torch.Tensor]] | None = field(default=None, repr=False, compare=False)  # dense o/down input means

    def plan(self) -> Plan:
        return self.ranking.resolve(self.subnet)

    def params_ratio(self) -> float:
        """Realised decoder-param ratio (in the baseline's own space)."""
        if self.space is None:
            raise ConfigError(f"{self.method}: Baseline.space is not set; use SubnetSpace.ratio(subnet) directly")
        return self.space.ratio(self.subnet)

    def sliced(self, model: nn.Module, calib: torch.Tensor | None = None, progress: bool = False) -> nn.Module:
        """The pruned model exactly as the method produces it: sliced, then its own weight update."""
        plan = self.plan()
        if self.reform is None:
            return slice_model(model, plan, subnet=self.subnet)
        if self.reform == "bias-dense":
            if self.means is None:
                raise ConfigError(f"{self.method}: bias compensation from dense means needs Baseline.means")
            return bias_compensated(model, plan, self.means, self.subnet)
        if calib is None:
            raise ConfigError(f"{self.method} reforms with {self.reform!r}: pass the calibration ids (calib=...)")
        return reform(model, plan, calib, method=self.reform, subnet=self.subnet, progress=progress)


def bias_compensated(model: nn.Module, plan: Plan, means: list[tuple[torch.Tensor, torch.Tensor]], subnet: Subnet | None = None) -> nn.Module:
    """Sliced copy whose o/down biases carry FLAP's Eq. 7, b += W[:, cut] mean(X[cut]), with *dense* means.

    FLAP's code takes every mean from the dense forward it scores on; ``nas_llm.model.reform``'s
    ``method="bias"`` instead re-measures them through the already-pruned layers (``flap-ours``).
    """
    fam = get_family(model)
    dims = fam.dims(model)
    work = copy.deepcopy(model).eval()
    added = False
    for layer, lp, (m_o, m_down) in zip(fam.decoder_layers(work), plan.layers, means):
        if not lp.keep:
            continue
        for lin, kept, mean in ((fam.attn_linears(layer)["o"], query_channels(lp, dims), m_o),
                                (fam.mlp_linears(layer)["down"], list(lp.neurons), m_down)):
            if len(kept) == lin.weight.shape[1]:
                continue
            delta = bias_shift(lin.weight.detach(), mean, kept)
            W = lin.weight.data
            if lin.bias is None:
                lin.bias = nn.Parameter(delta.to(W.dtype).clone())
                added = True
            else:
                lin.bias.data.add_(delta.to(W.dtype))
    out = slice_model(work, plan, inplace=True, subnet=subnet)
    if added:  # stock classes have no slot for these biases: plain loading must fail loudly
        mark_nonstock(out.config)
    out.config.nas_llm = {**out.config.nas_llm, "reform": {"method": "bias-dense"}}
    return out


def traits(name: str) -> dict[str, Any]:
    """The traits ``name`` was registered with (``needs``, ``structure``, ``granularity``, ...)."""
    fn = BASELINES.resolve(name)
    return {k: getattr(fn, k) for k in (*TRAITS, "paper")}


def baseline(name: str, model: nn.Module, ratio: float, stats: list[LayerStats] | None = None, space: SubnetSpace | None = None,
             calib: torch.Tensor | None = None, progress: bool = False, **kwargs: Any) -> Baseline:
    """``BASELINES[name]`` on ``model`` at ``ratio``; statistics are computed from ``calib`` when missing.
    ``progress``: a bar for the baselines that take one (a ``progress`` parameter: SLEB's greedy order runs for minutes)."""
    import inspect

    fn = BASELINES.resolve(name)
    if fn.needs == "stats" and stats is None and calib is not None:
        stats = calibration_stats(model, calib, progress=progress)
    if "progress" in inspect.signature(fn).parameters:
        kwargs.setdefault("progress", progress)
    return fn(model, ratio, stats=stats, space=space, calib=calib, **kwargs)


def calibration_stats(model: nn.Module, input_ids: torch.Tensor, batch_size: int = 4, progress: bool = True) -> list[LayerStats]:
    """One dense pass serving every ``needs="stats"`` baseline (no input Hessians: none of them needs one)."""
    return collect_stats(model, input_ids, batch_size=batch_size, hessian=False, progress=progress)


def require(what: Any, method: str, kind: str = "stats") -> None:
    if what is None:
        fix = "stats=calibration_stats(model, ids)" if kind == "stats" else "calib=ids (calibration token ids [n, seq])"
        raise ConfigError(f"{method} needs calibration {'statistics' if kind == 'stats' else 'tokens'}: pass {fix}")


def check_ratio(ratio: float) -> None:
    if not 0 < ratio <= 1:
        raise ConfigError(f"ratio must be in (0, 1] (kept fraction of decoder parameters), got {ratio}")


def ratio_step(space: SubnetSpace) -> float:
    """Decoder-param ratio of one granularity block of neurons in *every* layer: the tolerance."""
    d = space.dims
    per_layer = space.layer_params(d.num_kv_heads, space.neuron_choices[1]) - space.layer_params(d.num_kv_heads, space.neuron_choices[0])
    return d.num_layers * per_layer / space.params(space.dense())


HEAD_ROUNDING = ("ceil", "nearest", "keep")


def head_units(space: SubnetSpace) -> list[tuple[int, int | None]]:
    """The attention widths a width baseline chooses from, as (KV groups, query heads per group), fewest first.

    The unit is the KV group (with its query heads; for MHA a group is one head), as in FLAP's and
    Wanda-sp's code on LLaMA. With one KV group (MQA) that unit cannot be cut, so there the unit is the
    query head -- the unit those papers prune -- when the space searches query heads.
    """
    d = space.dims
    if d.num_kv_heads == 1 and space.searches_heads:
        return [(1, h if h < d.q_per_group else None) for h in space.head_choices]  # None: all heads (canonical)
    return [(g, None) for g in range(1, d.num_kv_heads + 1)]


def layer_choice(space: SubnetSpace, density: float, heads: str = "ceil") -> LayerChoice:
    """One layer keeping ``density`` of its parameters: attention units (:func:`head_units`) rounded by
    ``heads``, the MLP fitted to the rest.

    ``"ceil"`` rounds ``density * units`` up (attention is never cut harder than the layer), the MLP
    takes the rest; if it cannot absorb it within half a granularity block, the nearest unit count
    that can is used.
    """
    if heads not in HEAD_ROUNDING:
        raise ConfigError(f"heads must be one of {', '.join(HEAD_ROUNDING)}, got {heads!r}")
    d = space.dims
    units = head_units(space)
    U = len(units)
    want = {"ceil": min(U, max(1, math.ceil(density * U - 1e-9))), "nearest": min(U, max(1, round(density * U))), "keep": U}[heads]
    full = space.layer_params(d.num_kv_heads, d.intermediate)
    half = (space.layer_params(d.num_kv_heads, space.neuron_choices[1]) - space.layer_params(d.num_kv_heads, space.neuron_choices[0])) / full / 2 + 1e-9
    cands = []
    for u, (kv, h) in enumerate(units, start=1):
        n = min(space.neuron_choices, key=lambda n: abs(space.layer_params(kv, n, h) / full - density))
        err = abs(space.layer_params(kv, n, h) / full - density)
        cands.append((err > half, abs(u - want), err, kv, n, h))
    best = min(cands, key=lambda c: c[:3])
    return space.choice(best[3], best[4], True, best[5])


def uniform_subnet(space: SubnetSpace, ratio: float, heads: str = "ceil") -> Subnet:
    """Same widths in every layer: attention units from ``ratio * units``, MLP width fitted to the ratio.

    With few KV groups (SmolLM2 has 3) ``ratio * G`` is rarely an integer. ``heads="ceil"``
    (default) rounds up: attention is never cut harder than the ratio, the MLP takes the rest
    (measured on SmolLM2 to be the stronger choice, see benchmarks/RESULTS.md); ``"nearest"``
    rounds to the nearest count, ``"keep"`` keeps all heads (MLP-only). If the MLP cannot
    absorb the rest within half a granularity step, the next count that can is used. On MQA the
    units are query heads (:func:`head_units`).
    """
    check_ratio(ratio)
    c = layer_choice(space, ratio, heads)
    return space.uniform(c.kv_groups, c.neurons, heads_per_group=c.heads_per_group)


def stats_or_empty(model: nn.Module, stats: list[LayerStats] | None) -> list[LayerStats]:
    return stats if stats is not None else [LayerStats() for _ in get_family(model).decoder_layers(model)]


@torch.no_grad()
def forward_batches(model: nn.Module, batches: list[torch.Tensor], handles: list, desc: str = "", progress: bool = False) -> None:
    """Run ``model`` over calibration ``batches`` (for the hooks whose ``handles`` are given), then remove the hooks."""
    device = next(model.parameters()).device
    try:
        for ids in tqdm(batches, desc=desc, disable=not progress, leave=False):
            model(input_ids=ids.to(device), use_cache=False)
    finally:
        for h in handles:
            h.remove()


# -- memo: one calibration pass serves every ratio of a table --------------------------------------
_MEMO: dict[str, Any] = {}
_MEMO_SIZE = 4


def memo(key: str, make: Callable[[], Any]) -> Any:
    """A small in-process cache keyed by a model+calibration fingerprint (``importance.fingerprint``)."""
    if key not in _MEMO:
        while len(_MEMO) >= _MEMO_SIZE:
            _MEMO.pop(next(iter(_MEMO)))
        _MEMO[key] = make()
    return _MEMO[key]


__all__ = ["BASELINES", "Baseline", "HEAD_ROUNDING", "TRAITS", "baseline", "bias_compensated", "calibration_stats",
           "check_ratio", "forward_batches", "head_units", "layer_choice", "memo", "ratio_step", "register", "require", "traits", "uniform_subnet"]
