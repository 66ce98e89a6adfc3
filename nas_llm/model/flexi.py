"""FlexiGPT (Smith et al., NAACL 2025, arXiv 2501.14713): a dropped block comes back as a kept block plus low-rank adapters.

For a plan that drops layers, each dropped block i is replaced by a copy of its own decoder layer
object (so the stock attention/rotary/cache code and i's per-layer attributes stay) whose seven
linears are :class:`SharedLowRankLinear` ``(W_j, A, B)``: block j's weight, *referenced* (stored once,
in block j), plus ``B @ A``, a rank-r approximation of ``W_i - W_j``. Rank "full" is block i exactly,
rank 0 block j's maps. The paper's code is not public; the choices below are ours, defaults measured
on SmolLM2 at 30% (validation perplexity, ``benchmarks/flexigpt.py --tune``; numbers in the commit log).

- **Adapter init** (``init``): ``asvd`` (default) -- the truncated SVD that is best in the calibration
  outputs of the map, ``min ||(W_i - W_j - B A) X||_F`` with X block i's dense inputs (whitened SVD); ``svd``
  -- the plain truncated SVD, best in ``||W_i - W_j - B A||_F`` (Eckart-Young). On SmolLM2 the plain one
  made rank 32 *worse* than rank 0 (the top directions of a weight difference are not the ones the
  inputs use); the weighted one made it better.
- **Shared block j** (``similarity``): ``svd`` (default) -- the kept full-width block whose differences
  ``W_i - W_j`` lose the least energy outside their top-r singular values, summed over the seven maps,
  relative to ``||W_i||^2`` (the paper's "low-rank SVD-based metric", our reading); ``output`` --
  the kept block whose update ``f_j(h) - h`` is closest to ``f_i(h) - h`` on block i's dense input;
  ``nearest`` -- the nearest kept block. Only kept blocks at full width can be shared.
- **Block vectors** (``vectors``): the replacement owns its RMSNorm weights and biases (2 x hidden,
  + 2 x head_dim on Qwen3, + biases), initialised from block i (``pruned``, default) or j (``shared``:
  with rank 0 the replacement is then block j exactly).
- **Output feature normalisation** (``norm``): a per-channel ``y' = s * y + t`` on the outputs of
  ``o_proj`` (attention branch) and ``down_proj`` (MLP branch), the block's two residual updates, fitted
  on the calibration tokens against block i's branch outputs z *on the replacement's own inputs* (the
  hidden states reaching position i in the refined model; o is fitted before down). ``lsq`` (default,
  chosen by measurement): per-channel least squares, ``s = cov(y, z) / var(y)``, ``t = mean(z) - s mean(y)``
  -- on the calibration data never worse than switching the branch off (s = 0) or leaving it as is;
  ``affine``: the per-channel mean and std of y set to z's (moment matching, our other reading of
  the paper's "output feature normalisation"); ``scale``: the per-channel RMS, no shift; ``none``.
  On the two output maps it folds into the weights: the materialised form is a stock layer (a shift
  needs ``o_proj``/``down_proj`` biases: LLaMA's ``attention_bias``/``mlp_bias`` flags; families without
  them are marked non-stock).
- **Training** (``steps``, default 20 of 1 x seq_len tokens; 0 = SVD init only): AdamW (lr 1e-3) on the
  replacements' own tensors (adapters, normalisation, block vectors), everything else frozen, on the
  calibration tokens (or ``train_ids``); ``loss`` ``kd`` (default: KL to the dense model's next-token
  distribution) or ``ce`` (next-token cross-entropy; worse on SmolLM2 at the same steps).

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

from nas_llm.errors import ConfigError
from search_spaces import Plan, get_family
from search_spaces.family import Family, ModelDims
from search_spaces.plan import check_plan

from .reform import _capture_layer_inputs, _run_layer
from .shared_block import (NORMED, NORMS, VECTORS, SharedLowRankLinear, check_choice, replacement_block,
                           replacement_record, role_rank)
from .slicing import _set_layers, mark_nonstock, slice_model, update_config

SIMILARITY = ("svd", "output", "nearest")
INITS = ("svd", "asvd")
LOSSES = ("ce", "kd")
DEFAULTS = dict(rank=32, similarity="svd", norm="lsq", init="asvd", vectors="pruned", steps=20, lr=1e-3, loss="kd", train_batch=1,
                batch_size=4)


# -- choosing the shared block -------------------------------------------------------------------


def _captured(D: torch.Tensor, r: int) -> float:
    """Energy of the top-r singular values of D: randomised for small r (a ranking needs no more), else exact."""
    if r == 0:
        return 0.0
    if 4 * r < min(D.shape):
        _, S, _ = torch.svd_lowrank(D, q=r + 8, niter=2)
        return float(S[:r].double().pow(2).sum())
    G = D.T @ D if D.shape[0] >= D.shape[1] else D @ D.T  # eigenvalues of the Gram = squared singular values
    return float(torch.linalg.eigvalsh(G.double()).flip(0)[:r].clamp_min(0).sum())


@torch.no_grad()
def _svd_scores(fam: Family, layers: nn.ModuleList, dropped: list[int], cands: list[int], rank: int | str) -> dict:
    """Energy of W_i - W_j outside its top-r singular values, over the seven maps, relative to ||W_i||^2."""
    out = {}
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)  # the randomised range finder: the same choice on every run, global RNG untouched
        for i in dropped:
            _svd_row(fam, layers, i, cands, rank, out)
    return out


def _svd_row(fam: Family, layers: nn.ModuleList, i: int, cands: list[int], rank: int | str, out: dict) -> None:
    Wi = {r: m.weight.detach().float() for r, m in fam.linears(layers[i]).items()}
    total = sum(float(W.double().pow(2).sum()) for W in Wi.values())
    for j in cands:
        tail = 0.0
        for role, lin in fam.linears(layers[j]).items():
            D = Wi[role] - lin.weight.detach().float()
            tail += float(D.double().pow(2).sum()) - _captured(D, role_rank(rank, tuple(D.shape)))
        out[i, j] = max(tail, 0.0) / max(total, 1e-30)


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


class _PairStats:
    """Per-channel first and second moments (float64) of a replacement's output y and block i's output z on the same inputs."""

    def __init__(self) -> None:
        self.sy = self.sz = self.syy = self.szz = self.syz = 0.0
        self.n = 0

    def add(self, y: torch.Tensor, z: torch.Tensor) -> None:
        y, z = (t.detach().reshape(-1, t.shape[-1]).double() for t in (y, z))
        self.sy, self.sz = self.sy + y.sum(0), self.sz + z.sum(0)
        self.syy, self.szz, self.syz = self.syy + (y * y).sum(0), self.szz + (z * z).sum(0), self.syz + (y * z).sum(0)
        self.n += y.shape[0]

    def fit(self, norm: str) -> tuple[torch.Tensor, torch.Tensor]:
        """(scale, shift) of ``norm`` (see the module doc); a channel the replacement leaves dead keeps scale 1."""
        my, mz = self.sy / self.n, self.sz / self.n
        vy, vz = (self.syy / self.n - my**2).clamp_min(0), (self.szz / self.n - mz**2).clamp_min(0)
        if norm == "scale":
            ry, rz = (self.syy / self.n).sqrt(), (self.szz / self.n).sqrt()
            return _safe_div(rz, ry), torch.zeros_like(my)
        s = _safe_div(vz.sqrt(), vy.sqrt()) if norm == "affine" else _safe_div(self.syz / self.n - my * mz, vy, one=False)
        return s, mz - s * my


def _safe_div(a: torch.Tensor, b: torch.Tensor, one: bool = True) -> torch.Tensor:
    ok = b > 1e-6 * b.mean() + 1e-30
    return torch.where(ok, a / torch.where(ok, b, torch.ones_like(b)), torch.ones_like(a) if one else torch.zeros_like(a))


def _batches(ids: torch.Tensor, batch_size: int):
    return [ids[k : k + batch_size] for k in range(0, ids.shape[0], batch_size)]


@torch.no_grad()
def _dense_pass(model: nn.Module, fam: Family, ids: torch.Tensor, dropped: list[int], batch_size: int, keep_inputs: int,
                grams: bool) -> tuple[dict, dict]:
    """One dense pass: (hidden states, kwargs) entering each dropped block on the first ``keep_inputs`` samples
    (``similarity="output"``), and the input Gram X X^T of each of its maps (``init="asvd"``)."""
    layers, inputs, H, seen = fam.decoder_layers(model), {i: [] for i in dropped}, {i: {} for i in dropped}, [0]

    def grab(i):
        def hook(mod, args, kwargs):
            if seen[0] < keep_inputs:
                inputs[i].append((args[0] if args else kwargs["hidden_states"], {k: v for k, v in kwargs.items() if k != "hidden_states"}))
        return hook

    def gram(i, role):
        def hook(mod, args):
            x = args[0].detach().reshape(-1, args[0].shape[-1]).float()
            H[i][role] = (x.T @ x).double() + H[i].get(role, 0.0)
        return hook

    handles = [layers[i].register_forward_pre_hook(grab(i), with_kwargs=True) for i in dropped if keep_inputs]
    for i in dropped if grams else []:  # q/k/v and gate/up read the same input: one Gram each
        handles += [fam.linears(layers[i])[r].register_forward_pre_hook(gram(i, r)) for r in ("q", "o", "gate", "down")]
    try:
        for x in _batches(ids, batch_size):
            model(input_ids=x, use_cache=False)
            seen[0] += x.shape[0]
    finally:
        for h in handles:
            h.remove()
    for g in H.values() if grams else []:
        g.update({"k": g["q"], "v": g["q"], "up": g["gate"]})
    return inputs, H if grams else {}


def _branch_outputs(fam: Family, layer: nn.Module, hs: list, kws: list, p: int, roles=NORMED) -> dict[str, list[torch.Tensor]]:
    """Per batch, the outputs of ``roles`` (o_proj, down_proj) when ``layer`` runs at position p on ``hs``."""
    lins, got = fam.linears(layer), {r: [] for r in roles}
    handles = [lins[r].register_forward_hook(lambda mod, args, y, r=r: got[r].append(y.detach())) for r in roles]
    try:
        for h, kw in zip(hs, kws):
            _run_layer(layer, h, kw[p])
    finally:
        for handle in handles:
            handle.remove()
    return got


@torch.no_grad()
def _fit_normalisation(model: nn.Module, dense: nn.ModuleList, ids: torch.Tensor, norm: str, batch_size: int) -> None:
    """Sequentially fit each replacement's o, then down normalisation against block i on the replacement's own inputs."""
    fam = get_family(model)
    layers = fam.decoder_layers(model)
    caps = [_capture_layer_inputs(model, layers, x) for x in _batches(ids, batch_size)]
    hs, kws = [c[0] for c in caps], [c[1] for c in caps]
    for p, layer in enumerate(layers):
        if isinstance(fam.attn_linears(layer)["q"], SharedLowRankLinear):
            target = _branch_outputs(fam, dense[p], hs, kws, p)
            for role in NORMED:  # o first: the MLP branch's input depends on it
                st = _PairStats()
                for y, z in zip(_branch_outputs(fam, layer, hs, kws, p, (role,))[role], target[role]):
                    st.add(y, z)
                lin = fam.linears(layer)[role]
                scale, shift = st.fit(norm)
                lin.scale.data.copy_(scale)
                if lin.shift is not None:
                    lin.shift.data.copy_(shift)
        hs = [_run_layer(layer, h, kw[p]) for h, kw in zip(hs, kws)]


def _split(plan: Plan, dims: ModelDims) -> tuple[list[int], list[int]]:
    dropped = [i for i, lp in enumerate(plan.layers) if not lp.keep]
    cands = [i for i, lp in enumerate(plan.layers) if lp.keep and len(lp.kv_groups) == dims.num_kv_heads
             and lp.heads is None and len(lp.neurons) == dims.intermediate]
    return dropped, cands


def not_applicable(plan: Plan, dims: ModelDims) -> str | None:
    """Why flexi cannot refine ``plan`` (no dropped layer, or no full-width kept block to share), else None."""
    dropped, cands = _split(plan, dims)
    if not dropped:
        return "flexi replaces dropped layers, and this plan drops none; use method admm/exact for width cuts"
    if not cands:
        return "flexi shares a kept block at full width, and this plan keeps none at full width"
    return None


def _dropped_and_candidates(plan: Plan, dims: ModelDims) -> tuple[list[int], list[int]]:
    """The dropped layers, and the kept layers at full width (the only ones a replacement can share)."""
    why = not_applicable(plan, dims)
    if why:
        raise ConfigError(why)
    return _split(plan, dims)


def _assemble(model: nn.Module, plan: Plan, pairs: dict[int, int], make, subnet: Any) -> nn.Module:
    """The sliced model with ``make(i, kept block j)`` back at every dropped position i: the original depth again."""
    fam = get_family(model)
    dims = fam.dims(model.config)
    out = slice_model(model, plan, subnet=subnet)
    kept = dict(zip([i for i, lp in enumerate(plan.layers) if lp.keep], fam.decoder_layers(out)))
    layers = [kept[p] if p in kept else make(p, kept[pairs[p]]) for p in range(dims.num_layers)]
    for p, layer in enumerate(layers):
        fam.attention(layer).layer_idx = p  # every position has its KV-cache slot again
    _set_layers(out, fam, layers)
    full = {r["source_layer"]: r for r in out.config.nas_llm["layers"]}
    records = [full.get(p) or {"source_layer": p, "num_attention_heads": dims.num_heads, "num_key_value_heads": dims.num_kv_heads,
                               "intermediate_size": dims.intermediate, "shares": pairs[p]} for p in range(dims.num_layers)]
    for name in fam.per_layer_config_lists:  # slicing shortened them
        if isinstance(getattr(model.config, name, None), (list, tuple)):
            setattr(out.config, name, list(getattr(model.config, name)))
    update_config(out.config, fam, dims, records, {k: v for k, v in out.config.nas_llm.items() if k not in ("format", "dense", "layers")})
    return out


def flexi_refine(model: nn.Module, plan: Plan, calib_ids: torch.Tensor, rank: int | str = DEFAULTS["rank"],
                 similarity: str = DEFAULTS["similarity"], norm: str = DEFAULTS["norm"], init: str = DEFAULTS["init"],
                 vectors: str = DEFAULTS["vectors"],
                 steps: int = DEFAULTS["steps"], lr: float = DEFAULTS["lr"], loss: str = DEFAULTS["loss"],
                 train_batch: int = DEFAULTS["train_batch"], train_ids: torch.Tensor | None = None,
                 batch_size: int = DEFAULTS["batch_size"], shared: dict[int, int] | None = None, subnet: Any = None,
                 progress: bool = True) -> nn.Module:
    """A copy of ``model`` sliced to ``plan`` whose dropped layers come back as replacement blocks (see the module doc).

    ``calib_ids``: ``[n, seq]`` calibration tokens (never the test split) for the similarity rule
    ``output``, the input-weighted init and the normalisation; ``train_ids`` (default: ``calib_ids``) for
    the ``steps`` of training, ``train_batch`` windows a step. ``batch_size``: windows per calibration
    forward. ``shared``: {dropped: kept} overrides the similarity rule.
    """
    for name, v, allowed in (("similarity", similarity, SIMILARITY), ("norm", norm, NORMS), ("init", init, INITS),
                             ("vectors", vectors, VECTORS), ("loss", loss, LOSSES)):
        check_choice(name, v, allowed)
    if calib_ids.dim() != 2 or calib_ids.shape[0] < 1:
        raise ConfigError(f"calib_ids must be [n_samples, seq_len], got shape {tuple(calib_ids.shape)}")
    fam = get_family(model)
    dims = fam.dims(model.config)
    check_plan(plan, dims)
    role_rank(rank, (1, 1))
    dropped, cands = _dropped_and_candidates(plan, dims)
    model.eval()
    calib_ids = calib_ids.to(next(model.parameters()).device)
    dense = fam.decoder_layers(model)
    inputs, grams = _dense_pass(model, fam, calib_ids if init == "asvd" else calib_ids[:8], dropped, batch_size,
                                8 if similarity == "output" else 0, init == "asvd") if similarity == "output" or init == "asvd" else ({}, {})
    scores = {"svd": lambda: _svd_scores(fam, dense, dropped, cands, rank), "nearest": lambda: None,
              "output": lambda: _output_scores(dense, dropped, cands, inputs)}[similarity]()
    pairs = {**choose_shared(scores, dropped, cands), **(shared or {})}
    bad = {i: j for i, j in pairs.items() if i not in dropped or j not in cands}
    if bad:
        raise ConfigError(f"flexi shared={bad}: keys must be dropped layers {dropped}, values full-width kept layers {cands}")
    out = _assemble(model, plan, pairs, lambda i, j: replacement_block(fam, dense[i], j, rank, norm, vectors, grams.get(i)), subnet)
    if norm != "none":
        _fit_normalisation(out, dense, calib_ids, norm, batch_size)
    train_ids = calib_ids if train_ids is None else train_ids.to(calib_ids.device)
    losses = train_replacements(out, train_ids, steps, lr, train_batch, loss, teacher=model, progress=progress) if steps else []
    settings = {"rank": rank, "similarity": similarity, "norm": norm, "init": init, "vectors": vectors, "steps": steps, "lr": lr, "loss": loss,
                "train_batch": train_batch, "train_tokens": steps * train_batch * int(train_ids.shape[1]),
                "n_samples": int(calib_ids.shape[0]), "seq_len": int(calib_ids.shape[1])}
    flexi = {**settings, "replaced": replacement_record(fam, fam.decoder_layers(out), pairs), "losses": _thin(losses),
             "scores": None if scores is None else {str(i): round(scores[i, j], 6) for i, j in pairs.items() if (i, j) in scores}}
    flexi["was_nonstock"] = bool(out.config.nas_llm.get("nonstock"))  # materialize() restores the stock fields otherwise
    out.config.nas_llm = {**out.config.nas_llm, "flexi": flexi, "reform": {"method": "flexi", **settings}}
    mark_nonstock(out.config)  # stock classes would re-initialise the shared maps: only load_subnet may load the compact form
    return out


# -- training --------------------------------------------------------------------------------------


def _thin(losses: list[float], n: int = 20) -> list[float]:
    """At most n evenly spaced losses, the first and the last included (the record in config.json)."""
    idx = sorted({round(t * (len(losses) - 1) / (n - 1)) for t in range(n)}) if losses else []
    return [round(losses[k], 5) for k in idx]


def _kd(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """Mean over positions of KL(teacher || student) of the next-token distributions."""
    t, s = F.log_softmax(teacher.float(), -1), F.log_softmax(student.float(), -1)
    return (t.exp() * (t - s)).sum(-1).mean()


def train_replacements(model: nn.Module, ids: torch.Tensor, steps: int, lr: float = DEFAULTS["lr"], batch_size: int = DEFAULTS["train_batch"],
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
