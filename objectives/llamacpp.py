"""Latency measured in llama.cpp: a subnet's GGUF timed against the dense model's, interleaved.

The PyTorch latency objectives time eager fp32 PyTorch; a small LLM on a CPU is served by llama.cpp
from a (quantised) GGUF. :func:`measure_ggufs` loads each GGUF in turn (A B A B ..., in a new random order each round) for
``rounds`` rounds, times ``reps`` prefills of ``n_tokens`` tokens and ``reps`` runs of ``n_decode`` single-token
decode steps after a ``n_context``-token prompt, and reports the median over rounds with its
spread, so a drift of the machine hits every model alike. :class:`LatencyLlamaCpp` is that
measurement as an objective (it writes the subnet's GGUF with :func:`nas_llm.model.gguf.export_gguf`);
``latency_llamacpp_lut`` (:mod:`objectives.llamacpp_lut`) predicts it without writing a GGUF per subnet.
"""
from __future__ import annotations

import os
import platform
import statistics
import tempfile
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from nas_llm.errors import ConfigError
from search_spaces import Subnet

from .base import OBJECTIVES, Context, Objective
from .latency import MODES, STATS, LatencyResult

def check_settings(mode: str, n_tokens: int, n_context: int, n_decode: int, rounds: int, reps: int, stat: str) -> None:
    if mode not in MODES:
        raise ConfigError(f"llama.cpp latency mode {mode!r} is not supported; use 'prefill' or 'decode'")
    for name, v in (("n_tokens", n_tokens), ("n_context", n_context), ("n_decode", n_decode), ("rounds", rounds), ("reps", reps)):
        if int(v) < 1:
            raise ConfigError(f"llama.cpp latency: {name} must be >= 1, got {v}")
    if stat not in STATS:
        raise ConfigError(f"llama.cpp latency stat {stat!r} is not supported; use 'median' or 'min'")


def runtime_settings(obj: Any) -> dict[str, Any]:
    """Runtime, llama.cpp version, GGUF type, threads and token counts of a llama.cpp latency objective or table."""
    from nas_llm.model import llamacpp

    return {"runtime": "llama.cpp", "llama_cpp": llamacpp.version(), "type": obj.type, "threads": obj.threads,
            "mode": obj.mode, "n_tokens": obj.n_tokens, "n_context": obj.n_context, "n_decode": obj.n_decode,
            "flash_attn": obj.flash_attn}


def _device(outtype: str, threads: int) -> str:
    return f"llama.cpp {outtype} {threads} threads, cpu {platform.machine()}"


def measure_ggufs(paths: Mapping[str, str | os.PathLike], mode: str = "decode", *, threads: int | None = None,
                  n_tokens: int = 512, n_context: int = 128, n_decode: int = 32, rounds: int = 3, reps: int = 2,
                  stat: str = "median", outtype: str = "?", seed: int = 0, progress: bool = False,
                  flash_attn: bool = True) -> dict[str, LatencyResult]:
    """Per GGUF, the median over interleaved rounds of seconds per prefill (``n_tokens``) or per decoded token."""
    from nas_llm.model import llamacpp

    check_settings(mode, n_tokens, n_context, n_decode, rounds, reps, stat)
    threads = threads or llamacpp.default_threads()
    rng = np.random.default_rng(seed)
    n_ctx = (n_tokens if mode == "prefill" else n_context + n_decode) + 8
    vals: dict[str, list[float]] = {k: [] for k in paths}
    fastest: dict[str, list[float]] = {k: [] for k in paths}
    blocks: dict[str, list[float]] = {k: [] for k in paths}
    from tqdm.auto import tqdm

    bar = tqdm(total=rounds * len(paths), desc=f"llama.cpp {mode}", disable=not progress, leave=False)
    order = list(paths)
    for r in range(rounds):
        if r:  # a new order each round: a model's place in the round (what ran just before it) is not a bias
            rng.shuffle(order)
        for name in order:
            path = paths[name]
            llm = llamacpp.open_model(path, n_ctx=n_ctx, threads=threads, n_batch=max(512, n_tokens), flash_attn=flash_attn)
            ids = rng.integers(0, llm.n_vocab(), size=n_tokens if mode == "prefill" else n_context + n_decode).tolist()
            if mode == "prefill":
                llamacpp.time_prefill(llm, ids)  # warm-up
                ts = [llamacpp.time_prefill(llm, ids) for _ in range(reps)]
            else:
                llamacpp.time_decode(llm, ids[:n_context], ids[n_context:n_context + 2])  # warm-up
                ts = [llamacpp.time_decode(llm, ids[:n_context], ids[n_context:]) for _ in range(reps)]
            llm.close()
            vals[name].append(statistics.median(ts) if stat == "median" else min(ts))
            fastest[name].append(min(ts))
            blocks[name] += ts
            bar.update(1)
    bar.close()
    seq = n_tokens if mode == "prefill" else n_context
    out = {}
    for k in paths:
        q = np.percentile(blocks[k], [25, 75]) if len(blocks[k]) > 1 else (0.0, 0.0)
        out[k] = LatencyResult(statistics.median(vals[k]), float(q[1] - q[0]), len(blocks[k]), mode, 1, seq,
                               _device(outtype, threads), False, vals[k], stat, fastest[k])
    return out


@OBJECTIVES.register("latency_llamacpp", kind="latency", unit="ms", measured=True)
class LatencyLlamaCpp(Objective):
    """A subnet's latency in llama.cpp in ms (minimize): its GGUF of ``type`` timed against the dense model's.

    ``mode="decode"``: ms per token decoded after a ``n_context``-token prompt; ``"prefill"``: ms to
    process a ``n_tokens``-token prompt. ``flash_attn`` as llama.cpp's own tools run on a CPU. Each score writes the subnet's GGUF into a temporary folder
    (the dense GGUF once) and measures both interleaved; :attr:`last` keeps both results.
    """

    name, direction = "latency_llamacpp", "minimize"

    def __init__(self, type: str = "q4_k_m", threads: int | None = None, mode: str = "decode", n_tokens: int = 512,
                 n_context: int = 128, n_decode: int = 32, rounds: int = 3, reps: int = 2, stat: str = "median",
                 flash_attn: bool = True, workdir: str | os.PathLike | None = None):
        from nas_llm.model import llamacpp

        llamacpp.check_outtype(type)
        check_settings(mode, n_tokens, n_context, n_decode, rounds, reps, stat)
        self.type, self.threads = type, int(threads or llamacpp.default_threads())
        self.mode, self.n_tokens, self.n_context, self.n_decode = mode, n_tokens, n_context, n_decode
        self.rounds, self.reps, self.stat, self.flash_attn = rounds, reps, stat, flash_attn
        self._tmp = tempfile.TemporaryDirectory(prefix="nas-llm-gguf-", dir=workdir)
        self.last: dict[str, LatencyResult] = {}

    def settings(self) -> dict[str, Any]:
        """What the number means (stored in run.json, shown on the report's latency axis)."""
        return runtime_settings(self)

    def gguf(self, model: Any, tokenizer: Any, name: str) -> Path:
        """``model`` written as a GGUF of this objective's type in its working folder (no load check: timing loads it)."""
        from nas_llm.model.gguf import export_gguf

        return export_gguf(model, Path(self._tmp.name) / f"{name}.gguf", tokenizer, outtype=self.type, overwrite=True,
                           check=False)

    def dense_gguf(self, ctx: Context) -> Path:
        key = ("llamacpp_dense_gguf", self.type, id(self))
        if key not in ctx.cache:
            ctx.cache[key] = self.gguf(ctx.model, ctx.tokenizer, "dense")
        return ctx.cache[key]

    def measure(self, subnet: Subnet, ctx: Context) -> dict[str, LatencyResult]:
        paths = {"dense": self.dense_gguf(ctx)}
        if subnet != ctx.space.dense():
            paths["subnet"] = self.gguf(ctx.sliced(subnet), ctx.tokenizer, "subnet")
        res = measure_ggufs(paths, self.mode, threads=self.threads, n_tokens=self.n_tokens, n_context=self.n_context,
                            n_decode=self.n_decode, rounds=self.rounds, reps=self.reps, stat=self.stat, outtype=self.type,
                            flash_attn=self.flash_attn)
        res.setdefault("subnet", res["dense"])
        self.last = res
        return res

    def score(self, subnet: Subnet, ctx: Context) -> float:
        return self.measure(subnet, ctx)["subnet"].median_s * 1e3


__all__ = ["LatencyLlamaCpp", "check_settings", "measure_ggufs", "runtime_settings"]
