"""The chunked LM head is the plain cross-entropy: every family, every chunk size, nll_sum and perplexity."""
from __future__ import annotations

import torch
import torch.nn.functional as F
import pytest

from nas_llm.model.metrics import chunkable, head_row_nll, logits_row_nll, nll_sum, perplexity, row_nll
from tiny import FAMILIES, tiny_model

pytestmark = pytest.mark.usefixtures("one_thread")


def ids_for(model, rows=3, L=21, seed=0):
    return torch.randint(0, model.config.vocab_size, (rows, L), generator=torch.Generator().manual_seed(seed))


def plain_ce(model, ids) -> torch.Tensor:
    """F.cross_entropy on the full logits, summed per row (the reference the chunked head must equal)."""
    with torch.no_grad():
        logits = model(input_ids=ids, use_cache=False).logits
    nll = F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), ids[:, 1:].reshape(-1), reduction="none")
    return nll.view(ids.shape[0], -1).double().sum(1)


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("chunk", [1, 7, 20, 256, 0])
def test_chunked_head_equals_plain_cross_entropy(family, chunk):
    model = tiny_model(family)
    ids = ids_for(model)
    assert chunkable(model)
    with torch.no_grad():
        got = row_nll(model, ids, chunk)
    ref = plain_ce(model, ids)
    assert got.dtype == torch.float64 and got.shape == (ids.shape[0],)
    torch.testing.assert_close(got, ref, rtol=1e-6, atol=0)


def test_chunked_head_against_float64_logits():
    """The chunked value is within float32 round-off of log-softmax done in float64 (an independent reference)."""
    model = tiny_model("llama-gqa")
    ids = ids_for(model, rows=2, L=33, seed=3)
    with torch.no_grad():
        h = model.base_model(input_ids=ids, use_cache=False).last_hidden_state
        logits = h[:, :-1].double() @ model.lm_head.weight.double().T
        ref = -torch.log_softmax(logits, -1).gather(-1, ids[:, 1:, None]).squeeze(-1).sum(1)
        got = head_row_nll(h, model.lm_head, ids, chunk=5)
    torch.testing.assert_close(got, ref, rtol=1e-6, atol=0)


def test_nll_sum_and_perplexity_do_not_depend_on_the_chunk():
    model = tiny_model("qwen3")
    ids = ids_for(model, rows=5, L=17, seed=1)
    tot0, n0 = nll_sum(model, ids, batch_size=2, head_chunk=0)
    tot, n = nll_sum(model, ids, batch_size=2, head_chunk=3)
    assert n == n0 == 5 * 16 and tot == pytest.approx(tot0, rel=1e-6)
    assert perplexity(model, ids, 4, head_chunk=9) == pytest.approx(perplexity(model, ids, 4, head_chunk=0), rel=1e-6)
    assert float(plain_ce(model, ids).sum()) == pytest.approx(tot, rel=1e-6)


def test_models_with_a_logit_transform_keep_the_plain_head():
    model = tiny_model("llama-gqa")
    model.config.final_logit_softcapping = 30.0  # logits are no longer lm_head(h): chunking would be wrong
    assert not chunkable(model)
    ids = ids_for(model)
    with torch.no_grad():
        torch.testing.assert_close(row_nll(model, ids, 4), logits_row_nll(model(input_ids=ids).logits, ids))


def test_bfloat16_head_reduces_in_float32():
    model = tiny_model("llama-gqa")
    ids = ids_for(model, rows=2, L=40)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        got = row_nll(model, ids, 8)
    ref = plain_ce(model, ids)
    assert got.dtype == torch.float64 and torch.isfinite(got).all()
    assert ((got - ref).abs() / ref).max() < 0.05  # bfloat16 body and head: close, not equal
    assert not torch.equal(got, ref)


def test_chunked_kl_equals_full_logits_kl_in_float64():
    """head_row_kl == KL(p_ref || p) from full float64 logits (an independent reference), for any chunk, from the
    reference's hidden states or its precomputed head_reference."""
    from nas_llm.model.metrics import head_reference, head_row_kl, row_kl

    model = tiny_model("llama-gqa")
    ids = ids_for(model, rows=2, L=19, seed=4)
    with torch.no_grad():
        h = model.base_model(input_ids=ids, use_cache=False).last_hidden_state
        ref = h + 0.3 * torch.randn(h.shape, generator=torch.Generator().manual_seed(0))
        W = model.lm_head.weight.double()
        lp, lq = torch.log_softmax(ref[:, :-1].double() @ W.T, -1), torch.log_softmax(h[:, :-1].double() @ W.T, -1)
        want = (lp.exp() * (lp - lq)).sum(-1).sum(1)
        for chunk in (1, 5, 0):
            torch.testing.assert_close(head_row_kl(h, ref, model.lm_head, chunk), want, rtol=1e-6, atol=1e-9)
        assert head_row_kl(h, h, model.lm_head, 4).abs().max() < 1e-5  # a model against itself (float32 rounding)
        torch.testing.assert_close(row_kl(model, ids, ref, 3), want, rtol=1e-6, atol=1e-9)
        pre = head_reference(ref, model.lm_head, 7)  # computed once, used with any chunk and any rows
        for chunk in (1, 4, 0):
            torch.testing.assert_close(head_row_kl(h, pre, model.lm_head, chunk), want, rtol=1e-6, atol=1e-9)
        torch.testing.assert_close(row_kl(model, ids[1:], pre[1:], 3), want[1:], rtol=1e-6, atol=1e-9)
    with pytest.raises(ValueError, match="differ in shape"):
        head_row_kl(h, ref[:, 1:], model.lm_head)
    with pytest.raises(ValueError, match="differ in shape"):
        head_row_kl(h, head_reference(ref[:, 1:], model.lm_head), model.lm_head)


def test_kl_with_a_biased_head_equals_full_logits_kl_in_float64():
    """A head with a bias: E_p[z] includes E_p[b] (the reference keeps it), still == the float64 full-logit KL."""
    from nas_llm.model.metrics import head_reference, head_row_kl

    g = torch.Generator().manual_seed(3)
    head = torch.nn.Linear(16, 300, bias=True)
    with torch.no_grad():
        head.weight.copy_(torch.randn(300, 16, generator=g))
        head.bias.copy_(2 * torch.randn(300, generator=g))
        h, ref = torch.randn(3, 11, 16, generator=g), torch.randn(3, 11, 16, generator=g)
        W, bias = head.weight.double(), head.bias.double()
        lp = torch.log_softmax(ref[:, :-1].double() @ W.T + bias, -1)
        lq = torch.log_softmax(h[:, :-1].double() @ W.T + bias, -1)
        want = (lp.exp() * (lp - lq)).sum(-1).sum(1)
        for chunk in (1, 6, 0):
            torch.testing.assert_close(head_row_kl(h, ref, head, chunk), want, rtol=1e-6, atol=1e-9)
            torch.testing.assert_close(head_row_kl(h, head_reference(ref, head, chunk), head, 5), want, rtol=1e-6,
                                       atol=1e-9)


def test_kl_refuses_a_model_with_a_logit_transform():
    from nas_llm.model.metrics import row_kl

    model = tiny_model("llama-gqa")
    model.config.final_logit_softcapping = 30.0
    ids = ids_for(model, rows=1, L=5)
    with pytest.raises(ValueError, match="use the NLL instead"):
        row_kl(model, ids, torch.zeros(1, 5, model.config.hidden_size))
