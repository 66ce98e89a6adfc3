"""Calibration perplexity of a subnet, fast enough to score thousands of candidates.

``N`` windows of ``L`` tokens are drawn from a text with a seed (``nas_llm.data.calibration_batch``),
so a value is reproducible bit for bit. Two things make a candidate cheap:

* **prefix reuse** -- the dense model's hidden states at layer boundaries are cached once per
  calibration set; a subnet's forward starts from the last cached boundary at or before the first
  layer it changes (the layers in front of it compute exactly the dense values);
* **sliced layers** -- the changed layers run with physically smaller projections (swapped in
  for the call and restored after), so a 50 % subnet costs about half, unlike input masking.

The cache holds ``num_layers x N x L x hidden`` floats at most; ``cache_mb`` bounds it by keeping
every k-th boundary only (the few dense layers between a boundary and the change are re-run).
``fast=False`` is the naive reference: the masked dense model on all layers.
"""
from __future__ import annotations

import copy
import math
import os
from contextlib import contextmanager
from typing import Any, Iterator

import torch
import torch.nn as nn
import torch.nn.functional as F

from search_spaces import Plan, Subnet, get_family

from .base import OBJECTIVES, Context, Objective


def perplexity_of(model: nn.Module, input_ids: torch.Tensor, batch_size: int = 4) -> float:
    """Perplexity of an already-built (e.g. sliced or exported) model on ``[n, L]`` token windows."""
    from nas_llm.metrics import perplexity

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


@contextmanager
def _patched(model: nn.Module, plan: Plan, start: int, first: int, inject: dict) -> Iterator[None]:
    """Run ``model`` from layer ``start`` (input taken from ``inject["h"]``) with layers >= ``first`` sliced.

    Layers before ``start`` and dropped layers return their input; kept layers from ``first`` on get
    index-selected projections for the call. Everything is restored on exit.
    """
    from nas_llm.masking import head_channels, kv_channels
    from nas_llm.slicing import _sliced_linear

    fam = get_family(model)
    dims = fam.dims(model.config)
    layers = fam.decoder_layers(model)
    patched: list[nn.Module] = []
    swapped: list[tuple[nn.Module, str, nn.Linear]] = []
    handles = []

    def identity(hidden_states, *args, **kwargs):
        return hidden_states

    def feed(module, args, kwargs):
        h = inject["h"]
        if args:
            return (h,) + tuple(args[1:]), kwargs
        return args, {**kwargs, "hidden_states": h}

    try:
        for i, (layer, lp) in enumerate(zip(layers, plan.layers)):
            if i == start:  # also when this layer is dropped: its identity forward passes the state on
                handles.append(layer.register_forward_pre_hook(feed, with_kwargs=True))
            if i < start or not lp.keep:
                layer.forward = identity
                patched.append(layer)
                continue
            if i < first:
                continue
            lin, mlp = fam.attn_linears(layer), fam.mlp_linears(layer)
            if len(lp.kv_groups) < dims.num_kv_heads:
                q, kv = head_channels(lp.kv_groups, dims), kv_channels(lp.kv_groups, dims)
                for role, new in (("q", _sliced_linear(lin["q"], rows=q)), ("k", _sliced_linear(lin["k"], rows=kv)),
                                  ("v", _sliced_linear(lin["v"], rows=kv)), ("o", _sliced_linear(lin["o"], cols=q))):
                    swapped.append((layer, role, lin[role]))
                    fam.set_linear(layer, role, new)
            if len(lp.neurons) < dims.intermediate:
                nr = list(lp.neurons)
                for role, new in (("gate", _sliced_linear(mlp["gate"], rows=nr)), ("up", _sliced_linear(mlp["up"], rows=nr)),
                                  ("down", _sliced_linear(mlp["down"], cols=nr))):
                    swapped.append((layer, role, mlp[role]))
                    fam.set_linear(layer, role, new)
        yield
    finally:
        for h in handles:
            h.remove()
        for layer in patched:
            del layer.forward
        for layer, role, orig in reversed(swapped):
            fam.set_linear(layer, role, orig)


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


@OBJECTIVES.register("perplexity")
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
            raise ValueError(f"n_samples must be >= 1 and seq_len >= 2, got n_samples={n_samples}, seq_len={seq_len}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if not 0 < fidelity <= 1:
            raise ValueError(f"fidelity must be in (0, 1], got {fidelity}")
        from nas_llm.data import resolve_source

        resolve_source(source)  # a missing file fails here, with the accepted forms in the message
        self.source, self.n_samples, self.seq_len, self.seed = str(source), n_samples, seq_len, seed
        self.batch_size, self.fast, self.cache_mb, self.fidelity = batch_size, fast, cache_mb, fidelity
        self.last: dict[str, Any] = {}

    @property
    def rows(self) -> int:
        return max(1, round(self.fidelity * self.n_samples))

    def at_fidelity(self, fidelity: float) -> "Perplexity":
        if not 0 < fidelity <= 1:
            raise ValueError(f"fidelity must be in (0, 1], got {fidelity}")
        new = copy.copy(self)
        new.fidelity, new.last = fidelity, {}
        return new

    def _key(self, ctx: Context) -> tuple:
        return ("perplexity", id(ctx.model), self.source, self.n_samples, self.seq_len, self.seed)

    def ids(self, ctx: Context) -> torch.Tensor:
        from nas_llm.data import calibration_batch

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

    def naive(self, subnet: Subnet, ctx: Context) -> float:
        """The reference: masked dense model, all layers, same windows."""
        from nas_llm.metrics import nll_sum

        ids = self.ids(ctx)[: self.rows]
        with ctx.masked(subnet) as m:
            total, count = nll_sum(m, ids, self.batch_size)
        return math.exp(total / count)

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
        with torch.no_grad(), _patched(ctx.model, plan, start, first, inject):
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
