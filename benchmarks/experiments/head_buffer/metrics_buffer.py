"""The buffered head measured in ``ab_objective.py``: only the functions that differ from ``nas_llm/model/metrics.py``
(main at commit 39be76d, which the A/B calls "before"); everything else is imported from there."""
from __future__ import annotations

import math

import torch
import torch.nn as nn

from nas_llm.model.metrics import DEFAULT_HEAD_CHUNK, HeadReference, head_reference


def _logits_chunks(h: torch.Tensor, head: nn.Linear, step: int):
    """``(start, end, float32 logits of h[start:end])`` per chunk of ``step`` rows, all written into *one* buffer.

    Why: a fresh ``[256, 49k]`` float32 tensor per chunk is 48 MB, above glibc's largest mmap threshold (32 MB), so
    every chunk was a new mapping the kernel had to fault in and zero; reusing one buffer per call made the head
    ~20 % faster at 2 threads (benchmarks/RESULTS.md, "LM head: one buffer, in-place logsumexp"). The values are the
    same product: ``torch.mm(x, W.T, out=buf)`` is what ``F.linear`` runs; under ``torch.autocast`` (bfloat16
    screening) the head runs as the autocast dtype says and its logits are copied into the float32 buffer, as
    ``.float()`` did. The chunk's logits are overwritten by the next chunk: reduce them before asking for it.
    """
    n = h.shape[0]
    if torch.is_grad_enabled() and (h.requires_grad or head.weight.requires_grad):
        for s in range(0, n, step):  # autograd: fresh tensors, as before (out= products are not differentiable)
            yield s, min(s + step, n), head(h[s : s + step]).float()
        return
    buf = torch.empty(min(step, n), head.out_features, dtype=torch.float32, device=h.device)
    plain = h.dtype == torch.float32 and head.weight.dtype == torch.float32 and \
        not torch.is_autocast_enabled(h.device.type)
    wt = head.weight.t()
    for s in range(0, n, step):
        e = min(s + step, n)
        out = buf[: e - s]
        if plain:
            if head.bias is None:
                torch.mm(h[s:e], wt, out=out)
            else:
                torch.addmm(head.bias, h[s:e], wt, out=out)
        else:
            out.copy_(head(h[s:e]))
        yield s, e, out


def logsumexp_(z: torch.Tensor) -> torch.Tensor:
    """``torch.logsumexp(z, -1)`` for a 2-d ``z`` that may be overwritten: the same arithmetic (``amax``, then
    ``log(sum(exp(z - max))) + max``, an infinite max replaced by 0 as ATen does) without ATen's ``z - max`` copy."""
    if z.requires_grad:
        return torch.logsumexp(z, dim=-1)
    m = z.amax(-1, keepdim=True)
    m.masked_fill_(m.abs() == math.inf, 0)
    return z.sub_(m).exp_().sum(-1).log_().add_(m.squeeze(-1))


def head_row_nll(hidden: torch.Tensor, head: nn.Linear, ids: torch.Tensor, chunk: int = DEFAULT_HEAD_CHUNK) -> torch.Tensor:
    """Summed next-token NLL per row (float64) from final hidden states ``[b, L, d]`` and targets ``ids [b, L]``.

    Logits exist for ``chunk`` tokens at a time only (one reused buffer, :func:`_logits_chunks`). Under
    ``torch.autocast`` the head runs in the autocast dtype; each chunk's logits are reduced in float32 either way.
    """
    b, L, d = hidden.shape
    h = hidden[:, :-1].reshape(-1, d)
    target = ids[:, 1:].reshape(-1).to(h.device)
    out = torch.empty(h.shape[0], dtype=torch.float64, device=h.device)
    step = h.shape[0] if chunk <= 0 else int(chunk)
    for s, e, logits in _logits_chunks(h, head, step):
        picked = logits.gather(1, target[s:e, None]).squeeze(1)  # before logsumexp_ overwrites the logits
        out[s:e] = (logsumexp_(logits) - picked).double()
    return out.view(b, L - 1).sum(1)


def head_row_kl(hidden: torch.Tensor, ref: "torch.Tensor | HeadReference", head: nn.Linear,
                chunk: int = DEFAULT_HEAD_CHUNK) -> torch.Tensor:
    """Summed ``KL(p_ref || p)`` per row (float64, nats) over the predicted positions (all but the last), where
    ``p = softmax(head(hidden))`` and ``p_ref = softmax(head(ref))``; ``hidden``: final hidden states ``[b, L, d]``,
    ``ref``: the reference's final hidden states of the same shape, or their :func:`head_reference` (computed once).

    Why: a cut's effect on the next-token *distribution* is measured on every vocabulary entry, not only on the one
    token the text happens to hold, so on a few short windows it is far less noisy than the change of the NLL (whose
    expectation it is when the text follows the reference model). Chunked like :func:`head_row_nll`: one head
    product per chunk, reduced to ``neg_entropy + logsumexp(z - E_p[z])``. The reference side is float64 (see
    :func:`head_reference`); the candidate's float32 logits move the result by ``q . dz`` for a rounding ``dz``.
    """
    b, L, d = hidden.shape
    if isinstance(ref, torch.Tensor):
        if ref.shape != hidden.shape:
            raise ValueError(f"hidden states {tuple(hidden.shape)} and reference {tuple(ref.shape)} differ in shape")
        ref = head_reference(ref.to(hidden.device), head, chunk)
    elif ref.shape != (b, L - 1):
        raise ValueError(f"hidden states {tuple(hidden.shape)} and reference of {ref.shape} predicted positions "
                         f"differ in shape")
    h = hidden[:, :-1].reshape(-1, d)
    neg_ent, mean_row, mean_bias = (t.reshape(h.shape[0], *t.shape[2:]).to(h.device) for t in
                                    (ref.neg_entropy, ref.mean_row, ref.mean_bias))
    out = torch.empty(h.shape[0], dtype=torch.float64, device=h.device)
    step = h.shape[0] if chunk <= 0 else int(chunk)
    for s, e, z in _logits_chunks(h, head, step):
        expected = (h[s:e].double() * mean_row[s:e]).sum(-1) + mean_bias[s:e]  # E_p[z], float64
        out[s:e] = neg_ent[s:e] + logsumexp_(z.sub_(expected.float()[:, None])).double()
    return out.view(b, L - 1).sum(1)
