"""The lookup-table latency predictor (``lut``): per-layer times measured once per device, summed per subnet.

Probe models (a few random layers of the real shapes) are sliced to every KV-group and neuron count
and timed; the real model, dense and with every second layer dropped, calibrates the probe. The table
is cached on disk keyed by device, dtype, shapes and versions (:func:`objectives.predictors.cached_measurement`).
"""
from __future__ import annotations

import copy
import os
import warnings
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.nn as nn

from nas_llm.errors import ConfigError
from nas_llm.model.slicing import slice_model
from search_spaces import Ranking, Subnet, SubnetSpace, get_family

from .latency import _check, _device_name, measure_interleaved, resolve_device, resolve_dtype
from .predictors import PREDICTORS, LatencyPredictor, cached_measurement


def _target(model: nn.Module, device: Any, dtype: Any) -> tuple[nn.Module, torch.device, torch.dtype]:
    """The model on the requested device/dtype (a copy if it has to move)."""
    p = next(model.parameters())
    dev = resolve_device(device, model)
    dt = resolve_dtype(dtype) or p.dtype
    if p.device != dev or p.dtype != dt:
        model = copy.deepcopy(model).to(device=dev, dtype=dt)
    return model, dev, dt


def _probe_model(model: nn.Module, n_layers: int, dev: torch.device, dt: torch.dtype) -> nn.Module:
    """A random-weight model of the same family and shapes with ``n_layers`` layers (timing only)."""
    from transformers import AutoModelForCausalLM

    cfg = get_family(model).config_with_layers(model.config, n_layers)
    impl = getattr(model.config, "_attn_implementation", None)
    with torch.device(dev):
        probe = AutoModelForCausalLM.from_config(cfg, dtype=dt, **({"attn_implementation": impl} if impl else {}))
    return probe.eval()


NOISE_LIMIT = 1.5  # a cut probe slower than this times the dense probe is noise, not a shape effect


def check_times(t: dict[str, float], what: str) -> None:
    """Refuse a table whose probe timings contradict each other (a busy machine while it was measured):
    the dense probe must be slower than the one-layer probe, the real model slower than its half, and no cut
    probe may take ``NOISE_LIMIT`` times the dense one. A silently wrong table would steer a whole search."""
    bad = []
    if not t["dense"] > t["one"]:
        bad.append(f"the dense probe ({t['dense'] * 1e3:.3g} ms) is not slower than the one-layer probe ({t['one'] * 1e3:.3g} ms)")
    if "full_half" in t and not t["full"] > t["full_half"]:
        bad.append(f"the model ({t['full'] * 1e3:.3g} ms) is not slower than its half ({t['full_half'] * 1e3:.3g} ms)")
    slow = {n: v / t["dense"] for n, v in t.items() if n[:1] in "am" and n[1:2].isdigit() and v > NOISE_LIMIT * t["dense"]}
    if slow:  # noisy, but the table may still rank: say so
        worst = max(slow, key=slow.get)
        warnings.warn(f"{what}: {len(slow)} cut probes took more than {NOISE_LIMIT}x the dense probe (worst: {worst}, "
                      f"{slow[worst]:.1f}x); the machine was probably busy, check the table with `nas-llm latency validate`",
                      RuntimeWarning)
    if bad:
        raise RuntimeError(f"{what}: the timings contradict each other ({'; '.join(bad)}); the machine was probably busy "
                           "while they were measured. Build the table again on a quiet machine (refresh=True), with "
                           "more rounds if it persists; nothing was cached.")


def attn_shapes(space: SubnetSpace) -> dict[str, tuple[int, int | None]]:
    """The attention shapes a table measures, by key: ``"g"`` for ``g`` whole KV groups, ``"gxq"`` for ``g``
    groups keeping ``q`` query heads each (GQA/MQA spaces that search query heads). The dense shape is left out."""
    d = space.dims
    out: dict[str, tuple[int, int | None]] = {}
    for g in range(1, d.num_kv_heads + 1):
        for q in space.head_choices:
            if (g, q) != (d.num_kv_heads, d.q_per_group):
                out[attn_key(g, None if q == d.q_per_group else q)] = (g, None if q == d.q_per_group else q)
    return out


def attn_key(kv_groups: int, heads_per_group: int | None) -> str:
    """The table key of a layer's attention shape (see :func:`attn_shapes`)."""
    return str(kv_groups) if heads_per_group is None else f"{kv_groups}x{heads_per_group}"


@PREDICTORS.register("lut")
class LookupTablePredictor(LatencyPredictor):
    """Sum of measured per-layer times: ``C0 + sum_kept (d + a[kv_groups] + m[neurons])``.

    A probe model of ``probe_layers`` identical random layers (and one of a single layer) is
    sliced uniformly to every KV-group count (full MLP) and every neuron count (full attention)
    and timed without the LM head, in interleaved rounds. ``a``/``m`` are the changes from cutting
    attention/MLP. The real model, dense and with every second layer dropped, is timed in the same
    rounds: their difference gives the layer time ``d`` of the real model, ``C0`` (embeddings, final
    norm, head) is the dense model minus ``num_layers * d``, and the probe's deltas are scaled by
    ``d / d_probe``. (Taking ``d`` from the probe and ``C0`` from a separate measurement made ``C0``
    negative on a drifting CPU and the predictions for small subnets 15-30 % low.)
    ``neuron_stride`` > 1 measures every k-th neuron count and interpolates the rest linearly.
    """

    name = "lut"

    def __init__(self, mode: str = "prefill", batch: int = 1, seq_len: int = 128, device: str | None = None,
                 dtype: str | None = None, compiled: bool = False, granularity: int = 64, probe_layers: int = 4,
                 neuron_stride: int = 1, rounds: int = 3, min_run_time: float = 0.1,
                 cache_dir: str | os.PathLike | None = None, refresh: bool = False, progress: bool = True,
                 stat: str = "median"):
        _check(mode, batch, seq_len, stat)
        if probe_layers < 2:
            raise ConfigError(f"probe_layers must be >= 2 (layer time is the difference of 2 probes), got {probe_layers}")
        if neuron_stride < 1:
            raise ConfigError(f"neuron_stride must be >= 1, got {neuron_stride}")
        resolve_dtype(dtype)
        self.mode, self.batch, self.seq_len, self.device, self.dtype = mode, batch, seq_len, device, dtype
        self.compiled, self.granularity, self.probe_layers = compiled, granularity, probe_layers
        self.neuron_stride, self.rounds, self.min_run_time = neuron_stride, rounds, min_run_time
        self.cache_dir, self.refresh, self.progress, self.stat = cache_dir, refresh, progress, stat
        self.table: dict | None = None
        self.path: Path | None = None
        self.measured = False  # True when setup() measured instead of loading the cache

    # key and table -------------------------------------------------------------------------
    def cache_key(self, model: nn.Module) -> dict:
        fam = get_family(model)
        p = next(model.parameters())
        dev = resolve_device(self.device, model)
        dt = resolve_dtype(self.dtype) or p.dtype
        space = SubnetSpace.from_model(model, self.granularity)
        return {
            "kind": "lut", "version": 2, "device": _device_name(dev), "dtype": str(dt).replace("torch.", ""),
            "mode": self.mode, "batch": self.batch, "seq_len": self.seq_len, "compiled": self.compiled,
            "family": fam.name, "dims": space.dims.cache_key(), "neuron_choices": list(space.neuron_choices),
            "attn_implementation": getattr(model.config, "_attn_implementation", None),
            "probe_layers": self.probe_layers, "neuron_stride": self.neuron_stride,
            "torch": torch.__version__, "threads": torch.get_num_threads() if dev.type == "cpu" else None,
            **({} if self.stat == "median" else {"stat": self.stat}),  # median tables keep their old key
            **({"query_heads": True} if space.searches_heads else {}),  # tables without head cuts keep theirs
        }

    def setup(self, model: nn.Module) -> None:
        self.table, self.measured, self.path = cached_measurement(
            "lut", self.cache_key(model), lambda: self.build(model), self.cache_dir, self.refresh)

    def build(self, model: nn.Module) -> dict:
        """Measure the table (seconds). Takes ~(KV groups + neuron points) x rounds timings."""
        target, dev, dt = _target(model, self.device, self.dtype)
        fam = get_family(target)
        dims = fam.dims(target)
        space = SubnetSpace.from_model(target, self.granularity)
        G, I, L = dims.num_kv_heads, dims.intermediate, dims.num_layers
        k = min(self.probe_layers, max(2, L))
        points = list(space.neuron_choices[:: self.neuron_stride])
        if points[-1] != I:
            points.append(I)
        probe = _probe_model(target, k, dev, dt)
        probe1 = _probe_model(target, 1, dev, dt)
        rank = Ranking.identity(k, G, I)
        pspace = SubnetSpace.from_model(probe, self.granularity)

        def sliced(g: int, n: int, q: int | None = None) -> Callable[[], nn.Module]:
            if g == G and n == I and q is None:
                return lambda: probe
            return lambda: slice_model(probe, rank.resolve(pspace.uniform(g, n, heads_per_group=q)))

        builders: dict[str, Callable[[], nn.Module]] = {"dense": sliced(G, I), "one": lambda: probe1}
        attn_keys = attn_shapes(pspace)
        for key, (g, q) in attn_keys.items():
            builders[f"a{key}"] = sliced(g, I, q)
        for n in points[:-1]:
            builders[f"m{n}"] = sliced(G, n)
        kw = dict(mode=self.mode, batch=self.batch, seq_len=self.seq_len, rounds=self.rounds,
                  min_run_time=self.min_run_time, compiled=self.compiled, progress=self.progress, stat=self.stat)
        body = {name: True for name in builders}
        builders["full"], body["full"] = (lambda: target), False
        odd = list(range(1, L, 2))
        if odd:
            half = space.uniform(drop=odd)
            builders["full_half"] = lambda: slice_model(target, Ranking.identity(L, G, I).resolve(half))
            body["full_half"] = False
        res = measure_interleaved(builders, body_only=body, **kw)
        t = {name: r.median_s for name, r in res.items()}
        check_times(t, "lookup table")
        d_probe = (t["dense"] - t["one"]) / (k - 1)
        d = (t["full"] - t["full_half"]) / len(odd) if odd else d_probe
        scale = d / d_probe if d_probe > 0 and d > 0 else 1.0
        if not (0.5 <= scale <= 2.0):  # the probe and the real model disagree wildly: trust neither scaling
            warnings.warn(f"lookup table: layer time of the real model {d * 1e3:.3g} ms vs probe {d_probe * 1e3:.3g} ms; "
                          "timings are too noisy for a calibrated table, using the probe's", RuntimeWarning)
            d, scale = d_probe, 1.0
        attn = {str(G): 0.0, **{key: scale * (t[f"a{key}"] - t["dense"]) / k for key in attn_keys}}
        mlp = {str(I): 0.0, **{str(n): scale * (t[f"m{n}"] - t["dense"]) / k for n in points[:-1]}}
        del probe, probe1
        return {
            "layer_dense_s": d, "layer_probe_s": d_probe, "probe_scale": scale, "embed_norm_s": t["one"] - d_probe,
            "full_dense_s": t["full"], "const_s": t["full"] - L * d, "num_layers": L, "attn_delta_s": attn, "mlp_delta_s": mlp,
            "iqr_s": {name: r.iqr_s for name, r in res.items()},
            "round_medians_s": {name: r.round_medians_s for name, r in res.items()},
        }

    def _mlp(self, n: int) -> float:
        tab = self.table["mlp_delta_s"]  # type: ignore[index]
        if str(n) in tab:
            return tab[str(n)]
        xs = sorted(int(x) for x in tab)
        return float(np.interp(n, xs, [tab[str(x)] for x in xs]))

    def predict(self, subnet: Subnet) -> float:
        if self.table is None:
            raise RuntimeError("LookupTablePredictor: call setup(model) first (it measures or loads the table)")
        t = self.table
        if subnet.num_layers != t["num_layers"]:
            raise ConfigError(f"subnet has {subnet.num_layers} layers, the lookup table's model {t['num_layers']}")
        total = t["const_s"]
        for i, c in enumerate(subnet.layers):
            if not c.keep:
                continue
            key = attn_key(c.kv_groups, c.heads_per_group)
            if key not in t["attn_delta_s"]:
                raise ConfigError(f"layer {i}: attention shape {key} (KV groups{' x query heads per group' if 'x' in key else ''}) "
                                  f"is not in the lookup table (measured {', '.join(t['attn_delta_s'])}); a table built "
                                  "before query heads were searched: build it again (refresh=True)")
            total += t["layer_dense_s"] + t["attn_delta_s"][key] + self._mlp(c.neurons)
        return max(total, 0.0)
