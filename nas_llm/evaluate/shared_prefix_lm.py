"""lm-eval's ``HFLM`` with multiple-choice requests scored once per context, for CPU-sized budgets.

``HFLM`` runs ``context + continuation`` through the model for every answer choice and takes the
log-softmax over the whole vocabulary at every position. For a 4-choice task that is 4 forwards of
the shared context, and the LM head (21 % of SmolLM2's FLOPs, 49 152 outputs) at positions whose
logits are thrown away. Here requests are grouped by their (already tokenised, already truncated)
context: the context runs once, its KV cache is repeated for the choices, and the choices' tokens
run in one batch on top of it; the LM head runs only where a continuation token is predicted.

The numbers are the ones ``HFLM`` defines (same tokenisation through ``HFLM._encode_pair``, same
left truncation to ``max_length``, same greedy check); they differ from ``HFLM``'s only by float
rounding of the cached attention (``tests/test_evaluate.py`` compares both).
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from lm_eval.models.huggingface import HFLM
from tqdm.auto import tqdm

from nas_llm.errors import ConfigError


class SharedPrefixLM(HFLM):
    """``HFLM`` whose log-likelihoods share each context's forward among its continuations."""

    @torch.no_grad()
    def _loglikelihood_tokens(self, requests: list[tuple[tuple[str, str], list[int], list[int]]],
                              disable_tqdm: bool = False, override_bs: int | None = None) -> list[tuple[float, bool]]:
        if self.backend != "causal":  # seq2seq models have no shared decoder prefix to reuse
            return super()._loglikelihood_tokens(requests, disable_tqdm, override_bs)
        groups: dict[tuple[int, ...], list[tuple[int, list[int]]]] = {}
        for i, (_, ctx, cont) in enumerate(requests):
            if not ctx or not cont or len(cont) > self.max_length:
                raise ConfigError(f"request {i}: context and continuation must be non-empty and the continuation at most "
                                 f"{self.max_length} tokens (got {len(ctx)} / {len(cont)})")
            whole = (ctx + cont)[-(self.max_length + 1):]  # HFLM's left truncation
            groups.setdefault(tuple(whole[: len(whole) - len(cont)]), []).append((i, cont))
        out: list[tuple[float, bool] | None] = [None] * len(requests)
        chunk = max(1, int(self.batch_size) if str(self.batch_size).isdigit() else 8)
        bar = tqdm(total=len(requests), disable=disable_tqdm or self.rank != 0, desc="loglikelihood (shared contexts)")
        # longest contexts first, as HFLM does, so memory problems show at once
        for ctx, members in sorted(groups.items(), key=lambda kv: -len(kv[0])):
            for s in range(0, len(members), chunk):
                part = members[s : s + chunk]
                for (i, cont), res in zip(part, self._score_group(list(ctx), [c for _, c in part])):
                    out[i] = res
                    self.cache_hook.add_partial("loglikelihood", requests[i][0], res)
                bar.update(len(part))
        bar.close()
        return out  # type: ignore[return-value]

    def _score_group(self, ctx: list[int], conts: list[list[int]]) -> list[tuple[float, bool]]:
        """Sum log p(cont | ctx) and whether cont is the greedy decode, for continuations of one context."""
        dev = self.device
        model = self.model
        first = model(input_ids=torch.tensor([ctx], device=dev), use_cache=True, logits_to_keep=1)
        first_logp = F.log_softmax(first.logits[0, -1].to(self.softmax_dtype), dim=-1)  # predicts cont[0]
        k, m = len(conts), max(len(c) for c in conts) - 1
        rest = None
        if m > 0:  # the continuations' own tokens (all but the last), right-padded: padding only sees itself
            cache = first.past_key_values
            if k > 1:
                cache.batch_repeat_interleave(k)
            ids = torch.zeros((k, m), dtype=torch.long, device=dev)
            for j, c in enumerate(conts):
                ids[j, : len(c) - 1] = torch.tensor(c[:-1], dtype=torch.long)
            rest = model(input_ids=ids, past_key_values=cache, use_cache=True).logits
        results = []
        for j, c in enumerate(conts):
            logp = first_logp.unsqueeze(0)
            if len(c) > 1:
                logp = torch.cat([logp, F.log_softmax(rest[j, : len(c) - 1].to(self.softmax_dtype), dim=-1)])  # type: ignore[index]
            target = torch.tensor(c, device=logp.device)
            ll = float(logp.gather(1, target[:, None]).sum())
            greedy = bool((logp.argmax(-1) == target).all())
            results.append((ll, greedy))
        return results


def make_lm(model: Any, tokenizer: Any, batch_size: int = 8, device: str | None = None, shared_prefix: bool = True) -> HFLM:
    """The lm-eval model wrapper used by :func:`nas_llm.evaluate.zeroshot`."""
    cls = SharedPrefixLM if shared_prefix else HFLM
    return cls(pretrained=model, tokenizer=tokenizer, batch_size=batch_size, device=device)
