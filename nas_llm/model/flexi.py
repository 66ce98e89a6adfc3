"""FlexiGPT (Smith et al., NAACL 2025, arXiv 2501.14713): a dropped block comes back as a kept block plus low-rank adapters.

For a plan that drops layers, each dropped block i is replaced by a copy of its own decoder layer
object (so the stock attention/rotary/cache code and i's per-layer attributes stay) whose seven
linears are :class:`SharedLowRankLinear` ``(W_j, A, B)``: block j's weight, *referenced* (stored once,
in block j), plus ``B @ A`` from the truncated SVD of ``W_i - W_j``. At rank r the replacement's maps
are the best rank-r (Frobenius) approximations of block i's around block j's; rank "full" is block i
exactly, rank 0 block j's maps. The paper's code is not public; the choices below are ours.

- **Shared block j** (``similarity``): ``svd`` (default) -- the kept full-width block whose differences
  ``W_i - W_j`` lose the least energy outside their top-r singular values, summed over the seven maps,
  relative to ``||W_i||^2`` (the paper's "low-rank SVD-based metric", our reading); ``output`` --
  the kept block whose update ``f_j(h) - h`` is closest to ``f_i(h) - h`` on block i's dense input;
  ``nearest`` -- the nearest kept block. Only kept blocks at full width can be shared.
- **Block vectors** (``vectors``): the replacement owns its RMSNorm weights and biases (2 x hidden,
  + 2 x head_dim on Qwen3, + biases), initialised from block i (``pruned``, default) or j (``shared``:
  with rank 0 the replacement is then block j exactly).
- **Output feature normalisation** (``norm``): per-channel on the outputs of ``o_proj`` (attention
  branch) and ``down_proj`` (MLP branch), the two residual updates of the block. ``affine`` (default):
  ``y' = s * y + t`` with the mean and std per channel of y over the calibration tokens set to those
  of block i's branch in the dense model; ``scale``: ``y' = s * y`` matching the per-channel RMS (no
  bias: every runtime's layer can hold it); ``none``. The replacement's statistics are taken
  sequentially (each replacement sees the outputs of the replacements before it, o before down).
  Placed on the two output maps, normalisation folds into the weights: the materialised form is a
  stock layer (``affine``'s shift needs ``o_proj``/``down_proj`` biases: LLaMA's ``attention_bias`` +
  ``mlp_bias`` flags; families without those flags are marked non-stock).
- **Training** (``steps``; 0 = SVD init only): AdamW on the replacements' own tensors (adapters,
  normalisation, block vectors), everything else frozen, on the calibration tokens; ``loss`` ``ce``
  (next-token) or ``kd`` (KL to the dense model's next-token distribution).

Stored parameters: the shared weights count once (they are not registered in the replacement), so
``sum(p.numel() for p in model.parameters())`` is what is stored; :func:`extra_params` gives it from
shapes. Compute per token is the dense model's: this trades memory for quality, not latency.
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F
from tqdm.auto import tqdm

from search_spaces import Plan, get_family
from search_spaces.family import Family
from search_spaces.plan import check_plan

from .reform import _capture_layer_inputs, _run_layer, _Stop
from .shared_block import (NORMED, NORMS, VECTORS, SharedLowRankLinear, check_choice, linears, replacement_block,
                           replacement_record, role_rank)
from .slicing import _set_layers, slice_model, update_config

SIMILARITY = ("svd", "output", "nearest")
LOSSES = ("ce", "kd")
DEFAULTS = dict(rank=32, similarity="svd", norm="affine", vectors="pruned", steps=0, lr=3e-4, loss="kd", batch_size=4)


# -- choosing the shared block -------------------------------------------------------------------


@torch.no_grad()
def _svd_scores(fam: Family, layers: nn.ModuleList, dropped: list[int], cands: list[int], rank: int | str) -> dict:
    """Energy of W_i - W_j outside its top-r singular values, over the seven maps, relative to ||W_i||^2."""
    out = {}
    for i in dropped:
        Wi = {r: m.weight.detach().float() for r, m in linears(fam, layers[i]).items()}
        total = sum(float(W.double().pow(2).sum()) for W in Wi.values())
        for j in cands:
            tail = 0.0
            for role, lin in linears(fam, layers[j]).items():
                s = torch.linalg.svdvals(Wi[role] - lin.weight.detach().float())
                tail += float(s[role_rank(rank, tuple(lin.weight.shape)):].double().pow(2).sum())
            out[i, j] = tail / max(total, 1e-30)
    return out


@torch.no_grad()
def _output_scores(layers: nn.ModuleList, dropped: list[int], cands: list[int], inputs: dict) -> dict:
    """||f_j(h) - f_i(h)||^2 / ||f_i(h) - h||^2 on block i's dense inputs h."""
    out = {}
    for i in dropped:
        target = [_run_layer(layers[i], h, kw) for h, kw in inputs[i]]
        den = sum(float((t - h).double().pow(2).sum()) for t, (h, _) in zip(target, inputs[i]))
        for j in cands:
            num = sum(float((_run_layer(layers[j], h, kw) - t).double().pow(2).sum()) for t, (h, kw) in zip(target, inputs[i]))
            out[i, j] = num / max(den, 1e-30)
    return out


def choose_shared(scores: dict | None, dropped: list[int], cands: list[int]) -> dict[int, int]:
    """Per dropped block, the candidate of lowest score; ties (and ``scores=None``) go to the nearest, then the earlier."""
    return {i: min(cands, key=lambda j: ((scores or {}).get((i, j), 0.0), abs(i - j), j)) for i in dropped}


# -- calibration passes --------------------------------------------------------------------------


class _ChannelStats:
    """Per-channel sum and sum of squares (float64) of a tensor's last dimension."""

    def __init__(self) -> None:
        self.s, self.sq, self.n = 0.0, 0.0, 0

    def add(self, y: torch.Tensor) -> None:
        y = y.detach().reshape(-1, y.shape[-1]).double()
        self.s, self.sq, self.n = self.s + y.sum(0), self.sq + y.pow(2).sum(0), self.n + y.shape[0]

    @property
    def mean(self) -> torch.Tensor:
        return self.s / self.n

    @property
    def std(self) -> torch.Tensor:
        return (self.sq / self.n - self.mean.pow(2)).clamp_min(0).sqrt()

    @property
    def rms(self) -> torch.Tensor:
        return (self.sq / self.n).sqrt()


def _batches(ids: torch.Tensor, batch_size: int):
    return [ids[k : k + batch_size] for k in range(0, ids.shape[0], batch_size)]


@torch.no_grad()
def _dense_pass(model: nn.Module, fam: Family, ids: torch.Tensor, dropped: list[int], batch_size: int,
                keep_inputs: int) -> tuple[dict, dict]:
    """One dense pass: o/down output statistics of every dropped block, and its inputs on the first samples."""
    layers, stats, inputs = fam.decoder_layers(model), {i: {r: _ChannelStats() for r in NORMED} for i in dropped}, {i: [] for i in dropped}
    handles, seen = [], [0]

    def grab(i):
        def hook(mod, args, kwargs):
            if seen[0] < keep_inputs:
                inputs[i].append((args[0] if args else kwargs["hidden_states"], {k: v for k, v in kwargs.items() if k != "hidden_states"}))
        return hook

    for i in dropped:
        handles.append(layers[i].register_forward_pre_hook(grab(i), with_kwargs=True))
        for role in NORMED:
            handles.append(linears(fam, layers[i])[role].register_forward_hook(lambda m, a, y, st=stats[i][role]: st.add(y)))
    try:
        for x in _batches(ids, batch_size):
            model(input_ids=x, use_cache=False)
            seen[0] += x.shape[0]
    finally:
        for h in handles:
            h.remove()
    return stats, inputs


def _set_norm(lin: SharedLowRankLinear, target: _ChannelStats, have: _ChannelStats, norm: str) -> None:
    """Scale (and shift) so that the map's output statistics become block i's (a dead channel keeps s = 1)."""
    if norm == "affine":
        t_sd, h_sd = target.std, have.std
        s = torch.where(h_sd > 1e-6 * h_sd.mean() + 1e-30, t_sd / h_sd, torch.ones_like(h_sd))
        lin.scale.data.copy_(s)
        lin.shift.data.copy_(target.mean - s * have.mean)
    else:
        t_r, h_r = target.rms, have.rms
        lin.scale.data.copy_(torch.where(h_r > 1e-6 * h_r.mean() + 1e-30, t_r / h_r, torch.ones_like(h_r)))


@torch.no_grad()
def _fit_normalisation(model: nn.Module, fam: Family, ids: torch.Tensor, targets: dict, norm: str, batch_size: int) -> None:
    """Sequentially set each replacement's o, then down normalisation on its actual inputs in ``model``."""
    layers = fam.decoder_layers(model)
    caps = [_capture_layer_inputs(model, layers, x) for x in _batches(ids, batch_size)]
    hs, kws = [c[0] for c in caps], [c[1] for c in caps]
    for p, layer in enumerate(layers):
        if p in targets:
            for role in NORMED:
                lin, have = linears(fam, layer)[role], _ChannelStats()

                def hook(mod, args, y):
                    have.add(y)
                    raise _Stop

                handle = lin.register_forward_hook(hook)
                try:
                    for h, kw in zip(hs, kws):
                        try:
                            _run_layer(layer, h, kw[p])
                        except _Stop:
                            pass
                finally:
                    handle.remove()
                _set_norm(lin, targets[p][role], have, norm)
        hs = [_run_layer(layer, h, kw[p]) for h, kw in zip(hs, kws)]



def flexi_refine(model: nn.Module, plan: Plan, calib_ids: torch.Tensor, rank: int | str = DEFAULTS["rank"],
                 similarity: str = DEFAULTS["similarity"], norm: str = DEFAULTS["norm"], vectors: str = DEFAULTS["vectors"],
                 steps: int = DEFAULTS["steps"], lr: float = DEFAULTS["lr"], loss: str = DEFAULTS["loss"],
                 batch_size: int = DEFAULTS["batch_size"], shared: dict[int, int] | None = None, subnet: Any = None,
                 progress: bool = True) -> nn.Module:
    """A copy of ``model`` sliced to ``plan`` whose dropped layers come back as replacement blocks (see the module doc).

    ``calib_ids``: ``[n, seq]`` calibration tokens (never the test split) for the similarity rule
    ``output``, the normalisation and the training. ``shared``: {dropped: kept} overrides the rule.
    """
    for name, v, allowed in (("similarity", similarity, SIMILARITY), ("norm", norm, NORMS), ("vectors", vectors, VECTORS),
                             ("loss", loss, LOSSES)):
        check_choice(name, v, allowed)
    if calib_ids.dim() != 2 or calib_ids.shape[0] < 1:
        raise ValueError(f"calib_ids must be [n_samples, seq_len], got shape {tuple(calib_ids.shape)}")
    fam = get_family(model)
    dims = fam.dims(model.config)
    check_plan(plan, dims)
    role_rank(rank, (1, 1))
    dropped = [i for i, lp in enumerate(plan.layers) if not lp.keep]
    cands = [i for i, lp in enumerate(plan.layers) if lp.keep and len(lp.kv_groups) == dims.num_kv_heads
             and len(lp.neurons) == dims.intermediate]
    if not dropped:
        raise ValueError("flexi replaces dropped layers, and this plan drops none; use method admm/exact for width cuts")
    if not cands:
        raise ValueError("flexi shares a kept block at full width, and this plan keeps none at full width")
    model.eval()
    device = next(model.parameters()).device
    calib_ids = calib_ids.to(device)
    dense = fam.decoder_layers(model)
    stats, inputs = _dense_pass(model, fam, calib_ids, dropped, batch_size, 8 if similarity == "output" else 0)
    scores = {"svd": lambda: _svd_scores(fam, dense, dropped, cands, rank), "nearest": lambda: None,
              "output": lambda: _output_scores(dense, dropped, cands, inputs)}[similarity]()
    pairs = {**choose_shared(scores, dropped, cands), **(shared or {})}
    bad = {i: j for i, j in pairs.items() if i not in dropped or j not in cands}
    if bad:
        raise ValueError(f"flexi shared={bad}: keys must be dropped layers {dropped}, values full-width kept layers {cands}")
    out = slice_model(model, plan, subnet=subnet)
    kept = dict(zip([i for i, lp in enumerate(plan.layers) if lp.keep], fam.decoder_layers(out)))
    layers = [kept[p] if p in kept else replacement_block(fam, dense[p], kept[pairs[p]], rank, norm, vectors) for p in range(len(dense))]
    for p, layer in enumerate(layers):
        fam.attention(layer).layer_idx = p  # the original depth: every position has its KV-cache slot again
    _set_layers(out, fam, layers)
    full = {(r["source_layer"]): r for r in out.config.nas_llm["layers"]}
    records = [full.get(p) or {"source_layer": p, "num_attention_heads": dims.num_heads, "num_key_value_heads": dims.num_kv_heads,
                               "intermediate_size": dims.intermediate, "shares": pairs[p]} for p in range(len(dense))]
    for name in fam.per_layer_config_lists:  # slicing shortened them; the depth is the original one again
        if isinstance(getattr(model.config, name, None), (list, tuple)):
            setattr(out.config, name, list(getattr(model.config, name)))
    update_config(out.config, fam, dims, records, {k: v for k, v in out.config.nas_llm.items() if k not in ("format", "dense", "layers")})
    if norm != "none":
        _fit_normalisation(out, fam, calib_ids, {p: stats[p] for p in dropped}, norm, batch_size)
    losses = train_replacements(out, calib_ids, steps, lr, batch_size, loss, teacher=model, progress=progress) if steps else []
    settings = {"rank": rank, "similarity": similarity, "norm": norm, "vectors": vectors, "steps": steps, "lr": lr, "loss": loss,
                "batch_size": batch_size, "train_tokens": steps * batch_size * int(calib_ids.shape[1]),
                "n_samples": int(calib_ids.shape[0]), "seq_len": int(calib_ids.shape[1])}
    flexi = {**settings, "replaced": replacement_record(fam, fam.decoder_layers(out), pairs), "losses": [round(x, 5) for x in losses[:: max(1, len(losses) // 20)]],
             "scores": None if scores is None else {str(i): round(scores[i, j], 6) for i, j in pairs.items() if (i, j) in scores}}
    out.config.nas_llm = {**out.config.nas_llm, "flexi": flexi, "reform": {"method": "flexi", **settings}}
    return out


# -- training --------------------------------------------------------------------------------------


def _kd(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """Mean over positions of KL(teacher || student) of the next-token distributions."""
    t, s = F.log_softmax(teacher.float(), -1), F.log_softmax(student.float(), -1)
    return (t.exp() * (t - s)).sum(-1).mean()


def train_replacements(model: nn.Module, ids: torch.Tensor, steps: int, lr: float = DEFAULTS["lr"], batch_size: int = DEFAULTS["batch_size"],
                       loss: str = DEFAULTS["loss"], teacher: nn.Module | None = None, seed: int = 0, progress: bool = True) -> list[float]:
    """AdamW on the replacements' own tensors only (random batches of ``ids``); returns the loss of every step."""
    check_choice("loss", loss, LOSSES)
    if loss == "kd" and teacher is None:
        raise ValueError("flexi loss='kd' needs the dense teacher model")
    fam = get_family(model)
    layers = fam.decoder_layers(model)
    own = [p for i, layer in enumerate(layers) if isinstance(fam.attn_linears(layer)["q"], SharedLowRankLinear) for p in layer.parameters()]
    if not own:
        raise ValueError("train_replacements: the model has no replacement blocks (build them with flexi_refine)")
    flags = {p: p.requires_grad for p in model.parameters()}
    for p in model.parameters():
        p.requires_grad_(False)
    for p in own:
        p.requires_grad_(True)
    opt = torch.optim.AdamW(own, lr=lr, weight_decay=0.0)
    gen = torch.Generator().manual_seed(seed)
    losses = []
    try:
        for _ in tqdm(range(steps), desc="flexi train", disable=not progress, leave=False):
            x = ids[torch.randint(0, ids.shape[0], (batch_size,), generator=gen).to(ids.device)]
            with torch.no_grad():
                target = teacher(input_ids=x, use_cache=False).logits[:, :-1] if loss == "kd" else None
            with torch.enable_grad():  # also when called under no_grad (nas_llm.model.reform.reform)
                logits = model(input_ids=x, use_cache=False).logits[:, :-1]
                value = _kd(logits, target) if loss == "kd" else \
                    F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), x[:, 1:].reshape(-1))
            opt.zero_grad(set_to_none=True)
            value.backward()
            opt.step()
            losses.append(float(value.detach()))
    finally:
        for p, f in flags.items():
            p.requires_grad_(f)
    return losses
