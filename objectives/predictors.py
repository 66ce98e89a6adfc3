"""Latency predictors: ``predict(subnet) -> seconds`` without running the subnet.

Searches score thousands of candidates; measuring each costs seconds, a prediction microseconds.
Three kinds share one interface (:class:`LatencyPredictor`):

* ``lut`` -- :class:`objectives.lut.LookupTablePredictor`: per-layer attention and MLP times at every KV-group
  count and neuron count, measured once on the device (one small probe model per shape, not the
  whole model), cached on disk keyed by device, dtype, shapes and versions; a prediction is the
  sum over kept layers plus a measured constant for embeddings and the LM head.
* ``roofline`` -- :class:`objectives.roofline.RooflinePredictor`: FLOPs and bytes of every operator against the
  device's *measured* peak matmul throughput and copy bandwidth, plus a measured per-op overhead.
* a user class or a plain function ``fn(subnet) -> seconds`` by import path ``"pkg.mod:Name"``.

This module holds the interface, the registry, the disk cache the built-in predictors share and the
objectives that wrap a predictor; how well predictions track measurements is ``objectives.validation``.
A user predictor is a few lines::

    class MyPredictor(LatencyPredictor):
        name = "mine"
        def predict(self, subnet):
            return 1e-3 * sum(c.neurons for c in subnet.layers if c.keep) / 1536
"""
from __future__ import annotations

import hashlib
import importlib
import json
import os
from pathlib import Path
from typing import Any, Callable

import torch.nn as nn

from nas_llm.errors import ObjectiveTypeError, ObjectiveValueError
from nas_llm.model.atomic import atomic_write_json
from nas_llm.model.loading import cache_dir as default_cache_dir
from search_spaces import Subnet
from search_spaces.registry import Registry

from .base import OBJECTIVES, Context, Objective, finite_float

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
    raise ObjectiveTypeError(f"{spec!r} is not a LatencyPredictor, a LatencyPredictor class or a function")


def checked_predict(pred: "LatencyPredictor | Callable", subnet: Subnet) -> float:
    """Predict and validate: NaN, infinite, negative or non-number times are errors naming the predictor."""
    name = getattr(pred, "name", getattr(pred, "__name__", repr(pred)))
    v = pred.predict(subnet) if isinstance(pred, LatencyPredictor) else pred(subnet)
    v = finite_float(v, f"latency predictor {name!r}", "predict() must return seconds as a float", subnet)
    if v < 0:
        raise ObjectiveValueError(f"latency predictor {name!r} returned a negative time {v} s for subnet {subnet.summary()}")
    return v


# -- the disk cache the built-in predictors share -----------------------------------------------------
def cached_measurement(kind: str, key: dict, measure: Callable[[], dict], cache_dir: str | os.PathLike | None = None,
                       refresh: bool = False) -> tuple[dict, bool, Path]:
    """``(value, measured, path)``: a device measurement read from ``<cache>/<kind>-<hash of key>.json``,
    or ``measure()``'d and written there (atomically) when missing, stale (another key) or ``refresh``."""
    root = Path(cache_dir) if cache_dir is not None else default_cache_dir() / "latency"
    path = root / f"{kind}-{hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:16]}.json"
    if not refresh and path.is_file():
        data = json.loads(path.read_text())
        if data.get("key") == json.loads(json.dumps(key, default=str)) and "value" in data:
            return data["value"], False, path
    value = measure()
    atomic_write_json(path, {"key": key, "value": value})
    return value, True, path


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
        super().__init__("lut", **kwargs)


@OBJECTIVES.register("latency_roofline", kind="latency", unit="ms", measured=False)
class LatencyRoofline(PredictedLatency):
    """Roofline latency in ms; keyword arguments go to :class:`RooflinePredictor`."""

    name = "latency_roofline"

    def __init__(self, **kwargs: Any):
        super().__init__("roofline", **kwargs)


# names that moved to one module per concept; ``objectives.predictors.X`` keeps working
_MOVED = {"LookupTablePredictor": "objectives.lut", "RooflinePredictor": "objectives.roofline",
          "measure_peaks": "objectives.roofline", "operator_costs": "objectives.roofline",
          "sample_spread": "objectives.validation", "validate_predictors": "objectives.validation"}


def __getattr__(name: str) -> Any:
    if name in _MOVED:
        return getattr(importlib.import_module(_MOVED[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
