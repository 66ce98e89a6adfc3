"""The roofline latency predictor (``roofline``): operator FLOPs and bytes against the device's measured peaks.

Each operator of a decoder layer (closed forms in :func:`operator_costs`) takes
``max(flops / peak_flops, bytes / peak_bandwidth)`` plus a measured per-op overhead. The peaks
(:func:`measure_peaks`) are measured once per device and dtype and cached on disk.
"""
from __future__ import annotations

import os
from typing import Any

import torch
import torch.nn as nn

from nas_llm.errors import ConfigError
from search_spaces import Subnet, get_family

from .latency import _check, _device_name, resolve_device, resolve_dtype, time_runner
from .predictors import PREDICTORS, LatencyPredictor, cached_measurement


def measure_peaks(device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32,
                  matmul_n: int | None = None, copy_mb: int | None = None, min_run_time: float = 0.3) -> dict:
    """Measured peak matmul FLOP/s, copy bandwidth (bytes read + written per s) and one tiny op's time."""
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
                   bytes_per_el: float, heads_per_group: int | None = None) -> list[tuple[str, float, float]]:
    """``(op, flops, bytes)`` of one LLaMA-style decoder layer; closed forms, checked in tests."""
    h, hd = dims.hidden, dims.head_dim
    heads = kv_groups * (dims.q_per_group if heads_per_group is None else heads_per_group)
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
        self.dims = get_family(model).dims(model)
        self.bytes_per_el = float(torch.empty(0, dtype=dt).element_size())
        if self.peaks is None:
            key = {"kind": "peaks", "device": _device_name(dev), "dtype": str(dt), "torch": torch.__version__,
                   "threads": torch.get_num_threads() if dev.type == "cpu" else None}
            self.peaks, _, _ = cached_measurement("peaks", key, lambda: measure_peaks(dev, dt), self.cache_dir)

    def costs(self, subnet: Subnet) -> list[tuple[str, float, float]]:
        d = self.dims
        ops = []
        for c in subnet.layers:
            if c.keep:
                ops += operator_costs(d, c.kv_groups, c.neurons, self.mode, self.batch, self.seq_len, self.bytes_per_el,
                                      c.heads_per_group)
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
            raise ConfigError(f"subnet has {subnet.num_layers} layers, the model {self.dims.num_layers}")
        P, W = self.peaks["flops_per_s"], self.peaks["bytes_per_s"]
        ops = self.costs(subnet)
        t = sum(max(f / P, b / W) for _, f, b in ops)
        return t + (self.peaks["op_overhead_s"] * len(ops) if self.overhead else 0.0)
