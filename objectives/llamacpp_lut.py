"""A lookup table of llama.cpp timings: a subnet's llama.cpp latency predicted without writing its GGUF.

The table has the torch lookup table's form (:class:`objectives.predictors.LookupTablePredictor`,
whose ``predict`` it reuses): ``C0 + sum over kept layers of (d + a[kv_groups] + m[neurons])``. Its
entries are llama.cpp timings of small probe GGUFs of the model's first ``probe_layers`` layers, one
per KV-group count (full MLP) and per neuron count (full attention), plus one of a single layer; the
real model's GGUF, dense and with every second layer dropped, is timed in the same interleaved rounds
and calibrates the layer time ``d`` and the constant ``C0`` (embeddings, final norm, output head).
Tables are cached on disk, keyed by the model, GGUF type, threads, mode, token counts, CPU and the
llama.cpp version. ``nas-llm latency validate --runtime llamacpp`` checks it against measurement.
"""
from __future__ import annotations

import hashlib
import json
import os
import platform
import tempfile
import warnings
from pathlib import Path
from typing import Any, Callable

import torch.nn as nn

from nas_llm.errors import ConfigError
from search_spaces import Ranking, Subnet, SubnetSpace, get_family

from .base import OBJECTIVES, Context
from .llamacpp import LatencyLlamaCpp, check_settings, measure_ggufs, runtime_settings
from .lut import LookupTablePredictor, attn_shapes, check_times
from .predictors import PREDICTORS, PredictedLatency


@PREDICTORS.register("lut_llamacpp")
class LlamaCppLUT(LookupTablePredictor):
    """Per-layer llama.cpp timings of probe GGUFs; ``predict`` as the torch lookup table (seconds).

    ``probe_layers=None`` (default) probes with all of the model's layers: on SmolLM2 (q4_k_m, 2 threads, 20
    random subnets) that ranked better than 8-layer probes (Spearman prefill 0.991 vs 0.976, decode 0.980 vs
    0.979) and, anchored at the dense model, erred less (MAPE 1.9 vs 5.4 %, 5.4 vs 6.3 %), for a longer build.
    """

    name = "lut_llamacpp"

    def __init__(self, type: str = "q4_k_m", threads: int | None = None, mode: str = "decode", n_tokens: int = 512,
                 n_context: int = 128, n_decode: int = 32, granularity: int = 64, probe_layers: int | None = None,
                 neuron_stride: int = 1, rounds: int = 3, reps: int = 2, stat: str = "median", flash_attn: bool = True,
                 tokenizer: Any = None, cache_dir: str | os.PathLike | None = None, refresh: bool = False,
                 progress: bool = True):
        from nas_llm.model import llamacpp

        llamacpp.check_outtype(type)
        check_settings(mode, n_tokens, n_context, n_decode, rounds, reps, stat)
        if (probe_layers is not None and probe_layers < 2) or neuron_stride < 1:
            raise ConfigError(f"probe_layers must be >= 2 and neuron_stride >= 1, got {probe_layers}, {neuron_stride}")
        self.type, self.threads = type, int(threads or llamacpp.default_threads())
        self.mode, self.n_tokens, self.n_context, self.n_decode = mode, n_tokens, n_context, n_decode
        self.granularity, self.probe_layers, self.neuron_stride = granularity, probe_layers, neuron_stride
        self.rounds, self.reps, self.stat, self.tokenizer, self.flash_attn = rounds, reps, stat, tokenizer, flash_attn
        self.cache_dir = Path(cache_dir) if cache_dir is not None else _default_cache()
        self.refresh, self.progress = refresh, progress
        self.table: dict | None = None
        self.path: Path | None = None
        self.measured = False

    def settings(self) -> dict[str, Any]:
        return runtime_settings(self)

    def cache_key(self, model: nn.Module) -> dict:
        space = SubnetSpace.from_model(model, self.granularity)
        h = hashlib.sha256()
        for p in list(model.parameters())[:3]:  # the model's identity: its first weights, not just its shapes
            h.update(p.detach().float().cpu().numpy().tobytes()[:1 << 16])
        return {"kind": "lut_llamacpp", "version": 1, **self.settings(), "family": get_family(model).name,
                "dims": space.dims.cache_key(), "neuron_choices": list(space.neuron_choices), "weights": h.hexdigest()[:16],
                "probe_layers": self.probe_layers, "neuron_stride": self.neuron_stride, "stat": self.stat,
                "reps": self.reps, "cpu": f"{platform.machine()} {platform.processor()} x{os.cpu_count()}",
                **({"query_heads": True} if space.searches_heads else {})}

    def setup(self, model: nn.Module) -> None:
        from nas_llm.model.atomic import atomic_write_json

        key = json.loads(json.dumps(self.cache_key(model), default=str))
        digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
        self.path = self.cache_dir / f"lut-llamacpp-{digest}.json"
        if not self.refresh and self.path.is_file():
            data = json.loads(self.path.read_text())
            if data.get("key") == key:
                self.table, self.measured = data["table"], False
                return
        self.table, self.measured = self.build(model), True
        atomic_write_json(self.path, {"key": key, "table": self.table})

    def build(self, model: nn.Module) -> dict:
        """Write the probe GGUFs into a temporary folder and time them (a few minutes for SmolLM2)."""
        from nas_llm.model.gguf import export_gguf
        from nas_llm.model.slicing import slice_model

        space = SubnetSpace.from_model(model, self.granularity)
        d = space.dims
        G, I, L = d.num_kv_heads, d.intermediate, d.num_layers
        k = L if self.probe_layers is None else min(self.probe_layers, L)
        rank = Ranking.identity(L, G, I)
        rest = list(range(k, L))
        shapes: dict[str, Subnet] = {"dense": space.uniform(drop=rest), "one": space.uniform(drop=range(1, L))}
        attn_keys = attn_shapes(space)
        shapes.update({f"a{key}": space.uniform(g, I, drop=rest, heads_per_group=q) for key, (g, q) in attn_keys.items()})
        points = sorted(set(space.neuron_choices[:: self.neuron_stride]) - {I})
        shapes.update({f"m{n}": space.uniform(G, n, drop=rest) for n in points})
        odd = list(range(1, L, 2))
        if odd:
            shapes["full_half"] = space.uniform(drop=odd)
        with tempfile.TemporaryDirectory(prefix="nas-llm-lut-") as tmp:
            paths = {"full": self._gguf(model, Path(tmp) / "full.gguf", export_gguf)}
            for name, sub in shapes.items():
                paths[name] = self._gguf(slice_model(model, rank.resolve(sub)), Path(tmp) / f"{name}.gguf", export_gguf)
            res = measure_ggufs(paths, self.mode, threads=self.threads, n_tokens=self.n_tokens, n_context=self.n_context,
                                n_decode=self.n_decode, rounds=self.rounds, reps=self.reps, stat=self.stat,
                                outtype=self.type, progress=self.progress, flash_attn=self.flash_attn)
        t = {name: r.median_s for name, r in res.items()}
        return self._table(t, k, L, G, I, points, odd, list(attn_keys)) | {"spread": {n: r.spread for n, r in res.items()}}

    def _gguf(self, model: nn.Module, path: Path, export: Callable) -> Path:
        return export(model, path, self.tokenizer, outtype=self.type, check=False)

    @staticmethod
    def _table(t: dict[str, float], k: int, L: int, G: int, I: int, points: list[int], odd: list[int],
               attn_keys: list[str] | None = None) -> dict:
        """Per-layer deltas from the probe times, scaled so the probe's layer time matches the real model's."""
        check_times(t, "llama.cpp lookup table")
        d_probe = (t["dense"] - t["one"]) / (k - 1)
        d = (t["full"] - t["full_half"]) / len(odd) if odd else d_probe
        scale = d / d_probe if d_probe > 0 and d > 0 else 1.0
        if not 0.5 <= scale <= 2.0:
            warnings.warn(f"llama.cpp lookup table: layer time of the real model {d * 1e3:.3g} ms vs probe "
                          f"{d_probe * 1e3:.3g} ms; timings too noisy to calibrate, using the probe's", RuntimeWarning)
            d, scale = d_probe, 1.0
        return {"layer_dense_s": d, "layer_probe_s": d_probe, "probe_scale": scale, "full_dense_s": t["full"],
                "const_s": t["full"] - L * d, "num_layers": L,
                "attn_delta_s": {str(G): 0.0, **{a: scale * (t[f"a{a}"] - t["dense"]) / k
                                                  for a in (attn_keys or [str(g) for g in range(1, G)])}},
                "mlp_delta_s": {str(I): 0.0, **{str(n): scale * (t[f"m{n}"] - t["dense"]) / k for n in points}},
                "times_s": t}


def _default_cache() -> Path:
    from nas_llm.model.loading import cache_dir

    return cache_dir() / "latency"


@OBJECTIVES.register("latency_llamacpp_lut", kind="latency", unit="ms", measured=False)
class LatencyLlamaCppLUT(PredictedLatency):
    """llama.cpp latency in ms from :class:`LlamaCppLUT` (keyword arguments go to it); no GGUF per subnet."""

    name = "latency_llamacpp_lut"

    def __init__(self, **kwargs: Any):
        super().__init__(LlamaCppLUT(**kwargs))

    def settings(self) -> dict[str, Any]:
        return self.predictor.settings()

    def setup(self, ctx: Context) -> None:
        if self.predictor.tokenizer is None:
            self.predictor.tokenizer = ctx.tokenizer
        self.predictor.progress = self.predictor.progress and ctx.progress
        super().setup(ctx)


def validate_llamacpp(model: nn.Module, tokenizer: Any, predictor: LlamaCppLUT, subnets: list[Subnet],
                      ranking: Ranking | None = None, progress: bool = True) -> dict:
    """Write each subnet's GGUF, measure all (and the dense model) interleaved, and score the predictor."""
    from nas_llm.model.slicing import slice_model

    from .latency import mape, spearman

    d = get_family(model).dims(model.config)
    rank = ranking or Ranking.identity(d.num_layers, d.num_kv_heads, d.intermediate)
    timer = LatencyLlamaCpp(predictor.type, predictor.threads, predictor.mode, predictor.n_tokens, predictor.n_context,
                            predictor.n_decode, predictor.rounds, predictor.reps, predictor.stat, predictor.flash_attn)
    paths = {"dense": timer.gguf(model, tokenizer, "dense")}
    for i, s in enumerate(subnets):
        paths[f"s{i}"] = timer.gguf(slice_model(model, rank.resolve(s)), tokenizer, f"s{i}")
    res = measure_ggufs(paths, predictor.mode, threads=timer.threads, n_tokens=timer.n_tokens, n_context=timer.n_context,
                        n_decode=timer.n_decode, rounds=timer.rounds, reps=timer.reps, stat=timer.stat,
                        outtype=timer.type, progress=progress, flash_attn=timer.flash_attn)
    meas = [res[f"s{i}"].median_s for i in range(len(subnets))]
    pred = [predictor.predict(s) for s in subnets]
    # the machine's speed drifts between building the table and now (5-8 % on a shared VM): the table's
    # prediction for the dense model against the dense model measured with the subnets gives that drift, and
    # the MAPE with predictions scaled by it is the table's own error
    drift = res["dense"].median_s / predictor.predict(SubnetSpace.from_model(model).dense())
    return {"settings": predictor.settings(), "measured_s": meas, "pred_s": pred, "dense_s": res["dense"].median_s,
            "spread": [res[f"s{i}"].spread for i in range(len(subnets))], "drift": drift,
            "spearman": spearman(pred, meas), "mape": mape(pred, meas), "mape_anchored": mape([drift * p for p in pred], meas)}


__all__ = ["LatencyLlamaCppLUT", "LlamaCppLUT", "validate_llamacpp"]
