"""Reformed calibration perplexity: equals an independently built reformed, sliced model; cache; errors."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from search_spaces.plan import head_channels
from nas_llm.model.solvers import closed_form
from objectives import Perplexity, ReformedPerplexity, get_objective
from objectives.testing import ObjectiveTestSuite
from test_perplexity import make_ctx, text_file  # noqa: F401  (same tiny context and calibration text fixture)

pytestmark = pytest.mark.usefixtures("one_thread")


def reference_ppl(ctx, obj: ReformedPerplexity, subnet) -> float:
    """Hand-built: X of the dense model recorded with plain hooks, X X^T, closed form, written into a
    sliced copy, cross-entropy by log-softmax."""
    from nas_llm.model.data import calibration_batch

    model, fam_dims = ctx.model, ctx.space.dims
    layers = model.model.layers
    xs: dict = {}
    hooks = []
    for i, layer in enumerate(layers):
        for role, lin in (("o", layer.self_attn.o_proj), ("down", layer.mlp.down_proj)):
            hooks.append(lin.register_forward_pre_hook(
                lambda m, a, key=(i, role): xs.setdefault(key, []).append(a[0].reshape(-1, a[0].shape[-1]).double())))
    calib = calibration_batch(ctx.tokenizer, obj.source, obj.reform_samples, obj.reform_seq_len, obj.reform_seed)
    with torch.no_grad():
        model(input_ids=calib)
    for h in hooks:
        h.remove()
    plan = ctx.plan(subnet)
    small = ctx.sliced(subnet)
    kept_layers = [i for i, lp in enumerate(plan.layers) if lp.keep]
    for j, i in enumerate(kept_layers):
        lp = plan.layers[i]
        for role, kept, full in (("o", head_channels(lp.kv_groups, fam_dims), fam_dims.num_heads * fam_dims.head_dim),
                                 ("down", list(lp.neurons), fam_dims.intermediate)):
            if len(kept) == full:
                continue
            X = torch.cat(xs[(i, role)])
            dense_lin = getattr(layers[i].self_attn, "o_proj") if role == "o" else layers[i].mlp.down_proj
            W = closed_form(dense_lin.weight, X.T @ X, kept, damp=obj.damp)[:, kept]
            lin = small.model.layers[j].self_attn.o_proj if role == "o" else small.model.layers[j].mlp.down_proj
            lin.weight.data.copy_(W)
    ids = obj.ids(ctx)
    with torch.no_grad():
        logits = small(input_ids=ids).logits.double()
    nll = -torch.log_softmax(logits[:, :-1], -1).gather(-1, ids[:, 1:, None]).squeeze(-1)
    return math.exp(float(nll.mean()))


def subnets(sp):
    rng = np.random.default_rng(3)
    L = sp.num_layers
    late = list(sp.dense().layers)
    late[2] = sp.uniform(kv_groups=1, neurons=sp.neuron_choices[0]).layers[2]
    return [sp.uniform(kv_groups=1), sp.uniform(neurons=sp.neuron_choices[0]), sp.uniform(drop=[L - 1]),
            sp.sample(rng, 0.3), type(sp.dense())(tuple(late))]


@pytest.mark.parametrize("family", ["llama-gqa", "llama-mha"])
def test_fast_and_naive_equal_hand_built_reformed_model(family, text_file):
    c = make_ctx(family)
    obj = ReformedPerplexity(text_file, n_samples=4, seq_len=20, batch_size=2, reform_samples=6, reform_seq_len=24)
    for s in subnets(c.space):
        ref = reference_ppl(c, obj, s)
        assert obj.score(s, c) == pytest.approx(ref, rel=1e-5), s.summary()
        assert obj.naive(s, c) == pytest.approx(ref, rel=1e-5), s.summary()


def test_reformation_changes_the_score_only_where_channels_are_cut(text_file):
    c = make_ctx()
    sp = c.space
    kw = dict(n_samples=4, seq_len=20, seed=5, batch_size=2)
    plain, reformed = Perplexity(text_file, **kw), ReformedPerplexity(text_file, **kw, reform_samples=6, reform_seq_len=24)
    drop_only = sp.uniform(drop=[1])  # no width cut: nothing to reform
    assert reformed.score(drop_only, c) == plain.score(drop_only, c)
    assert reformed.score(sp.dense(), c) == plain.score(sp.dense(), c)
    cut = sp.uniform(neurons=sp.neuron_choices[0])
    assert reformed.score(cut, c) != plain.score(cut, c)


def test_weight_cache_is_reused_and_bounded(text_file):
    c = make_ctx()
    obj = ReformedPerplexity(text_file, n_samples=2, seq_len=16, batch_size=2, reform_samples=4, reform_seq_len=16,
                             weight_cache_mb=1e-3)
    s = c.space.uniform(neurons=c.space.neuron_choices[0])
    first = obj.score(s, c)
    cache = obj._weights(c)
    assert len(cache.items) == 1  # budget of ~1 KB: only the newest map stays
    assert obj.score(s, c) == first  # recomputed maps give bit-identical values
    big = ReformedPerplexity(text_file, n_samples=2, seq_len=16, batch_size=2, reform_samples=4, reform_seq_len=16)
    big.score(s, c)
    n = len(big._weights(c).items)
    assert n == c.space.num_layers  # one down_proj per layer
    big.score(s, c)
    assert len(big._weights(c).items) == n


def test_errors_and_registry(text_file):
    with pytest.raises(ValueError, match="different seed"):
        ReformedPerplexity(text_file, n_samples=4, seq_len=20, seed=0, reform_samples=4, reform_seq_len=20, reform_seed=0)
    with pytest.raises(ValueError, match="reform_samples"):
        ReformedPerplexity(text_file, reform_samples=0)
    with pytest.raises(ValueError, match="damp"):
        ReformedPerplexity(text_file, damp=-1)
    assert isinstance(get_objective("perplexity_reformed", source=text_file), ReformedPerplexity)


def test_search_cli_scores_reformed_ppl_off_the_reformation_windows():
    import argparse

    from nas_llm.cli.search import add_arguments
    from nas_llm.search import SearchConfig

    p = argparse.ArgumentParser()
    add_arguments(p)
    ns = p.parse_args(["--out", "x", "--calib-samples", "16", "--calib-seed", "3"])
    a = SearchConfig.from_args(ns).objective_args()["perplexity_reformed"]
    assert (a["reform_samples"], a["reform_seed"]) == (16, 3) and a["seed"] == 4


class TestReformedPerplexityConformance(ObjectiveTestSuite):
    @pytest.fixture
    def objective(self, text_file):
        return ReformedPerplexity(text_file, n_samples=2, seq_len=12, reform_samples=4, reform_seq_len=16)

    @pytest.fixture
    def context(self):
        return make_ctx()


@pytest.mark.parametrize("progress", [True, False])
def test_dense_gram_progress_bar_follows_the_context(text_file, capfd, progress):
    """``--no-progress`` (``Context.progress=False``) silences the one-off X X^T pass too."""
    c = make_ctx()
    c.progress = progress
    obj = ReformedPerplexity(text_file, n_samples=2, seq_len=16, batch_size=2, reform_samples=4, reform_seq_len=16)
    obj.score(c.space.uniform(neurons=c.space.neuron_choices[0]), c)
    err = capfd.readouterr().err
    assert ("calibration statistics" in err) == progress, err[-300:]

