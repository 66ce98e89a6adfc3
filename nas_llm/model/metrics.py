"""Perplexity: exp of the mean next-token cross-entropy over all predicted tokens."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F


@torch.no_grad()
def nll_sum(model, input_ids: torch.Tensor, batch_size: int = 4) -> tuple[float, int]:
    """Summed next-token negative log-likelihood (float64) and the number of predicted tokens."""
    device = next(model.parameters()).device
    total, count = 0.0, 0
    for i in range(0, input_ids.shape[0], batch_size):
        ids = input_ids[i : i + batch_size].to(device)
        logits = model(input_ids=ids, use_cache=False).logits
        loss = F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]).float(), ids[:, 1:].reshape(-1), reduction="sum")
        total += float(loss.double())
        count += ids[:, 1:].numel()
    return total, count


def perplexity(model, input_ids: torch.Tensor, batch_size: int = 4) -> float:
    total, count = nll_sum(model, input_ids, batch_size)
    return math.exp(total / count)
