"""A decoder block stored as another block's weights plus low-rank adapters (FlexiGPT's replacement block).

The replacement for a dropped block i is a copy of block i's own decoder-layer object (the stock
forward, attention/rotary/cache code and per-layer attributes such as the sliding-window type stay)
whose seven linears are :class:`SharedLowRankLinear`: block j's ``nn.Linear`` *by reference* plus
``B @ A`` (rank r) and an optional per-channel output scale/shift. Block j's weight is not registered
in the replacement, so ``model.parameters()``, ``state_dict()`` and the safetensors file hold it once:
that file is the compact export, and :func:`rebuild` turns a freshly built model back into it for
``nas_llm.load_subnet``. :func:`materialize` folds every replacement into plain ``nn.Linear`` weights
(``s * (W_j + B A)``, bias ``s * b + t``): a stock model of the original depth.

The replacement also owns its norm weights (RMSNorm, Qwen3's q/k norms) and biases (Qwen2's q/k/v),
initialised from block i (``vectors="pruned"``) or j (``"shared"``).
"""
from __future__ import annotations

import copy
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from nas_llm.errors import ConfigError
from search_spaces import get_family
from search_spaces.family import Family, ModelDims

from .slicing import mark_nonstock, unmark_nonstock

ROLES = ("q", "k", "v", "o", "gate", "up", "down")
NORMED = ("o", "down")  # the maps whose outputs are the block's two residual updates
NORMS = ("lsq", "affine", "scale", "none")
VECTORS = ("pruned", "shared")


class SharedLowRankLinear(nn.Module):
    """``y = s * (x W^T + (x A^T) B^T + b) + t`` with W block j's weight, held by reference (stored once)."""

    def __init__(self, shared: nn.Linear, A: torch.Tensor, B: torch.Tensor, bias: torch.Tensor | None = None,
                 scale: torch.Tensor | None = None, shift: torch.Tensor | None = None):
        super().__init__()
        self._shared = (shared,)  # a tuple is not registered: the weight stays block j's, counted and saved once
        self.in_features, self.out_features = shared.in_features, shared.out_features
        self.A, self.B = nn.Parameter(A), nn.Parameter(B)  # [r, in], [out, r]
        self.bias = None if bias is None else nn.Parameter(bias)
        self.scale = None if scale is None else nn.Parameter(scale)
        self.shift = None if shift is None else nn.Parameter(shift)

    @property
    def shared(self) -> nn.Linear:
        return self._shared[0]

    @property
    def rank(self) -> int:
        return self.A.shape[0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.linear(x, self.shared.weight, self.bias)
        if self.rank:
            y = y + F.linear(F.linear(x, self.A), self.B)
        if self.scale is not None:
            y = y * self.scale
        if self.shift is not None:
            y = y + self.shift
        return y

    @torch.no_grad()
    def materialize(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(weight, bias) of the one dense Linear computing the same map."""
        W, b = self.shared.weight + self.B @ self.A, self.bias
        if self.scale is not None:
            W = W * self.scale[:, None]
            b = None if b is None else b * self.scale
        if self.shift is not None:
            b = self.shift if b is None else b + self.shift
        return W, (None if b is None else b.clone())

    def extra_repr(self) -> str:
        return (f"in={self.in_features}, out={self.out_features}, rank={self.rank}, bias={self.bias is not None}, "
                f"scale={self.scale is not None}, shift={self.shift is not None}")


def check_choice(name: str, value: Any, allowed: tuple) -> None:
    if value not in allowed:
        raise ConfigError(f"flexi {name}={value!r}; choose one of {', '.join(map(str, allowed))}")


def role_rank(rank: int | str, shape: tuple[int, int]) -> int:
    """Adapter rank of one map: ``rank`` capped at full (the smaller dimension); "full" = that cap."""
    if rank == "full":
        return min(shape)
    if isinstance(rank, bool) or not isinstance(rank, int) or rank < 0:
        raise ConfigError(f"flexi rank must be an int >= 0 or 'full', got {rank!r}")
    return min(rank, *shape)


def _norm_modules(fam: Family, layer: nn.Module) -> list[nn.Module]:
    att = fam.attention(layer)
    return [getattr(layer, n) for n in fam.layer_norms] + [getattr(att, n) for n in fam.head_norms]


def _role_shapes(dims: ModelDims) -> dict[str, tuple[int, int]]:
    """(out, in) of each map at full width."""
    h, q, kv, i = dims.hidden, dims.num_heads * dims.head_dim, dims.num_kv_heads * dims.head_dim, dims.intermediate
    return {"q": (q, h), "k": (kv, h), "v": (kv, h), "o": (h, q), "gate": (i, h), "up": (i, h), "down": (h, i)}


def _role_bias(dims: ModelDims, role: str) -> bool:
    return {"q": dims.attention_bias, "k": dims.attention_bias, "v": dims.attention_bias, "o": dims.o_bias}.get(role, dims.mlp_bias)


def extra_params(dims: ModelDims, rank: int | str, norm: str) -> int:
    """Parameters one replacement stores besides the shared block: adapters, biases, norm vectors, normalisation."""
    check_choice("norm", norm, NORMS)
    n = sum(role_rank(rank, s) * sum(s) + (s[0] if _role_bias(dims, r) else 0) for r, s in _role_shapes(dims).items())
    n += dims.num_layer_norms * dims.hidden + dims.num_head_norms * dims.head_dim
    return n + {"lsq": 4, "affine": 4, "scale": 2, "none": 0}[norm] * dims.hidden


def stored_params(model: nn.Module) -> int:
    """Parameters a model stores: each tensor once (a replacement's shared weights are block j's)."""
    return sum(p.numel() for p in model.parameters())


def low_rank(D: torch.Tensor, r: int, H: torch.Tensor | None = None, damp: float = 0.01) -> tuple[torch.Tensor, torch.Tensor]:
    """(A [r, in], B [out, r]) with B A the best rank-r approximation of D: in Frobenius norm (Eckart-Young),
    or, given the Gram H = X X^T of the map's inputs, in ``||(D - B A) X||_F`` (whitened SVD: D L = U S V^T
    with H = L L^T, B A = U_r S_r V_r^T L^-1). ``damp``: relative diagonal added to H. Exact at full rank."""
    D = D.double()
    if H is None:
        U, S, Vh = torch.linalg.svd(D, full_matrices=False)
        root = S[:r].sqrt()
        return root[:, None] * Vh[:r], U[:, :r] * root
    H = H.double()
    L = torch.linalg.cholesky(H + damp * H.diagonal().mean().clamp_min(1e-12) * torch.eye(H.shape[0], dtype=H.dtype, device=H.device))
    U, S, Vh = torch.linalg.svd(D @ L, full_matrices=False)
    root = S[:r].sqrt()
    A = torch.linalg.solve_triangular(L.T, (root[:, None] * Vh[:r]).T, upper=True).T  # (root Vh_r) L^-1
    return A, U[:, :r] * root


@torch.no_grad()
def replacement_block(fam: Family, block_i: nn.Module, block_j: nn.Module, rank: int | str, norm: str, vectors: str,
                      grams: dict[str, torch.Tensor] | None = None) -> nn.Module:
    """A copy of block i's layer whose maps are block j's plus the rank-r truncated SVD of ``W_i - W_j``
    (input-weighted when ``grams`` gives each map's input Gram matrix, see :func:`low_rank`).

    Normalisation tensors start at the identity (the caller fits them on calibration data).
    """
    check_choice("norm", norm, NORMS)
    check_choice("vectors", vectors, VECTORS)
    new = copy.deepcopy(block_i)
    lin_i, lin_j = fam.linears(block_i), fam.linears(block_j)
    for role in ROLES:
        Wi, Wj = lin_i[role].weight.detach(), lin_j[role].weight.detach()
        if Wi.shape != Wj.shape:
            raise ValueError(f"flexi: {role} of the shared block has shape {tuple(Wj.shape)}, the dropped block's "
                             f"{tuple(Wi.shape)}; only full-width kept blocks can be shared")
        r = role_rank(rank, tuple(Wi.shape))
        A, B = low_rank(Wi - Wj, r, None if grams is None else grams[role]) if r else (Wi.new_zeros(0, Wi.shape[1]), Wi.new_zeros(Wi.shape[0], 0))
        b = (lin_i if vectors == "pruned" else lin_j)[role].bias
        normed = role in NORMED and norm != "none"
        scale = Wi.new_ones(Wi.shape[0]) if normed else None
        shift = Wi.new_zeros(Wi.shape[0]) if normed and norm != "scale" else None
        fam.set_linear(new, role, SharedLowRankLinear(lin_j[role], A.to(Wi.dtype), B.to(Wi.dtype),
                                                      None if b is None else b.detach().clone(), scale, shift))
    if vectors == "shared":
        for mine, theirs in zip(_norm_modules(fam, new), _norm_modules(fam, block_j)):
            mine.weight.data.copy_(theirs.weight)
    return new


def replacement_record(fam: Family, layers: nn.ModuleList, pairs: dict[int, int]) -> list[dict]:
    """What :func:`rebuild` needs per replacement: position, shared block, ranks, which optional tensors exist."""
    out = []
    for p, j in sorted(pairs.items()):
        lins = fam.linears(layers[p])
        out.append({"layer": p, "shares": j, "ranks": {r: m.rank for r, m in lins.items()},
                    **{k: [r for r, m in lins.items() if getattr(m, k) is not None] for k in ("bias", "scale", "shift")}})
    return out


def replacements(model: nn.Module) -> list[dict]:
    """The replacement records of a flexi model (``config.nas_llm["flexi"]["replaced"]``); [] for any other."""
    return ((getattr(model.config, "nas_llm", None) or {}).get("flexi") or {}).get("replaced", [])


def rebuild(model: nn.Module, replaced: list[dict]) -> None:
    """Give a freshly built model's replaced positions empty (meta) replacement maps to load the compact file into.

    The shared maps are block j's modules themselves, so loading j's weights (``assign=True``) also fills them.
    """
    fam = get_family(model)
    layers = fam.decoder_layers(model)
    for e in replaced:
        src = fam.linears(layers[e["shares"]])
        for role in ROLES:
            lin, r = src[role], int(e["ranks"][role])
            out, inp = lin.out_features, lin.in_features
            meta = lambda *shape: torch.empty(*shape, device="meta", dtype=lin.weight.dtype)  # noqa: E731
            fam.set_linear(layers[e["layer"]], role, SharedLowRankLinear(
                lin, meta(r, inp), meta(out, r), *(meta(out) if role in e[k] else None for k in ("bias", "scale", "shift"))))


@torch.no_grad()
def materialize(model: nn.Module) -> nn.Module:
    """A copy of a flexi model whose replacements are plain ``nn.Linear`` s: the original depth, loadable by stock code.

    A shift (``norm`` lsq/affine) becomes a bias of ``o_proj``/``down_proj``; where the stock class has none,
    the config's ``attention_bias``/``mlp_bias`` flag is set and the other maps get zero biases (LLaMA);
    a family with no such flag gets the bias anyway and is marked non-stock (``nas_llm.load_subnet`` only).
    """
    replaced = replacements(model)
    if not replaced:
        raise ConfigError("materialize: not a flexi model (config.nas_llm has no 'flexi' record)")
    out = copy.deepcopy(model)
    fam = get_family(out)
    dims = fam.dims(out.config)
    layers, added = fam.decoder_layers(out), set()
    for e in replaced:
        for role, lin in fam.linears(layers[e["layer"]]).items():
            W, b = lin.materialize()
            new = nn.Linear(lin.in_features, lin.out_features, bias=b is not None, dtype=W.dtype, device=W.device)
            new.weight.copy_(W)
            if b is not None:
                new.bias.copy_(b)
                added |= set() if _role_bias(dims, role) else {role}
            fam.set_linear(layers[e["layer"]], role, new)
    was_nonstock = bool(out.config.nas_llm["flexi"].get("was_nonstock"))
    out.config.nas_llm = {k: v for k, v in out.config.nas_llm.items() if k != "flexi"} | {"materialized": "flexi"}
    if not was_nonstock:  # plain linears again: the stock fields the subnet had before the shared maps
        unmark_nonstock(out.config)
    if added:
        _bias_slots(out, fam, added)
    return out


def _bias_slots(model: nn.Module, fam: Family, roles: set[str]) -> None:
    """Make added biases loadable: the stock flags that give every layer these biases (zeros elsewhere), or non-stock."""
    layer = fam.decoder_layers(model)[0]
    gives = {}
    for flag in ("attention_bias", "mlp_bias"):
        if hasattr(model.config, flag) and not getattr(model.config, flag):
            cfg = copy.deepcopy(model.config)
            setattr(cfg, flag, True)
            with torch.device("meta"):
                probe = type(layer)(cfg, layer_idx=0)
            gives[flag] = {r for r, m in fam.linears(probe).items() if m.bias is not None}
    flags = [f for f, rs in gives.items() if rs & roles]
    covered = set().union(*(gives[f] for f in flags)) if flags else set()
    if not roles <= covered:
        mark_nonstock(model.config)
        return
    for flag in flags:
        setattr(model.config, flag, True)
    for layer in fam.decoder_layers(model):
        for role, lin in fam.linears(layer).items():
            if role in covered and lin.bias is None:
                lin.bias = nn.Parameter(lin.weight.new_zeros(lin.out_features))
