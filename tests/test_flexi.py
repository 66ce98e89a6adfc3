"""FlexiGPT replacement blocks: exact at full rank, block j at rank 0, normalisation statistics, export, counts, training."""
from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import torch
from safetensors import safe_open

from nas_llm.model.export import export, load_subnet
from nas_llm.model.flexi import choose_shared, flexi_refine
from nas_llm.model.reform import reform
from nas_llm.model.shared_block import SharedLowRankLinear, extra_params, materialize, stored_params
from nas_llm.model.slicing import slice_model
from objectives import Context
from objectives.params import StoredParams
from search_spaces import LayerPlan, Plan, SubnetSpace, get_family
from tests.tiny import FAMILIES, tiny_model


def depth_plan(model, drop) -> Plan:
    d = get_family(model).dims(model.config)
    return Plan(tuple(LayerPlan(i not in drop, tuple(range(d.num_kv_heads)), tuple(range(d.intermediate)))
                      for i in range(d.num_layers)))


def ids(n=4, seq=16, seed=1):
    return torch.randint(0, 128, (n, seq), generator=torch.Generator().manual_seed(seed))


def logits(model, x):
    with torch.no_grad():
        return model(input_ids=x, use_cache=False).logits


@pytest.mark.parametrize("fam", FAMILIES)
def test_full_rank_without_normalisation_is_the_dense_model(fam):
    model = tiny_model(fam)
    out = flexi_refine(model, depth_plan(model, {1, 2}), ids(), rank="full", norm="none", steps=0, progress=False)
    layers = get_family(out).decoder_layers(out)
    assert len(layers) == 4 and isinstance(get_family(out).linears(layers[1])["q"], SharedLowRankLinear)
    torch.testing.assert_close(logits(out, ids(2, 24, 5)), logits(model, ids(2, 24, 5)), atol=1e-4, rtol=0)


@pytest.mark.parametrize("fam", ["llama-gqa", "qwen2", "qwen3"])
def test_rank_zero_with_shared_vectors_is_block_j(fam):
    model = tiny_model(fam)
    out = flexi_refine(model, depth_plan(model, {2}), ids(), rank=0, norm="none", vectors="shared", shared={2: 0}, steps=0, progress=False)
    ref = copy.deepcopy(model)  # reference: block 0's tensors copied into position 2
    fam_ = get_family(ref)
    L = fam_.decoder_layers(ref)
    L[2].load_state_dict(L[0].state_dict())
    torch.testing.assert_close(logits(out, ids(2, 20, 3)), logits(ref, ids(2, 20, 3)), atol=1e-5, rtol=0)


@pytest.mark.parametrize("rank", [0, 1, 5, 32])
def test_adapter_is_the_best_rank_r_approximation_of_the_difference(rank):
    model = tiny_model("llama-gqa")
    out = flexi_refine(model, depth_plan(model, {3}), ids(), rank=rank, norm="none", init="svd", shared={3: 1}, steps=0, progress=False)
    fam = get_family(out)
    for role, lin in fam.linears(fam.decoder_layers(out)[3]).items():
        Wi = fam.linears(fam.decoder_layers(model)[3])[role].weight.detach().double().numpy()
        Wj = fam.linears(fam.decoder_layers(model)[1])[role].weight.detach().double().numpy()
        W, _ = lin.materialize()
        sv = np.linalg.svd(Wi - Wj, compute_uv=False)  # Eckart-Young: the error of the best rank-r fit
        assert np.linalg.norm(W.double().numpy() - Wi) == pytest.approx(np.sqrt((sv[rank:] ** 2).sum()), rel=1e-4, abs=1e-5)


def _branch_outputs(refined, dense, p, x):
    """o_proj and down_proj outputs at position p of ``refined`` and of dense block p on the same inputs
    (the hidden states that reach position p in ``refined``), as [tokens, hidden] float64."""
    fam = get_family(refined)
    seen = {}

    def grab(mod, args, kwargs):
        seen["h"], seen["kw"] = args[0], kwargs

    def outputs(layer, h=None, kw=None):
        got = {}
        lins = fam.linears(layer)
        hs = [lins[r].register_forward_hook(lambda m, a, y, r=r: got.update({r: y.detach().reshape(-1, y.shape[-1]).double()}))
              for r in ("o", "down")]
        with torch.no_grad():
            refined(input_ids=x, use_cache=False) if h is None else layer(h, **kw)
        for hd in hs:
            hd.remove()
        return got

    pre = fam.decoder_layers(refined)[p].register_forward_pre_hook(grab, with_kwargs=True)
    y = outputs(fam.decoder_layers(refined)[p])
    pre.remove()
    return y, outputs(fam.decoder_layers(dense)[p], seen["h"], seen["kw"])


@pytest.mark.parametrize("norm", ["lsq", "affine", "scale"])
def test_normalisation_matches_block_i_on_calibration_data(norm):
    model, x = tiny_model("llama-gqa"), ids(6, 16)
    plan = depth_plan(model, {1, 2})
    out = flexi_refine(model, plan, x, rank=2, norm=norm, batch_size=6, steps=0, progress=False)
    off = flexi_refine(model, plan, x, rank=2, norm="none", batch_size=6, steps=0, progress=False)
    for p in (1, 2):
        y, z = _branch_outputs(out, model, p, x)
        for r in ("o", "down"):
            if norm == "affine":  # per-channel mean and std equal block i's
                torch.testing.assert_close(y[r].mean(0), z[r].mean(0), atol=1e-4, rtol=1e-4)
                torch.testing.assert_close(y[r].std(0), z[r].std(0), atol=1e-4, rtol=1e-4)
            elif norm == "scale":  # per-channel RMS equal block i's
                torch.testing.assert_close(y[r].pow(2).mean(0), z[r].pow(2).mean(0), atol=1e-4, rtol=1e-4)
            else:  # least squares: the residual has mean 0 and is uncorrelated with the fitted output, per channel
                res = z[r] - y[r]
                torch.testing.assert_close(res.mean(0), torch.zeros_like(res[0]), atol=1e-4, rtol=0)
                torch.testing.assert_close((res * (y[r] - y[r].mean(0))).mean(0), torch.zeros_like(res[0]), atol=1e-4, rtol=0)
        if norm == "lsq":  # ... so it is closer to block i than the unnormalised replacement, branch by branch
            y0, z0 = _branch_outputs(off, model, p, x)
            assert (z["o"] - y["o"]).pow(2).sum() < (z0["o"] - y0["o"]).pow(2).sum()


@pytest.mark.parametrize("fam", FAMILIES)
def test_compact_export_reloads_to_the_same_logits(fam, tmp_path):
    model = tiny_model(fam)
    out = flexi_refine(model, depth_plan(model, {0, 2}), ids(), rank=3, progress=False)
    d = export(out, tmp_path / "m")
    cfg = json.loads((d / "config.json").read_text())
    assert cfg["num_hidden_layers"] == 4 and [e["layer"] for e in cfg["nas_llm"]["flexi"]["replaced"]] == [0, 2]
    with safe_open(str(d / "model.safetensors"), "pt") as f:
        keys = set(f.keys())
        n_file = sum(f.get_tensor(k).numel() for k in keys)
    assert "model.layers.0.self_attn.q_proj.weight" not in keys and "model.layers.0.self_attn.q_proj.A" in keys
    lm_tied = cfg.get("tie_word_embeddings", False) and "lm_head.weight" not in keys
    assert n_file == stored_params(out) or lm_tied
    back = load_subnet(d)
    assert stored_params(back) == stored_params(out)
    torch.testing.assert_close(logits(back, ids(2, 24, 7)), logits(out, ids(2, 24, 7)), atol=1e-4, rtol=0)  # sdpa vs eager


@pytest.mark.parametrize("fam,norm,stock", [("llama-gqa", "lsq", True), ("mistral", "scale", True), ("qwen2", "affine", False)])
def test_materialised_export_loads_with_stock_classes(fam, norm, stock, tmp_path):
    from transformers import AutoModelForCausalLM

    model = tiny_model(fam)
    out = flexi_refine(model, depth_plan(model, {1, 3}), ids(), rank=2, norm=norm, progress=False)
    mat = materialize(out)
    assert not any(isinstance(m, SharedLowRankLinear) for m in mat.modules())
    torch.testing.assert_close(logits(mat, ids(2, 24, 4)), logits(out, ids(2, 24, 4)), atol=1e-5, rtol=0)
    d = export(mat, tmp_path / "m")
    back = AutoModelForCausalLM.from_pretrained(str(d)) if stock else load_subnet(d)
    assert bool(json.loads((d / "config.json").read_text())["nas_llm"].get("nonstock")) is not stock
    if not stock:  # the o/down shift has no slot in the stock class: stock loading must refuse, not drop it
        with pytest.raises(Exception, match="(?i)size|mismatch|shape"):
            AutoModelForCausalLM.from_pretrained(str(d))
    torch.testing.assert_close(logits(back.eval(), ids(2, 24, 4)), logits(out, ids(2, 24, 4)), atol=1e-4, rtol=0)


def test_stored_parameters_hand_derived():
    # llama-gqa tiny: hidden 48, 6 heads x 8, 3 KV heads, MLP 96. (out, in): q 48x48, k 24x48, v 24x48,
    # o 48x48, gate/up 96x48, down 48x96 -> sum(out + in) = 96 + 72 + 72 + 96 + 144 + 144 + 144 = 768.
    # rank 4: 4 x 768 = 3072 adapter params; 2 RMSNorms x 48 = 96; affine normalisation on o, down: 4 x 48 = 192.
    model = tiny_model("llama-gqa")
    dims = get_family(model).dims(model.config)
    assert extra_params(dims, 4, "affine") == 3072 + 96 + 192 == 3360
    assert extra_params(dims, 4, "scale") == 3072 + 96 + 96
    assert extra_params(dims, 0, "none") == 96
    # full rank: min(out, in) per map = 48, 24, 24, 48, 48, 48, 48
    assert extra_params(dims, "full", "none") == 48 * 96 + 2 * 24 * 72 + 48 * 96 + 3 * 48 * 144 + 96
    plan = depth_plan(model, {1, 2})
    out = flexi_refine(model, plan, ids(), rank=4, progress=False)
    assert stored_params(out) == stored_params(slice_model(model, plan)) + 2 * 3360
    space = SubnetSpace.from_model(model)
    ctx = Context(model, None, space, None)  # a size objective reads only the space
    subnet = space.uniform(drop=[1, 2])
    assert StoredParams(rank=4).score(subnet, ctx) == stored_params(out)


def test_stored_parameters_with_biases_and_head_norms():
    # qwen3 tiny: head norms q_norm/k_norm (2 x head_dim 8) on top; qwen2: q/k/v biases (32 + 16 + 16)
    q3, q2 = tiny_model("qwen3"), tiny_model("qwen2")
    d3, d2 = (get_family(m).dims(m.config) for m in (q3, q2))
    assert extra_params(d3, 0, "none") == 2 * 32 + 2 * 8
    assert extra_params(d2, 0, "none") == 2 * 32 + 32 + 16 + 16
    for m in (q3, q2):
        out = flexi_refine(m, depth_plan(m, {3}), ids(), rank=2, norm="scale", progress=False)
        d = get_family(m).dims(m.config)
        assert stored_params(out) == stored_params(slice_model(m, depth_plan(m, {3}))) + extra_params(d, 2, "scale")


def test_training_lowers_the_calibration_loss():
    model, x = tiny_model("llama-gqa"), ids(8, 24)
    plan = depth_plan(model, {1, 2})

    def ce(m):
        lg = logits(m, x)[:, :-1]
        return float(torch.nn.functional.cross_entropy(lg.reshape(-1, lg.shape[-1]), x[:, 1:].reshape(-1)))

    init = flexi_refine(model, plan, x, rank=2, steps=0, progress=False)
    trained = flexi_refine(model, plan, x, rank=2, steps=30, lr=1e-2, loss="ce", train_batch=4, progress=False)
    assert ce(trained) < ce(init)
    before = {n: p.clone() for n, p in model.named_parameters()}
    kd = flexi_refine(model, plan, x, rank=2, steps=30, lr=1e-2, loss="kd", train_batch=4, progress=False)
    rec = kd.config.nas_llm["flexi"]
    assert rec["losses"][-1] < rec["losses"][0] and rec["train_tokens"] == 30 * 4 * 24
    assert all(torch.equal(before[n], p) for n, p in model.named_parameters())  # the dense model is untouched
    kept = get_family(kd).decoder_layers(kd)[0]  # frozen: kept blocks (and so the shared weights) do not move
    torch.testing.assert_close(kept.mlp.down_proj.weight, model.model.layers[0].mlp.down_proj.weight)


def test_similarity_rules_pick_the_expected_block():
    model = tiny_model("llama-gqa")
    fam = get_family(model)
    L = fam.decoder_layers(model)
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():  # block 2 = block 0 + a small rank-1 change in every map
        for role, lin in fam.linears(L[2]).items():
            W0 = fam.linears(L[0])[role].weight
            lin.weight.copy_(W0 + torch.randn(W0.shape[0], 1, generator=g) @ torch.randn(1, W0.shape[1], generator=g) * 0.05)
    plan = depth_plan(model, {2})
    svd = flexi_refine(model, plan, ids(), rank=1, similarity="svd", norm="none", steps=0, progress=False)
    assert svd.config.nas_llm["flexi"]["replaced"][0]["shares"] == 0
    near = flexi_refine(model, plan, ids(), rank=1, similarity="nearest", norm="none", steps=0, progress=False)
    assert near.config.nas_llm["flexi"]["replaced"][0]["shares"] == 1  # 1 and 3 equally near: the earlier
    assert choose_shared({(2, 0): 0.5, (2, 1): 0.1, (2, 3): 0.1}, [2], [0, 1, 3]) == {2: 1}
    with torch.no_grad():
        L[3].load_state_dict(L[2].state_dict())  # an exact twin of block 2 (other than its position)
    out = flexi_refine(model, plan, ids(), rank=1, similarity="output", norm="none", steps=0, progress=False)
    assert out.config.nas_llm["flexi"]["replaced"][0]["shares"] == 3


def test_generation_with_a_kv_cache_matches_full_forwards():
    model = tiny_model("mistral")
    out = flexi_refine(model, depth_plan(model, {1, 2}), ids(), rank=2, progress=False)
    x = ids(1, 12, 9)
    with torch.no_grad():
        gen = out.generate(x, max_new_tokens=6, do_sample=False, use_cache=True, pad_token_id=0)
        seq = x
        for _ in range(6):
            seq = torch.cat([seq, logits(out, seq)[:, -1:].argmax(-1)], 1)
    assert torch.equal(gen, seq)


def test_bad_inputs_fail_with_clear_errors():
    model = tiny_model("llama-gqa")
    with pytest.raises(ValueError, match="drops none"):
        flexi_refine(model, depth_plan(model, set()), ids(), progress=False)
    with pytest.raises(ValueError, match="similarity"):
        flexi_refine(model, depth_plan(model, {1}), ids(), similarity="cosine", progress=False)
    with pytest.raises(ValueError, match="rank"):
        flexi_refine(model, depth_plan(model, {1}), ids(), rank=-1, progress=False)
    with pytest.raises(ValueError, match="shared="):
        flexi_refine(model, depth_plan(model, {1}), ids(), shared={1: 1}, progress=False)
    d = get_family(model).dims(model.config)
    narrow = Plan((LayerPlan(False, (), ()), *(LayerPlan(True, (0,), tuple(range(d.intermediate))) for _ in range(3))))
    with pytest.raises(ValueError, match="full width"):
        flexi_refine(model, narrow, ids(), progress=False)


def test_reform_dispatches_flexi():
    model = tiny_model("qwen2")
    out = reform(model, depth_plan(model, {2}), ids(), "flexi", progress=False)
    assert out.config.nas_llm["reform"]["method"] == "flexi" and len(get_family(out).decoder_layers(out)) == 4


@pytest.mark.parametrize("rank", [1, 4, 20])
def test_weighted_low_rank_is_optimal_in_the_input_norm(rank):
    """Against brute force: the whitened SVD beats every other rank-r correction in ||(D - BA) X||, and
    reduces to plain Eckart-Young in that metric: its error is the tail of the singular values of D L."""
    from nas_llm.model.shared_block import low_rank

    g = torch.Generator().manual_seed(0)
    D = torch.randn(24, 20, generator=g, dtype=torch.float64)
    X = torch.randn(20, 60, generator=g, dtype=torch.float64) * torch.linspace(0.1, 3, 20, dtype=torch.float64)[:, None]
    H = X @ X.T
    A, B = low_rank(D, rank, H, damp=0.0)
    err = torch.linalg.norm((D - B @ A) @ X)
    sv = torch.linalg.svdvals(D @ torch.linalg.cholesky(H))
    assert float(err) == pytest.approx(float(sv[rank:].pow(2).sum().sqrt()), rel=1e-8)
    A0, B0 = low_rank(D, rank)  # the unweighted optimum is worse in this metric
    assert float(torch.linalg.norm((D - B0 @ A0) @ X)) > float(err)
    for _ in range(20):  # and so is any rank-r correction nearby (perturbed factors)
        P = (B + 0.01 * torch.randn(B.shape, generator=g, dtype=torch.float64)) @ (A + 0.01 * torch.randn(A.shape, generator=g, dtype=torch.float64))
        assert float(torch.linalg.norm((D - P) @ X)) >= float(err)
    Af, Bf = low_rank(D, 20, H)  # full rank: exact whatever the weighting
    torch.testing.assert_close(Bf @ Af, D)


def test_weighted_init_at_full_rank_is_still_the_dense_model():
    model = tiny_model("qwen2")
    out = flexi_refine(model, depth_plan(model, {1, 2}), ids(), rank="full", norm="none", init="asvd", steps=0, progress=False)
    torch.testing.assert_close(logits(out, ids(2, 24, 5)), logits(model, ids(2, 24, 5)), atol=1e-4, rtol=0)
    assert out.config.nas_llm["flexi"]["init"] == "asvd"


@pytest.mark.smollm2
def test_smollm2_flexi_beats_shortgpt_and_reloads(smollm2, tmp_path):
    from nas_llm.model.data import calibration_batch
    from nas_llm.model.metrics import perplexity

    model, tok = smollm2
    fit = calibration_batch(tok, "wikitext2-valid", 8, 128, seed=1)
    held = calibration_batch(tok, "wikitext2-valid", 4, 128, seed=2)
    plan = depth_plan(model, {3, 12, 13, 14, 15, 16, 17, 25, 26})  # ShortGPT's 30% cut (Block Influence on wikitext2-valid)
    out = flexi_refine(model, plan, fit, steps=0, progress=False)
    assert perplexity(out, held) < perplexity(slice_model(model, plan), held)
    back = load_subnet(export(out, tmp_path / "compact"))
    torch.testing.assert_close(logits(back, held[:1, :64]), logits(out, held[:1, :64]), atol=1e-3, rtol=1e-4)


def _flexi_run(tmp_path, monkeypatch):
    """A hand-made run reformed with --method flexi (its reformation: layer 1 replaced by a shared block)."""
    import nas_llm.reform as run_reform
    from test_select import make_run

    run = make_run(tmp_path, reform={"method": "flexi"})

    def flexi_for_run(run_dir, subnet, model, tokenizer, progress=True):
        return flexi_refine(model, depth_plan(model, {1}), ids(), rank=2, norm="lsq", progress=False)

    monkeypatch.setattr(run_reform, "reform_for_run", flexi_for_run)
    return run


def test_flexi_run_exports_compact_materialised_and_gguf(tmp_path, monkeypatch):
    """One flexi pick, three files: compact (load_subnet), materialised (stock transformers), GGUF (llama.cpp); same logits."""
    from transformers import AutoModelForCausalLM

    from nas_llm.deploy import export_pick
    from nas_llm.model import llamacpp
    from nas_llm.model.gguf import export_gguf
    from tiny_bpe import bpe_tokenizer

    run = _flexi_run(tmp_path, monkeypatch)
    ref = load_subnet(export_pick(run, 2, tmp_path / "compact"))
    assert any(isinstance(m, SharedLowRankLinear) for m in ref.modules())
    x = ids(1, 24, 7)
    mat = AutoModelForCausalLM.from_pretrained(str(export_pick(run, 2, tmp_path / "full", materialize=True))).eval()
    torch.testing.assert_close(logits(mat, x), logits(ref, x), atol=1e-4, rtol=0)
    sizes = {p.name: sum(f.stat().st_size for f in p.glob("*.safetensors")) for p in (tmp_path / "compact", tmp_path / "full")}
    assert sizes["compact"] < sizes["full"]
    gguf = export_gguf(ref, tmp_path / "flexi.gguf", bpe_tokenizer())  # the run's tokenizer is word-level: llama.cpp has none
    cpp = llamacpp.open_model(gguf, n_ctx=64, threads=1, f32_kv=True, logits_all=True)
    got = llamacpp.logits(cpp, x[0].tolist())
    assert float(np.abs(got - logits(ref, x)[0].numpy()).max()) < 1e-3


def test_materialize_is_refused_for_a_run_that_is_not_flexi(tmp_path, capsys):
    from nas_llm.cli import main
    from test_select import make_run

    run = make_run(tmp_path, reform={"method": "admm"})
    assert main(["export", str(run.path), "--pick", "2", "--out", str(tmp_path / "x"), "--materialize"]) == 2
    err = capsys.readouterr().err
    assert "--materialize applies to runs reformed with --method flexi" in err and "admm" in err
    assert not (tmp_path / "x").exists()


@pytest.mark.parametrize("fam", ["llama-gqa", "qwen2"])
def test_compact_export_refuses_stock_loading(fam, tmp_path):
    """Stock classes would re-initialise the shared maps at random: the compact folder must not load there."""
    from transformers import AutoModelForCausalLM

    model = tiny_model(fam)
    out = flexi_refine(model, depth_plan(model, {1, 3}), ids(), rank=2, progress=False)
    d = export(out, tmp_path / "compact")
    with pytest.raises(Exception, match="(?i)size|mismatch|shape"):
        AutoModelForCausalLM.from_pretrained(str(d))
    torch.testing.assert_close(logits(load_subnet(d), ids(2, 24, 4)), logits(out, ids(2, 24, 4)), atol=1e-5, rtol=0)


def test_reform_run_flexi_skips_rows_that_drop_no_layer(tmp_path, capsys):
    """`nas-llm reform --method flexi` on a front with the dense row and width cuts: those rows stay unreformed and
    are named; a depth-only row is reformed; a skipped row exports as its sliced model."""
    from nas_llm.cli import main
    from nas_llm.deploy import build_model
    from nas_llm.model.flexi import not_applicable
    from nas_llm.run import Run
    from nas_llm.select import pick
    from search_spaces import LayerChoice, Subnet
    from test_select import make_run

    run = make_run(tmp_path)
    df = run.table()
    space = SubnetSpace.from_model(load_subnet(tmp_path / "model").config, granularity=32)
    dense = space.dense()
    depth = Subnet(tuple(LayerChoice(lc.kv_groups, lc.neurons, i != 1) for i, lc in enumerate(dense.layers)))
    df.loc[df["id"] == 1, ["subnet", "key"]] = [depth.to_json(), depth.key()]
    df["pareto"] = True
    run.write_table(df)
    skip = {int(i) for i, sj in zip(df["id"], df["subnet"]) if not_applicable(run.ranking().resolve(Subnet.from_json(sj)), space.dims)}
    assert 0 in skip and 1 not in skip
    assert main(["reform", str(run.path), "--method", "flexi", "--n-samples", "2", "--seq-len", "16"]) == 0
    err = capsys.readouterr().err
    assert f"{len(skip)} Pareto rows left unreformed" in err
    t = Run(run.path).table()
    assert {int(i) for i in t.loc[~t["reformed"].astype(bool), "id"]} == skip
    sel = pick(Run(run.path), 0)
    model, _, _ = build_model(Run(run.path), sel)  # a skipped row exports as its sliced model
    assert not any(isinstance(m, SharedLowRankLinear) for m in model.modules())
    model, _, _ = build_model(Run(run.path), pick(Run(run.path), 1))
    assert any(isinstance(m, SharedLowRankLinear) for m in model.modules())
    from nas_llm.deploy import export_pick

    assert (export_pick(Run(run.path), 0, tmp_path / "dense-row", materialize=True) / "config.json").is_file()  # nothing to fold
