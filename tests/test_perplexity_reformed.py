"""Reformed calibration perplexity: equals an independently built reformed, sliced model; cache; errors."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from search_spaces.plan import query_channels
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
        for role, kept, full in (("o", query_channels(lp, fam_dims), fam_dims.num_heads * fam_dims.head_dim),
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
            sp.sample(rng, 0.3), type(sp.dense())(tuple(late)),
            sp.uniform(kv_groups=2, heads_per_group=1)]  # one query head per group (GQA): o columns not a ranking prefix


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



# -- issue 18: cheaper evaluation, same answer -----------------------------------------------------------
def test_prefix_factor_refit_equals_closed_form():
    """One Cholesky factor in importance order gives closed_form's answer for every prefix (one triangular solve)
    and for any other kept set; its error curve is the refit's reconstruction error (Schur complement)."""
    from nas_llm.model.solvers import PrefixFactor, _prepare, reconstruction_error

    g = torch.Generator().manual_seed(0)
    X = torch.randn(40, 24, dtype=torch.float64, generator=g) * torch.linspace(0.1, 3.0, 24, dtype=torch.float64)
    X[:, 5] = X[:, 7]  # a duplicated channel: H is rank-deficient, the damping keeps it solvable
    H, W = X.T @ X, torch.randn(6, 24, dtype=torch.float64, generator=g)
    order = torch.randperm(24, generator=g).tolist()
    f = PrefixFactor(H, order, damp=0.01)
    for kept in [order[:1], order[:10], order[:23], order, [0, 3, 5, 7, 20], order[2:12]]:
        ref = closed_form(W, H, kept, damp=0.01)[:, sorted(kept)]
        torch.testing.assert_close(f.refit(W, kept), ref, rtol=1e-9, atol=1e-9)
    _, Hn, _ = _prepare(W, H, [])
    A = Hn + 0.01 * torch.eye(24, dtype=torch.float64)
    sizes = [0, 4, 12, 24]
    for k, e in zip(sizes, f.errors(W, sizes)):
        assert e == pytest.approx(reconstruction_error(closed_form(W, H, order[:k], damp=0.01), W, A), rel=1e-9, abs=1e-12)
    with pytest.raises(ValueError, match="permutation"):
        PrefixFactor(H, order[:-1])


def test_bfloat16_screening_never_stands_in_for_the_float32_value(text_file):
    """A screening score in bfloat16 is close to float32 but differs; the full-fidelity score after it is
    bit-identical to a float32-only objective's (no bfloat16 batch is reused)."""
    c = make_ctx()
    kw = dict(n_samples=4, seq_len=20, batch_size=1, reform_samples=6, reform_seq_len=24)
    bf, f32 = ReformedPerplexity(text_file, screen_dtype="bfloat16", **kw), ReformedPerplexity(text_file, **kw)
    s = c.space.uniform(neurons=c.space.neuron_choices[1])
    low_bf, low_f32 = bf.at_fidelity(0.5).score(s, c), f32.at_fidelity(0.5).score(s, c)
    assert low_bf != low_f32 and low_bf == pytest.approx(low_f32, rel=0.05)
    full_after_bf = bf.score(s, c)
    c2 = make_ctx()
    assert full_after_bf == ReformedPerplexity(text_file, **kw).score(s, c2)
    assert bf.at_fidelity(0.5).dtype == "bfloat16" and bf.dtype == "float32"


def test_one_dense_gram_pass_per_search(tmp_path, text_file, monkeypatch):
    """The importance ranking's dense pass hands its Grams to perplexity_reformed: one pass, not two."""
    import nas_llm.model.importance as imp
    from nas_llm.search import SearchConfig, run_search
    from test_perplexity import CharTokenizer
    from tiny import tiny_model

    calls = []
    real = imp.collect_stats
    monkeypatch.setattr(imp, "collect_stats", lambda *a, **k: calls.append(1) or real(*a, **k))
    cfg = SearchConfig(out=str(tmp_path / "r"), objectives=["perplexity_reformed", "params_ratio"], evaluations=6, pop_size=4,
                       granularity=32, calibration=str(text_file), calib_samples=4, calib_seq_len=16, ppl_samples=2,
                       ppl_seq_len=16, importance="wanda", progress=False, alloc=False)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        run_search(cfg, model=tiny_model(), tokenizer=CharTokenizer())
    assert len(calls) == 1


def test_divergence_of_the_reformed_fast_path_equals_the_hand_built_model(text_file):
    """The refit weights enter the divergence as they enter the score: fast path == sliced reformed copy."""
    c = make_ctx()
    obj = ReformedPerplexity(text_file, n_samples=4, seq_len=20, batch_size=2, reform_samples=6, reform_seq_len=24)
    slow = ReformedPerplexity(text_file, n_samples=4, seq_len=20, batch_size=2, reform_samples=6, reform_seq_len=24,
                              fast=False)
    plain = Perplexity(text_file, n_samples=4, seq_len=20, seed=1, batch_size=2)
    for s in subnets(c.space)[:4]:
        d = obj.divergence(s, c)
        assert d > 0 and slow.divergence(s, c) == pytest.approx(d, rel=1e-5), s.summary()
        if s.key() != c.space.uniform(drop=[c.space.num_layers - 1]).key():
            assert d < plain.divergence(s, c), s.summary()  # the refit brings the cut model closer to the dense one
