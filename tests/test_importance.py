"""Importance scores against brute-force definitions on a small layer."""
import numpy as np
import pytest
import torch
from tiny import tiny_model

from nas_llm.model.importance import collect_stats, compute_scores, hinv_diag, importance_ranking, scores_from_stats
from search_spaces.plan import head_channels, kv_channels
from search_spaces import get_family


@pytest.fixture(scope="module")
def setup():
    torch.manual_seed(0)
    m = tiny_model("llama-gqa")
    ids = torch.randint(0, 128, (6, 16))
    stats = collect_stats(m, ids, batch_size=2, progress=False)
    return m, ids, stats


def layer_inputs(m, ids, layer_idx):
    """Inputs of q_proj, o_proj, gate_proj, down_proj of one layer, captured independently."""
    fam = get_family(m)
    layer = fam.decoder_layers(m)[layer_idx]
    got = {}
    mods = {**{f"a_{k}": v for k, v in fam.attn_linears(layer).items()}, **{f"m_{k}": v for k, v in fam.mlp_linears(layer).items()}}
    hs = [mods[n].register_forward_pre_hook(lambda mod, a, n=n: got.setdefault(n, []).append(a[0].reshape(-1, a[0].shape[-1]).double()))
          for n in ("a_q", "a_o", "m_gate", "m_down")]
    with torch.no_grad():
        m(ids)
    for h in hs:
        h.remove()
    return {k: torch.cat(v).numpy() for k, v in got.items()}, fam.attn_linears(layer), fam.mlp_linears(layer)


def test_obs_column_score_is_twice_the_optimal_removal_error():
    """OBS identity: W_ij^2/[(2XX^T)^-1]_jj summed over i = 2 x min ||W'X - WX||^2 with column j removed."""
    rng = np.random.default_rng(0)
    X = rng.normal(size=(6, 200))
    W = rng.normal(size=(4, 6))
    H = torch.tensor(X @ X.T)
    phi = (torch.tensor(W) ** 2 / hinv_diag(H, damp=0.0)[None, :]).sum(0).numpy()
    for j in range(6):
        keep = [k for k in range(6) if k != j]
        # brute force: best W' on the kept columns by least squares, error of its output
        Wk = np.linalg.lstsq(X[keep].T, (W @ X).T, rcond=None)[0].T
        err = np.sum((Wk @ X[keep] - W @ X) ** 2)
        assert phi[j] == pytest.approx(2 * err, rel=1e-6)


def test_obs_scores_brute_force(setup):
    m, ids, stats = setup
    sc = scores_from_stats(m, stats, "obs", damp=0.01)
    dims = get_family(m).dims(m.config)
    for li in (0, 2):
        X, attn, mlp = layer_inputs(m, ids, li)

        def phi(W, Xin):  # per-weight OBS scores, explicit loops over rows and columns
            H2 = 2 * Xin.T @ Xin
            H2 = H2 + 0.01 * np.mean(np.diag(H2)) * np.eye(H2.shape[0])
            hinv = np.linalg.inv(H2)
            out = np.zeros_like(W)
            for i in range(W.shape[0]):
                for j in range(W.shape[1]):
                    out[i, j] = W[i, j] ** 2 / hinv[j, j]
            return out

        Wq, Wk, Wv, Wo = (attn[r].weight.detach().double().numpy() for r in ("q", "k", "v", "o"))
        pq, pk, pv, po = phi(Wq, X["a_q"]), phi(Wk, X["a_q"]), phi(Wv, X["a_q"]), phi(Wo, X["a_o"])
        for g in range(dims.num_kv_heads):
            qc, kc = head_channels([g], dims), kv_channels([g], dims)
            expect = pq[qc].sum() + po[:, qc].sum() + pk[kc].sum() + pv[kc].sum()
            assert sc.kv[li][g] == pytest.approx(expect, rel=1e-4)  # H is accumulated in float32 per batch
        for h in range(dims.num_heads):  # one query head: its q rows and o columns (its group's k/v are shared)
            hc = list(range(h * dims.head_dim, (h + 1) * dims.head_dim))
            assert sc.heads[li][h] == pytest.approx(pq[hc].sum() + po[:, hc].sum(), rel=1e-4)
        # the ranking orders the heads inside each group by that score
        order = sc.ranking().q_order[li]
        for g in range(dims.num_kv_heads):
            own = [sc.heads[li][g * dims.q_per_group + j] for j in range(dims.q_per_group)]
            assert list(order[g]) == sorted(range(dims.q_per_group), key=lambda j: -own[j])
        Wg, Wu, Wd = (mlp[r].weight.detach().double().numpy() for r in ("gate", "up", "down"))
        pg, pu, pd = phi(Wg, X["m_gate"]), phi(Wu, X["m_gate"]), phi(Wd, X["m_down"])
        expect = pg.sum(1) + pu.sum(1) + pd.sum(0)
        np.testing.assert_allclose(sc.neurons[li], expect, rtol=1e-4)


def test_wanda_magnitude_flap_brute_force(setup):
    m, ids, stats = setup
    dims = get_family(m).dims(m.config)
    X, attn, mlp = layer_inputs(m, ids, 1)
    Wo, Wd = attn["o"].weight.detach().double().numpy(), mlp["down"].weight.detach().double().numpy()
    # Wanda-sp (FLAP's code): mean_i |W_ij| * ||X_j||_2
    wanda = scores_from_stats(m, stats, "wanda")
    xnorm_d = np.sqrt((X["m_down"] ** 2).sum(0))
    np.testing.assert_allclose(wanda.neurons[1], [np.mean(np.abs(Wd[:, j])) * xnorm_d[j] for j in range(Wd.shape[1])], rtol=1e-6)
    xnorm_o = np.sqrt((X["a_o"] ** 2).sum(0))
    for g in range(dims.num_kv_heads):
        expect = sum(np.mean(np.abs(Wo[:, j])) * xnorm_o[j] for j in head_channels([g], dims))
        assert wanda.kv[1][g] == pytest.approx(expect, rel=1e-6)
    for h in range(dims.num_heads):
        expect = sum(np.mean(np.abs(Wo[:, j])) * xnorm_o[j] for j in range(h * dims.head_dim, (h + 1) * dims.head_dim))
        assert wanda.heads[1][h] == pytest.approx(expect, rel=1e-6)
    # FLAP fluctuation: sample variance of the input channel * squared column norm
    flap = scores_from_stats(m, stats, "flap")
    np.testing.assert_allclose(flap.neurons[1], np.var(X["m_down"], axis=0, ddof=1) * (Wd**2).sum(0), rtol=1e-5)
    flap_o = np.var(X["a_o"], axis=0, ddof=1) * (Wo**2).sum(0)  # per o input channel; a head sums its head_dim
    np.testing.assert_allclose(flap.heads[1], flap_o.reshape(dims.num_heads, dims.head_dim).sum(1), rtol=1e-5)
    # magnitude: sum of |W| over the coupled rows and column
    mag = scores_from_stats(m, stats, "magnitude")
    Wg, Wu = mlp["gate"].weight.detach().double().numpy(), mlp["up"].weight.detach().double().numpy()
    np.testing.assert_allclose(mag.neurons[1], np.abs(Wg).sum(1) + np.abs(Wu).sum(1) + np.abs(Wd).sum(0), rtol=1e-6)
    # magnitude of a query head: its q rows and its o columns
    Wq = attn["q"].weight.detach().double().numpy()
    hd = dims.head_dim
    np.testing.assert_allclose(mag.heads[1], [np.abs(Wq[h * hd:(h + 1) * hd]).sum() + np.abs(Wo[:, h * hd:(h + 1) * hd]).sum()
                                              for h in range(dims.num_heads)], rtol=1e-6)


def test_block_influence_matches_hidden_states(setup):
    m, ids, stats = setup
    with torch.no_grad():
        hs = m(ids, output_hidden_states=True).hidden_states
    sc = scores_from_stats(m, stats, "magnitude")
    for i in range(m.config.num_hidden_layers - 1):  # the last entry of hidden_states is after the final norm
        cos = torch.nn.functional.cosine_similarity(hs[i].double(), hs[i + 1].double(), dim=-1)
        assert sc.layers[i] == pytest.approx(1 - cos.mean().item(), rel=1e-6)


def test_ranking_cache(tmp_path, setup):
    m, ids, _ = setup
    r1 = importance_ranking(m, ids, "wanda", cache_dir=tmp_path, progress=False)
    files = list(tmp_path.glob("ranking-wanda-*.json"))
    assert len(files) == 1
    r2 = importance_ranking(m, ids, "wanda", cache_dir=tmp_path, progress=False)
    assert all((a == b).all() for a, b in zip(r1.neuron_order, r2.neuron_order))
    assert r1.q_order is not None and all((a == b).all() for a, b in zip(r1.q_order, r2.q_order))  # query-head order too
    with pytest.raises(ValueError, match="unknown importance method 'obz'"):
        compute_scores(m, ids, "obz")


def test_resolve_keeps_the_top_scored_query_heads_of_each_group():
    """3 groups x 2 heads: with one head per group the plan keeps, in each group, the higher-scored head."""
    from search_spaces import LayerChoice, Ranking, Subnet

    heads = [[.1, .9, .5, .2, .3, .4]] * 2  # group 0 -> head 1, group 1 -> head 0, group 2 -> head 1
    r = Ranking.from_scores([[3., 2., 1.]] * 2, [np.arange(8.)] * 2, None, "hand", head_scores=heads)
    plan = r.resolve(Subnet((LayerChoice(3, 8, True, 1), LayerChoice(2, 8, True, 2))))
    assert plan.layers[0].heads == ((1,), (0,), (1,))
    assert plan.layers[1].heads is None and plan.layers[1].kv_groups == (0, 1)  # all heads: no per-head list


def _lstsq_error(X: np.ndarray, W: np.ndarray, keep: list[int]) -> float:
    """min ||W'X_keep - WX||^2 by least squares: the error left after the optimal refit of the kept inputs."""
    if not keep:
        return float(np.sum((W @ X) ** 2))
    Wk = np.linalg.lstsq(X[keep].T, (W @ X).T, rcond=None)[0].T
    return float(np.sum((Wk @ X[keep] - W @ X) ** 2))


@pytest.mark.parametrize("block", [1, 2])
def test_greedy_obs_order_is_brute_force_greedy(block):
    """obs-greedy: every step removes the block whose removal leaves the least refit error (independent least squares)."""
    from nas_llm.model.importance import greedy_obs_order

    rng = np.random.default_rng(1)
    X = rng.normal(size=(8, 300))
    X[1] = X[0] + 0.05 * X[1]  # correlated inputs: where greedy OBS and one-shot scores part
    W = rng.normal(size=(5, 8))
    order = greedy_obs_order(torch.tensor(W), torch.tensor(X @ X.T), block=block, step=1, damp=0.0)
    alive, removed = list(range(8 // block)), []
    while len(alive) > 1:
        cols = lambda bs: [c for b in bs for c in range(b * block, (b + 1) * block)]  # noqa: E731
        best = min(alive, key=lambda b: _lstsq_error(X, W, cols([a for a in alive if a != b])))
        removed.append(best)
        alive.remove(best)
    assert order.tolist() == alive + removed[::-1]


def test_greedy_obs_ranking_on_a_model(setup):
    """The method runs end to end: a ranking with every structure once, widths resolve to valid plans."""
    m, ids, stats = setup
    from search_spaces import SubnetSpace

    r = scores_from_stats(m, stats, "obs-greedy").ranking()
    dims = get_family(m).dims(m)
    for i in range(dims.num_layers):
        assert sorted(r.neuron_order[i].tolist()) == list(range(dims.intermediate))
        assert sorted(r.kv_order[i].tolist()) == list(range(dims.num_kv_heads))
    space = SubnetSpace.from_model(m)
    r.resolve(space.uniform(1, space.neuron_choices[0]))


def test_hybrid_is_obs_for_heads_and_wanda_for_neurons(setup):
    """``hybrid`` (the default) ranks KV groups and query heads as OBS and neurons as Wanda-sp (each checked against
    brute force above); from raw calibration ids it collects the Hessians OBS needs; a subnet that keeps every head
    resolves exactly as under Wanda-sp, one that drops a group keeps OBS's groups."""
    m, ids, stats = setup
    from search_spaces import SubnetSpace

    from nas_llm.model.importance import DEFAULT_METHOD

    hy, obs, wanda = (scores_from_stats(m, stats, k) for k in ("hybrid", "obs", "wanda"))
    for i in range(len(stats)):
        np.testing.assert_array_equal(hy.kv[i], obs.kv[i])
        np.testing.assert_array_equal(hy.heads[i], obs.heads[i])
        np.testing.assert_array_equal(hy.neurons[i], wanda.neurons[i])
    np.testing.assert_array_equal(hy.layers, wanda.layers)
    assert DEFAULT_METHOD == "hybrid" and hy.method == "hybrid"
    fresh = compute_scores(m, ids, progress=False)  # the default method, from a dense pass of its own
    np.testing.assert_allclose(fresh.kv[1], obs.kv[1], rtol=1e-6)
    space = SubnetSpace.from_model(m)
    r_h, r_o, r_w = hy.ranking(), obs.ranking(), wanda.ranking()
    keep_heads = space.uniform(space.dims.num_kv_heads, space.neuron_choices[0])
    assert r_h.resolve(keep_heads) == r_w.resolve(keep_heads)
    drop = space.uniform(1, space.neuron_choices[0])
    assert [p.kv_groups for p in r_h.resolve(drop).layers] == [p.kv_groups for p in r_o.resolve(drop).layers]
    assert [p.neurons for p in r_h.resolve(drop).layers] == [p.neurons for p in r_w.resolve(drop).layers]
