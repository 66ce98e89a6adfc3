"""Measured latency of a physically sliced model: prefill and per-token decode, eager or compiled.

Timing uses ``torch.utils.benchmark.Timer`` (warm-up, ``blocked_autorange``, CUDA synchronised).
Decode is the time of one token at batch 1 after a prompt of ``seq_len`` tokens, with a KV
cache; after each timed step the cache is rewound by one token so every step sees the same
context. ``compiled=True`` uses a static cache and ``torch.compile`` (CUDA graphs on CUDA),
because eager decode of a large model on a GPU is bound by kernel launches, not by the GPU.

CPU timings drift by +-15 % between back-to-back runs on a shared machine, so
:func:`measure_interleaved` measures several models in rounds (A B A B ...) and reports the
median of the round values and their spread; comparisons should use it. Each round's value is
the median block time (``stat="median"``) or the fastest block (``stat="min"``): a VM's stolen
time only ever adds to a block, so the fastest block ignores slow outlier blocks (``timeit``'s
advice) at the price of reading the best case rather than the typical one. Neither removes a
drift of the whole machine between calls; on our 2-core VM "min" made lookup tables markedly
more accurate (benchmarks/RESULTS.md).
"""
from __future__ import annotations

import inspect
import math
import statistics
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Iterable, Mapping

import torch
import torch.nn as nn

from nas_llm.errors import ConfigError
from nas_llm.model.loading import resolve_device
from search_spaces import Subnet

from .base import OBJECTIVES, Context, Objective

MODES = ("prefill", "decode")
STATS = ("median", "min")
DTYPES = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
          "float16": torch.float16, "fp16": torch.float16}


@dataclass
class LatencyResult:
    """One latency number with its noise. ``median_s`` is per call (prefill) or per token (decode).

    ``median_s`` is the median over rounds of each round's ``stat`` (its median block, or its
    fastest block); ``round_medians_s`` holds those per-round values, ``round_fastest_s`` each
    round's fastest block whatever ``stat`` is, ``iqr_s`` the IQR of all blocks.
    """

    median_s: float
    iqr_s: float
    n_runs: int
    mode: str
    batch: int
    seq_len: int
    device: str
    compiled: bool = False
    round_medians_s: list[float] = field(default_factory=list)
    stat: str = "median"
    round_fastest_s: list[float] = field(default_factory=list)

    @property
    def median_ms(self) -> float:
        return self.median_s * 1e3

    @property
    def fastest_s(self) -> float:
        """Median over rounds of each round's fastest block: what ``stat="min"`` reports as ``median_s``."""
        return statistics.median(self.round_fastest_s)

    @property
    def spread(self) -> float:
        """(max - min) / median of the round medians; 0 with one round."""
        r = self.round_medians_s
        return (max(r) - min(r)) / statistics.median(r) if len(r) > 1 else 0.0

    def to_dict(self) -> dict:
        return {**asdict(self), "median_ms": self.median_ms, "iqr_ms": self.iqr_s * 1e3, "spread": self.spread}

    def __str__(self) -> str:
        tag = f"{self.mode}{' compiled' if self.compiled else ''} b{self.batch} s{self.seq_len} {self.device}"
        tag += "" if self.stat == "median" else f" {self.stat}"
        return f"{self.median_s * 1e3:.3f} ms (IQR {self.iqr_s * 1e3:.3f} ms, n={self.n_runs}) [{tag}]"


# -- argument checking ------------------------------------------------------------------------
def resolve_dtype(dtype: str | torch.dtype | None) -> torch.dtype | None:
    if dtype is None or isinstance(dtype, torch.dtype):
        return dtype
    if dtype not in DTYPES:
        raise ConfigError(f"dtype {dtype!r} is not supported; use one of {', '.join(DTYPES)}")
    return DTYPES[dtype]


def _check(mode: str, batch: int, seq_len: int, stat: str = "median") -> None:
    if mode not in MODES:
        raise ConfigError(f"latency mode {mode!r} is not supported; use 'prefill' or 'decode'")
    if batch < 1 or seq_len < 1:
        raise ConfigError(f"batch and seq_len must be >= 1, got batch={batch}, seq_len={seq_len}")
    if stat not in STATS:
        raise ConfigError(f"latency stat {stat!r} is not supported; use 'median' (typical block) or 'min' (fastest block)")


def round_value(m: Any, stat: str = "median") -> float:
    """One round's value from a ``torch.utils.benchmark`` Measurement: its median or its fastest block."""
    return float(m.median) if stat == "median" else float(min(m.times))


def _device_name(dev: torch.device) -> str:
    if dev.type == "cuda":
        return torch.cuda.get_device_name(dev)
    import platform

    return f"cpu {platform.machine()} {platform.processor() or ''}".strip()


# -- runners: a zero-argument callable that does one timed unit of work ----------------------
def _rewind(cache: Any, n: int = 1) -> None:
    """Drop the last ``n`` tokens of a KV cache (transformers 5.x, as pinned)."""
    from transformers import StaticCache

    if isinstance(cache, StaticCache):
        for layer in cache.layers:  # move the write position back (in place, graph-safe)
            layer.cumulative_length.sub_(n)
        return
    cache.crop(-n)  # a negative length removes that many tokens


def _forward_kwargs(model: nn.Module) -> dict:
    params = inspect.signature(model.forward).parameters
    return {"logits_to_keep": 1} if "logits_to_keep" in params else {}


def make_runner(model: nn.Module, mode: str = "prefill", batch: int = 1, seq_len: int = 128,
                compiled: bool = False, body_only: bool = False, seed: int = 0) -> Callable[[], Any]:
    """A callable doing one prefill or one decode step of ``model`` (already on its device).

    ``body_only`` runs the decoder without the LM head (used by the lookup table to time layers).
    Prefill returns only the last position's logits, as serving does.
    """
    _check(mode, batch, seq_len)
    dev = next(model.parameters()).device
    vocab = model.config.vocab_size
    g = torch.Generator().manual_seed(seed)
    net = model.get_decoder() if body_only else model
    extra = {} if body_only else _forward_kwargs(model)
    if mode == "prefill":
        ids = torch.randint(0, vocab, (batch, seq_len), generator=g).to(dev)
        fwd = torch.compile(net.forward, dynamic=False) if compiled else net.forward

        def prefill() -> Any:
            return fwd(input_ids=ids, use_cache=False, **extra)

        return prefill
    from transformers import DynamicCache, StaticCache

    ids = torch.randint(0, vocab, (1, seq_len), generator=g).to(dev)
    tok = torch.randint(0, vocab, (1, 1), generator=g).to(dev)
    pos = torch.tensor([[seq_len]], device=dev)
    if compiled:
        cache = StaticCache(config=model.config, max_cache_len=seq_len + 1)
        mode_ = "reduce-overhead" if dev.type == "cuda" else "default"
        fwd = torch.compile(net.forward, mode=mode_, dynamic=False)
    else:
        cache = DynamicCache(config=model.config)
        fwd = net.forward
    with torch.inference_mode():
        net(input_ids=ids, past_key_values=cache, use_cache=True)  # the prompt, not timed

    def decode() -> Any:
        out = fwd(input_ids=tok, past_key_values=cache, position_ids=pos, use_cache=True, **extra)
        _rewind(cache, 1)
        return out

    return decode


def time_runner(fn: Callable[[], Any], min_run_time: float = 0.2, warmup: int = 2, adaptive: bool = False):
    """``torch.utils.benchmark`` measurement of ``fn`` after ``warmup`` calls (inference mode)."""
    from torch.utils.benchmark import Timer

    with torch.inference_mode():
        for _ in range(warmup):
            fn()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        t = Timer(stmt="fn()", globals={"fn": lambda: _inference(fn)})
        return t.adaptive_autorange(min_run_time=min_run_time) if adaptive else t.blocked_autorange(min_run_time=min_run_time)


def _inference(fn: Callable[[], Any]) -> Any:
    with torch.inference_mode():
        return fn()


def _iqr(times: list[float]) -> float:
    if len(times) < 2:
        return 0.0
    q = statistics.quantiles(times, n=4, method="inclusive")
    return q[2] - q[0]


@dataclass
class _Rounds:
    """One model's timing rounds, accumulated the same way by every timing loop."""

    stat: str
    values: list[float] = field(default_factory=list)  # each round's ``stat``
    fastest: list[float] = field(default_factory=list)  # each round's fastest block
    times: list[float] = field(default_factory=list)  # every block

    def add(self, m: Any) -> None:
        self.values.append(round_value(m, self.stat))
        self.fastest.append(round_value(m, "min"))
        self.times += list(m.times)

    def result(self, mode: str, batch: int, seq_len: int, device: str, compiled: bool) -> LatencyResult:
        return LatencyResult(statistics.median(self.values), _iqr(self.times), len(self.times), mode, batch, seq_len,
                             device, compiled, self.values, self.stat, self.fastest)


def measure_latency(model: nn.Module, mode: str = "prefill", batch: int = 1, seq_len: int = 128,
                    device: str | torch.device | None = None, dtype: str | torch.dtype | None = None,
                    compiled: bool = False, min_run_time: float = 0.2, warmup: int = 2, rounds: int = 1,
                    body_only: bool = False, stat: str = "median") -> LatencyResult:
    """Time one already-built (e.g. sliced) model. Moves it (in place, like ``.to``) to ``device``/``dtype`` if given.

    ``rounds`` > 1 repeats the measurement and reports the median of the round values (``stat``).
    """
    _check(mode, batch, seq_len, stat)
    dev = resolve_device(device, model)
    dt = resolve_dtype(dtype)
    if dt is not None or device is not None:
        model = model.to(device=dev, dtype=dt)
    fn = make_runner(model, mode, batch, seq_len, compiled=compiled, body_only=body_only)
    acc = _Rounds(stat)
    for _ in range(max(1, rounds)):
        acc.add(time_runner(fn, min_run_time, warmup))
    return acc.result(mode, batch, seq_len, _device_name(dev), compiled)


def measure_interleaved(builders: Mapping[str, Callable[[], nn.Module]], mode: str = "prefill", batch: int = 1,
                        seq_len: int = 128, rounds: int = 3, min_run_time: float = 0.2, warmup: int = 2,
                        compiled: bool = False, body_only: bool | Mapping[str, bool] = False,
                        progress: bool = True, stat: str = "median") -> dict[str, LatencyResult]:
    """Measure several models in rounds (A B C A B C ...), so slow drifts hit all of them alike.

    ``body_only`` may be a mapping name -> bool to time some models without their LM head.

    ``builders`` map a name to a function building the model (e.g. slicing a subnet); a model is
    built, timed and dropped in each round, so only one extra model is in memory at a time.
    """
    _check(mode, batch, seq_len, stat)
    acc = {k: _Rounds(stat) for k in builders}
    dev_name = ""
    from tqdm.auto import tqdm

    bar = tqdm(total=rounds * len(builders), desc=f"latency {mode}", disable=not progress, leave=False)
    for _ in range(rounds):
        for name, build in builders.items():
            model = build()
            dev_name = _device_name(next(model.parameters()).device)
            bo = body_only.get(name, False) if isinstance(body_only, Mapping) else body_only
            fn = make_runner(model, mode, batch, seq_len, compiled=compiled, body_only=bo)
            acc[name].add(time_runner(fn, min_run_time, warmup))
            del fn, model
            bar.update(1)
    bar.close()
    return {k: a.result(mode, batch, seq_len, dev_name, compiled) for k, a in acc.items()}


# -- the objective ------------------------------------------------------------------------------
@OBJECTIVES.register("latency", kind="latency", unit="ms", measured=True)
class Latency(Objective):
    """Measured latency of the physically sliced subnet, in ms (minimize).

    Each score slices the dense model (``ctx.sliced``), moves the copy to ``device``/``dtype`` and
    times it; ``rounds`` > 1 repeats the timing and takes the median of the round values.
    ``stat="min"`` takes each round's fastest block instead of its median (steadier on a noisy VM).
    """

    name, direction = "latency", "minimize"

    def __init__(self, device: str = "cpu", mode: str = "prefill", batch: int = 1, seq_len: int = 128,
                 dtype: str | None = None, compiled: bool = False, min_run_time: float = 0.2, rounds: int = 1,
                 stat: str = "median"):
        _check(mode, batch, seq_len, stat)
        self.device = str(resolve_device(device))
        self.dtype = dtype
        resolve_dtype(dtype)
        self.mode, self.batch, self.seq_len, self.compiled = mode, batch, seq_len, compiled
        self.min_run_time, self.rounds, self.stat = min_run_time, rounds, stat

    def measure(self, subnet: Subnet, ctx: Context) -> LatencyResult:
        model = ctx.sliced(subnet)
        try:
            return measure_latency(model, self.mode, self.batch, self.seq_len, self.device, self.dtype,
                                   self.compiled, self.min_run_time, rounds=self.rounds, stat=self.stat)
        finally:
            del model

    def score(self, subnet: Subnet, ctx: Context) -> float:
        return self.measure(subnet, ctx).median_s * 1e3


def spearman(a: Iterable[float], b: Iterable[float]) -> float:
    """Spearman rank correlation (scipy), NaN when either side is constant."""
    from scipy.stats import spearmanr

    a, b = list(a), list(b)
    if len(a) < 2:
        return math.nan
    r = spearmanr(a, b).statistic
    return float(r)


def mape(pred: Iterable[float], meas: Iterable[float]) -> float:
    """Mean absolute percentage error of ``pred`` against ``meas`` (in %)."""
    p, m = list(pred), list(meas)
    return 100.0 * sum(abs(x - y) / y for x, y in zip(p, m)) / len(m)
