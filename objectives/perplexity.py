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

:class:`~objectives.reformed.ReformedPerplexity` (``perplexity_reformed``) scores the same way after a
least-squares refit of the cut maps, so a search ranks subnets by what reformation will make of them.

:meth:`Perplexity.divergence` scores a subnet the same way by the mean per-token KL divergence of its
next-token distribution from the dense model's (what the allocation's per-layer sensitivity measures).

Two more savings, both settings of the objective: the LM head runs in chunks of ``head_chunk`` tokens
(``nas_llm.model.metrics.head_row_nll``: no ``[rows, L, vocab]`` logits), and ``screen_dtype="bfloat16"``
scores the *screening* fidelities (``at_fidelity(f < 1)``) under ``torch.autocast`` -- full fidelity is
always float32, and a bfloat16 batch is never reused for a float32 value. Whether bfloat16 is faster
depends on the CPU: :func:`fastest_dtype` measures it (the search's ``--screen-dtype auto``).
"""
from __future__ import annotations

import copy
import math
import os
from contextlib import AbstractContextManager, contextmanager, nullcontext
from typing import Any, Iterator

import torch
import torch.nn as nn

from nas_llm.errors import ConfigError
from nas_llm.model.metrics import DEFAULT_HEAD_CHUNK, row_nll
from nas_llm.model.swap import plan_swapped
from search_spaces import Plan, Subnet, get_family

SCREEN_DTYPES = ("float32", "bfloat16")

from .base import OBJECTIVES, Context, Objective


def fastest_dtype(m: int = 2048, k: int = 576, n: int = 1536, min_run_time: float = 0.25) -> tuple[str, dict[str, float]]:
    """The faster of :data:`SCREEN_DTYPES` for a decoder-shaped product on this CPU, and each one's GFLOP/s.

    Why measure: bfloat16 screening pays only where the CPU computes bfloat16 natively (AVX512-BF16, AMX);
    elsewhere torch emulates it and it is several times *slower* than float32 (measured on a 2-core Xeon
    without AVX512-BF16: 60 vs 265 GFLOP/s for this product; on an earlier host bfloat16 was x1.58 faster).
    Runs at the current ``torch.get_num_threads()``, about ``2 * min_run_time`` seconds, once per process and
    thread count (the answer is kept: config helpers ask for it on every call).
    """
    import torch.utils.benchmark as tb

    key = (m, k, n, min_run_time, torch.get_num_threads())
    if key in _FASTEST:
        return _FASTEST[key][0], dict(_FASTEST[key][1])
    speeds = {}
    for name in SCREEN_DTYPES:
        dt = getattr(torch, name)
        a, w = torch.randn(m, k, dtype=dt), torch.randn(n, k, dtype=dt)
        t = tb.Timer("linear(a, w)", globals={"linear": torch.nn.functional.linear, "a": a, "w": w},
                     num_threads=torch.get_num_threads()).blocked_autorange(min_run_time=min_run_time)
        speeds[name] = float(f"{2.0 * m * k * n / t.median / 1e9:.4g}")  # 4 digits: a tiny probe is not 0.0
    _FASTEST[key] = (max(SCREEN_DTYPES, key=lambda d: speeds[d]), speeds)
    return _FASTEST[key][0], dict(speeds)


_FASTEST: dict[tuple, tuple[str, dict[str, float]]] = {}


def perplexity_of(model: nn.Module, input_ids: torch.Tensor, batch_size: int = 4) -> float:
    """Perplexity of an already-built (e.g. sliced or exported) model on ``[n, L]`` token windows."""
    from nas_llm.model.metrics import perplexity

    return perplexity(model, input_ids, batch_size)


def autocast_for(dtype: str, device: torch.device) -> AbstractContextManager:
    """``torch.autocast`` to ``dtype`` ("bfloat16"), or nothing for "float32"."""
    if dtype == "float32":
        return nullcontext()
    return torch.autocast(device.type, dtype=getattr(torch, dtype))


def first_changed_layer(subnet: Subnet, dense: Subnet) -> int:
    """Index of the first layer where ``subnet`` differs from the dense model (``num_layers`` if none)."""
    for i, (c, d) in enumerate(zip(subnet.layers, dense.layers)):
        if c != d:
            return i
    return subnet.num_layers


class PrefixCache:
    """Dense hidden states at every ``stride``-th layer boundary, and the dense per-row NLL."""

    def __init__(self, model: nn.Module, ids: torch.Tensor, batch_size: int, cache_mb: float,
                 head_chunk: int = DEFAULT_HEAD_CHUNK):
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
                    rows.append(row_nll(model, x, head_chunk).cpu())
                    for b in self.boundaries:
                        self.states[b].append(captured.pop(b))
        finally:
            for h in handles:
                h.remove()
        self.dense_nll = torch.cat(rows)
        self.bytes = per * len(self.boundaries)
        self.batch_nll: dict[tuple, float] = {}  # (subnet key, first row, rows, dtype) -> summed NLL, see Perplexity.score

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
                 fidelity: float = 1.0, head_chunk: int = DEFAULT_HEAD_CHUNK, screen_dtype: str = "float32"):
        if n_samples < 1 or seq_len < 2:
            raise ConfigError(f"n_samples must be >= 1 and seq_len >= 2, got n_samples={n_samples}, seq_len={seq_len}")
        if batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
        if not 0 < fidelity <= 1:
            raise ConfigError(f"fidelity must be in (0, 1], got {fidelity}")
        if screen_dtype not in SCREEN_DTYPES:
            raise ConfigError(f"screen_dtype {screen_dtype!r} is not one of {', '.join(SCREEN_DTYPES)}")
        if not isinstance(head_chunk, int) or head_chunk < 0:
            raise ConfigError(f"head_chunk must be a whole number >= 0 (0: the plain head), got {head_chunk!r}")
        from nas_llm.model.data import resolve_source

        resolve_source(source)  # a missing file fails here, with the accepted forms in the message
        self.source, self.n_samples, self.seq_len, self.seed = str(source), n_samples, seq_len, seed
        self.batch_size, self.fast, self.cache_mb, self.fidelity = batch_size, fast, cache_mb, fidelity
        self.head_chunk, self.screen_dtype = head_chunk, screen_dtype
        self.last: dict[str, Any] = {}

    @property
    def rows(self) -> int:
        return max(1, round(self.fidelity * self.n_samples))

    compute_dtype: str | None = None  # set by with_windows(dtype=...): overrides the fidelity's dtype

    @property
    def dtype(self) -> str:
        """The compute dtype: ``screen_dtype`` below full fidelity, float32 at full (unless ``with_windows`` said)."""
        return self.compute_dtype or (self.screen_dtype if self.fidelity < 1 else "float32")

    def at_fidelity(self, fidelity: float) -> "Perplexity":
        if not 0 < fidelity <= 1:
            raise ConfigError(f"fidelity must be in (0, 1], got {fidelity}")
        new = copy.copy(self)
        new.fidelity, new.last = fidelity, {}
        return new

    def with_windows(self, n_samples: int, seq_len: int, dtype: str | None = None) -> "Perplexity":
        """The same objective on ``n_samples`` windows of ``seq_len`` tokens drawn with its seed, at full
        fidelity, computed in ``dtype`` (default float32); its own windows and prefix cache (a reformed
        objective shares its refit caches)."""
        if n_samples < 1 or seq_len < 2:
            raise ConfigError(f"n_samples must be >= 1 and seq_len >= 2, got n_samples={n_samples}, seq_len={seq_len}")
        if dtype is not None and dtype not in SCREEN_DTYPES:
            raise ConfigError(f"dtype {dtype!r} is not one of {', '.join(SCREEN_DTYPES)}")
        new = copy.copy(self)
        new.n_samples, new.seq_len, new.fidelity, new.last, new.compute_dtype = n_samples, seq_len, 1.0, {}, dtype
        new.batch_size = n_samples  # short probe windows: one batch (row-by-row matmuls are slow on a CPU)
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
        k = self._key(ctx) + ("prefix", self.batch_size, self.cache_mb, self.head_chunk)
        if k not in ctx.cache:
            ctx.cache[k] = PrefixCache(ctx.model, self.ids(ctx), self.batch_size, self.cache_mb, self.head_chunk)
        return ctx.cache[k]

    def setup(self, ctx: Context) -> None:
        self.ids(ctx)
        if self.fast:
            self.prefix_cache(ctx)

    def weights_for(self, plan: Plan, first: int, ctx: Context) -> dict | None:
        """Replacement weights for sliced maps (none here; see :class:`ReformedPerplexity`)."""
        return None

    @contextmanager
    def reference_model(self, subnet: Subnet, ctx: Context) -> Iterator[nn.Module]:
        """What the fast path must equal: the masked dense model, all layers."""
        with ctx.masked(subnet) as m:
            yield m

    def naive(self, subnet: Subnet, ctx: Context) -> float:
        """The reference: :meth:`reference_model` on all layers, same windows."""
        from nas_llm.model.metrics import nll_sum

        ids = self.ids(ctx)[: self.rows]
        with self.reference_model(subnet, ctx) as m:
            total, count = nll_sum(m, ids, self.batch_size, self.head_chunk)
        return math.exp(total / count)

    def score_model(self, model: nn.Module, ctx: Context) -> float:
        """Perplexity of a built model (e.g. reformed) on this objective's own windows, so its value
        compares with the search's."""
        from nas_llm.model.metrics import perplexity

        return perplexity(model, self.ids(ctx)[: self.rows], self.batch_size, self.head_chunk)

    def score(self, subnet: Subnet, ctx: Context) -> float:
        if not self.fast:
            return self.naive(subnet, ctx)
        total, count = self._summed(subnet, ctx, kl=False)
        return math.exp(total / count)

    def reference(self, ctx: Context) -> list:
        """What :meth:`divergence` compares with: the dense model's next-token distributions on this objective's
        windows, per batch, as :class:`~nas_llm.model.metrics.HeadReference` (negative entropy and expected head row
        per token; one dense pass, kept in ``ctx.cache``)."""
        from nas_llm.model.metrics import final_hidden, head_reference

        k = self._key(ctx) + ("reference", self.batch_size)
        if k not in ctx.cache:
            ids, dev = self.ids(ctx), next(ctx.model.parameters()).device
            head = ctx.model.get_output_embeddings()
            with torch.no_grad():
                ctx.cache[k] = [head_reference(final_hidden(ctx.model, ids[s : s + self.batch_size].to(dev)), head,
                                               self.head_chunk) for s in range(0, ids.shape[0], self.batch_size)]
        return ctx.cache[k]

    def divergence(self, subnet: Subnet, ctx: Context) -> float:
        """Mean per-token ``KL(dense || subnet)`` in nats on this objective's windows (0 for the dense model).

        What the allocation's sensitivity measures by default (``nas_llm.search.sensitivity``): the expected
        log-perplexity increase, computed on the whole next-token distribution rather than on the text's one
        token, so a few short windows rank the layers' cuts with little noise. Same prefix reuse, sliced
        layers and refit weights as :meth:`score`; ``fast=False``: :meth:`reference_model` on all layers.
        """
        if self.fast:
            total, count = self._summed(subnet, ctx, kl=True)
            return total / count
        from nas_llm.model.metrics import row_kl

        ids, ref = self.ids(ctx)[: self.rows], self.reference(ctx)
        dev = next(ctx.model.parameters()).device
        total = 0.0
        with torch.no_grad(), self.reference_model(subnet, ctx) as m:
            for bi, s in enumerate(range(0, ids.shape[0], self.batch_size)):
                x = ids[s : s + self.batch_size].to(dev)
                total += float(row_kl(m, x, ref[bi][: x.shape[0]], self.head_chunk).sum())
        return total / (ids.shape[0] * (ids.shape[1] - 1))

    def _summed(self, subnet: Subnet, ctx: Context, kl: bool) -> tuple[float, int]:
        """Summed NLL (``kl``: summed KL from the dense model) over this fidelity's windows, and the token count."""
        from nas_llm.model.metrics import row_kl

        plan = ctx.plan(subnet)
        pc = self.prefix_cache(ctx)
        ids = pc.ids[: self.rows]
        count = ids.shape[0] * (ids.shape[1] - 1)
        first = first_changed_layer(subnet, ctx.space.dense())
        self.last = {"first_changed": first}
        if first >= subnet.num_layers:
            self.last["start"] = subnet.num_layers
            return (0.0 if kl else float(pc.dense_nll[: self.rows].sum())), count
        ref = self.reference(ctx) if kl else None
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
        with torch.no_grad(), plan_swapped(ctx.model, plan, first, weights, start, inject), autocast_for(self.dtype, dev):
            for bi, s in enumerate(range(0, ids.shape[0], self.batch_size)):
                x = ids[s : s + self.batch_size].to(dev)
                # a bfloat16 screening batch never stands in for float32, nor a divergence for an NLL
                mk = (key, s, x.shape[0], self.dtype) + (("kl",) if kl else ())
                if mk in memo:
                    total, reused = total + memo[mk], reused + x.shape[0]
                    continue
                inject["h"] = pc.states[start][bi][: x.shape[0]]
                rows = row_kl(ctx.model, x, ref[bi][: x.shape[0]], self.head_chunk) if kl else \
                    row_nll(ctx.model, x, self.head_chunk)
                memo[mk] = float(rows.sum())
                total += memo[mk]
        self.last["reused_windows"] = reused
        return total, count


def __getattr__(name: str) -> Any:
    """``ReformedPerplexity`` and ``dense_grams`` moved to :mod:`objectives.reformed` (old imports keep working)."""
    if name in ("ReformedPerplexity", "dense_grams"):
        from . import reformed

        return getattr(reformed, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
