"""Subnet space: encoding, validation errors, and parameter counts against a hand-derived formula."""
import json

import numpy as np
import pytest
from tiny import FAMILIES, tiny_model

from search_spaces import LayerChoice, Subnet, SubnetError, SubnetSpace, get_family
from search_spaces.family import ModelDims


def hand_count(cfg, subnet: Subnet, decoder_only: bool) -> int:
    """Parameter count written out from the architecture, independent of SubnetSpace.layer_params."""
    h = cfg.hidden_size
    hd = getattr(cfg, "head_dim", None) or h // cfg.num_attention_heads
    qpg = cfg.num_attention_heads // cfg.num_key_value_heads
    mt = cfg.model_type
    total = 0
    for c in subnet.layers:
        if not c.keep:
            continue
        nq, nkv = c.kv_groups * (qpg if c.heads_per_group is None else c.heads_per_group), c.kv_groups
        total += h * nq * hd + 2 * h * nkv * hd + nq * hd * h  # q, k, v, o weights
        if mt == "qwen2":
            total += nq * hd + 2 * nkv * hd  # q/k/v biases
        if mt == "qwen3":
            total += 2 * hd  # q_norm, k_norm
        total += 3 * h * c.neurons + 2 * h  # MLP + two RMSNorms
    if not decoder_only:
        total += cfg.vocab_size * h * (1 if cfg.tie_word_embeddings else 2) + h
    return total


@pytest.mark.parametrize("fam", FAMILIES)
def test_param_counts_match_hand_formula_and_sliced_model(fam):
    from nas_llm import Ranking, slice_model

    m = tiny_model(fam)
    sp = SubnetSpace.from_model(m, granularity=16)
    assert sp.params(sp.dense(), decoder_only=False) == sum(p.numel() for p in m.parameters())
    rng = np.random.default_rng(1)
    d = sp.dims
    ranking = Ranking.identity(d.num_layers, d.num_kv_heads, d.intermediate)
    for _ in range(10):
        s = sp.sample(rng, p_drop=0.3)
        assert sp.params(s, decoder_only=True) == hand_count(m.config, s, True)
        assert sp.params(s, decoder_only=False) == hand_count(m.config, s, False)
        sliced = slice_model(m, ranking.resolve(s))
        assert sum(p.numel() for p in sliced.parameters()) == sp.params(s, decoder_only=False)


def test_ratio_and_uniform():
    sp = SubnetSpace.from_model(tiny_model("llama-gqa"), granularity=16)
    assert sp.ratio(sp.dense()) == 1.0
    s = sp.uniform_at_ratio(0.6, "mlp")
    assert all(c.kv_groups == sp.dims.num_kv_heads for c in s.layers)
    assert abs(sp.ratio(s) - 0.6) < 0.1
    assert sp.uniform_at_ratio(0.5, "layers").kept_layers == [0, 1]


def test_encoding_roundtrip_and_bounds():
    sp = SubnetSpace.from_model(tiny_model("llama-gqa"), granularity=16)
    rng = np.random.default_rng(0)
    xl, xu = sp.bounds()
    for _ in range(20):
        s = sp.sample(rng, p_drop=0.2)
        x = sp.encode(s)
        assert np.all(x >= xl) and np.all(x <= xu)
        assert sp.decode(x) == s
        assert Subnet.from_json(s.to_json()) == s
        assert Subnet.from_dict(json.loads(json.dumps(s.to_dict()))) == s


def test_granularity_remainder_block():
    dims = ModelDims(num_layers=2, hidden=8, num_heads=2, num_kv_heads=2, head_dim=4, intermediate=100, vocab=10, tied_embeddings=True)
    sp = SubnetSpace(dims, granularity=64)
    assert sp.neuron_choices == (64, 100)
    sp.validate(sp.uniform(neurons=100))
    with pytest.raises(SubnetError, match="multiple of the granularity 64"):
        sp.validate(sp.dense().__class__((LayerChoice(2, 90), LayerChoice(2, 64))))


@pytest.mark.parametrize(
    "layers, match",
    [
        ([LayerChoice(0, 32), LayerChoice(3, 32), LayerChoice(3, 32), LayerChoice(3, 32)], r"layer 0: 0 KV groups .* \[1, 3\]"),
        ([LayerChoice(3, 32), LayerChoice(4, 32), LayerChoice(3, 32), LayerChoice(3, 32)], r"layer 1: 4 KV groups .* \[1, 3\]"),
        ([LayerChoice(3, 32), LayerChoice(3, 32), LayerChoice(3, 40), LayerChoice(3, 32)], r"layer 2: neurons=40 .*granularity 16"),
        ([LayerChoice(3, 32, False)] * 4, "all layers are dropped"),
        ([LayerChoice(3, 32)] * 3, "subnet has 3 layers, the model has 4"),
    ],
)
def test_validation_errors_name_layer_and_bound(layers, match):
    sp = SubnetSpace.from_model(tiny_model("llama-gqa"), granularity=16)
    with pytest.raises(SubnetError, match=match):
        sp.validate(Subnet(tuple(layers)))


def test_decode_rejects_out_of_range():
    sp = SubnetSpace.from_model(tiny_model("llama-gqa"), granularity=16)
    x = sp.encode(sp.dense())
    x[len(sp.fields) + sp.fields.index("nb")] = 99
    with pytest.raises(SubnetError, match="layer 1: neuron_blocks=99 outside"):
        sp.decode(x)
    x = sp.encode(sp.dense())
    x[sp.fields.index("q")] = 3
    with pytest.raises(SubnetError, match=r"layer 0: heads_per_group=3 outside \[1, 2\]"):
        sp.decode(x)


@pytest.mark.parametrize("fam, query_heads, fields", [
    ("llama-mha", True, ("kv", "nb", "keep")),  # one head per group: no query-head variable
    ("llama-mqa", True, ("q", "nb", "keep")),  # one KV group: query heads are the only head dimension
    ("llama-gqa", True, ("kv", "q", "nb", "keep")),
    ("llama-gqa", False, ("kv", "nb", "keep")),
])
def test_encoding_variables_per_attention_kind(fam, query_heads, fields):
    sp = SubnetSpace.from_model(tiny_model(fam), granularity=16, query_heads=query_heads)
    assert sp.fields == fields and sp.n_var == 4 * len(fields)
    assert [n for n, _, _ in sp.variables()][: len(fields)] == [f"{f}_0" for f in fields]
    rng = np.random.default_rng(0)
    samples = [sp.sample(rng, p_drop=0.2) for _ in range(30)]
    for s in samples:
        assert sp.decode(sp.encode(s)) == s
    assert any(s.cuts_heads for s in samples) == ("q" in fields)
    keep = sp.keep_positions()
    assert np.all(sp.bounds()[1][keep] == 1) and len(keep) == 4


def test_query_head_validation_errors():
    sp = SubnetSpace.from_model(tiny_model("llama-gqa"), granularity=16)  # 3 groups of 2 query heads
    ok = [LayerChoice(3, 32)] * 3
    for h, match in ((0, r"layer 3: 0 query heads per KV group is outside the allowed range \[1, 2\]"),
                     (3, r"layer 3: 3 query heads per KV group is outside the allowed range \[1, 2\]"),
                     (-1, r"layer 3: -1 query heads")):
        with pytest.raises(SubnetError, match=match):
            sp.validate(Subnet(tuple(ok + [LayerChoice(3, 32, True, h)])))
    with pytest.raises(SubnetError, match=r"layer 0: heads_per_group=1 cuts query heads .*query_heads=False"):
        SubnetSpace(sp.dims, 16, query_heads=False).validate(Subnet(tuple([LayerChoice(2, 32, True, 1)] + ok)))
    SubnetSpace(sp.dims, 16, query_heads=False).validate(Subnet(tuple([LayerChoice(2, 32, True, 2)] + ok)))  # all = no cut
    with pytest.raises(SubnetError, match=r"layer 1: heads_per_group=1.5 is not a whole number"):
        Subnet.from_lists([3] * 4, [32] * 4, None, [None, 1.5, None, None])


def test_old_subnet_json_means_all_heads_and_canonical_form():
    sp = SubnetSpace.from_model(tiny_model("llama-gqa"), granularity=16)
    old = {"kv_groups": [3, 2, 1, 3], "neurons": [32] * 4, "keep": [True] * 4}
    s = Subnet.from_dict(old)
    assert all(c.heads_per_group is None for c in s.layers) and s.to_dict() == old  # JSON unchanged
    cut = Subnet.from_dict({**old, "heads_per_group": [None, 1, 2, None]})
    assert cut.to_dict()["heads_per_group"] == [None, 1, 2, None] and Subnet.from_json(cut.to_json()) == cut
    canon = sp.canonical(cut)  # 2 of 2 heads is no cut: the same subnet (and cache key) as None
    assert [c.heads_per_group for c in canon.layers] == [None, 1, None, None] and canon.key() != s.key()
    assert sp.params(cut) == sp.params(canon) and "query heads per group cut to 1-1 in 1 layers" in canon.summary()
    assert sp.decode(sp.encode(cut)) == canon and canon.layers[1].label() == "2x1/32"


def test_space_size_counts_distinct_subnets_by_brute_force():
    import itertools

    dims = ModelDims(num_layers=2, hidden=8, num_heads=4, num_kv_heads=2, head_dim=2, intermediate=32, vocab=10,
                     tied_embeddings=True)
    for query_heads, drop in ((True, True), (False, True), (True, False)):
        sp = SubnetSpace(dims, granularity=16, allow_layer_drop=drop, query_heads=query_heads)
        keys = set()
        for x in itertools.product(*[range(lo, hi + 1) for _, lo, hi in sp.variables()]):
            try:
                keys.add(sp.decode(x).key())
            except SubnetError:  # every layer dropped
                pass
        assert sp.size()["log10_subnets"] == round(np.log10(len(keys)), 3), (query_heads, drop)


def test_unknown_architecture_names_class_and_supported():
    from transformers import GPT2Config, GPT2LMHeadModel

    m = GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=16, n_head=2, vocab_size=10))
    with pytest.raises(NotImplementedError, match=r"GPT2LMHeadModel.*declared: .*LlamaForCausalLM.*cannot be inferred from its "
                                                  r"modules either: .*q, k, v, o under transformer\.h\[0\]\.attn \(c_attn is fused"):
        get_family(m)


@pytest.mark.parametrize("fam", FAMILIES)
def test_dims_from_a_config_equal_dims_from_the_modules(fam):
    """Biases are read from modules (the model's, or a meta-device skeleton for a bare config), never from
    the family name: Qwen2 has q/k/v biases and no config field saying so."""
    m = tiny_model(fam)
    f = get_family(m)
    assert f.dims(m.config) == f.dims(m)
    d = f.dims(m.config)
    assert (d.attention_bias, d.o_bias, d.mlp_bias) == ((True, False, False) if fam == "qwen2" else (False, False, False))


def test_hand_count_with_query_head_cuts():
    """Written out for one layer of llama-gqa (hidden 48, 3 groups x 2 heads, head_dim 8): 2 groups x 1 head."""
    sp = SubnetSpace.from_model(tiny_model("llama-gqa"), granularity=16)
    q, kv = 2 * 1 * 8, 2 * 8
    assert sp.layer_params(2, 32, 1) == 48 * q + 2 * 48 * kv + q * 48 + 3 * 48 * 32 + 2 * 48
    mqa = SubnetSpace.from_model(tiny_model("llama-mqa"), granularity=16)  # hidden 32, 1 group x 4 heads, head_dim 8
    assert mqa.layer_params(1, 16, 3) == 32 * 24 + 2 * 32 * 8 + 24 * 32 + 3 * 32 * 16 + 2 * 32


def test_biased_llama_counts_exactly():
    """LLaMA's attention_bias puts biases on q, k, v *and* o; mlp_bias on gate, up and down."""
    import torch
    from transformers import AutoModelForCausalLM, LlamaConfig

    from nas_llm import Ranking, slice_model

    cfg = LlamaConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=3, vocab_size=50, num_attention_heads=4,
                      num_key_value_heads=2, attention_bias=True, mlp_bias=True, tie_word_embeddings=False)
    torch.manual_seed(0)
    m = AutoModelForCausalLM.from_config(cfg).eval()
    sp = SubnetSpace.from_model(m, granularity=16)
    assert (sp.dims.attention_bias, sp.dims.o_bias, sp.dims.mlp_bias) == (True, True, True)
    assert sp.params(sp.dense(), decoder_only=False) == sum(p.numel() for p in m.parameters())
    d = sp.dims
    s = sp.uniform(1, 32, drop=[1])
    sliced = slice_model(m, Ranking.identity(d.num_layers, d.num_kv_heads, d.intermediate).resolve(s))
    assert sum(p.numel() for p in sliced.parameters()) == sp.params(s, decoder_only=False)
