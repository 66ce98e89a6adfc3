"""Masked == sliced == exported-then-reloaded, on every family, for 50 random subnets each."""
import numpy as np
import pytest
import torch
from tiny import FAMILIES, tiny_model

from nas_llm import Ranking, SubnetSpace, export, load_subnet, masked, slice_model
from search_spaces import LayerPlan, Plan, SubnetError

N_SUBNETS = 50


def random_ranking(sp: SubnetSpace, rng) -> Ranking:
    d = sp.dims
    return Ranking.from_scores([rng.random(d.num_kv_heads) for _ in range(d.num_layers)],
                               [rng.random(d.intermediate) for _ in range(d.num_layers)],
                               head_scores=[rng.random(d.num_heads) for _ in range(d.num_layers)])


@pytest.mark.parametrize("fam", FAMILIES)
def test_masked_equals_sliced_equals_reloaded(fam, tmp_path):
    check_subnets(tiny_model(fam), tmp_path, seed=sum(map(ord, fam)))


def check_subnets(m, tmp_path, seed: int = 0, n: int = N_SUBNETS) -> None:
    """``n`` random subnets (dropped layers, KV-group and query-head cuts): masked == sliced == exported and
    reloaded logits (1e-4 of the largest |logit|) and the same 8 greedy tokens; masking undone afterwards."""
    sp = SubnetSpace.from_model(m, granularity=16)
    rng = np.random.default_rng(seed)
    ids = torch.randint(0, m.config.vocab_size, (2, 10), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        dense = m(ids).logits
    dropped_seen = heads_cut = 0
    for t in range(n):
        s = sp.sample(rng, p_drop=0.25)
        dropped_seen += not all(c.keep for c in s.layers)
        heads_cut += s.cuts_heads
        plan = random_ranking(sp, rng).resolve(s)
        with torch.no_grad():
            with masked(m, plan):
                a = m(ids).logits
            sl = slice_model(m, plan, subnet=s)
            b = sl(ids).logits
        tol = 1e-4 * max(1.0, a.abs().max().item())  # relative to the largest |logit|, as family_check; fp32 order noise
        assert (a - b).abs().max() <= tol, f"subnet {t}: masked vs sliced"
        if True:  # every subnet goes through export + reload
            out = export(sl, tmp_path / f"s{t}")
            rl = load_subnet(out)
            with torch.no_grad():
                c = rl(ids).logits
            assert (b - c).abs().max() <= tol, f"subnet {t}: sliced vs reloaded"
            with masked(m, plan):
                g1 = m.generate(ids[:1], max_new_tokens=8, do_sample=False)
            g2 = sl.generate(ids[:1], max_new_tokens=8, do_sample=False)
            g3 = rl.generate(ids[:1], max_new_tokens=8, do_sample=False)
            assert torch.equal(g1, g2) and torch.equal(g2, g3), f"subnet {t}: greedy tokens differ"
    assert dropped_seen > n // 10
    assert (heads_cut > n // 2) == (sp.dims.q_per_group > 1)  # GQA/MQA subnets cut query heads inside groups
    with torch.no_grad():  # masking is undone
        assert torch.equal(m(ids).logits, dense)


def test_generate_with_first_layer_dropped():
    m = tiny_model("llama-gqa")
    sp = SubnetSpace.from_model(m, granularity=16)
    s = sp.uniform(kv_groups=2, neurons=48, drop=[0, 2])
    plan = Ranking.identity(4, 3, 96).resolve(s)
    ids = torch.randint(0, 128, (1, 6))
    with masked(m, plan):
        g1 = m.generate(ids, max_new_tokens=8, do_sample=False)
    g2 = slice_model(m, plan).generate(ids, max_new_tokens=8, do_sample=False)
    assert torch.equal(g1, g2)


def test_sliced_shapes_and_layer_indices():
    m = tiny_model("llama-gqa")
    sp = SubnetSpace.from_model(m, granularity=16)
    s = sp.uniform(kv_groups=1, neurons=32, drop=[1])
    sl = slice_model(m, Ranking.identity(4, 3, 96).resolve(s))
    layers = sl.model.layers
    assert len(layers) == 3 and sl.config.num_hidden_layers == 3
    assert [l.self_attn.layer_idx for l in layers] == [0, 1, 2]
    a = layers[0].self_attn
    assert a.q_proj.weight.shape == (2 * 8, 48) and a.k_proj.weight.shape == (8, 48) and a.o_proj.weight.shape == (48, 16)
    assert layers[0].mlp.down_proj.weight.shape == (48, 32)
    assert [r["source_layer"] for r in sl.config.nas_llm["layers"]] == [0, 2, 3]


def test_uniform_export_loads_with_stock_from_pretrained(tmp_path):
    from transformers import AutoModelForCausalLM

    m = tiny_model("llama-mha")
    sp = SubnetSpace.from_model(m, granularity=16)
    s = sp.uniform(kv_groups=2, neurons=48)
    sl = slice_model(m, Ranking.identity(4, 4, 96).resolve(s))
    out = export(sl, tmp_path / "u")
    stock = AutoModelForCausalLM.from_pretrained(out)
    ids = torch.randint(0, 128, (1, 7))
    with torch.no_grad():
        assert (stock(ids).logits - sl(ids).logits).abs().max() <= 1e-4


def test_plan_errors():
    m = tiny_model("llama-gqa")
    bad = Plan(tuple([LayerPlan(True, (), tuple(range(16)))] + [LayerPlan(True, (0,), tuple(range(16)))] * 3))
    with pytest.raises(SubnetError, match="layer 0: 0 KV groups"):
        slice_model(m, bad)
    with pytest.raises(SubnetError, match="all layers are dropped"):
        with masked(m, Plan(tuple([LayerPlan(False, (0,), (0,))] * 4))):
            pass
    # query heads inside groups (tiny llama-gqa: 2 per group): 0, more than the group has, a different count per group
    full = LayerPlan(True, (0, 1), tuple(range(16)))
    for heads, msg in [(((), (0,)), r"layer 1: 0 query heads kept in KV group 0, outside the allowed range \[1, 2\]"),
                       (((0, 1, 2), (0,)), r"layer 1: 3 query heads kept in KV group 0, outside the allowed range \[1, 2\]"),
                       (((0,), (0, 1)), r"layer 1: the kept KV groups keep different numbers of query heads \(group 0: 1, "
                                        r"group 1: 2\); .* in \[1, 2\]"),
                       (((1, 0), (0, 1)), r"layer 1: query heads \[1, 0\] of KV group 0 must be distinct ascending")]:
        bad = Plan((full, LayerPlan(True, (0, 1), tuple(range(16)), heads), full, full))
        with pytest.raises(SubnetError, match=msg):
            slice_model(m, bad)


@pytest.mark.parametrize("fam", ["llama-gqa", "qwen2"])
def test_swapped_plan_equals_sliced_model_and_restores_every_module(fam):
    """The temporary application (perplexity's weight swap) computes what slice_model's copy computes,
    with replacement weights too, and leaves the very same module objects behind."""
    from nas_llm.model.slicing import layer_cuts
    from nas_llm.model.swap import plan_swapped

    m = tiny_model(fam)
    sp = SubnetSpace.from_model(m, granularity=16)
    rng = np.random.default_rng(3)
    ids = torch.randint(0, m.config.vocab_size, (2, 9), generator=torch.Generator().manual_seed(1))
    before = {n: id(mod) for n, mod in m.named_modules()}
    for _ in range(5):
        s = sp.sample(rng, p_drop=0.25)
        plan = random_ranking(sp, rng).resolve(s)
        kept = [i for i, lp in enumerate(plan.layers) if lp.keep]
        weights = {(i, role): torch.randn(sp.dims.hidden, len(cut.cols))
                   for i in kept for role, cut in layer_cuts(plan.layers[i], sp.dims).items() if role in ("o", "down")}
        ref = slice_model(m, plan)
        for (i, role), w in weights.items():  # the reference: a sliced copy with the weights written in
            lay = ref.model.layers[kept.index(i)]
            (lay.self_attn.o_proj if role == "o" else lay.mlp.down_proj).weight.data.copy_(w)
        with torch.no_grad(), plan_swapped(m, plan, weights=weights):
            a = m(ids).logits
        with torch.no_grad():
            assert (a - ref(ids).logits).abs().max() <= 1e-4
    assert {n: id(mod) for n, mod in m.named_modules()} == before


def test_replacement_weights_only_for_cut_input_maps():
    from nas_llm.errors import ConfigError
    from nas_llm.model.slicing import sliced_projections
    from search_spaces import get_family

    m = tiny_model("llama-gqa")
    fam = get_family(m)
    dims = fam.dims(m)
    layer = fam.decoder_layers(m)[0]
    only_mlp = LayerPlan(True, (0, 1, 2), tuple(range(32)))
    new = sliced_projections(layer, fam, only_mlp, dims)
    assert set(new) == {"gate", "up", "down"} and new["down"].weight.shape == (48, 32)
    with pytest.raises(ConfigError, match=r"replacement weights for \['o'\]"):
        sliced_projections(layer, fam, only_mlp, dims, {"o": torch.zeros(48, 48)})
    with pytest.raises(ConfigError, match="48 x 32"):
        sliced_projections(layer, fam, only_mlp, dims, {"down": torch.zeros(48, 31)})
