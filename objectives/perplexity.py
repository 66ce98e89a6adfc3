"""Calibration perplexity of a subnet, fast enough to score thousands of candidates.

``N`` windows of ``L`` tokens are drawn from a text with a seed (``nas_llm.model.data.calibration_batch``),
so a value is reproducible bit for bit. Two things make a candidate cheap:

* **prefix reuse** -- the dense model's hidden states at layer boundaries are cached once per
  calibration set; a subnet's forward starts from the last cached boundary at or before the first
  layer it changes (the layers in front of it compute exactly the dense values);
* **sliced layers** -- the changed layers run with physically smaller projections (swapped in
  for the call and restored after), so a 50 % subnet costs about half, unlike input masking.

The cache holds ``num_layers x N x L x hidden`` floats at most; ``cache_mb`` bounds it by keeping
every k-th boundary only (the few dense layers between a boundary and the change are re-run).
``fast=False`` is the naive reference: the masked dense model on all layers.

:class:`ReformedPerplexity` (``perplexity_reformed``) scores the same way after a least-squares refit of
the cut maps, so a search ranks subnets by what reformation will make of them.
"""
from __future__ import annotations

import copy
import math
import os
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from nas_llm.errors import ConfigError
from nas_llm.model.slicing import INPUT_CUT_ROLES, layer_cuts
from nas_llm.model.swap import plan_swapped
from search_spaces import Plan, Subnet, get_family

from .base import OBJECTIVES, Context, Objective


def perplexity_of(model: nn.Module, input_ids: torch.Tensor, batch_size: int = 4) -> float:
    """Perplexity of an already-built (e.g. sliced or exported) model on ``[n, L]`` token windows."""
    from nas_llm.model.metrics import perplexity

    return perplexity(model, input_ids, batch_size)


def _row_nll(logits: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """Summed next-token NLL per row, float64."""
    b, L = ids.shape
    nll = F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]).float(), ids[:, 1:].reshape(-1), reduction="none")
    return nll.view(b, L - 1).double().sum(1)


def first_changed_layer(subnet: Subnet, dense: Subnet) -> int:
    """Index of the first layer where ``subnet`` differs from the dense model (``num_layers`` if none)."""
    for i, (c, d) in enumerate(zip(subnet.layers, dense.layers)):
        if c != d:
            return i
    return subnet.num_layers


class PrefixCache:
    """Dense hidden states at every ``stride``-th layer boundary, and the dense per-row NLL."""

    def __init__(self, model: nn.Module, ids: torch.Tensor, batch_size: int, cache_mb: float):
        fam = get_family(model)
        layers = fam.decoder_layers(model)
        L = len(layers)
        dev = next(model.parameters()).device
        dtype = next(model.parameters()).dtype
        per = ids.shape[0] * ids.shape[1] * model.config.hidden_size * torch.empty(0, dtype=dtype).element_size()
        n_keep = max(1, min(L, int(cache_mb * 2**20 // max(per, 1))))
        self.stride = math.ceil(L / n_keep)
        self.boundaries = list(range(0, L, self.stride))
        self.ids, self.batch_size = ids, batch_size
        self.states: dict[int, list[torch.Tensor]] = {b: [] for b in self.boundaries}
        captured: dict[int, torch.Tensor] = {}

        def grab(i):
            def hook(module, args, kwargs):
                captured[i] = (args[0] if args else kwargs["hidden_states"]).detach().clone()
            return hook

        handles = [layers[b].register_forward_pre_hook(grab(b), with_kwargs=True) for b in self.boundaries]
        rows = []
        try:
            with torch.no_grad():
                for s in range(0, ids.shape[0], batch_size):
                    x = ids[s : s + batch_size].to(dev)
                    rows.append(_row_nll(model(input_ids=x, use_cache=False).logits, x).cpu())
                    for b in self.boundaries:
                        self.states[b].append(captured.pop(b))
        finally:
            for h in handles:
                h.remove()
        self.dense_nll = torch.cat(rows)
        self.bytes = per * len(self.boundaries)
        self.batch_nll: dict[tuple, float] = {}  # (subnet key, first row, rows) -> summed NLL, see Perplexity.score

    def start_for(self, first: int) -> int:
        """The last cached boundary at or before layer ``first``."""
        return max(b for b in self.boundaries if b <= first)


@OBJECTIVES.register("perplexity", kind="quality", log_scale=True)
class Perplexity(Objective):
    """Calibration perplexity (minimize). Same subnet + seed + fidelity -> bit-identical value.

    ``at_fidelity(f)`` scores on the first ``round(f * n_samples)`` windows of the same draw,
    sharing the cached hidden states, so screening and re-scoring stay comparable.
    """

    name, unit, direction = "perplexity", "", "minimize"

    def __init__(self, source: str | os.PathLike = "wikitext2-valid", n_samples: int = 16, seq_len: int = 256,
                 seed: int = 0, batch_size: int = 8, fast: bool = True, cache_mb: float = 512.0,
                 fidelity: float = 1.0):
        if n_samples < 1 or seq_len < 2:
            raise ConfigError(f"n_samples must be >= 1 and seq_len >= 2, got n_samples={n_samples}, seq_len={seq_len}")
        if batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
        if not 0 < fidelity <= 1:
            raise ConfigError(f"fidelity must be in (0, 1], got {fidelity}")
        from nas_llm.model.data import resolve_source

        resolve_source(source)  # a missing file fails here, with the accepted forms in the message
        self.source, self.n_samples, self.seq_len, self.seed = str(source), n_samples, seq_len, seed
        self.batch_size, self.fast, self.cache_mb, self.fidelity = batch_size, fast, cache_mb, fidelity
        self.last: dict[str, Any] = {}

    @property
    def rows(self) -> int:
        return max(1, round(self.fidelity * self.n_samples))

    def at_fidelity(self, fidelity: float) -> "Perplexity":
        if not 0 < fidelity <= 1:
            raise ConfigError(f"fidelity must be in (0, 1], got {fidelity}")
        new = copy.copy(self)
        new.fidelity, new.last = fidelity, {}
        return new

    def _key(self, ctx: Context) -> tuple:
        return (self.name, id(ctx.model), self.source, self.n_samples, self.seq_len, self.seed)

    def ids(self, ctx: Context) -> torch.Tensor:
        from nas_llm.model.data import calibration_batch

        k = self._key(ctx) + ("ids",)
        if k not in ctx.cache:
            ctx.cache[k] = calibration_batch(ctx.tokenizer, self.source, self.n_samples, self.seq_len, self.seed)
        return ctx.cache[k]

    def prefix_cache(self, ctx: Context) -> PrefixCache:
        k = self._key(ctx) + ("prefix", self.batch_size, self.cache_mb)
        if k not in ctx.cache:
            ctx.cache[k] = PrefixCache(ctx.model, self.ids(ctx), self.batch_size, self.cache_mb)
        return ctx.cache[k]

    def setup(self, ctx: Context) -> None:
        self.ids(ctx)
        if self.fast:
            self.prefix_cache(ctx)

    def weights_for(self, plan: Plan, first: int, ctx: Context) -> dict | None:
        """Replacement weights for sliced maps (none here; see :class:`ReformedPerplexity`)."""
        return None

    def naive(self, subnet: Subnet, ctx: Context) -> float:
        """The reference: masked dense model, all layers, same windows."""
        from nas_llm.model.metrics import nll_sum

        ids = self.ids(ctx)[: self.rows]
        with ctx.masked(subnet) as m:
            total, count = nll_sum(m, ids, self.batch_size)
        return math.exp(total / count)

    def score_model(self, model: nn.Module, ctx: Context) -> float:
        """Perplexity of a built model (e.g. reformed) on this objective's own windows, so its value
        compares with the search's."""
        return perplexity_of(model, self.ids(ctx)[: self.rows], self.batch_size)

    def score(self, subnet: Subnet, ctx: Context) -> float:
        if not self.fast:
            return self.naive(subnet, ctx)
        plan = ctx.plan(subnet)
        pc = self.prefix_cache(ctx)
        ids = pc.ids[: self.rows]
        count = ids.shape[0] * (ids.shape[1] - 1)
        first = first_changed_layer(subnet, ctx.space.dense())
        self.last = {"first_changed": first}
        if first >= subnet.num_layers:
            self.last["start"] = subnet.num_layers
            return math.exp(float(pc.dense_nll[: self.rows].sum()) / count)
        start = pc.start_for(first)
        self.last["start"] = start
        dev = next(ctx.model.parameters()).device
        # NLL of each batch of windows, kept per subnet: re-scoring at a higher fidelity only runs the
        # windows the screening did not. A batch is always the same rows computed the same way, so the
        # value does not depend on what was scored before (bit-identical either way).
        memo = pc.batch_nll
        key = subnet.key()
        inject: dict = {}
        total, reused = 0.0, 0
        weights = self.weights_for(plan, first, ctx)
        with torch.no_grad(), plan_swapped(ctx.model, plan, first, weights, start, inject):
            for bi, s in enumerate(range(0, ids.shape[0], self.batch_size)):
                x = ids[s : s + self.batch_size].to(dev)
                mk = (key, s, x.shape[0])
                if mk in memo:
                    total, reused = total + memo[mk], reused + x.shape[0]
                    continue
                inject["h"] = pc.states[start][bi][: x.shape[0]]
                memo[mk] = float(_row_nll(ctx.model(input_ids=x, use_cache=False).logits, x).sum())
                total += memo[mk]
        self.last["reused_windows"] = reused
        return math.exp(total / count)


def dense_grams(model: nn.Module, ids: torch.Tensor, batch_size: int = 8, progress: bool = False) -> dict[tuple[int, str], torch.Tensor]:
    """``H = X X^T`` (float64) of the dense model's input to every layer's ``o_proj`` (``"o"``) and
    ``down_proj`` (``"down"``): the maps whose *input* channels a subnet cuts, i.e. the ones reformation refits.
    One dense pass of ``nas_llm.model.importance.collect_stats`` (which always records these two Grams)."""
    from nas_llm.model.importance import collect_stats

    stats = collect_stats(model, ids, batch_size=batch_size, hessian=False, progress=progress)
    return {(i, role): st.H[role] for i, st in enumerate(stats) for role in ("o", "down")}


def _refit_map(model: nn.Module, layer: int, role: str) -> nn.Linear:
    """The ``o_proj`` (``role="o"``) or ``down_proj`` (``"down"``) of decoder layer ``layer``."""
    fam = get_family(model)
    return fam.linears(fam.decoder_layers(model)[layer])[role]


@OBJECTIVES.register("perplexity_reformed", kind="quality", log_scale=True)
class ReformedPerplexity(Perplexity):
    """Calibration perplexity *after* least-squares reformation of the cut maps (minimize).

    Why: reformation repairs width cuts far more than it repairs layer drops or badly allocated
    widths, so ranking subnets by their *un-reformed* perplexity picks ones that lose once reformed
    (measured on SmolLM2: the search's 80% pick beat uniform Wanda-sp before reformation and lost to it
    after). Here each kept ``o_proj``/``down_proj`` with cut inputs gets the exact least-squares weights
    ``W'_K = W Hd[:, K] Hd[K, K]^-1`` (``nas_llm.model.solvers.closed_form``) with ``H = X X^T`` of the *dense*
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
                 weight_cache_mb: float = 1024.0):
        super().__init__(source, n_samples, seq_len, seed, batch_size, fast, cache_mb, fidelity)
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

    def grams(self, ctx: Context) -> dict[tuple[int, str], torch.Tensor]:
        from nas_llm.model.data import calibration_batch

        k = ("dense_grams", id(ctx.model), self.source, self.reform_samples, self.reform_seq_len, self.reform_seed)
        if k not in ctx.cache:
            ids = calibration_batch(ctx.tokenizer, self.source, self.reform_samples, self.reform_seq_len, self.reform_seed)
            ctx.cache[k] = dense_grams(ctx.model, ids, self.batch_size, progress=ctx.progress)
        return ctx.cache[k]

    def _weights(self, ctx: Context) -> "_WeightCache":
        k = self._key(ctx) + ("weights", self.weight_cache_mb)
        if k not in ctx.cache:
            ctx.cache[k] = _WeightCache(self.weight_cache_mb)
        return ctx.cache[k]

    def setup(self, ctx: Context) -> None:
        self.grams(ctx)
        super().setup(ctx)

    def reformed(self, ctx: Context, layer: int, role: str, kept: list[int]) -> torch.Tensor:
        """Reformed weight of one map, already cut to ``kept`` columns (cached)."""
        from nas_llm.model.solvers import closed_form

        cache = self._weights(ctx)
        key = (layer, role, tuple(kept))
        w = cache.get(key)
        if w is None:
            W = _refit_map(ctx.model, layer, role).weight.detach()
            idx = torch.as_tensor(kept, device=W.device)
            w = closed_form(W, self.grams(ctx)[(layer, role)], kept, damp=self.damp).index_select(1, idx).contiguous()
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

    def naive(self, subnet: Subnet, ctx: Context) -> float:
        """The reference: a physically sliced copy with the reformed weights written in, all layers."""
        from nas_llm.model.metrics import nll_sum

        plan = ctx.plan(subnet)
        small = ctx.sliced(subnet)
        kept_layers = [i for i, lp in enumerate(plan.layers) if lp.keep]
        for (i, role), w in self.weights_for(plan, 0, ctx).items():
            _refit_map(small, kept_layers.index(i), role).weight.data.copy_(w)
        total, count = nll_sum(small, self.ids(ctx)[: self.rows], self.batch_size)
        return math.exp(total / count)


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
