"""Importance scores, computed once from calibration activations: which heads/neurons/layers matter.

Scores are per *structure* (a KV group with its query heads, one query head, one MLP neuron), summed
over the modules that share it (q,k,v rows + o columns; q rows + o columns; gate,up rows + down column):

- ``obs`` (the paper): Phi_ij = W_ij^2 / [(2 X X^T + damp)^-1]_jj, X the input of the module.
  For a column of o/down this is twice the least-squares error left after removing that input
  channel and optimally updating the rest (the OBS identity; ``tests/test_importance.py`` checks it).
- ``magnitude``: sum |W_ij| over the coupled weights (the naive baseline).
- ``wanda``: Wanda-sp as FLAP's code defines it: for each input channel j of o_proj/down_proj,
  mean_i |W_ij| * ||X_j||_2; a head sums its channels.
- ``flap``: FLAP's fluctuation metric: Var(X_j) * ||W_:,j||_2^2 on o_proj/down_proj inputs.
- ``obs-greedy``: a removal *order* (ZipLM-style greedy OBS) on the o_proj/down_proj inputs: remove the channel
  (head, KV group) whose removal, with the rest optimally refit, raises the reconstruction error least; update W and
  H^-1; repeat (``GREEDY_STEP`` neurons at a time). Reformation refits the kept columns, so this orders for the
  error left *after* the refit; the score of a structure is its position in the order (``tests/test_importance.py``
  checks the order against brute-force greedy).
- ``hybrid`` (the default): KV groups and query heads as ``obs`` ranks them (coupled over q/k/v/o), neurons as
  ``wanda`` does. Which ranking fills a width best depended on what is cut (``DEFAULT_METHOD``).
- Layer importance: ShortGPT's Block Influence BI_i = 1 - E_tokens[cos(h_i, h_{i+1})].
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
from tqdm.auto import tqdm

from nas_llm.errors import ConfigError
from search_spaces import Ranking, get_family
from search_spaces.family import ModelDims

from search_spaces.plan import head_channels, kv_channels

METHODS = ("obs", "magnitude", "wanda", "flap", "obs-greedy", "hybrid")
# hybrid: KV groups and query heads by OBS, neurons by Wanda-sp. On SmolLM2's uniform subnets (sequential ADMM,
# benchmarks/experiments/default_ranking) Wanda-sp filled widths 2-3.5 % better than OBS where every KV group stays
# (90-70 %) and OBS 22-23 % better where one goes (60 / 50 %); hybrid was lowest or tied at all five ratios.
DEFAULT_METHOD = "hybrid"
NEEDS_HESSIAN = ("obs", "hybrid")  # rank with the Hessians of the q/k/v and gate/up inputs too
DEFAULT_DAMP = 0.01  # fraction of mean(diag H) added to the diagonal before inverting (SparseGPT's choice)
GREEDY_STEP = 16  # obs-greedy: neurons removed per H^-1 update (a quarter of the search's 64-neuron granularity)


@dataclass
class LayerStats:
    """Sufficient statistics of one layer's inputs on calibration data (float64)."""

    n: int = 0
    H: dict[str, torch.Tensor] = field(default_factory=dict)  # X^T X of inputs to "attn_in", "o", "mlp_in", "down"
    s: dict[str, torch.Tensor] = field(default_factory=dict)  # per-channel sums of the o/down inputs
    sq: dict[str, torch.Tensor] = field(default_factory=dict)  # per-channel sums of squares
    cos_sum: float = 0.0  # Block Influence accumulator: sum over tokens of cos(h_in, h_out)


def _accumulate(st: LayerStats, key: str, x: torch.Tensor, hessian: bool) -> None:
    x = x.detach().reshape(-1, x.shape[-1]).float()
    if hessian:  # float32 matmul per batch (4x faster on CPU), float64 running sum
        h = (x.T @ x).double()
        st.H[key] = st.H[key] + h if key in st.H else h
    x = x.double()
    s, sq = x.sum(0), (x * x).sum(0)
    st.s[key] = st.s[key] + s if key in st.s else s
    st.sq[key] = st.sq[key] + sq if key in st.sq else sq


@torch.no_grad()
def collect_stats(model: nn.Module, input_ids: torch.Tensor, batch_size: int = 4, hessian: bool = True, progress: bool = True) -> list[LayerStats]:
    """One dense pass over the calibration batch, recording every layer's input statistics."""
    fam = get_family(model)
    layers = fam.decoder_layers(model)
    stats = [LayerStats() for _ in layers]
    handles = []

    def pre(st: LayerStats, key: str, hess: bool):
        def hook(mod, args):
            _accumulate(st, key, args[0], hess)
        return hook

    def block(st: LayerStats):
        def hook(mod, args, kwargs, out):
            h_in = args[0] if args else kwargs["hidden_states"]
            h_out = out[0] if isinstance(out, tuple) else out
            cos = torch.nn.functional.cosine_similarity(h_in.double(), h_out.double(), dim=-1)
            st.cos_sum += float(cos.sum())
            st.n += cos.numel()
        return hook

    for layer, st in zip(layers, stats):
        lin, mlp = fam.attn_linears(layer), fam.mlp_linears(layer)
        handles += [
            lin["q"].register_forward_pre_hook(pre(st, "attn_in", hessian)),
            lin["o"].register_forward_pre_hook(pre(st, "o", True)),  # o/down Grams are small and always needed
            mlp["gate"].register_forward_pre_hook(pre(st, "mlp_in", hessian)),
            mlp["down"].register_forward_pre_hook(pre(st, "down", True)),
            layer.register_forward_hook(block(st), with_kwargs=True),
        ]
    device = next(model.parameters()).device
    try:
        for i in tqdm(range(0, input_ids.shape[0], batch_size), desc="calibration statistics", disable=not progress, leave=False):
            model(input_ids=input_ids[i : i + batch_size].to(device), use_cache=False)
    finally:
        for h in handles:
            h.remove()
    return stats


def refit_grams(stats: list[LayerStats]) -> dict[tuple[int, str], torch.Tensor]:
    """The ``o``/``down`` input Grams of ``stats`` keyed ``(layer, role)``: the maps reformation refits."""
    return {(i, role): st.H[role] for i, st in enumerate(stats) for role in ("o", "down")}


def hinv_diag(H: torch.Tensor, damp: float = DEFAULT_DAMP) -> torch.Tensor:
    """diag((2H + damp*mean(diag 2H) I)^-1), the OBS denominator; damping makes rank-deficient H invertible."""
    H2 = 2 * H
    d = damp * torch.diagonal(H2).mean().clamp_min(1e-12)
    return torch.diagonal(torch.linalg.inv(H2 + d * torch.eye(H.shape[0], dtype=H.dtype, device=H.device)))


def _row_scores(W: torch.Tensor, kind: str, st: LayerStats, key: str, damp: float) -> torch.Tensor:
    """Score of every output row of W (a module whose rows are the structure)."""
    W = W.detach().double()
    if kind == "obs":
        return (W**2 / hinv_diag(st.H[key], damp)[None, :]).sum(1)
    return W.abs().sum(1)  # magnitude


def _col_scores(W: torch.Tensor, kind: str, st: LayerStats, key: str, damp: float) -> torch.Tensor:
    """Score of every input column of W (o_proj / down_proj)."""
    W = W.detach().double()
    if kind == "obs":
        return (W**2 / hinv_diag(st.H[key], damp)[None, :]).sum(0)
    if kind == "magnitude":
        return W.abs().sum(0)
    if kind == "wanda":
        return W.abs().mean(0) * torch.sqrt(st.sq[key])
    if kind == "flap":
        n = st.n
        mean = st.s[key] / n
        var = (st.sq[key] / n - mean**2).clamp_min(0) * n / max(n - 1, 1)
        return var * (W**2).sum(0)
    raise ConfigError(f"unknown importance method {kind!r}; choose one of {', '.join(METHODS)}")


def greedy_obs_order(W: torch.Tensor, H: torch.Tensor, block: int = 1, step: int = 1,
                     damp: float = DEFAULT_DAMP) -> np.ndarray:
    """Blocks of ``block`` input channels of ``W`` (``[out, n]``, inputs with Gram ``H``), most important first.

    Greedy OBS removal: the block whose removal leaves the least reconstruction error ``tr(W_B (H^-1_BB)^-1 W_B^T)``
    after the optimal update of the others goes first (``step`` blocks per update), then ``W`` and ``H^-1`` are
    updated as if it were gone. The blocks never removed lead the order, the last removed next, and so on.
    """
    from .solvers import _prepare  # the solvers' checks and scaling (mean diagonal 1): damp means the same there

    W, H, _ = _prepare(W, H, [])
    W = W.clone()
    n, dev = H.shape[0], H.device
    if n % block:
        raise ValueError(f"{n} input channels do not split into blocks of {block}")
    Hinv = torch.linalg.inv(H + damp * torch.eye(n, dtype=H.dtype, device=dev))
    nb = n // block
    alive = torch.ones(nb, dtype=torch.bool, device=dev)
    removed: list[int] = []
    while int(alive.sum()) > 1:
        if block == 1:
            score = (W ** 2).sum(0) / torch.diagonal(Hinv).clamp_min(1e-300)
        else:
            score = torch.full((nb,), float("inf"), dtype=torch.float64, device=dev)
            for b in torch.nonzero(alive).flatten().tolist():
                idx = slice(b * block, (b + 1) * block)
                Wb = W[:, idx]
                score[b] = torch.trace(Wb @ torch.linalg.solve(Hinv[idx, idx], Wb.T))
        score = torch.where(alive, score, torch.full_like(score, float("inf")))
        k = min(step, int(alive.sum()) - 1)
        out = torch.argsort(score, stable=True)[:k]
        R = (out[:, None] * block + torch.arange(block, device=dev)[None, :]).flatten()
        A = torch.linalg.solve(Hinv[R][:, R], Hinv[R, :])
        W -= W[:, R] @ A
        Hinv -= Hinv[:, R] @ A
        alive[out] = False
        removed += out.tolist()
    return np.asarray(torch.nonzero(alive).flatten().tolist() + removed[::-1])


def _order_scores(order: np.ndarray) -> np.ndarray:
    """Scores that rank like ``order`` (most important first): n for the first, 1 for the last."""
    sc = np.empty(len(order), dtype=np.float64)
    sc[np.asarray(order)] = np.arange(len(order), 0, -1)
    return sc


def _greedy_scores(lin: dict, mlp: dict, st: LayerStats, dims: ModelDims, damp: float):
    """(KV-group, head, neuron) scores of one layer from greedy OBS removal orders."""
    per_group = dims.head_dim * (dims.num_heads // dims.num_kv_heads)
    g = _order_scores(greedy_obs_order(lin["o"].weight, st.H["o"], per_group, 1, damp))
    h = _order_scores(greedy_obs_order(lin["o"].weight, st.H["o"], dims.head_dim, 1, damp))
    n = _order_scores(greedy_obs_order(mlp["down"].weight, st.H["down"], 1, GREEDY_STEP, damp))
    return g, h, n


@dataclass
class Scores:
    """Raw per-structure scores: kv[i] has one score per KV group, heads[i] one per query head (its q rows
    and o columns; a group's score is its heads' plus its k/v rows'), neurons[i] one per neuron."""

    kv: list[np.ndarray]
    neurons: list[np.ndarray]
    layers: np.ndarray  # Block Influence
    method: str
    heads: list[np.ndarray] | None = None

    def ranking(self) -> Ranking:
        return Ranking.from_scores(self.kv, self.neurons, self.layers, self.method, self.heads)


def scores_from_stats(model: nn.Module, stats: list[LayerStats], method: str = DEFAULT_METHOD,
                      damp: float = DEFAULT_DAMP) -> Scores:
    if method not in METHODS:
        raise ConfigError(f"unknown importance method {method!r}; choose one of {', '.join(METHODS)}")
    fam = get_family(model)
    dims: ModelDims = fam.dims(model)
    kv_out, nn_out, head_out = [], [], []
    heads_by, neurons_by = ("obs", "wanda") if method == "hybrid" else (method, method)
    # wanda/flap score only o/down inputs, as in their papers
    coupled_h, coupled_n = heads_by in ("obs", "magnitude"), neurons_by in ("obs", "magnitude")
    for layer, st in zip(fam.decoder_layers(model), stats):
        lin, mlp = fam.attn_linears(layer), fam.mlp_linears(layer)
        if method == "obs-greedy":
            g, h, n = _greedy_scores(lin, mlp, st, dims, damp)
            kv_out.append(g)
            head_out.append(h)
            nn_out.append(n)
            continue
        ch = _col_scores(lin["o"].weight, heads_by, st, "o", damp)
        if coupled_h:
            ch = ch + _row_scores(lin["q"].weight, heads_by, st, "attn_in", damp)
            kvr = _row_scores(lin["k"].weight, heads_by, st, "attn_in", damp) + _row_scores(lin["v"].weight, heads_by, st, "attn_in", damp)
        h_scores = ch.reshape(dims.num_heads, dims.head_dim).sum(1)  # head h: channels h*hd ... (h+1)*hd-1
        g_scores = []
        for g in range(dims.num_kv_heads):
            sc = ch[head_channels([g], dims)].sum()
            if coupled_h:
                sc = sc + kvr[kv_channels([g], dims)].sum()
            g_scores.append(float(sc))
        head_out.append(h_scores.cpu().numpy())
        n_sc = _col_scores(mlp["down"].weight, neurons_by, st, "down", damp)
        if coupled_n:
            n_sc = n_sc + _row_scores(mlp["gate"].weight, neurons_by, st, "mlp_in", damp) + _row_scores(mlp["up"].weight, neurons_by, st, "mlp_in", damp)
        kv_out.append(np.asarray(g_scores))
        nn_out.append(n_sc.cpu().numpy())
    bi = np.asarray([1.0 - st.cos_sum / max(st.n, 1) for st in stats])
    return Scores(kv_out, nn_out, bi, method, head_out)


def compute_scores(model: nn.Module, input_ids: torch.Tensor, method: str = DEFAULT_METHOD, batch_size: int = 4,
                   damp: float = DEFAULT_DAMP, progress: bool = True) -> Scores:
    stats = collect_stats(model, input_ids, batch_size, hessian=method in NEEDS_HESSIAN, progress=progress)
    return scores_from_stats(model, stats, method, damp)


def fingerprint(model: nn.Module, input_ids: torch.Tensor, method: str, damp: float) -> str:
    """Cache key: model shapes + a sample of weights + calibration tokens + settings."""
    h = hashlib.sha256()
    h.update(json.dumps(model.config.to_dict(), sort_keys=True, default=str).encode())
    for i, p in enumerate(model.parameters()):
        if i % 7 == 0:
            h.update(p.detach().flatten()[:64].float().cpu().numpy().tobytes())
    h.update(input_ids.cpu().numpy().tobytes())
    h.update(f"{method}:{damp}".encode())
    return h.hexdigest()[:20]


def importance_ranking(model: nn.Module, input_ids: torch.Tensor, method: str = DEFAULT_METHOD, cache_dir: str | Path | None = None,
                       batch_size: int = 4, damp: float = DEFAULT_DAMP, progress: bool = True,
                       grams: dict | None = None) -> Ranking:
    """The ranking for ``method``, read from ``cache_dir`` when this model+data+method was seen before.

    ``grams``: when a dense pass runs, it receives that pass's ``o``/``down`` input Grams keyed
    ``(layer, role)`` (what ``perplexity_reformed`` refits with: a search then needs one dense pass, not two).
    """
    path = None
    if cache_dir is not None:
        path = Path(cache_dir) / f"ranking-{method}-{fingerprint(model, input_ids, method, damp)}.json"
        if path.is_file():
            cached = Ranking.load(path)
            if cached.q_order is not None or get_family(model).dims(model).q_per_group == 1:
                return cached  # (a ranking cached before query heads were ranked is computed again)
    if method not in METHODS:
        raise ConfigError(f"unknown importance method {method!r}; choose one of {', '.join(METHODS)}")
    stats = collect_stats(model, input_ids, batch_size, hessian=method in NEEDS_HESSIAN, progress=progress)
    if grams is not None:
        grams.update(refit_grams(stats))
    ranking = scores_from_stats(model, stats, method, damp).ranking()
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        ranking.save(path)
    return ranking
