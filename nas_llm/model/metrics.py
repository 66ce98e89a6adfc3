"""Perplexity: exp of the mean next-token cross-entropy over all predicted tokens.

The LM head is applied in chunks of tokens (:func:`head_row_nll`): a 49k-vocabulary head on 2 x 2048
tokens would otherwise materialise (and ``cross_entropy`` copy) 805 MB of logits per batch. Each chunk's
logits are reduced to ``logsumexp - target logit`` in float32 right away, which is what
``F.cross_entropy`` computes, so the value is the same up to float32 rounding (tested to 1e-6).
"""
from __future__ import annotations

import math

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


def head_row_kl(hidden: torch.Tensor, ref: torch.Tensor, head: nn.Linear, chunk: int = DEFAULT_HEAD_CHUNK) -> torch.Tensor:
    """Summed ``KL(p_ref || p)`` per row (float64, nats) over the predicted positions (all but the last), where
    ``p = softmax(head(hidden))`` and ``p_ref = softmax(head(ref))``; both ``[b, L, d]`` final hidden states.

    Why: a cut's effect on the next-token *distribution* is measured on every vocabulary entry, not only on the one
    token the text happens to hold, so on a few short windows it is far less noisy than the change of the NLL (whose
    expectation it is when the text follows the reference model). Chunked like :func:`head_row_nll`.
    """
    if hidden.shape != ref.shape:
        raise ValueError(f"hidden states {tuple(hidden.shape)} and reference {tuple(ref.shape)} differ in shape")
    b, L, d = hidden.shape
    h, r = hidden[:, :-1].reshape(-1, d), ref[:, :-1].reshape(-1, d).to(hidden.device)
    out = torch.empty(h.shape[0], dtype=torch.float64, device=h.device)
    step = h.shape[0] if chunk <= 0 else int(chunk)
    for s in range(0, h.shape[0], step):
        logq = torch.log_softmax(head(h[s : s + step]).float(), dim=-1)
        logp = torch.log_softmax(head(r[s : s + step]).float(), dim=-1)
        out[s : s + step] = (logp.exp() * (logp - logq)).sum(-1).double()
    return out.view(b, L - 1).sum(1)


def final_hidden(model: nn.Module, ids: torch.Tensor) -> torch.Tensor:
    """The final (normed) hidden states ``[b, L, d]`` that the LM head reads (chunkable models only)."""
    if not chunkable(model):
        raise ValueError(f"{type(model).__name__} transforms its logits after the LM head (one of "
                         f"{', '.join(_LOGIT_TRANSFORMS)}); its KL divergence needs the full logits: use the NLL instead")
    return model.base_model(input_ids=ids, use_cache=False).last_hidden_state


def row_kl(model: nn.Module, ids: torch.Tensor, ref: torch.Tensor, head_chunk: int = DEFAULT_HEAD_CHUNK) -> torch.Tensor:
    """Summed ``KL(reference || model)`` per row of ``ids``; ``ref``: the reference model's :func:`final_hidden`."""
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
