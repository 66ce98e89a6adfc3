"""Baselines: each score against a brute-force computation on a tiny layer, and the ratio each hits."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from nas_llm import baselines as B
from nas_llm.model.masking import masked
from search_spaces.plan import head_channels
from nas_llm.model.slicing import slice_model
from search_spaces import SubnetSpace, get_family
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


def test_flap_metric_matches_brute_force(setup):
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


def test_flap_is_the_best_global_threshold(setup):
    """Brute force over every threshold: FLAP's subnet is a global cut, the one nearest the ratio after rounding."""
    model, _, stats, space = setup
    attn, mlp = B.flap_metrics(model, stats)
    allv = np.sort(np.concatenate(attn + mlp))

    def at_threshold(t):
        kv = [max(int((a >= t).sum()), 1) for a in attn]
        nn_ = [B._round_neurons(space, int((m >= t).sum())) for m in mlp]
        keep = [not ((a >= t).sum() == 0 and (m >= t).sum() == 0) for a, m in zip(attn, mlp)]
        return kv, nn_, keep

    for r in RATIOS:
        b = B.flap(model, r, stats, space)
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


@pytest.mark.parametrize("name", list(B.BASELINES))
def test_each_baseline_hits_its_ratio(setup, name):
    model, _, stats, space = setup
    step = B.ratio_step(space)
    if name == "shortgpt":  # moves in whole layers: the step is one layer
        step = max(step, 1 / space.num_layers)
    for r in RATIOS:
        b = B.baseline(name, model, r, stats=stats, space=space)
        space.validate(b.subnet)
        assert all(c.neurons % space.granularity == 0 for c in b.subnet.layers)
        assert abs(space.ratio(b.subnet) - r) <= step, (name, r, space.ratio(b.subnet))
        plan = b.plan()
        sliced = slice_model(model, plan, subnet=b.subnet)
        n_dec = sum(p.numel() for p in get_family(sliced).decoder_layers(sliced).parameters())
        assert n_dec == space.params(b.subnet)  # the ratio is what the sliced model really has


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
    plan = B.flap(model, 0.6, stats, space).plan()
    with torch.no_grad(), masked(model, plan):
        ref = model(input_ids=ids[:1], use_cache=False).logits
    out = slice_model(model, plan)(input_ids=ids[:1], use_cache=False).logits
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-4)


def test_errors(setup):
    model, _, stats, space = setup
    with pytest.raises(ValueError, match="did you mean 'flap'"):
        B.baseline("flapp", model, 0.5, stats=stats, space=space)
    with pytest.raises(ValueError, match="ratio must be in"):
        B.flap(model, 1.5, stats, space)
    with pytest.raises(ValueError, match="calibration statistics"):
        B.wanda_sp(model, 0.5, None, space)
