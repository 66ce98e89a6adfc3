"""``perplexity_reformed``: calibration perplexity after an exact least-squares refit of every cut map.

Set-up cost is one dense pass for the Grams ``H = X X^T`` of every ``o_proj``/``down_proj`` input (none
when the search already ran it for the importance ranking on the same windows: it hands the Grams over
under :func:`gram_key`), then one Cholesky factor per map in importance order
(:class:`nas_llm.model.solvers.PrefixFactor`): every kept set a ranking produces is a prefix of that
order, so a cold refit of a new width is one triangular solve. The refitted weights are cached per
(layer, map, kept channels) under a byte budget, shared by every fidelity and window set of the objective.
"""
from __future__ import annotations

import os
from contextlib import contextmanager
from typing import Any, Iterator

import torch
import torch.nn as nn

from nas_llm.errors import ConfigError
from nas_llm.model.metrics import DEFAULT_HEAD_CHUNK
from nas_llm.model.slicing import INPUT_CUT_ROLES, layer_cuts
from search_spaces import Plan, Subnet, get_family
from search_spaces.plan import head_channels

from .base import OBJECTIVES, Context
from .perplexity import Perplexity

# the dense pass that records the Grams runs in batches of this many windows, as the importance ranking's does,
# so the Grams are bit-identical whichever of the two computed them (a resumed run may get them either way)
GRAM_BATCH = 4


def dense_grams(model: nn.Module, ids: torch.Tensor, batch_size: int = GRAM_BATCH,
                progress: bool = False) -> dict[tuple[int, str], torch.Tensor]:
    """``H = X X^T`` (float64) of the dense model's input to every layer's ``o_proj`` (``"o"``) and
    ``down_proj`` (``"down"``): the maps whose *input* channels a subnet cuts, i.e. the ones reformation refits.
    One dense pass of ``nas_llm.model.importance.collect_stats`` (which always records these two Grams)."""
    from nas_llm.model.importance import collect_stats, refit_grams

    return refit_grams(collect_stats(model, ids, batch_size=batch_size, hessian=False, progress=progress))


def gram_key(model: nn.Module, source: str, n_samples: int, seq_len: int, seed: int) -> tuple:
    """Where ``ctx.cache`` keeps the dense Grams of these reformation windows (the search's importance pass
    puts them there when its windows are the same, so they are computed once per run)."""
    return ("dense_grams", id(model), str(source), int(n_samples), int(seq_len), int(seed))


def refit_map(model: nn.Module, layer: int, role: str) -> nn.Linear:
    """The ``o_proj`` (``role="o"``) or ``down_proj`` (``"down"``) of decoder layer ``layer``."""
    fam = get_family(model)
    return fam.linears(fam.decoder_layers(model)[layer])[role]


def channel_order(ctx: Context, layer: int, role: str) -> list[int]:
    """Input channels of a map, most important first: the order whose prefixes are the kept sets."""
    if role == "down":
        return [int(j) for j in ctx.ranking.neuron_order[layer]]
    dims = ctx.space.dims
    return [c for g in ctx.ranking.kv_order[layer] for c in head_channels([int(g)], dims)]


@OBJECTIVES.register("perplexity_reformed", kind="quality", log_scale=True)
class ReformedPerplexity(Perplexity):
    """Calibration perplexity *after* least-squares reformation of the cut maps (minimize).

    Why: reformation repairs width cuts far more than it repairs layer drops or badly allocated
    widths, so ranking subnets by their *un-reformed* perplexity picks ones that lose once reformed
    (measured on SmolLM2: the search's 80% pick beat uniform Wanda-sp before reformation and lost to it
    after). Here each kept ``o_proj``/``down_proj`` with cut inputs gets the exact least-squares weights
    ``W'_K = W Hd[:, K] Hd[K, K]^-1`` (as ``nas_llm.model.solvers.closed_form``) with ``H = X X^T`` of the *dense*
    model's inputs on the reformation windows -- the final reformation minus its sequential part, so
    a map's reformed weights depend only on its own kept channels and are cached per
    (layer, map, kept channels): the optimiser proposes the same per-layer widths again and again.

    The reformation windows (``reform_*``; give the ones the final ``reform`` will use) must differ
    from the scored windows (``seed``): in-sample scores would reward cutting more.
    """

    name = "perplexity_reformed"

    def __init__(self, source: str | os.PathLike = "wikitext2-valid", n_samples: int = 16, seq_len: int = 256,
                 seed: int = 1, batch_size: int = 8, fast: bool = True, cache_mb: float = 512.0, fidelity: float = 1.0,
                 reform_samples: int = 32, reform_seq_len: int = 256, reform_seed: int = 0, damp: float | None = None,
                 weight_cache_mb: float = 1024.0, head_chunk: int = DEFAULT_HEAD_CHUNK, screen_dtype: str = "float32"):
        super().__init__(source, n_samples, seq_len, seed, batch_size, fast, cache_mb, fidelity, head_chunk, screen_dtype)
        if reform_samples < 1 or reform_seq_len < 2:
            raise ConfigError(f"reform_samples must be >= 1 and reform_seq_len >= 2, got {reform_samples}, {reform_seq_len}")
        if (reform_samples, reform_seq_len, reform_seed) == (n_samples, seq_len, seed):
            raise ConfigError("the scored windows equal the reformation windows (same samples, length and seed); "
                             "give the perplexity a different seed, e.g. seed=reform_seed + 1")
        from nas_llm.model.solvers import DEFAULT_DAMP

        self.reform_samples, self.reform_seq_len, self.reform_seed = reform_samples, reform_seq_len, reform_seed
        self.damp = DEFAULT_DAMP if damp is None else float(damp)
        if self.damp <= 0:
            raise ConfigError(f"damp must be > 0, got {self.damp}")
        self.weight_cache_mb = weight_cache_mb

    def _key(self, ctx: Context) -> tuple:
        return super()._key(ctx) + (self.reform_samples, self.reform_seq_len, self.reform_seed, self.damp)

    def _reform_key(self, ctx: Context) -> tuple:
        """What the refit depends on: the model, the reformation windows, the damping and the ranking."""
        return (id(ctx.model), self.source, self.reform_samples, self.reform_seq_len, self.reform_seed, self.damp,
                id(ctx.ranking))

    def grams(self, ctx: Context) -> dict[tuple[int, str], torch.Tensor]:
        from nas_llm.model.data import calibration_batch

        k = gram_key(ctx.model, self.source, self.reform_samples, self.reform_seq_len, self.reform_seed)
        if k not in ctx.cache:
            ids = calibration_batch(ctx.tokenizer, self.source, self.reform_samples, self.reform_seq_len, self.reform_seed)
            ctx.cache[k] = dense_grams(ctx.model, ids, GRAM_BATCH, progress=ctx.progress)
        return ctx.cache[k]

    def factors(self, ctx: Context) -> dict[tuple[int, str], Any]:
        """One :class:`~nas_llm.model.solvers.PrefixFactor` per map, built once; the Grams are then released."""
        from nas_llm.model.solvers import PrefixFactor

        k = ("reform_factors",) + self._reform_key(ctx)
        if k not in ctx.cache:
            grams = self.grams(ctx)
            ctx.cache[k] = {(i, role): PrefixFactor(H, channel_order(ctx, i, role), self.damp) for (i, role), H in grams.items()}
            ctx.cache.pop(gram_key(ctx.model, self.source, self.reform_samples, self.reform_seq_len, self.reform_seed), None)
        return ctx.cache[k]

    def _weights(self, ctx: Context) -> "_WeightCache":
        k = ("reformed_weights",) + self._reform_key(ctx) + (self.weight_cache_mb,)
        if k not in ctx.cache:
            ctx.cache[k] = _WeightCache(self.weight_cache_mb)
        return ctx.cache[k]

    def setup(self, ctx: Context) -> None:
        self.factors(ctx)
        super().setup(ctx)

    def reformed(self, ctx: Context, layer: int, role: str, kept: list[int]) -> torch.Tensor:
        """Reformed weight of one map, already cut to ``kept`` columns (cached)."""
        cache = self._weights(ctx)
        key = (layer, role, tuple(kept))
        w = cache.get(key)
        if w is None:
            W = refit_map(ctx.model, layer, role).weight.detach()
            w = self.factors(ctx)[(layer, role)].refit(W, kept)
            cache.put(key, w)
        return w

    def weights_for(self, plan: Plan, first: int, ctx: Context) -> dict:
        dims = get_family(ctx.model).dims(ctx.model)
        out: dict = {}
        for i, lp in enumerate(plan.layers):
            if i < first or not lp.keep:
                continue
            for role, cut in layer_cuts(lp, dims).items():
                if role in INPUT_CUT_ROLES:
                    out[(i, role)] = self.reformed(ctx, i, role, cut.cols)
        return out

    @contextmanager
    def reference_model(self, subnet: Subnet, ctx: Context) -> Iterator[nn.Module]:
        """The reference: a physically sliced copy with the reformed weights written in, all layers."""
        plan = ctx.plan(subnet)
        small = ctx.sliced(subnet)
        kept_layers = [i for i, lp in enumerate(plan.layers) if lp.keep]
        for (i, role), w in self.weights_for(plan, 0, ctx).items():
            refit_map(small, kept_layers.index(i), role).weight.data.copy_(w)
        yield small


class _WeightCache:
    """Least-recently-used tensors under a byte budget."""

    def __init__(self, budget_mb: float):
        from collections import OrderedDict

        self.budget, self.bytes, self.items = budget_mb * 2**20, 0, OrderedDict()

    def get(self, key):
        w = self.items.get(key)
        if w is not None:
            self.items.move_to_end(key)
        return w

    def put(self, key, w: torch.Tensor) -> None:
        self.items[key] = w
        self.bytes += w.numel() * w.element_size()
        while self.bytes > self.budget and len(self.items) > 1:
            _, old = self.items.popitem(last=False)
            self.bytes -= old.numel() * old.element_size()


__all__ = ["ReformedPerplexity", "dense_grams", "gram_key", "channel_order", "refit_map", "GRAM_BATCH"]
