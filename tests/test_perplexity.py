"""Calibration perplexity: hand-computed reference, fast path == naive masked path, determinism, errors."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from objectives import Constraint, Context, Objective, Perplexity, get_objective
from objectives.perplexity import first_changed_layer
from objectives.testing import ObjectiveTestSuite
from search_spaces import Ranking, SubnetSpace
from tiny import tiny_model


class CharTokenizer:
    """Token id = character code mod 128 (the tiny models' vocabulary)."""

    def __call__(self, text, return_tensors=None):
        return {"input_ids": [ord(c) % 128 for c in text]}


TEXT = "".join(f"line {i}: the {['quick', 'lazy', 'brown'][i % 3]} fox number {i * 7 % 13} jumps.\n" for i in range(300))


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def text_file(tmp_path_factory):
    p = tmp_path_factory.mktemp("data") / "calib.txt"
    p.write_text(TEXT)
    return p


def make_ctx(family="llama-gqa", granularity=32):
    model = tiny_model(family)
    space = SubnetSpace.from_model(model, granularity)
    d = space.dims
    rng = np.random.default_rng(1)
    rank = Ranking.from_scores([rng.random(d.num_kv_heads) for _ in range(d.num_layers)],
                               [rng.random(d.intermediate) for _ in range(d.num_layers)])
    return Context(model, CharTokenizer(), space, rank)


@pytest.fixture
def ctx():
    return make_ctx()


def test_dense_equals_hand_computed_cross_entropy(ctx, text_file):
    obj = Perplexity(text_file, n_samples=3, seq_len=24, batch_size=2)
    ids = obj.ids(ctx)
    assert ids.shape == (3, 24)
    with torch.no_grad():
        logits = ctx.model(input_ids=ids).logits.double()
    logp = torch.log_softmax(logits[:, :-1], -1)
    nll = -logp.gather(-1, ids[:, 1:, None]).squeeze(-1)
    ref = math.exp(float(nll.mean()))
    assert obj.score(ctx.space.dense(), ctx) == pytest.approx(ref, rel=1e-5)
    assert obj.naive(ctx.space.dense(), ctx) == pytest.approx(ref, rel=1e-5)


@pytest.mark.parametrize("family", ["llama-gqa", "llama-mha", "mistral", "qwen2", "qwen3"])
@pytest.mark.parametrize("cache_mb", [64.0, 0.01])  # every boundary cached / only the embeddings
def test_fast_path_equals_naive_masked_forward(family, cache_mb, text_file):
    c = make_ctx(family)
    obj = Perplexity(text_file, n_samples=5, seq_len=20, batch_size=2, cache_mb=cache_mb)
    sp = c.space
    L = sp.num_layers
    rng = np.random.default_rng(0)
    subs = [sp.uniform(drop=[L - 1]), sp.uniform(kv_groups=1), sp.uniform(neurons=sp.neuron_choices[0]),
            sp.sample(rng, 0.3), sp.sample(rng, 0.0)]
    late = list(sp.dense().layers)
    late[2] = sp.sample(rng).layers[2]
    subs.append(type(subs[0])(tuple(late)))
    starts = []
    for s in subs:
        fast, naive = obj.score(s, c), obj.naive(s, c)
        assert fast == pytest.approx(naive, rel=1e-5), s.key()
        assert obj.last["first_changed"] == first_changed_layer(s, sp.dense())
        starts.append(obj.last["start"])
    if cache_mb > 1:
        assert max(starts) > 0  # the prefix cache was actually used
    else:
        assert obj.prefix_cache(c).boundaries == [0]


def test_bit_identical_for_same_subnet_and_seed(text_file):
    a, b = make_ctx(), make_ctx()
    s = a.space.sample(np.random.default_rng(3), 0.2)
    o1, o2 = Perplexity(text_file, n_samples=4, seq_len=16, seed=7), Perplexity(text_file, n_samples=4, seq_len=16, seed=7)
    v = o1.score(s, a)
    assert o1.score(s, a) == v and o2.score(s, b) == v
    assert Perplexity(text_file, n_samples=4, seq_len=16, seed=8).score(s, a) != v


def test_rescoring_reuses_screened_windows_bit_identically(text_file):
    """Full fidelity after screening runs only the new windows and gives exactly the value of a fresh score."""
    a, b = make_ctx(), make_ctx()
    s = a.space.sample(np.random.default_rng(5), 0.2)
    full = Perplexity(text_file, n_samples=6, seq_len=16, seed=2, batch_size=2)
    screen = full.at_fidelity(1 / 3)
    screen.score(s, a)
    assert screen.last["reused_windows"] == 0
    v = full.score(s, a)
    assert full.last["reused_windows"] == 2
    fresh = Perplexity(text_file, n_samples=6, seq_len=16, seed=2, batch_size=2)
    assert fresh.score(s, b) == v and fresh.last["reused_windows"] == 0
    assert v == pytest.approx(fresh.naive(s, b), rel=1e-5)
    other = a.space.sample(np.random.default_rng(6), 0.2)  # another subnet never reuses this one's windows
    full.score(other, a)
    assert full.last["reused_windows"] == 0


def test_fidelity_uses_a_prefix_of_the_same_windows(ctx, text_file):
    obj = Perplexity(text_file, n_samples=6, seq_len=16, batch_size=4)
    low = obj.at_fidelity(0.5)
    assert low.rows == 3 and obj.rows == 6 and low.name == obj.name
    s = ctx.space.uniform(kv_groups=2, drop=[3])
    obj.setup(ctx)
    n_cache = len(ctx.cache)
    v = low.score(s, ctx)
    assert len(ctx.cache) == n_cache  # shares ids and hidden states with the full-fidelity objective
    assert v == pytest.approx(low.naive(s, ctx), rel=1e-5)
    ref = Perplexity(text_file, n_samples=6, seq_len=16, batch_size=4, fast=False)
    ids = ref.ids(ctx)[:3]
    from nas_llm.model.metrics import nll_sum

    with ctx.masked(s) as m:
        tot, cnt = nll_sum(m, ids)
    assert v == pytest.approx(math.exp(tot / cnt), rel=1e-5)
    with pytest.raises(ValueError, match="fidelity"):
        obj.at_fidelity(0)


def test_missing_file_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.txt"):
        Perplexity(tmp_path / "nope.txt")


def test_text_shorter_than_n_times_l_is_a_clear_error(ctx, tmp_path):
    p = tmp_path / "short.txt"
    p.write_text("only a few characters")
    obj = Perplexity(p, n_samples=4, seq_len=16)
    with pytest.raises(ValueError, match=r"fewer than n_samples x seq_len = 4 x 16"):
        obj.setup(ctx)


def test_bad_arguments(text_file):
    with pytest.raises(ValueError, match="seq_len"):
        Perplexity(text_file, seq_len=1)
    with pytest.raises(ValueError, match="batch_size"):
        Perplexity(text_file, batch_size=0)


def test_registered_name_builds_it(text_file):
    obj = get_objective("perplexity", source=text_file, n_samples=2, seq_len=8)
    assert isinstance(obj, Perplexity) and obj.direction == "minimize"


# -- a user objective defined here, found by import path ---------------------------------------
class KeptNeurons(Objective):
    name = "kept_neurons"

    def score(self, subnet, ctx):
        return float(sum(c.neurons for c in subnet.layers if c.keep))


def test_user_objective_by_import_path(ctx):
    obj = get_objective(f"{__name__}:KeptNeurons")
    assert isinstance(obj, KeptNeurons)
    s = ctx.space.uniform(neurons=64, drop=[0])
    assert obj.score(s, ctx) == 64 * 3
    c = Constraint.parse("kept_neurons<=200")
    assert c.violation(obj.score(s, ctx)) <= 0 and c.violation(obj.score(ctx.space.dense(), ctx)) > 0
    with pytest.raises(ImportError, match="has no attribute 'Missing'"):
        get_objective(f"{__name__}:Missing")
    with pytest.raises(ImportError, match="cannot import the module"):
        get_objective("no_such_pkg_xyz.mod:Thing")


class TestPerplexityConformance(ObjectiveTestSuite):
    @pytest.fixture
    def objective(self, text_file):
        return Perplexity(text_file, n_samples=2, seq_len=12)

    @pytest.fixture
    def context(self):
        return make_ctx()


class TestUserObjectiveConformance(ObjectiveTestSuite):
    @pytest.fixture
    def objective(self):
        return KeptNeurons()

    @pytest.fixture
    def context(self):
        return make_ctx("qwen3")


@pytest.mark.smollm2
def test_smollm2_fast_equals_naive(smollm2):
    model, tok = smollm2
    space = SubnetSpace.from_model(model)
    d = space.dims
    c = Context(model, tok, space, Ranking.identity(d.num_layers, d.num_kv_heads, d.intermediate))
    obj = Perplexity(n_samples=2, seq_len=48, batch_size=2)
    dense = obj.score(space.dense(), c)
    assert 2 < dense < 200  # SmolLM2 on WikiText-2 windows
    late = list(space.dense().layers)
    late[20] = space.uniform(kv_groups=1, neurons=512).layers[20]
    late[25] = space.uniform(drop=[25]).layers[25]
    s = type(space.dense())(tuple(late))
    assert obj.score(s, c) == pytest.approx(obj.naive(s, c), rel=1e-5)
    assert obj.last["start"] == 20


@pytest.mark.parametrize("family", ["llama-gqa", "qwen3"])
@pytest.mark.parametrize("cache_mb", [64.0, 0.01])
def test_divergence_fast_equals_naive_and_hand_computed(family, cache_mb, text_file):
    """KL(dense || subnet): prefix reuse + sliced layers == the masked model == full logits by hand; 0 for the dense."""
    c = make_ctx(family)
    obj = Perplexity(text_file, n_samples=5, seq_len=20, batch_size=2, cache_mb=cache_mb)
    slow = Perplexity(text_file, n_samples=5, seq_len=20, batch_size=2, cache_mb=cache_mb, fast=False)
    sp = c.space
    rng = np.random.default_rng(2)
    late = list(sp.dense().layers)
    late[2] = sp.sample(rng).layers[2]
    subs = [sp.uniform(kv_groups=1), sp.uniform(neurons=sp.neuron_choices[0]), sp.sample(rng, 0.3),
            type(sp.dense())(tuple(late))]
    ids = obj.ids(c)
    with torch.no_grad():
        p = torch.log_softmax(c.model(input_ids=ids).logits[:, :-1].double(), -1)
    assert obj.divergence(sp.dense(), c) == 0.0 and slow.divergence(sp.dense(), c) == pytest.approx(0.0, abs=1e-7)
    for s in subs:
        fast = obj.divergence(s, c)
        with torch.no_grad(), c.masked(s) as m:
            q = torch.log_softmax(m(input_ids=ids).logits[:, :-1].double(), -1)
        by_hand = float((p.exp() * (p - q)).sum(-1).mean())
        assert fast > 0 and fast == pytest.approx(by_hand, rel=1e-4), s.key()
        assert slow.divergence(s, c) == pytest.approx(fast, rel=1e-5), s.key()
        # an NLL and a divergence of the same subnet are memoised apart
        assert obj.score(s, c) == pytest.approx(obj.naive(s, c), rel=1e-5)
        assert obj.divergence(s, c) == fast
        # a lower fidelity: the first 3 of 5 windows (a one-row last batch), against the reference on the same rows
        assert obj.at_fidelity(0.6).divergence(s, c) == pytest.approx(slow.at_fidelity(0.6).divergence(s, c), rel=1e-5)
