"""``flap``: FLAP as its authors' code runs it (CASIA-IVA-Lab/FLAP, ``lib/prune.py:prune_flap``, WIFV + AL-AM).

An et al. 2024, "Fluctuation-based Adaptive Structured Pruning for Large Language Models".
Read line by line against the official code; what this module does and where it must differ:

Same as the official code
- Calibration flow: every statistic comes from the *dense* model (their loop feeds each layer the
  dense outputs of the one before and compresses only after all layers are scored); one dense
  forward with hooks computes the same thing.
- Fluctuation estimator (their ``BiasGPT.add_batch``, one calibration sample at a time): running
  mean mu_k of the per-sample token means, and F <- F (k-1)/k + sum_t (x_{k,t} - mu_{k+1})^2/(k+1)
  for samples k >= 1 (sample 0 only seeds the mean). ``old_baseline_inp`` in their code aliases the
  mean that is then updated in place, so both factors use the *updated* mean. Closed form:
  F = 1/(N-1) sum_{k=1}^{N-1} k/(k+1) sum_t (x_{k,t} - mu_{k+1})^2. :class:`Fluctuation` runs the
  same recursion (float64 instead of their float16 model / float32 buffers).
- Metric WIFV: F_j * ||W_{:,j}||^2 on o_proj and down_proj input channels; the attention metric is
  *squared* before standardisation (``W_metric = metrics[...](...) ** 2`` for ``self_attn.o_proj``).
- Standardisation: per layer over its channels, (x - mean)/std with torch's unbiased std, attention
  on the o_proj channels *before* averaging a head's channels.
- AL-AM: one descending sort of all layers' heads and neurons; compression weight of a head vs a
  neuron = their parameter ratio (512/3 for LLaMA-7B: 4*4096*128 vs 3*4096), here the exact
  parameter counts of a KV group and of a neuron (``SubnetSpace.layer_params``).
- Neuron granularity 1 (a granularity-1 :class:`SubnetSpace`), no layer ever dropped.
- Bias compensation (Eq. 7): b += W[:, cut] mean(X[cut]) on o_proj and down_proj, with the mean
  from the same dense pass (``baseline_inp``); see :func:`~nas_llm.baselines.base.bias_compensated`.

Differences that remain, and why
- Head unit: a KV group (its query heads + its k/v rows + o columns), the attention metric
  averaged over all its query channels. The official code is written for multi-head LLaMA
  (a head of 128 channels); under GQA a single query head cannot be removed without its KV
  head's other queries, so the KV group is the smallest removable structure. MHA: identical.
- Cut point: their threshold is the score at argmin |cumsum(compression weight) - total*(1-p)|
  with ``metric > threshold`` kept (the structure at the argmin itself is cut; ties at the
  threshold all cut), over the linear weights only. We keep the first k structures of the order,
  k chosen so that the *realised* decoder-param ratio (norms included, after the rule below) is
  nearest the request, so every row of a table has the same size. At most one structure apart.
- A layer whose order removes every head (or every neuron) keeps its best KV group (neuron): in
  their masked (``--unstr``) model such a layer's attention (MLP) outputs only the compensation
  bias, a 0-width layer our space cannot express. The kept structure is paid for by the cut
  (``info["layers_min_heads"]``/``["layers_min_neurons"]`` count how often it happens).
- Calibration data and size come from the caller's protocol (the paper: 1024 WikiText-2 *train*
  samples of 128 tokens; the FLAP protocol of ``benchmarks/quality.py``: 64 x 128 of
  WikiText-2 valid) -- the data, not the method.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn as nn

from nas_llm.errors import ConfigError
from search_spaces import LayerChoice, Ranking, Subnet, SubnetSpace, get_family
from search_spaces.plan import head_channels

from nas_llm.model.importance import LayerStats, fingerprint

from .base import Baseline, check_ratio, forward_batches, memo, register, require
from .global_order import cut, kept_counts, standardise


class Fluctuation:
    """FLAP's running input statistics of one Linear (their ``BiasGPT``, metric WIFV), fed one sample at a time."""

    def __init__(self) -> None:
        self.n = 0  # samples seen
        self.mean: torch.Tensor | None = None  # running mean of the per-sample token means (``baseline_inp``)
        self.fluc: torch.Tensor | None = None  # ``fluc_inp``

    def add(self, x: torch.Tensor) -> None:
        """One calibration sample ``x`` of shape [tokens, channels]."""
        x = x.detach().reshape(-1, x.shape[-1]).double()
        k = self.n
        m = x.mean(0)
        self.mean = m if k == 0 else self.mean * (k / (k + 1)) + m / (k + 1)
        if k == 0:
            self.fluc = torch.zeros_like(m)
        else:  # the updated mean in both factors, as their aliased ``old_baseline_inp`` makes it
            self.fluc = self.fluc * ((k - 1) / k) + ((x - self.mean) ** 2).sum(0) / (k + 1)
        self.n = k + 1


@torch.no_grad()
def collect_fluctuation(model: nn.Module, input_ids: torch.Tensor, batch_size: int = 4,
                        progress: bool = False) -> list[tuple[Fluctuation, Fluctuation]]:
    """One dense pass; per layer the (o_proj, down_proj) input :class:`Fluctuation`, samples in order."""
    fam = get_family(model)
    layers = fam.decoder_layers(model)
    out = [(Fluctuation(), Fluctuation()) for _ in layers]

    def hook(st: Fluctuation):
        def pre(mod, args):
            for row in args[0]:  # [batch, seq, channels]: one sample at a time, in order
                st.add(row)
        return pre

    handles = []
    for layer, (fo, fd) in zip(layers, out):
        handles.append(fam.attn_linears(layer)["o"].register_forward_pre_hook(hook(fo)))
        handles.append(fam.mlp_linears(layer)["down"].register_forward_pre_hook(hook(fd)))
    forward_batches(model, list(input_ids.split(batch_size)), handles, "FLAP fluctuation", progress)
    return out


def fluctuation(model: nn.Module, input_ids: torch.Tensor, batch_size: int = 4) -> list[tuple[Fluctuation, Fluctuation]]:
    """:func:`collect_fluctuation`, computed once per model and calibration set (every ratio reuses it)."""
    return memo(fingerprint(model, input_ids, "flap-fluctuation", 0.0), lambda: collect_fluctuation(model, input_ids, batch_size))


def flap_official_metrics(model: nn.Module, fl: list[tuple[Fluctuation, Fluctuation]]) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Standardised WIFV scores as FLAP's code computes them: per layer one per KV group, one per neuron."""
    fam = get_family(model)
    dims = fam.dims(model)
    attn, mlp = [], []
    for layer, (fo, fd) in zip(fam.decoder_layers(model), fl):
        if fo.n < 2:
            raise ConfigError(f"FLAP's fluctuation needs >= 2 calibration samples, got {fo.n}: pass more rows in calib")
        Wo = fam.attn_linears(layer)["o"].weight.detach().double()
        ch = standardise(((fo.fluc * (Wo**2).sum(0)) ** 2).cpu().numpy())  # squared, then standardised
        attn.append(np.asarray([ch[head_channels([g], dims)].mean() for g in range(dims.num_kv_heads)]))
        Wd = fam.mlp_linears(layer)["down"].weight.detach().double()
        mlp.append(standardise((fd.fluc * (Wd**2).sum(0)).cpu().numpy()))
    return attn, mlp


@register("flap", paper="An et al. 2024 (FLAP), official code", needs="calib", structure="global", granularity=1,
          reform="bias-dense", head_unit="kv-group")
def flap(model: nn.Module, ratio: float, stats: list[LayerStats] | None = None, space: SubnetSpace | None = None,
         calib: torch.Tensor | None = None, batch_size: int = 4) -> Baseline:
    """FLAP as its code runs it, at neuron granularity 1 (see the module docstring); ``stats`` is unused."""
    check_ratio(ratio)
    require(calib, "flap", "calib")
    base = space or SubnetSpace.from_model(model)
    space1 = SubnetSpace(base.dims, granularity=1, allow_layer_drop=base.allow_layer_drop)
    fl = fluctuation(model, calib, batch_size)
    attn, mlp = flap_official_metrics(model, fl)
    order, attn_cum, mlp_cum = kept_counts(attn, mlp)

    def subnet_at(k: int) -> Subnet:
        return Subnet(tuple(LayerChoice(max(int(a), 1), max(int(m), 1), True) for a, m in zip(attn_cum[k], mlp_cum[k])))

    best = cut(len(order), ratio, lambda k: space1.ratio(subnet_at(k)))
    subnet = space1.validate(subnet_at(best))
    info = {"variant": "official", "structures_kept": best, "granularity": 1,
            "layers_min_heads": int((attn_cum[best] == 0).sum()), "layers_min_neurons": int((mlp_cum[best] == 0).sum())}
    return Baseline("flap", ratio, subnet, Ranking.from_scores(attn, mlp, None, "flap"), reform="bias-dense", info=info,
                    space=space1, means=[(fo.mean, fd.mean) for fo, fd in fl])


__all__ = ["Fluctuation", "collect_fluctuation", "flap", "flap_official_metrics", "fluctuation"]
