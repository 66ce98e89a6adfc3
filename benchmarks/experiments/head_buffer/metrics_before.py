"""Perplexity: exp of the mean next-token cross-entropy over all predicted tokens.

The LM head is applied in chunks of tokens (:func:`head_row_nll`): a 49k-vocabulary head on 2 x 2048
tokens would otherwise materialise (and ``cross_entropy`` copy) 805 MB of logits per batch. Each chunk's
logits are reduced to ``logsumexp - target logit`` in float32 right away, which is what
``F.cross_entropy`` computes, so the value is the same up to float32 rounding (tested to 1e-6).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

# tokens per LM-head chunk: 256 x 49k float32 logits = 48 MB, about the L3 cache of the CPUs we measured on
# (0 = the plain head: full logits, then cross_entropy)
DEFAULT_HEAD_CHUNK = 256
# config keys that make logits more than lm_head(h): such models keep the plain head
_LOGIT_TRANSFORMS = ("final_logit_softcapping", "logit_scale", "logits_scaling", "output_multiplier_scale")


def chunkable(model: nn.Module) -> bool:
    """Whether ``model``'s logits are ``lm_head(base_model(x))`` with nothing after (so the head may be chunked)."""
    cfg = getattr(model, "config", None)
    if any(getattr(cfg, k, None) not in (None, 1, 1.0) for k in _LOGIT_TRANSFORMS):
        return False
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    base = getattr(model, "base_model", None)
    return isinstance(head, nn.Linear) and base is not None and base is not model


def head_row_nll(hidden: torch.Tensor, head: nn.Linear, ids: torch.Tensor, chunk: int = DEFAULT_HEAD_CHUNK) -> torch.Tensor:
    """Summed next-token NLL per row (float64) from final hidden states ``[b, L, d]`` and targets ``ids [b, L]``.

    Logits exist for ``chunk`` tokens at a time only. Under ``torch.autocast`` the head runs in the
    autocast dtype; each chunk's logits are reduced in float32 either way.
    """
    b, L, d = hidden.shape
    h = hidden[:, :-1].reshape(-1, d)
    target = ids[:, 1:].reshape(-1).to(h.device)
    out = torch.empty(h.shape[0], dtype=torch.float64, device=h.device)
    step = h.shape[0] if chunk <= 0 else int(chunk)
    for s in range(0, h.shape[0], step):
        logits = head(h[s : s + step]).float()
        lse = torch.logsumexp(logits, dim=-1)
        out[s : s + step] = (lse - logits.gather(1, target[s : s + step, None]).squeeze(1)).double()
    return out.view(b, L - 1).sum(1)


@dataclass
class HeadReference:
    """What :func:`head_row_kl` needs of the reference distribution ``p = softmax(W r + b)`` per predicted token:
    its negative entropy ``sum_v p_v log p_v``, and ``E_p[W_v]`` / ``E_p[b_v]`` (float64, ``[b, L-1, d]`` / ``[b, L-1]``).

    Why: ``KL(p || q) = sum_v p_v log p_v - E_p[z] + logsumexp(z)`` for the candidate's logits ``z = W h + b``, and
    ``E_p[z] = h . E_p[W_v] + E_p[b_v]``. So a divergence costs *one* head product (for the logsumexp) instead of
    two plus two log-softmaxes, and the reference is a ``d``-vector per token instead of ``vocab`` log-probabilities.
    """

    neg_entropy: torch.Tensor
    mean_row: torch.Tensor
    mean_bias: torch.Tensor

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(self.neg_entropy.shape)

    def __getitem__(self, rows: slice) -> "HeadReference":
        return HeadReference(self.neg_entropy[rows], self.mean_row[rows], self.mean_bias[rows])


def head_reference(ref: torch.Tensor, head: nn.Linear, chunk: int = DEFAULT_HEAD_CHUNK) -> HeadReference:
    """The :class:`HeadReference` of final hidden states ``ref [b, L, d]`` (predicted positions: all but the last)."""
    b, L, d = ref.shape
    r = ref[:, :-1].reshape(-1, d)
    n = r.shape[0]
    # float64 throughout (once per reference): float32 rounding of p here would not cancel against the
    # candidate's logits, and it biases every divergence by ~1e-4 nats per token (measured on SmolLM2's head)
    W = head.weight.double()
    bias = None if head.bias is None else head.bias.double()
    neg_ent = torch.empty(n, dtype=torch.float64, device=r.device)
    mean_row = torch.empty(n, d, dtype=torch.float64, device=r.device)
    mean_bias = torch.zeros(n, dtype=torch.float64, device=r.device)
    # always chunked, even for chunk 0 (the plain head): float64 logits of a whole batch would be 3x its float32 size
    step = DEFAULT_HEAD_CHUNK if chunk <= 0 else int(chunk)
    for s in range(0, n, step):
        z = r[s : s + step].double() @ W.T
        if bias is not None:
            z = z + bias
        logp = torch.log_softmax(z, dim=-1)
        p = logp.exp()
        neg_ent[s : s + step] = (p * logp).sum(-1)
        mean_row[s : s + step] = p @ W
        if bias is not None:
            mean_bias[s : s + step] = p @ bias
    return HeadReference(neg_ent.view(b, L - 1), mean_row.view(b, L - 1, d), mean_bias.view(b, L - 1))


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
    for s in range(0, h.shape[0], step):
        e = s + step
        expected = (h[s:e].double() * mean_row[s:e]).sum(-1) + mean_bias[s:e]  # E_p[z], float64
        z = head(h[s:e]).float() - expected.float()[:, None]
        out[s:e] = neg_ent[s:e] + torch.logsumexp(z, dim=-1).double()
    return out.view(b, L - 1).sum(1)


def final_hidden(model: nn.Module, ids: torch.Tensor) -> torch.Tensor:
    """The final (normed) hidden states ``[b, L, d]`` that the LM head reads (chunkable models only)."""
    if not chunkable(model):
        raise ValueError(f"{type(model).__name__} transforms its logits after the LM head (one of "
                         f"{', '.join(_LOGIT_TRANSFORMS)}); its KL divergence needs the full logits: use the NLL instead")
    return model.base_model(input_ids=ids, use_cache=False).last_hidden_state


def row_kl(model: nn.Module, ids: torch.Tensor, ref: "torch.Tensor | HeadReference",
           head_chunk: int = DEFAULT_HEAD_CHUNK) -> torch.Tensor:
    """Summed ``KL(reference || model)`` per row of ``ids``; ``ref``: the reference model's :func:`final_hidden`, or
    its :func:`head_reference`."""
    return head_row_kl(final_hidden(model, ids), ref, model.get_output_embeddings(), head_chunk)


def logits_row_nll(logits: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """Summed next-token NLL per row (float64) from full logits ``[b, L, vocab]`` (the plain head)."""
    b, L = ids.shape
    nll = F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]).float(), ids[:, 1:].reshape(-1).to(logits.device),
                          reduction="none")
    return nll.view(b, L - 1).double().sum(1)


def row_nll(model: nn.Module, ids: torch.Tensor, head_chunk: int = DEFAULT_HEAD_CHUNK) -> torch.Tensor:
    """Summed next-token NLL per row of ``ids`` under ``model`` (float64; ``head_chunk=0``: the plain head)."""
    if head_chunk > 0 and chunkable(model):
        hidden = model.base_model(input_ids=ids, use_cache=False).last_hidden_state
        return head_row_nll(hidden, model.get_output_embeddings(), ids, head_chunk)
    return logits_row_nll(model(input_ids=ids, use_cache=False).logits, ids)


@torch.no_grad()
def nll_sum(model, input_ids: torch.Tensor, batch_size: int = 4, head_chunk: int = DEFAULT_HEAD_CHUNK) -> tuple[float, int]:
    """Summed next-token negative log-likelihood (float64) and the number of predicted tokens."""
    device = next(model.parameters()).device
    total, count = 0.0, 0
    for i in range(0, input_ids.shape[0], batch_size):
        ids = input_ids[i : i + batch_size].to(device)
        total += float(row_nll(model, ids, head_chunk).sum())
        count += ids[:, 1:].numel()
    return total, count


def perplexity(model, input_ids: torch.Tensor, batch_size: int = 4, head_chunk: int = DEFAULT_HEAD_CHUNK) -> float:
    total, count = nll_sum(model, input_ids, batch_size, head_chunk)
    return math.exp(total / count)
