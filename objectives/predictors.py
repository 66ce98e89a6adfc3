"""Latency predictors: ``predict(subnet) -> seconds`` without running the subnet.

Searches score thousands of candidates; measuring each costs seconds, a prediction microseconds.
Three kinds share one interface (:class:`LatencyPredictor`):

* ``lut`` -- :class:`LookupTablePredictor`: per-layer attention and MLP times at every KV-group
  count and neuron count, measured once on the device (one small probe model per shape, not the
  whole model), cached on disk keyed by device, dtype, shapes and versions; a prediction is the
  sum over kept layers plus a measured constant for embeddings and the LM head.
* ``roofline`` -- :class:`RooflinePredictor`: FLOPs and bytes of every operator against the
  device's *measured* peak matmul throughput and copy bandwidth, plus a measured per-op overhead.
* a user class or a plain function ``fn(subnet) -> seconds`` by import path ``"pkg.mod:Name"``.

A user predictor is a few lines::

    class MyPredictor(LatencyPredictor):
        name = "mine"
        def predict(self, subnet):
            return 1e-3 * sum(c.neurons for c in subnet.layers if c.keep) / 1536
"""
from __future__ import annotations

import copy
import hashlib
import json
import os
import tempfile
import warnings
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.nn as nn

from search_spaces import Ranking, Subnet, SubnetSpace, get_family

from .base import OBJECTIVES, Context, Objective, finite_float
from .latency import _check, _device_name, measure_interleaved, resolve_device, resolve_dtype
from search_spaces.registry import Registry

PREDICTORS: Registry = Registry("latency predictor")


class LatencyPredictor:
    """Subclass and implement :meth:`predict`; :meth:`setup` binds to a model (optional)."""

    name: str = "predictor"

    def setup(self, model: nn.Module) -> None:
        """Called once with the dense model before the first prediction (measure tables...)."""

    def predict(self, subnet: Subnet) -> float:  # pragma: no cover - interface
        """Predicted latency of ``subnet`` in seconds (per call for prefill, per token for decode)."""
        raise NotImplementedError

    def __call__(self, subnet: Subnet) -> float:
        return self.predict(subnet)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r})"


class FunctionPredictor(LatencyPredictor):
    """Wraps ``fn(subnet) -> seconds`` so plain functions are predictors too."""

    def __init__(self, fn: Callable[[Subnet], float], name: str | None = None):
        self.fn, self.name = fn, name or getattr(fn, "__name__", "function")

    def predict(self, subnet: Subnet) -> float:
        return self.fn(subnet)


def get_predictor(spec: "str | LatencyPredictor | Callable", **kwargs: Any) -> LatencyPredictor:
    """A predictor from a registered name (``lut``, ``roofline``), an import path, a class, an instance or a function."""
    if isinstance(spec, LatencyPredictor):
        return spec
    obj = PREDICTORS.resolve(spec) if isinstance(spec, str) else spec
    if isinstance(obj, type) and issubclass(obj, LatencyPredictor):
        return obj(**kwargs)
    if isinstance(obj, LatencyPredictor):
        return obj
    if callable(obj):
        return FunctionPredictor(obj, name=spec.rsplit(":", 1)[-1] if isinstance(spec, str) else None)
    raise TypeError(f"{spec!r} is not a LatencyPredictor, a LatencyPredictor class or a function")


def checked_predict(pred: "LatencyPredictor | Callable", subnet: Subnet) -> float:
    """Predict and validate: NaN, infinite, negative or non-number times are errors naming the predictor."""
    name = getattr(pred, "name", getattr(pred, "__name__", repr(pred)))
    v = pred.predict(subnet) if isinstance(pred, LatencyPredictor) else pred(subnet)
    v = finite_float(v, f"latency predictor {name!r}", "predict() must return seconds as a float", subnet)
    if v < 0:
        raise ValueError(f"latency predictor {name!r} returned a negative time {v} s for subnet {subnet.summary()}")
    return v


# -- shared helpers ------------------------------------------------------------------------------
def _cache_root(cache_dir: str | os.PathLike | None) -> Path:
    if cache_dir is not None:
        return Path(cache_dir)
    from nas_llm.model.loading import cache_dir as default

    return default() / "latency"


def _atomic_json(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(data, f, indent=1)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _key_hash(key: dict) -> str:
    return hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:16]


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

    fam = get_family(model)
    cfg = copy.deepcopy(model.config)
    for name in fam.per_layer_config_lists:
        lst = getattr(cfg, name, None)
        if isinstance(lst, (list, tuple)) and len(lst) >= n_layers:
            setattr(cfg, name, list(lst[:n_layers]))
    cfg.num_hidden_layers = n_layers
    impl = getattr(model.config, "_attn_implementation", None)
    with torch.device(dev):
        probe = AutoModelForCausalLM.from_config(cfg, dtype=dt, **({"attn_implementation": impl} if impl else {}))
    return probe.eval()


# -- lookup table ------------------------------------------------------------------------------
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
            raise ValueError(f"probe_layers must be >= 2 (layer time is the difference of 2 probes), got {probe_layers}")
        if neuron_stride < 1:
            raise ValueError(f"neuron_stride must be >= 1, got {neuron_stride}")
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
            "family": fam.name, "dims": space.dims.__dict__, "neuron_choices": list(space.neuron_choices),
            "attn_implementation": getattr(model.config, "_attn_implementation", None),
            "probe_layers": self.probe_layers, "neuron_stride": self.neuron_stride,
            "torch": torch.__version__, "threads": torch.get_num_threads() if dev.type == "cpu" else None,
            **({} if self.stat == "median" else {"stat": self.stat}),  # median tables keep their old key
        }

    def setup(self, model: nn.Module) -> None:
        key = self.cache_key(model)
        self.path = _cache_root(self.cache_dir) / f"lut-{_key_hash(key)}.json"
        if not self.refresh and self.path.is_file():
            data = json.loads(self.path.read_text())
            if data.get("key") == json.loads(json.dumps(key, default=str)):
                self.table, self.measured = data["table"], False
                return
        self.table = self.build(model)
        self.measured = True
        _atomic_json(self.path, {"key": key, "table": self.table})

    def build(self, model: nn.Module) -> dict:
        """Measure the table (seconds). Takes ~(KV groups + neuron points) x rounds timings."""
        target, dev, dt = _target(model, self.device, self.dtype)
        fam = get_family(target)
        dims = fam.dims(target.config)
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

        def sliced(g: int, n: int) -> Callable[[], nn.Module]:
            if g == G and n == I:
                return lambda: probe
            from nas_llm.model.slicing import slice_model

            return lambda: slice_model(probe, rank.resolve(pspace.uniform(g, n)))

        builders: dict[str, Callable[[], nn.Module]] = {"dense": sliced(G, I), "one": lambda: probe1}
        for g in range(1, G):
            builders[f"a{g}"] = sliced(g, I)
        for n in points[:-1]:
            builders[f"m{n}"] = sliced(G, n)
        kw = dict(mode=self.mode, batch=self.batch, seq_len=self.seq_len, rounds=self.rounds,
                  min_run_time=self.min_run_time, compiled=self.compiled, progress=self.progress, stat=self.stat)
        body = {name: True for name in builders}
        builders["full"], body["full"] = (lambda: target), False
        odd = list(range(1, L, 2))
        if odd:
            from nas_llm.model.slicing import slice_model
            from search_spaces import Ranking as _R

            half = space.uniform(drop=odd)
            builders["full_half"] = lambda: slice_model(target, _R.identity(L, G, I).resolve(half))
            body["full_half"] = False
        res = measure_interleaved(builders, body_only=body, **kw)
        t = {name: r.median_s for name, r in res.items()}
        d_probe = (t["dense"] - t["one"]) / (k - 1)
        d = (t["full"] - t["full_half"]) / len(odd) if odd else d_probe
        scale = d / d_probe if d_probe > 0 and d > 0 else 1.0
        if not (0.5 <= scale <= 2.0):  # the probe and the real model disagree wildly: trust neither scaling
            warnings.warn(f"lookup table: layer time of the real model {d * 1e3:.3g} ms vs probe {d_probe * 1e3:.3g} ms; "
                          "timings are too noisy for a calibrated table, using the probe's", RuntimeWarning)
            d, scale = d_probe, 1.0
        attn = {str(G): 0.0, **{str(g): scale * (t[f"a{g}"] - t["dense"]) / k for g in range(1, G)}}
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
            raise ValueError(f"subnet has {subnet.num_layers} layers, the lookup table's model {t['num_layers']}")
        total = t["const_s"]
        for i, c in enumerate(subnet.layers):
            if not c.keep:
                continue
            if str(c.kv_groups) not in t["attn_delta_s"]:
                raise ValueError(f"layer {i}: kv_groups={c.kv_groups} is not in the lookup table "
                                 f"(measured {', '.join(t['attn_delta_s'])})")
            total += t["layer_dense_s"] + t["attn_delta_s"][str(c.kv_groups)] + self._mlp(c.neurons)
        return max(total, 0.0)


# -- roofline -------------------------------------------------------------------------------------
def measure_peaks(device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32,
                  matmul_n: int | None = None, copy_mb: int | None = None, min_run_time: float = 0.3) -> dict:
    """Measured peak matmul FLOP/s, copy bandwidth (bytes read + written per s) and one tiny op's time."""
    from .latency import time_runner

    dev = resolve_device(device)
    gpu = dev.type == "cuda"
    n = matmul_n or (8192 if gpu else 1024)
    nbytes = (copy_mb or (2048 if gpu else 256)) * 2**20
    dt = dtype
    a = torch.randn(n, n, device=dev).to(dt)
    b = torch.randn(n, n, device=dev).to(dt)
    mm = time_runner(lambda: torch.mm(a, b), min_run_time).median
    del a, b
    el = torch.empty(0, dtype=dt).element_size()
    src = torch.ones(nbytes // el, device=dev, dtype=dt)
    dst = torch.empty_like(src)
    cp = time_runner(lambda: dst.copy_(src), min_run_time).median
    del src, dst
    tiny = torch.ones(8, device=dev, dtype=dt)
    op = time_runner(lambda: tiny.add_(0), min_run_time).median
    return {"flops_per_s": 2 * n**3 / mm, "bytes_per_s": 2 * nbytes / cp, "op_overhead_s": op,
            "matmul_n": n, "copy_bytes": nbytes, "device": _device_name(dev), "dtype": str(dt)}


def operator_costs(dims: Any, kv_groups: int, neurons: int, mode: str, batch: int, seq_len: int,
                   bytes_per_el: float) -> list[tuple[str, float, float]]:
    """``(op, flops, bytes)`` of one LLaMA-style decoder layer; closed forms, checked in tests."""
    h, hd = dims.hidden, dims.head_dim
    heads = kv_groups * dims.q_per_group
    qo, kvo = heads * hd, kv_groups * hd
    T = batch * seq_len if mode == "prefill" else batch  # tokens processed
    ops: list[tuple[str, float, float]] = []
    for name, fin, fout in (("q", h, qo), ("k", h, kvo), ("v", h, kvo), ("o", qo, h),
                            ("gate", h, neurons), ("up", h, neurons), ("down", neurons, h)):
        ops.append((name, 2.0 * T * fin * fout, bytes_per_el * (fin * fout + T * (fin + fout))))
    if mode == "prefill":  # causal: on average half of the sequence is attended
        ctx_len = seq_len / 2
        att_bytes = bytes_per_el * batch * seq_len * (2 * qo + 2 * kvo)
    else:
        ctx_len = seq_len + 1
        att_bytes = bytes_per_el * batch * (2 * qo + 2 * (seq_len + 1) * kvo)
    ops.append(("attention", 2.0 * 2.0 * T * ctx_len * qo, att_bytes))
    ops.append(("norms", 0.0, bytes_per_el * 2 * 2 * T * h))
    ops.append(("residual", 0.0, bytes_per_el * 2 * 3 * T * h))
    ops.append(("rope", 0.0, bytes_per_el * 2 * T * (qo + kvo)))
    ops.append(("act", 0.0, bytes_per_el * 3 * T * neurons))
    return ops


@PREDICTORS.register("roofline")
class RooflinePredictor(LatencyPredictor):
    """Sum over operators of ``max(flops / peak_flops, bytes / peak_bw)`` plus a per-op overhead.

    Peaks are measured on the device (a big matmul and a big copy, in the model's dtype) and
    cached on disk; pass ``peaks={...}`` to use known numbers instead. The LM head computes the
    last position only (serving prefill), as :func:`objectives.latency.measure_latency` does.
    """

    name = "roofline"

    def __init__(self, mode: str = "prefill", batch: int = 1, seq_len: int = 128, device: str | None = None,
                 dtype: str | None = None, peaks: dict | None = None, overhead: bool = True,
                 cache_dir: str | os.PathLike | None = None):
        _check(mode, batch, seq_len)
        resolve_dtype(dtype)
        self.mode, self.batch, self.seq_len, self.device, self.dtype = mode, batch, seq_len, device, dtype
        self.peaks, self.overhead, self.cache_dir = peaks, overhead, cache_dir
        self.dims: Any = None
        self.bytes_per_el = 4.0

    def setup(self, model: nn.Module) -> None:
        p = next(model.parameters())
        dev = resolve_device(self.device, model)
        dt = resolve_dtype(self.dtype) or p.dtype
        self.dims = get_family(model).dims(model.config)
        self.bytes_per_el = float(torch.empty(0, dtype=dt).element_size())
        if self.peaks is None:
            key = {"kind": "peaks", "device": _device_name(dev), "dtype": str(dt), "torch": torch.__version__,
                   "threads": torch.get_num_threads() if dev.type == "cpu" else None}
            path = _cache_root(self.cache_dir) / f"peaks-{_key_hash(key)}.json"
            if path.is_file():
                self.peaks = json.loads(path.read_text())["peaks"]
            else:
                self.peaks = measure_peaks(dev, dt)
                _atomic_json(path, {"key": key, "peaks": self.peaks})

    def costs(self, subnet: Subnet) -> list[tuple[str, float, float]]:
        d = self.dims
        ops = []
        for c in subnet.layers:
            if c.keep:
                ops += operator_costs(d, c.kv_groups, c.neurons, self.mode, self.batch, self.seq_len, self.bytes_per_el)
        T = self.batch * (self.seq_len if self.mode == "prefill" else 1)
        ops.append(("embed", 0.0, self.bytes_per_el * 2 * T * d.hidden))
        ops.append(("final_norm", 0.0, self.bytes_per_el * 2 * T * d.hidden))
        ops.append(("lm_head", 2.0 * self.batch * d.hidden * d.vocab,
                    self.bytes_per_el * (d.hidden * d.vocab + self.batch * (d.hidden + d.vocab))))
        return ops

    def predict(self, subnet: Subnet) -> float:
        if self.dims is None or self.peaks is None:
            raise RuntimeError("RooflinePredictor: call setup(model) first (it measures the device's peaks)")
        if subnet.num_layers != self.dims.num_layers:
            raise ValueError(f"subnet has {subnet.num_layers} layers, the model {self.dims.num_layers}")
        P, W = self.peaks["flops_per_s"], self.peaks["bytes_per_s"]
        ops = self.costs(subnet)
        t = sum(max(f / P, b / W) for _, f, b in ops)
        return t + (self.peaks["op_overhead_s"] * len(ops) if self.overhead else 0.0)


# -- validation ---------------------------------------------------------------------------------
def sample_spread(space: SubnetSpace, rng: np.random.Generator) -> Subnet:
    """A random subnet whose size is spread over the space: a scale f ~ U(0.3, 1) sets the mean width.

    ``space.sample`` draws every layer independently, so its subnets all sit near the same
    param ratio (~0.5) and a rank correlation then mostly measures noise; these span ~0.2-1.
    """
    from search_spaces import LayerChoice

    d = space.dims
    f = rng.uniform(0.3, 1.0)
    layers = []
    for _ in range(d.num_layers):
        kv = int(np.clip(round(d.num_kv_heads * f * rng.uniform(0.7, 1.3)), 1, d.num_kv_heads))
        target = d.intermediate * f * rng.uniform(0.7, 1.3)
        n = min(space.neuron_choices, key=lambda c: abs(c - target))
        layers.append(LayerChoice(kv, n, bool(rng.random() >= 0.25 * (1 - f))))
    if not any(c.keep for c in layers):
        layers[0] = LayerChoice(layers[0].kv_groups, layers[0].neurons, True)
    return space.validate(Subnet(tuple(layers)))


def validate_predictors(model: nn.Module, predictors: dict[str, LatencyPredictor], subnets: list[Subnet],
                        ranking: Ranking | None = None, mode: str = "prefill", batch: int = 1, seq_len: int = 128,
                        rounds: int = 2, min_run_time: float = 0.2, progress: bool = True,
                        stat: str = "median") -> dict:
    """Measure ``subnets`` (sliced, interleaved rounds) and score each (set-up) predictor: Spearman, MAPE.

    ``stat`` is the per-round statistic of the measurement (see :func:`objectives.latency.measure_interleaved`);
    compare a table built with the same one.
    """
    from nas_llm.model.slicing import slice_model

    from .latency import mape, spearman

    d = get_family(model).dims(model.config)
    rank = ranking or Ranking.identity(d.num_layers, d.num_kv_heads, d.intermediate)
    builders = {f"s{i}": (lambda s=s: slice_model(model, rank.resolve(s))) for i, s in enumerate(subnets)}
    meas = measure_interleaved(builders, mode, batch, seq_len, rounds=rounds, min_run_time=min_run_time,
                               progress=progress, stat=stat)
    m = [meas[f"s{i}"].median_s for i in range(len(subnets))]
    out: dict = {"measured_s": m, "iqr_s": [meas[f"s{i}"].iqr_s for i in range(len(subnets))], "predictors": {}}
    for name, p in predictors.items():
        pr = [checked_predict(p, s) for s in subnets]
        out["predictors"][name] = {"pred_s": pr, "spearman": spearman(pr, m), "mape": mape(pr, m)}
    return out


# -- predictors as objectives --------------------------------------------------------------------
@OBJECTIVES.register("latency_predicted", kind="latency", unit="ms", measured=False)
class PredictedLatency(Objective):
    """Any latency predictor as an objective, in ms: ``PredictedLatency("pkg.mod:MyPredictor")``."""

    name, unit, direction = "latency_predicted", "ms", "minimize"

    def __init__(self, predictor: "str | LatencyPredictor | Callable" = "lut", **predictor_kwargs: Any):
        self.predictor = get_predictor(predictor, **predictor_kwargs)
        self._ready = False

    def setup(self, ctx: Context) -> None:
        if not self._ready:
            self.predictor.setup(ctx.model)
            self._ready = True

    def score(self, subnet: Subnet, ctx: Context) -> float:
        self.setup(ctx)
        return checked_predict(self.predictor, subnet) * 1e3


@OBJECTIVES.register("latency_lut", kind="latency", unit="ms", measured=False)
class LatencyLUT(PredictedLatency):
    """Lookup-table latency in ms; keyword arguments go to :class:`LookupTablePredictor`."""

    name = "latency_lut"

    def __init__(self, **kwargs: Any):
        super().__init__(LookupTablePredictor(**kwargs))


@OBJECTIVES.register("latency_roofline", kind="latency", unit="ms", measured=False)
class LatencyRoofline(PredictedLatency):
    """Roofline latency in ms; keyword arguments go to :class:`RooflinePredictor`."""

    name = "latency_roofline"

    def __init__(self, **kwargs: Any):
        super().__init__(RooflinePredictor(**kwargs))
