"""Baselines: each score against a brute-force computation on a tiny layer, and the ratio each hits."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from nas_llm import baselines as B
from nas_llm.baselines.flap_ours import round_neurons
from nas_llm.model.masking import masked
from search_spaces.plan import head_channels
from nas_llm.model.slicing import slice_model
from nas_llm.errors import ConfigError
from search_spaces import Plan, Subnet, SubnetError, SubnetSpace, get_family
from search_spaces.plan import LayerPlan
from nas_llm.model.importance import scores_from_stats
from nas_llm.model.metrics import perplexity
from search_spaces.registry import UnknownNameError
from tiny import tiny_model

RATIOS = [0.9, 0.8, 0.7, 0.6, 0.5]


@pytest.fixture(scope="module")
def setup():
    model = tiny_model("llama-gqa")
    ids = torch.randint(0, model.config.vocab_size, (3, 20), generator=torch.Generator().manual_seed(1))
    stats = B.calibration_stats(model, ids, batch_size=2, progress=False)
    space = SubnetSpace.from_model(model, granularity=16)
    return model, ids, stats, space


def _inputs(model, ids):
    """Brute force: the raw o_proj / down_proj inputs of every layer, [tokens, channels]."""
    fam = get_family(model)
    got: dict = {}
    hs = []
    for i, layer in enumerate(fam.decoder_layers(model)):
        for role, mod in (("o", fam.attn_linears(layer)["o"]), ("down", fam.mlp_linears(layer)["down"])):
            hs.append(mod.register_forward_pre_hook(lambda m, a, key=(i, role): got.setdefault(key, []).append(a[0].reshape(-1, a[0].shape[-1]).double())))
    try:
        with torch.no_grad():
            for b in range(0, ids.shape[0], 2):
                model(input_ids=ids[b : b + 2], use_cache=False)
    finally:
        for h in hs:
            h.remove()
    return {k: torch.cat(v) for k, v in got.items()}


def test_wanda_sp_scores_match_brute_force(setup):
    model, ids, stats, space = setup
    fam, dims = get_family(model), get_family(model).dims(model.config)
    X = _inputs(model, ids)
    b = B.wanda_sp(model, 0.7, stats, space)
    for i, layer in enumerate(fam.decoder_layers(model)):
        W = fam.attn_linears(layer)["o"].weight.detach().double()
        ch = W.abs().mean(0) * X[(i, "o")].norm(dim=0)  # mean_i |W_ij| * ||X_j||_2
        g = np.asarray([float(ch[head_channels([k], dims)].sum()) for k in range(dims.num_kv_heads)])
        assert np.array_equal(b.ranking.kv_order[i], np.argsort(-g, kind="stable"))
        Wd = fam.mlp_linears(layer)["down"].weight.detach().double()
        n = (Wd.abs().mean(0) * X[(i, "down")].norm(dim=0)).numpy()
        assert np.array_equal(b.ranking.neuron_order[i], np.argsort(-n, kind="stable"))


def test_magnitude_scores_match_brute_force(setup):
    model, _, _, space = setup
    fam, dims = get_family(model), get_family(model).dims(model.config)
    b = B.magnitude(model, 0.7, space=space)  # no calibration needed
    for i, layer in enumerate(fam.decoder_layers(model)):
        a, m = fam.attn_linears(layer), fam.mlp_linears(layer)
        g = []
        for k in range(dims.num_kv_heads):
            q = head_channels([k], dims)
            kv = list(range(k * dims.head_dim, (k + 1) * dims.head_dim))
            g.append(float(a["q"].weight.detach()[q].abs().sum() + a["o"].weight.detach()[:, q].abs().sum() + a["k"].weight.detach()[kv].abs().sum() + a["v"].weight.detach()[kv].abs().sum()))
        assert np.array_equal(b.ranking.kv_order[i], np.argsort(-np.asarray(g), kind="stable"))
        n = (m["gate"].weight.detach().abs().sum(1) + m["up"].weight.detach().abs().sum(1) + m["down"].weight.detach().abs().sum(0)).double().numpy()
        assert np.array_equal(b.ranking.neuron_order[i], np.argsort(-n, kind="stable"))


def test_flap_ours_metric_matches_brute_force(setup):
    model, ids, stats, _ = setup
    fam, dims = get_family(model), get_family(model).dims(model.config)
    X = _inputs(model, ids)
    attn, mlp = B.flap_metrics(model, stats)

    def std(t):  # FLAP's standarlization, torch.std (unbiased)
        return (t - t.mean()) / t.std()

    for i, layer in enumerate(fam.decoder_layers(model)):
        W = fam.attn_linears(layer)["o"].weight.detach().double()
        ch = std(X[(i, "o")].var(dim=0) * W.pow(2).sum(0))  # Var(X_j) * ||W_:,j||^2
        ref = [float(ch[head_channels([k], dims)].mean()) for k in range(dims.num_kv_heads)]
        np.testing.assert_allclose(attn[i], ref, rtol=1e-6, atol=1e-8)
        Wd = fam.mlp_linears(layer)["down"].weight.detach().double()
        np.testing.assert_allclose(mlp[i], std(X[(i, "down")].var(dim=0) * Wd.pow(2).sum(0)).numpy(), rtol=1e-6, atol=1e-8)


def test_flap_ours_is_the_best_global_threshold(setup):
    """Brute force over every threshold: flap-ours' subnet is a global cut, the one nearest the ratio after rounding."""
    model, _, stats, space = setup
    attn, mlp = B.flap_metrics(model, stats)
    allv = np.sort(np.concatenate(attn + mlp))

    def at_threshold(t):
        kv = [max(int((a >= t).sum()), 1) for a in attn]
        nn_ = [round_neurons(space, int((m >= t).sum())) for m in mlp]
        keep = [not ((a >= t).sum() == 0 and (m >= t).sum() == 0) for a, m in zip(attn, mlp)]
        return kv, nn_, keep

    for r in RATIOS:
        b = B.flap_ours(model, r, stats, space)
        sub = b.subnet
        got = ([c.kv_groups for c in sub.layers], [c.neurons for c in sub.layers], [c.keep for c in sub.layers])
        cands = [at_threshold(t) for t in np.concatenate([allv, [np.inf]])]
        assert got in cands, f"ratio {r}: FLAP subnet is not a global threshold cut"
        errs = []
        for kv, nn_, keep in cands:
            if any(keep):
                from search_spaces import Subnet

                errs.append(abs(space.ratio(Subnet.from_lists(kv, nn_, keep)) - r))
        assert abs(space.ratio(sub) - r) <= min(errs) + 1e-12
        assert b.reform == "bias"
        # within a layer the ranking follows the scores
        for i in range(len(attn)):
            assert np.array_equal(b.ranking.kv_order[i], np.argsort(-attn[i], kind="stable"))


def test_shortgpt_block_influence_brute_force(setup):
    model, ids, stats, space = setup
    with torch.no_grad():
        hs = model(input_ids=ids, output_hidden_states=True, use_cache=False).hidden_states
    L = space.num_layers
    # hidden_states[i] enters layer i; the last entry is after the final norm, so check layers 0..L-2
    bi = [1 - float(torch.nn.functional.cosine_similarity(hs[i].double(), hs[i + 1].double(), dim=-1).mean()) for i in range(L - 1)]
    b = B.shortgpt(model, 0.5, stats, space)
    np.testing.assert_allclose(b.info["block_influence"][: L - 1], bi, rtol=1e-6)
    dropped = [i for i, c in enumerate(b.subnet.layers) if not c.keep]
    full_bi = np.asarray(b.info["block_influence"])
    assert sorted(dropped) == sorted(np.argsort(full_bi, kind="stable")[: len(dropped)].tolist())
    assert all(c.kv_groups == space.dims.num_kv_heads and c.neurons == space.dims.intermediate for c in b.subnet.layers)


def _structure_step(space) -> float:
    """Decoder-param ratio of the largest single structure (one KV group in one layer): the granularity-1 tolerance."""
    d = space.dims
    return (space.layer_params(d.num_kv_heads, d.intermediate) - space.layer_params(d.num_kv_heads - 1, d.intermediate)) / space.params(space.dense())


@pytest.mark.parametrize("name", B.BASELINES.names())
def test_each_baseline_hits_its_ratio(setup, name):
    model, ids, stats, space = setup
    t = B.traits(name)
    for r in RATIOS:
        b = B.baseline(name, model, r, stats=stats if t["needs"] == "stats" else None, space=space, calib=ids)
        sp = b.space
        assert sp is not None and sp.granularity == (t["granularity"] or space.granularity)
        sp.validate(b.subnet)
        if t["granularity"] == 1:  # exact up to one structure
            step = _structure_step(sp)
            assert any(c.neurons % space.granularity for c in b.subnet.layers)  # really neuron-level
        elif t["structure"] == "depth":  # moves in whole layers
            step = 1 / space.num_layers
        else:
            step = B.ratio_step(space)
            assert all(c.neurons % space.granularity == 0 for c in b.subnet.layers)
        assert abs(sp.ratio(b.subnet) - r) <= step + 1e-12, (name, r, sp.ratio(b.subnet))
        assert b.params_ratio() == sp.ratio(b.subnet)
        sliced = b.sliced(model, ids)
        comp = ("o_proj.bias", "down_proj.bias") if b.reform else ()  # compensation biases (the tiny model has none of its own)
        n_dec = sum(p.numel() for n, p in get_family(sliced).decoder_layers(sliced).named_parameters() if not n.endswith(comp))
        assert n_dec == sp.params(b.subnet), name  # the ratio is what the sliced model really has


def test_uniform_hybrid_is_wanda_sp_widths_with_the_default_ranking(setup):
    """Same uniform subnet as wanda-sp; its heads and neurons are the ones importance_ranking(hybrid) keeps (an
    independent call), so on a KV-cutting ratio it may keep other groups than wanda-sp, never other widths."""
    from nas_llm.model.importance import importance_ranking

    model, ids, stats, space = setup
    ref = importance_ranking(model, ids, method="hybrid", progress=False)
    for r in (0.8, 0.5):
        b = B.baseline("uniform-hybrid", model, r, space=space, calib=ids)
        assert b.subnet == B.baseline("wanda-sp", model, r, stats=stats, space=space).subnet
        assert b.ranking.resolve(b.subnet) == ref.resolve(b.subnet)
    assert b.ranking is B.baseline("uniform-hybrid", model, 0.7, space=space, calib=ids).ranking  # computed once
    with pytest.raises(ConfigError, match="uniform-hybrid needs calibration tokens"):
        B.uniform_hybrid(model, 0.5, space=space)


def test_uniform_is_uniform_and_cuts_heads(setup):
    _, _, _, space = setup
    for r in RATIOS:
        s = B.uniform_subnet(space, r)
        assert len({(c.kv_groups, c.neurons) for c in s.layers}) == 1
        assert abs(space.ratio(s) - r) <= B.ratio_step(space) / 2 + 1e-9
    assert B.uniform_subnet(space, 0.6).layers[0].kv_groups == 2  # ceil(0.6 * 3 groups) = 2
    assert B.uniform_subnet(space, 0.8).layers[0].kv_groups == 3  # ceil(2.4) = 3: MLP takes the cut
    assert B.uniform_subnet(space, 0.8, heads="nearest").layers[0].kv_groups == 2
    assert B.uniform_subnet(space, 0.5, heads="keep").layers[0].kv_groups == 3
    with pytest.raises(ValueError, match="heads must be one of"):
        B.uniform_subnet(space, 0.5, heads="floor")


def test_masked_baseline_equals_sliced(setup):
    model, ids, stats, space = setup
    plan = B.flap_ours(model, 0.6, stats, space).plan()
    with torch.no_grad(), masked(model, plan):
        ref = model(input_ids=ids[:1], use_cache=False).logits
    out = slice_model(model, plan)(input_ids=ids[:1], use_cache=False).logits
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-4)


def test_errors(setup):
    model, ids, stats, space = setup
    with pytest.raises(UnknownNameError, match="Did you mean 'flap'"):
        B.baseline("flapp", model, 0.5, stats=stats, space=space)
    with pytest.raises(ValueError, match="ratio must be in"):
        B.flap(model, 1.5, calib=ids, space=space)
    with pytest.raises(ValueError, match="calibration statistics"):
        B.wanda_sp(model, 0.5, None, space)
    with pytest.raises(ValueError, match="calibration tokens"):
        B.sleb(model, 0.5, space=space)
    with pytest.raises(SubnetError, match="disallows layer dropping"):
        B.sleb(model, 0.5, space=SubnetSpace.from_model(model, granularity=16, allow_layer_drop=False), calib=ids)


def test_registry_declares_traits():
    for name in B.BASELINES.names():
        t = B.traits(name)
        assert set(t) == {*B.TRAITS, "paper"} and all(t[k] in B.TRAITS[k] for k in B.TRAITS), name
    with pytest.raises(ValueError, match="trait needs"):
        B.base.register("x", paper="-", needs="gpu", structure="uniform", granularity=None, reform=None, head_unit=None)
    with pytest.raises(ConfigError, match="registered twice"):
        B.base.register("flap", paper="-", needs="calib", structure="global", granularity=1, reform=None,
                        head_unit="kv-group")(lambda *a, **k: None)


# -- FLAP as its authors' code runs it ---------------------------------------------------------------

def _official_fluctuation(X: torch.Tensor) -> torch.Tensor:
    """Closed form of FLAP's running estimator on samples X [N, T, C]:
    1/(N-1) sum_{k=1}^{N-1} k/(k+1) sum_t (x_{k,t} - mu_{k+1})^2, mu_{k+1} the mean of samples 0..k."""
    N = X.shape[0]
    acc = torch.zeros(X.shape[-1], dtype=torch.float64)
    for k in range(1, N):
        mu = X[: k + 1].reshape(-1, X.shape[-1]).mean(0)
        acc += k / (k + 1) * ((X[k] - mu) ** 2).sum(0)
    return acc / (N - 1)


def test_flap_fluctuation_is_the_official_estimator(setup):
    model, ids, _, _ = setup
    X = _inputs(model, ids)
    fl = B.collect_fluctuation(model, ids, batch_size=2)
    N, T = ids.shape
    for i, (fo, fd) in enumerate(fl):
        for st, key in ((fo, "o"), (fd, "down")):
            Xs = X[(i, key)].reshape(N, T, -1)
            assert st.n == N
            torch.testing.assert_close(st.fluc, _official_fluctuation(Xs), rtol=1e-9, atol=1e-12)
            torch.testing.assert_close(st.mean, Xs.reshape(-1, Xs.shape[-1]).mean(0), rtol=1e-9, atol=1e-12)
            # not the plain variance: the test would notice an estimator swap
            assert not torch.allclose(st.fluc, Xs.reshape(-1, Xs.shape[-1]).var(0) * T, rtol=1e-3)


def test_flap_official_metric_squares_attention_and_standardises_per_layer(setup):
    model, ids, _, _ = setup
    fam, dims = get_family(model), get_family(model).dims(model.config)
    X = _inputs(model, ids)
    N, T = ids.shape
    attn, mlp = B.flap_official_metrics(model, B.collect_fluctuation(model, ids))

    def std(t):  # FLAP's standarlization over one layer's channels, torch.std (unbiased)
        return (t - t.mean()) / t.std()

    squared_matters = False
    for i, layer in enumerate(fam.decoder_layers(model)):
        Wo = fam.attn_linears(layer)["o"].weight.detach().double()
        wifv = _official_fluctuation(X[(i, "o")].reshape(N, T, -1)) * Wo.pow(2).sum(0)
        ch = std(wifv**2)  # squared before standardisation
        ref = np.asarray([float(ch[head_channels([k], dims)].mean()) for k in range(dims.num_kv_heads)])
        np.testing.assert_allclose(attn[i], ref, rtol=1e-6, atol=1e-9)
        unsq = std(wifv)
        alt = np.asarray([float(unsq[head_channels([k], dims)].mean()) for k in range(dims.num_kv_heads)])
        squared_matters |= not np.allclose(attn[i], alt, rtol=1e-3)
        Wd = fam.mlp_linears(layer)["down"].weight.detach().double()
        ref_m = std(_official_fluctuation(X[(i, "down")].reshape(N, T, -1)) * Wd.pow(2).sum(0)).numpy()
        np.testing.assert_allclose(mlp[i], ref_m, rtol=1e-6, atol=1e-9)
        assert abs(mlp[i].mean()) < 1e-9 and abs(mlp[i].std(ddof=1) - 1) < 1e-9  # per layer, not global
    assert squared_matters


def test_flap_official_is_the_nearest_global_cut(setup):
    """Brute force over every prefix of the global order (granularity 1, >= 1 head/neuron per layer)."""
    model, ids, _, space = setup
    attn, mlp = B.flap_official_metrics(model, B.collect_fluctuation(model, ids))
    items = sorted([(-s, 0, i, g) for i, a in enumerate(attn) for g, s in enumerate(a)]
                   + [(-s, 1, i, j) for i, m in enumerate(mlp) for j, s in enumerate(m)])  # descending score
    sp1 = SubnetSpace(space.dims, granularity=1)
    cands = []
    for k in range(len(items) + 1):
        kv = [max(sum(1 for it in items[:k] if it[1] == 0 and it[2] == i), 1) for i in range(len(attn))]
        nn_ = [max(sum(1 for it in items[:k] if it[1] == 1 and it[2] == i), 1) for i in range(len(attn))]
        cands.append(Subnet.from_lists(kv, nn_))
    for r in RATIOS:
        b = B.flap(model, r, calib=ids, space=space)
        assert b.subnet in cands  # a prefix of the one global order
        assert abs(sp1.ratio(b.subnet) - r) <= min(abs(sp1.ratio(c) - r) for c in cands) + 1e-12  # the nearest one
        for i in range(len(attn)):  # which structures: the top of the layer's order
            assert np.array_equal(b.ranking.kv_order[i], np.argsort(-attn[i], kind="stable"))


def test_flap_bias_uses_dense_means(setup):
    """Reference: the masked dense model with b += W[:, cut] mean(X_dense[cut]) on o/down."""
    import copy

    model, ids, _, space = setup
    fam, dims = get_family(model), get_family(model).dims(model.config)
    X = _inputs(model, ids)
    b = B.flap(model, 0.6, calib=ids, space=space)
    plan = b.plan()
    ref = copy.deepcopy(model)
    for i, (layer, lp) in enumerate(zip(fam.decoder_layers(ref), plan.layers)):
        for lin, key, kept in ((fam.attn_linears(layer)["o"], "o", head_channels(lp.kv_groups, dims)),
                               (fam.mlp_linears(layer)["down"], "down", list(lp.neurons))):
            cut = sorted(set(range(lin.weight.shape[1])) - set(kept))
            delta = (lin.weight.detach().double()[:, cut] @ X[(i, key)].mean(0)[cut]).float()
            lin.bias = torch.nn.Parameter(delta if lin.bias is None else lin.bias.detach() + delta)
    with torch.no_grad(), masked(ref, plan):
        want = ref(input_ids=ids, use_cache=False).logits
    got = b.sliced(model)(input_ids=ids, use_cache=False).logits
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)
    assert b.sliced(model).config.nas_llm["nonstock"]


# -- SLEB -------------------------------------------------------------------------------------------

def _ppl_without(model, ids, removed):
    d = get_family(model).dims(model.config)
    plan = Plan(tuple(LayerPlan(i not in removed, tuple(range(d.num_kv_heads)), tuple(range(d.intermediate)))
                      for i in range(d.num_layers)))
    return perplexity(slice_model(model, plan), ids, batch_size=3)


def test_sleb_removes_the_block_of_least_perplexity_each_time(setup):
    model, ids, _, space = setup
    L = space.num_layers
    order, nll = B.removal_order(model, ids, L - 1, barriers=(0, 0))
    removed: list[int] = []
    for step in range(L - 1):  # brute force, re-evaluated after every removal, on sliced models
        ppl = {j: _ppl_without(model, ids, removed + [j]) for j in range(L) if j not in removed}
        j = min(ppl, key=ppl.get)
        assert order[step] == j, (step, ppl)
        assert math.exp(nll[step]) == pytest.approx(ppl[j], rel=1e-5)
        removed.append(j)
    from nas_llm.baselines.sleb import calibration_nll

    assert math.exp(calibration_nll(model, ids, order[:2])) == pytest.approx(_ppl_without(model, ids, order[:2]), rel=1e-5)
    b = B.sleb(model, 0.5, calib=ids, space=space)  # default barriers: first and last block stay
    dropped = [i for i, c in enumerate(b.subnet.layers) if not c.keep]
    assert len(dropped) == 2 and 0 not in dropped and L - 1 not in dropped
    ppl = {j: _ppl_without(model, ids, [j]) for j in range(1, L - 1)}
    assert b.info["removed"][0] == min(ppl, key=ppl.get)


def test_sleb_resumed_prefix_is_extended_not_recomputed(setup):
    model, ids, _, space = setup
    L = space.num_layers
    from nas_llm.baselines import base

    base._MEMO.clear()
    full, nll = B.removal_order(model, ids, 2, barriers=(0, 0))
    base._MEMO.clear()
    B.resume_removal_order(model, ids, full[:1], nll[:1], barriers=(0, 0))
    assert B.removal_order(model, ids, 2, barriers=(0, 0)) == (full, nll)  # the same chain, extended by one block
    base._MEMO.clear()
    fake = [j for j in range(L) if j != full[0]][:1]  # a prefix the greedy rule would not pick: it is trusted, not redone
    B.resume_removal_order(model, ids, fake, [0.0], barriers=(0, 0))
    order, _ = B.removal_order(model, ids, 2, barriers=(0, 0))
    assert order[0] == fake[0] and order[1] != fake[0]
    B.resume_removal_order(model, ids, [], [], barriers=(0, 0))  # a shorter prefix never truncates the memo
    assert B.removal_order(model, ids, 2, barriers=(0, 0))[0] == order
    with pytest.raises(ValueError, match="outside"):
        B.resume_removal_order(model, ids, [0], [1.0], barriers=(1, 1))
    with pytest.raises(ValueError, match="distinct"):
        B.resume_removal_order(model, ids, [1, 1], [1.0, 2.0])
    base._MEMO.clear()


# -- OWL ------------------------------------------------------------------------------------------------

def test_owl_densities_by_hand():
    # D = [1, 2, 3, 5] %: (D - 1) / 4 * 2 * 0.08 = [0, .04, .08, .16], mean .07 -> + 0.7 - .07
    np.testing.assert_allclose(B.owl_densities(np.asarray([1.0, 2, 3, 5]), 0.7, 0.08), [0.63, 0.67, 0.71, 0.79], atol=1e-12)
    np.testing.assert_allclose(B.owl_densities(np.asarray([2.0, 2, 2]), 0.5), [0.5, 0.5, 0.5])  # no spread: uniform


def test_owl_outlier_ratio_brute_force(setup):
    model, ids, stats, _ = setup
    fam = get_family(model)
    X: dict = {}
    hs = []
    for i, layer in enumerate(fam.decoder_layers(model)):
        for r, lin in {**fam.attn_linears(layer), **fam.mlp_linears(layer)}.items():
            hs.append(lin.register_forward_pre_hook(lambda m, a, key=(i, r): X.setdefault(key, []).append(a[0].reshape(-1, a[0].shape[-1]).double())))
    with torch.no_grad():
        model(input_ids=ids, use_cache=False)
    for h in hs:
        h.remove()
    D = B.outlier_ratios(model, stats, M=2.0)
    for i, layer in enumerate(fam.decoder_layers(model)):
        s = torch.cat([(lin.weight.detach().double().abs() * torch.cat(X[(i, r)]).norm(dim=0)).flatten()
                       for r, lin in {**fam.attn_linears(layer), **fam.mlp_linears(layer)}.items()])
        assert D[i] == pytest.approx(float((s > 2.0 * s.mean()).double().mean()), abs=1e-12)
    assert D.max() > D.min() > 0  # the example is not degenerate


def test_owl_allocation(setup):
    model, ids, stats, space = setup
    b = B.owl_wanda_sp(model, 0.7, stats, space, M=2.0, lam=0.2)
    assert len({c.neurons for c in b.subnet.layers}) > 1  # non-uniform
    d = np.asarray(b.info["density"]) + b.info["delta"]
    kept = np.asarray([space.layer_params(c.kv_groups, c.neurons) for c in b.subnet.layers], dtype=float)
    full = space.layer_params(space.dims.num_kv_heads, space.dims.intermediate)
    G, (n0, n1) = space.dims.num_kv_heads, space.neuron_choices[:2]
    half_block = (space.layer_params(G, n1) - space.layer_params(G, n0)) / full / 2
    assert np.all(np.abs(kept / full - np.clip(d, 0, 1)) <= half_block + 1e-9)  # each layer at its density
    wanda = B.wanda_sp(model, 0.7, stats, space)
    assert all(np.array_equal(a, w) for a, w in zip(b.ranking.neuron_order, wanda.ranking.neuron_order))
    flat = B.owl_wanda_sp(model, 0.7, stats, space, lam=0.0)  # no spread: exactly uniform Wanda-sp
    assert flat.subnet == wanda.subnet


def test_faithful_flap_exports_and_reloads(setup, tmp_path):
    """Granularity-1 widths and the compensation biases go through the same export as our subnets."""
    from nas_llm.model.export import export, load_subnet

    model, ids, _, space = setup
    m = B.flap(model, 0.6, calib=ids, space=space).sliced(model)
    export(m, tmp_path / "flap")
    back = load_subnet(tmp_path / "flap")
    with torch.no_grad():
        torch.testing.assert_close(back(input_ids=ids, use_cache=False).logits, m(input_ids=ids, use_cache=False).logits)


@pytest.mark.parametrize("name", ["magnitude", "wanda-sp", "owl-wanda-sp"])
def test_width_baselines_cut_query_heads_on_mqa(name):
    """One KV group cannot be cut, so on MQA the head unit is the query head: the ratio is still hit, the kept
    heads are the top-scored ones, and masked == sliced."""
    m = tiny_model("llama-mqa")  # 1 KV group x 4 query heads
    ids = torch.randint(0, m.config.vocab_size, (3, 20), generator=torch.Generator().manual_seed(1))
    stats = B.calibration_stats(m, ids, batch_size=2, progress=False)
    space = SubnetSpace.from_model(m, granularity=16)
    assert B.head_units(space) == [(1, 1), (1, 2), (1, 3), (1, None)]
    assert B.head_units(SubnetSpace.from_model(m, granularity=16, query_heads=False)) == [(1, None)]
    cut_any = False
    for r in RATIOS:
        b = B.baseline(name, m, r, stats=stats, space=space, calib=ids)
        assert abs(space.ratio(b.subnet) - r) <= B.ratio_step(space) + 1e-12, (name, r, space.ratio(b.subnet))
        plan = b.plan()
        sc = scores_from_stats(m, stats, "magnitude" if name == "magnitude" else "wanda").heads
        for i, (c, lp) in enumerate(zip(b.subnet.layers, plan.layers)):
            if c.heads_per_group is not None:  # the kept heads are the best-scored ones (brute force: sort the scores)
                cut_any = True
                assert lp.heads == (tuple(sorted(np.argsort(-sc[i], kind="stable")[: c.heads_per_group].tolist())),)
        with torch.no_grad(), masked(m, plan):
            ref = m(input_ids=ids[:1], use_cache=False).logits
        torch.testing.assert_close(b.sliced(m, ids)(input_ids=ids[:1], use_cache=False).logits, ref, rtol=1e-4, atol=1e-4)
    assert cut_any  # at 50-60 % the attention of an MQA layer is cut
