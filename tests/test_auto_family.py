"""Families recognised from the modules: three transformers decoders nas-llm does not declare pass the
same masked == sliced == reloaded test as the declared ones; a fused qkv projection is refused naming the
missing roles; a wrong inference is caught by the on-the-spot check."""
from __future__ import annotations

import pytest
from test_slicing import check_subnets
from tiny import AUTO_FAMILIES, tiny_model

from nas_llm.errors import UnsupportedModelError
from search_spaces import FAMILIES, get_family
from search_spaces.infer import infer_family


@pytest.mark.parametrize("fam", AUTO_FAMILIES)
def test_inferred_family_masked_equals_sliced_equals_reloaded(fam, tmp_path, capsys):
    m = tiny_model(fam)
    f = get_family(m)
    assert f.inferred and f.name == f"auto-{m.config.model_type}"
    expect = {"gemma2": (4, (), "shared"), "olmo2": (2, ("q_norm", "k_norm"), "width"),
              "gemma3": (4, ("q_norm", "k_norm"), "shared")}[fam]
    assert (len(f.layer_norms), f.head_norms, f.head_norm_layout) == expect
    from nas_llm.model.family_check import check_family

    assert check_family(m) <= 1e-4
    check_subnets(m, tmp_path, seed=sum(map(ord, fam)))  # the declared families' test: 50 subnets


def test_inferred_family_counts_parameters_exactly():
    """Dense and sampled subnets (query-head cuts shrink OLMo2's whole-width q/k norms too) against the sliced model."""
    import numpy as np
    from test_slicing import random_ranking

    from nas_llm.model.slicing import slice_model
    from search_spaces import SubnetSpace

    for fam in AUTO_FAMILIES:
        m = tiny_model(fam)
        sp = SubnetSpace.from_model(m, granularity=16)
        assert sp.params(sp.dense(), decoder_only=False) == sum(p.numel() for p in m.parameters()), fam
        rng = np.random.default_rng(5)
        for _ in range(5):
            s = sp.sample(rng, p_drop=0.25)
            sliced = slice_model(m, random_ranking(sp, rng).resolve(s), subnet=s)
            assert sp.params(s, decoder_only=False) == sum(p.numel() for p in sliced.parameters()), (fam, s.key())


def test_the_inference_is_announced_in_one_line(capsys):
    m = tiny_model("gemma2")
    f = get_family(m)
    FAMILIES.remove(f.name)  # forget the registration of an earlier lookup: the next one infers again
    try:
        assert get_family(m).name == f.name
        out = capsys.readouterr().out.strip().splitlines()
        assert len(out) == 1 and out[0].startswith("nas-llm: gemma2 is not a declared family; inferred from its modules")
    finally:
        if f.name not in FAMILIES:
            from search_spaces.family import register_family

            register_family(f)


def test_an_inferred_family_is_checked_before_the_search_writes_anything(tmp_path, monkeypatch):
    from nas_llm.model import family_check
    from nas_llm.search import SearchConfig, run_search

    def fails(model, *a, **k):
        raise UnsupportedModelError("auto-gemma2 fails its check: (test)")

    monkeypatch.setattr(family_check, "check_family", fails)
    from test_perplexity import TEXT, CharTokenizer

    calib = tmp_path / "calib.txt"
    calib.write_text(TEXT)
    cfg = SearchConfig(out=str(tmp_path / "run"), objectives=["params_ratio", "kv_cache_bytes"], evaluations=4, pop_size=4,
                       granularity=16, calibration=str(calib), calib_samples=2, calib_seq_len=16, importance="magnitude",
                       progress=False)
    with pytest.raises(UnsupportedModelError, match="fails its check"):
        run_search(cfg, model=tiny_model("gemma2"), tokenizer=CharTokenizer())
    left = sorted(p.name for p in (tmp_path / "run").rglob("*")) if (tmp_path / "run").exists() else []
    assert left in ([], [".lock"])  # the writer's lock at most: no run.json, ranking or table


def test_fused_qkv_is_refused_naming_the_missing_roles():
    from transformers import AutoModelForCausalLM, Phi3Config

    cfg = Phi3Config(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                     num_key_value_heads=2, vocab_size=64, pad_token_id=0)
    m = AutoModelForCausalLM.from_config(cfg)
    with pytest.raises(UnsupportedModelError, match=r"role\(s\) q, k, v under model\.layers\[0\]\.self_attn \(qkv_proj is fused"):
        infer_family(m)
    with pytest.raises(UnsupportedModelError, match=r"Phi3ForCausalLM.*q, k, v under .*saw o_proj, qkv_proj"):
        get_family(m)


def test_a_wrong_inference_is_caught_by_the_check():
    """OLMo2's q/k norms run over the whole projection width: a family that ignores them is not separable."""
    from dataclasses import replace

    from nas_llm.model import family_check
    from search_spaces.family import register_family

    m = tiny_model("olmo2", seed=1)
    right = get_family(m)
    wrong = replace(right, name="auto-olmo2-wrong", head_norms=(), head_norm_layout="shared")
    FAMILIES.remove(right.name)
    register_family(wrong)
    try:
        with pytest.raises(UnsupportedModelError, match=r"fails its check: .*masked vs sliced"):
            family_check.check_family(m)
    finally:
        FAMILIES.remove(wrong.name)
        register_family(right)


def test_declared_families_keep_priority():
    m = tiny_model("qwen3")
    assert get_family(m).name == "qwen3" and not get_family(m).inferred


def test_biases_are_inferred_when_qwen2_is_not_declared(tmp_path):
    """Qwen2's q/k/v biases, found from the modules alone, pass the same masked == sliced == reloaded test."""
    from search_spaces.family import register_family

    m = tiny_model("qwen2", seed=2)
    declared = get_family(m)
    FAMILIES.remove(declared.name)
    try:
        f = get_family(m)
        assert f.inferred and f.name == "auto-qwen2"
        assert f.dims(m.config).attention_bias and not f.dims(m.config).o_bias
        check_subnets(m, tmp_path, seed=2, n=10)
    finally:
        if "auto-qwen2" in FAMILIES:
            FAMILIES.remove("auto-qwen2")
        register_family(declared)
    assert get_family(m) is declared
