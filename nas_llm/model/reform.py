"""Weight reformation: after cutting input channels of ``o_proj``/``down_proj``, fit the kept weights again.

For each kept layer and each map whose *input* channels were cut (``o_proj`` after head removal,
``down_proj`` after neuron removal) we solve

    min_W' ||W' X - W X||_F^2   s.t.  W'[:, cut] = 0,

with X the map's dense input (all channels) on calibration data. Only ``H = X X^T`` is needed.
Two solvers (in :mod:`nas_llm.model.solvers`, re-exported here) share one interface ``(W, H, kept) -> W'``
and work in float64:

- :func:`admm` -- the paper's Theorem 3.1 iteration (rho, a fixed number of iterations);
- :func:`closed_form` -- the exact least-squares answer, reference and fast path.

:func:`reform` applies them *sequentially* (SparseGPT-style): the calibration batch is fed layer by
layer through the already-reformed pruned model, so every layer also corrects the errors of the
layers before it. ``method="bias"`` is FLAP's cheap bias compensation, ``method="none"`` plain slicing.

Damping: ``H`` is first scaled by its mean diagonal (so settings are scale-free: activations of
different layers differ by orders of magnitude) and ``damp`` (default 0.01, SparseGPT's choice) is
added to the diagonal of the scaled ``H``. The damped problem is the least-squares problem plus
``damp * mean(diag H) * ||W'_K - W_K||^2``, i.e. it pulls towards the *original* kept weights; the
masked original ``W`` is feasible with zero penalty, so the reformed error is never above the
unreformed one, also when ``H`` is rank-deficient (fewer tokens than channels, duplicated channels).

Calibration defaults: CPU 64 x 256 tokens (:data:`CPU_CALIBRATION`), GPU 128 x 2048 as the paper
(:data:`GPU_CALIBRATION`).
"""
from __future__ import annotations

import copy
import warnings
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
from tqdm.auto import tqdm

from nas_llm.errors import ConfigError
from search_spaces import Plan, get_family
from search_spaces.plan import check_plan

from .slicing import INPUT_CUT_ROLES, layer_cuts, mark_nonstock, slice_model
from .solvers import (DEFAULT_DAMP, DEFAULT_ITERS, DEFAULT_RHO, admm, bias_shift, closed_form,  # noqa: F401 (re-exported)
                      reconstruction_error, solve)

METHODS = ("admm", "exact", "bias", "flexi", "none")
CPU_CALIBRATION = (64, 256)  # (n_samples, seq_len): ~16k tokens, ~1-3 min per SmolLM2-135M subnet on 2 cores
GPU_CALIBRATION = (128, 2048)  # the paper's setting


class _Stop(Exception):
    """Raised from a hook to end a forward once the activations we need are recorded."""


def default_calibration(device: str | torch.device = "cpu") -> tuple[int, int]:
    """(n_samples, seq_len) for reformation on this device."""
    return GPU_CALIBRATION if torch.device(device).type == "cuda" else CPU_CALIBRATION


# -- sequential collection ------------------------------------------------------------------


class _InputStats:
    """Running X X^T (float64) and per-channel sums of one Linear's input."""

    def __init__(self) -> None:
        self.H: torch.Tensor | None = None
        self.s: torch.Tensor | None = None
        self.n = 0

    def add(self, x: torch.Tensor, gram: bool) -> None:
        x = x.detach().reshape(-1, x.shape[-1]).float()
        if gram:  # float32 product per batch (fast on CPU), float64 running sum
            h = (x.T @ x).double()
            self.H = h if self.H is None else self.H + h
        s = x.double().sum(0)
        self.s = s if self.s is None else self.s + s
        self.n += x.shape[0]

    @property
    def mean(self) -> torch.Tensor:
        return self.s / max(self.n, 1)


def _capture_layer_inputs(model: nn.Module, layers: nn.ModuleList, ids: torch.Tensor) -> tuple[torch.Tensor, list[dict]]:
    """Embeddings entering layer 0, and the keyword arguments each layer is called with.

    Every layer's forward is temporarily replaced by a recorder, so nothing but the embedding,
    rotary and mask code runs; per-layer kwargs keep per-layer masks (sliding windows) right.
    """
    record: dict[str, Any] = {"h": None, "kw": [None] * len(layers)}

    def recorder(i: int):
        def forward(hidden_states, *args, **kwargs):
            if args:
                raise RuntimeError("decoder layers are expected to take only hidden_states positionally")
            if i == 0:
                record["h"] = hidden_states
            record["kw"][i] = kwargs
            if i == len(layers) - 1:
                raise _Stop
            return hidden_states
        return forward

    for i, layer in enumerate(layers):
        layer.forward = recorder(i)
    try:
        model(input_ids=ids, use_cache=False)
    except _Stop:
        pass
    finally:
        for layer in layers:
            del layer.forward
    return record["h"], record["kw"]


def _run_layer(layer: nn.Module, h: torch.Tensor, kw: dict) -> torch.Tensor:
    out = layer(h, **kw)
    return out[0] if isinstance(out, tuple) else out


def _collect(layer: nn.Module, lin: nn.Linear, hs: list[torch.Tensor], kws: list[dict], gram: bool) -> _InputStats:
    """Run the layer on every batch up to ``lin`` and accumulate ``lin``'s input statistics."""
    st = _InputStats()

    def hook(mod, args):
        st.add(args[0], gram)
        raise _Stop

    handle = lin.register_forward_pre_hook(hook)
    try:
        for h, kw in zip(hs, kws):
            try:
                _run_layer(layer, h, kw)
            except _Stop:
                pass
    finally:
        handle.remove()
    return st


def _write(lin: nn.Linear, W_new: torch.Tensor, bias_delta: torch.Tensor | None) -> bool:
    """Put reformed weights into a dense-shaped Linear; returns True if a bias slot was created."""
    lin.weight.data.copy_(W_new.to(lin.weight.dtype))
    if bias_delta is None:
        return False
    delta = bias_delta.to(lin.weight.dtype)
    if lin.bias is None:
        lin.bias = nn.Parameter(delta.clone())
        return True
    lin.bias.data.add_(delta)
    return False


@torch.no_grad()
def reform(model: nn.Module, plan: Plan, calib_ids: torch.Tensor, method: str = "admm", *, rho: float = DEFAULT_RHO,
           iters: int = DEFAULT_ITERS, damp: float = DEFAULT_DAMP, batch_size: int = 8, subnet: Any = None,
           progress: bool = True) -> nn.Module:
    """A sliced copy of ``model`` for ``plan`` whose ``o_proj``/``down_proj`` carry reformed weights.

    ``calib_ids``: ``[n, seq]`` calibration tokens (never the test split). ``model`` is not modified.
    ``method``: ``admm`` | ``exact`` (closed form) | ``bias`` (FLAP bias compensation; adds biases the
    stock class may lack, so the model is marked non-stock for export) | ``flexi`` (dropped layers replaced
    by a kept block + low-rank adapters, :func:`nas_llm.model.flexi.flexi_refine` with its defaults) | ``none``.
    """
    if method not in METHODS:
        raise ConfigError(f"unknown reformation method {method!r}; choose one of {', '.join(METHODS)}")
    fam = get_family(model)
    dims = fam.dims(model)
    check_plan(plan, dims)
    if method == "none":
        return slice_model(model, plan, subnet=subnet)
    if method == "flexi":  # dropped layers come back as shared blocks + low-rank adapters (FlexiGPT), default settings
        from .flexi import flexi_refine

        return flexi_refine(model, plan, calib_ids, subnet=subnet, progress=progress)
    if calib_ids.dim() != 2 or calib_ids.shape[0] < 1:
        raise ConfigError(f"calib_ids must be [n_samples, seq_len], got shape {tuple(calib_ids.shape)}")
    work = copy.deepcopy(model).eval()
    layers = fam.decoder_layers(work)
    device = next(work.parameters()).device
    hs, kws = [], []
    for i in range(0, calib_ids.shape[0], batch_size):
        h, kw = _capture_layer_inputs(work, layers, calib_ids[i : i + batch_size].to(device))
        hs.append(h)
        kws.append(kw)
    added_bias = False
    gram = method in ("admm", "exact")

    def fix(layer: nn.Module, lin: nn.Linear, kept: list[int], i: int, name: str) -> None:
        nonlocal added_bias
        st = _collect(layer, lin, hs, [kw[i] for kw in kws], gram)
        W = lin.weight.detach()
        if gram:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                W_new = solve(method, W, st.H, kept, rho=rho, iters=iters, damp=damp)
            for w in caught:
                warnings.warn(f"layer {i} {name}: {w.message}", RuntimeWarning, stacklevel=4)
            added_bias |= _write(lin, W_new, None)
        else:  # bias compensation: original kept weights, cut columns zeroed, mean of the cut part in the bias
            keep = torch.zeros(W.shape[1], dtype=W.dtype, device=W.device)
            keep[kept] = 1
            delta = bias_shift(W, st.mean, kept)
            added_bias |= _write(lin, W * keep, delta)

    for i, (layer, lp) in enumerate(tqdm(list(zip(layers, plan.layers)), desc=f"reform ({method})", disable=not progress, leave=False)):
        if not lp.keep:
            continue  # a dropped layer passes h through
        lin = fam.linears(layer)
        for role, cut in layer_cuts(lp, dims).items():  # a map with nothing cut stays as it is
            if role in INPUT_CUT_ROLES:
                fix(layer, lin[role], cut.cols, i, getattr(fam, role))  # name: "o_proj", "down_proj"
        hs = [_run_layer(layer, h, kw[i]) for h, kw in zip(hs, kws)]
    del hs, kws
    out = slice_model(work, plan, inplace=True, subnet=subnet)
    if added_bias:  # stock LLaMA-style classes have no slot for these biases: make plain loading fail loudly
        mark_nonstock(out.config)
    out.config.nas_llm = {**out.config.nas_llm, "reform": {"method": method, "rho": rho, "iters": iters, "damp": damp,
                                                          "n_samples": int(calib_ids.shape[0]), "seq_len": int(calib_ids.shape[1])}}
    return out


__all__ = ["METHODS", "CPU_CALIBRATION", "GPU_CALIBRATION", "default_calibration", "admm", "closed_form", "bias_shift",
           "reconstruction_error", "solve", "reform"]
