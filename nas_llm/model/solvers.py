"""Least-squares solvers for weight reformation: ``(W, H, kept) -> W'`` with ``W'`` zero on the cut columns.

    min_W' ||W' X - W X||_F^2   s.t.  W'[:, cut] = 0,   H = X X^T

- :func:`admm` -- the paper's Theorem 3.1 iteration (projection onto the KEPT columns);
- :func:`closed_form` -- the exact answer ``W'_K = W H[:, K] H[K, K]^-1`` (damped), reference and fast path.

Their own module because two stages use them: :mod:`nas_llm.model.reform` (the final, sequential
reformation of a chosen subnet) and :mod:`objectives.perplexity` (the ``perplexity_reformed``
objective refits every candidate during the search). Damping is described in :mod:`nas_llm.model.reform`.
"""
from __future__ import annotations

import warnings
from typing import Sequence

import torch

from nas_llm.errors import ConfigError

DEFAULT_DAMP = 0.01  # added to diag(H / mean(diag H)); the same relative damping as nas_llm.model.importance
# ADMM penalty in units of the Jacobi-scaled H (unit diagonal). Measured on SmolLM2 o/down maps (layers 0/10/29,
# 40% of channels cut, 16 x 256 tokens): after 30 iterations the reconstruction error is within 0.1-1.2% of the
# exact optimum with rho = 0.1 and within 0.1-11% with rho = 1; without the scaling, 2-44%.
DEFAULT_RHO = 0.1
DEFAULT_ITERS = 30


def _prepare(W: torch.Tensor, H: torch.Tensor, kept: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """float64 W, H scaled to mean diagonal 1, and a 0/1 mask of kept input columns; validates shapes."""
    if W.dim() != 2 or H.dim() != 2 or H.shape[0] != H.shape[1] or H.shape[0] != W.shape[1]:
        raise ValueError(f"need W [out, in] and H [in, in]; got W {tuple(W.shape)}, H {tuple(H.shape)}")
    n = W.shape[1]
    idx = torch.as_tensor(list(kept), dtype=torch.long)
    if idx.numel() and (int(idx.min()) < 0 or int(idx.max()) >= n):
        raise ValueError(f"kept column indices must lie in [0, {n - 1}], got {int(idx.min())}..{int(idx.max())}")
    keep = torch.zeros(n, dtype=torch.float64, device=W.device)
    keep[idx.to(W.device)] = 1
    W64, H64 = W.detach().double(), H.detach().double().to(W.device)
    if not torch.isfinite(H64).all():
        raise ConfigError("H = X X^T has non-finite entries; the calibration activations overflowed (try float32 or a smaller model dtype)")
    H64 = (H64 + H64.T) / 2
    scale = torch.diagonal(H64).mean()
    if not scale > 0:  # all-zero inputs: nothing to fit, any damped solve returns W
        scale = torch.ones((), dtype=torch.float64, device=W.device)
    return W64, H64 / scale, keep


def _cholesky(A: torch.Tensor, what: str) -> torch.Tensor:
    """Cholesky factor of a (damped) Gram matrix, adding diagonal jitter if round-off made it indefinite."""
    jitter = 0.0
    eye = torch.eye(A.shape[0], dtype=A.dtype, device=A.device)
    for _ in range(8):
        L, info = torch.linalg.cholesky_ex(A + jitter * eye)
        if int(info) == 0:
            if jitter:
                warnings.warn(f"{what}: Gram matrix not positive definite, added {jitter:g} to its diagonal", RuntimeWarning, stacklevel=3)
            return L
        jitter = 1e-6 if jitter == 0 else jitter * 10
    raise ConfigError(f"{what}: Gram matrix is not positive definite even with jitter {jitter:g}")


def _finite_or_masked(Wn: torch.Tensor, W64: torch.Tensor, keep: torch.Tensor, what: str) -> torch.Tensor:
    if torch.isfinite(Wn).all():
        return Wn
    warnings.warn(f"{what} produced non-finite weights; falling back to the unreformed (masked) weights", RuntimeWarning, stacklevel=3)
    return W64 * keep


def closed_form(W: torch.Tensor, H: torch.Tensor, kept: Sequence[int], damp: float = DEFAULT_DAMP) -> torch.Tensor:
    """Exact least squares: W'_K = W Hd[:, K] Hd[K, K]^-1, W'_cut = 0, Hd = H/mean(diag H) + damp I.

    Returned in ``W``'s dtype; cut columns are exactly zero.
    """
    W64, Hn, keep = _prepare(W, H, kept)
    K = keep.nonzero().flatten()
    out = torch.zeros_like(W64)
    if K.numel():
        Hd = Hn + damp * torch.eye(Hn.shape[0], dtype=Hn.dtype, device=Hn.device)
        L = _cholesky(Hd[K][:, K], "closed_form")
        # W'_K^T = Hd[K,K]^-1 Hd[K,:] W^T = W_K^T + Hd[K,K]^-1 Hd[K,C] W_C^T  (Hd symmetric, C = cut):
        # the second form multiplies by the cut columns only (a few times cheaper when few are cut)
        C = (keep == 0).nonzero().flatten()
        out[:, K] = W64[:, K] + torch.cholesky_solve(Hd[K][:, C] @ W64[:, C].T, L).T
    return _finite_or_masked(out, W64, keep, "closed_form").to(W.dtype)


class PrefixFactor:
    """The damped, scaled Gram of one map, Cholesky-factored once in a fixed column order.

    Why: a search refits the same map for many kept sets, and the kept sets come from an importance
    order -- each is a *prefix* of that order. The Cholesky factor of a leading block is the leading
    block of the factor, so with ``A = P^T Hd P = L L^T`` (``Hd`` as in :func:`closed_form`) the exact
    answer for the first ``n`` columns of the order is one triangular solve::

        W'_K^T = W_K^T + A_KK^-1 A_KC W_C^T = W_K^T + L_n^-T (L[n:, :n]^T W_C^T)

    instead of a fresh ``n x n`` factorisation per kept set. A kept set that is not a prefix falls
    back to factoring ``A_KK`` (rebuilt from ``L``). Both equal :func:`closed_form` up to round-off.
    """

    def __init__(self, H: torch.Tensor, order: Sequence[int], damp: float = DEFAULT_DAMP):
        n = H.shape[0]
        order_t = torch.as_tensor(list(order), dtype=torch.long)
        if H.dim() != 2 or H.shape[1] != n or sorted(order_t.tolist()) != list(range(n)):
            raise ValueError(f"need a square H and a permutation of its {n} columns; got H {tuple(H.shape)}, "
                             f"order of {order_t.numel()} entries")
        _, Hn, _ = _prepare(torch.zeros(1, n, dtype=H.dtype, device=H.device), H, [])
        Hd = Hn + damp * torch.eye(n, dtype=Hn.dtype, device=Hn.device)
        self.order = order_t.to(H.device)
        self.pos = torch.empty_like(self.order)
        self.pos[self.order] = torch.arange(n, device=H.device)  # column -> its place in the order
        self.L = _cholesky(Hd[self.order][:, self.order], "PrefixFactor")

    @property
    def bytes(self) -> int:
        return self.L.numel() * self.L.element_size()

    def errors(self, W: torch.Tensor, sizes: Sequence[int]) -> list[float]:
        """The refit's error ``tr((W'-W) A (W'-W)^T)`` when only the first ``k`` columns of the order stay, per ``k``.

        ``A`` is the damped, scaled Gram (unit mean diagonal). The error left after the best refit is the
        Schur complement's, ``||W_C L_CC||^2``, and since ``L`` is lower triangular ``W_C L_CC`` is the
        trailing block of ``W_p L``: one product gives every ``k`` (suffix sums of its column norms).
        """
        M = W.detach().double()[:, self.order] @ self.L
        tail = (M * M).sum(0).flip(0).cumsum(0).flip(0)  # tail[j] = sum over columns >= j
        n = self.L.shape[0]
        return [float(tail[k]) if k < n else 0.0 for k in sizes]

    def refit(self, W: torch.Tensor, kept: Sequence[int]) -> torch.Tensor:
        """The kept columns of the exact refit of ``W`` (``[out, len(kept)]``, in ascending column order)."""
        n = self.L.shape[0]
        if W.dim() != 2 or W.shape[1] != n:
            raise ValueError(f"W must be [out, {n}], got {tuple(W.shape)}")
        K = torch.as_tensor(sorted(int(k) for k in kept), dtype=torch.long, device=W.device)
        if K.numel() == 0:
            return W.new_zeros(W.shape[0], 0)
        p = self.pos[K].sort().values  # the kept columns' places in the order
        Wp = W.detach().double()[:, self.order]
        k = p.numel()
        if int(p[-1]) == k - 1:  # a prefix of the order: the leading block of L
            Ln, Lc = self.L[:k, :k], self.L[k:, :k]
            WK = Wp[:, :k] + torch.linalg.solve_triangular(Ln.T, Lc.T @ Wp[:, k:].T, upper=True).T
        else:
            c = torch.ones(n, dtype=torch.bool, device=W.device)
            c[p] = False
            rows = self.L[p] @ self.L.T  # A[K, :]
            Lk = _cholesky(rows[:, p], "PrefixFactor")
            WK = Wp[:, p] + torch.cholesky_solve(rows[:, c] @ Wp[:, c].T, Lk).T
        # back from the order to ascending column order
        out = WK[:, self.order[p].argsort()]
        if not torch.isfinite(out).all():
            warnings.warn("PrefixFactor produced non-finite weights; falling back to the unreformed weights",
                          RuntimeWarning, stacklevel=2)
            out = W.detach().double()[:, K]
        return out.to(W.dtype).contiguous()


def admm(W: torch.Tensor, H: torch.Tensor, kept: Sequence[int], rho: float = DEFAULT_RHO, iters: int = DEFAULT_ITERS,
         damp: float = DEFAULT_DAMP, precondition: bool = True, history: list[float] | None = None) -> torch.Tensor:
    """ADMM for the same problem (the paper's Theorem 3.1), on the damped, scaled H.

        W'^T = (Hd + rho I)^-1 (Hd W^T + rho (Z - U)^T);  Z = P_kept(W' + U);  U += W' - Z

    starting from W' = Z = W, U = 0. ``Z`` is returned, so the cut columns are exactly zero.

    The projection is onto the *kept* columns: Z is the copy of W' that must satisfy the
    constraint W'[:, cut] = 0, so P keeps the kept columns and zeroes the cut ones. The paper's
    Eq. 8 (and its released code) project onto the *pruned* set instead; then Z lives on the removed
    channels, the consensus W' = Z forces the *kept* weights to zero, and the result uses exactly the
    channels that the slicing throws away -- after slicing, the model would get an all-zero map.

    Scaling: the paper's rho = 1 on the raw X X^T of an LLM layer (diagonal ~1e1..1e6, differing by
    channel) barely moves W' in 30 iterations. With ``precondition`` (default) the problem is solved for
    V = W' D^1/2 with Hs = D^-1/2 Hd D^-1/2, D = diag(Hd): the same problem with the same zero pattern
    (columns are only rescaled), but unit diagonal, so one ``rho`` (default 0.1) suits every layer; without
    it, H is only scaled by its mean diagonal. ``history`` (if given) receives the relative change
    ||Z_k - Z_{k-1}|| / ||Z_k|| per iteration.
    """
    if rho <= 0 or iters < 1:
        raise ConfigError(f"ADMM needs rho > 0 and iters >= 1, got rho={rho}, iters={iters}")
    W64, Hn, keep = _prepare(W, H, kept)
    n = Hn.shape[0]
    eye = torch.eye(n, dtype=Hn.dtype, device=Hn.device)
    Hd = Hn + damp * eye
    d = torch.ones(n, dtype=Hn.dtype, device=Hn.device)
    if precondition:  # V = W' D^1/2, Hs = D^-1/2 Hd D^-1/2: same problem, same zero pattern, unit diagonal
        d = torch.diagonal(Hd).sqrt()
        Hd = Hd / d[:, None] / d[None, :]
    # (Hd + rho I)^-1 explicitly: its eigenvalues are >= rho, so it is well conditioned, and each
    # iteration is then one GEMM instead of two triangular solves
    Minv = torch.cholesky_inverse(_cholesky(Hd + rho * eye, "admm"))
    Vt = W64.T * d[:, None]  # [in, out]: work transposed
    C = Minv @ (Hd @ Vt)  # constant over the iterations
    rMinv = rho * Minv
    Zt, Ut = Vt.clone(), torch.zeros_like(Vt)
    mask = keep[:, None]
    for _ in range(iters):
        Wt = C + rMinv @ (Zt - Ut)
        Z_new = (Wt + Ut) * mask  # projection onto {W : W[:, cut] = 0}
        Ut = Ut + Wt - Z_new
        if history is not None:
            history.append(float(torch.linalg.norm(Z_new - Zt) / torch.linalg.norm(Z_new).clamp_min(1e-300)))
        Zt = Z_new
    return _finite_or_masked((Zt / d[:, None]).T.contiguous(), W64, keep, "admm").to(W.dtype)


def bias_shift(W: torch.Tensor, mean_x: torch.Tensor, kept: Sequence[int]) -> torch.Tensor:
    """FLAP's bias compensation: W[:, cut] @ mean(X[cut]), the mean contribution of the cut channels."""
    keep = torch.zeros(W.shape[1], dtype=torch.bool, device=W.device)
    keep[torch.as_tensor(list(kept), dtype=torch.long, device=W.device)] = True
    W64 = W.detach().double()
    return (W64[:, ~keep] @ mean_x.double().to(W.device)[~keep]).to(W.dtype)


def reconstruction_error(W_new: torch.Tensor, W: torch.Tensor, H: torch.Tensor) -> float:
    """||W' X - W X||_F^2 = tr((W'-W) H (W'-W)^T), from H alone."""
    D = (W_new.double() - W.double())
    return float(torch.einsum("oi,ij,oj->", D, H.double(), D))


def solve(method: str, W: torch.Tensor, H: torch.Tensor, kept: Sequence[int], *, rho: float = DEFAULT_RHO,
          iters: int = DEFAULT_ITERS, damp: float = DEFAULT_DAMP) -> torch.Tensor:
    """Dispatch to :func:`admm` or :func:`closed_form` (``"exact"``)."""
    if method == "admm":
        return admm(W, H, kept, rho=rho, iters=iters, damp=damp)
    if method == "exact":
        return closed_form(W, H, kept, damp=damp)
    raise ConfigError(f"solve() takes 'admm' or 'exact', got {method!r}")
