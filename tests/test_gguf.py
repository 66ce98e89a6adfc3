"""GGUF export: the file llama.cpp loads computes what the PyTorch sliced model computes.

Every family's tiny random model, sliced to random non-uniform subnets with a dropped layer (and
uniform ones), is written in f32 and run in llama.cpp with an f32 KV cache. Logits agree to
``ATOL`` = 1e-4 (reached: 2e-6..9e-6 on logits up to ~5) and 16 greedy tokens are the same; the same
file written without the rotary permutation is off by orders of magnitude more, so the comparison
can fail. Refusals name the layer and field, and leave nothing behind.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn as nn

from nas_llm.model import llamacpp
from nas_llm.model.gguf import GGUFError, choose_arch, export_gguf, write_f32
from nas_llm.model.slicing import slice_model
from search_spaces import LayerChoice, Ranking, Subnet, SubnetSpace
from tiny import FAMILIES, tiny_model
from tiny_bpe import bpe_tokenizer

ATOL = 1e-4  # max |logit difference|; f32 on both sides reaches 2e-6..9e-6 (logits up to ~5)
N_IDS = 24


def _random_ranking(model, seed: int) -> Ranking:
    d = SubnetSpace.from_model(model).dims
    rng = np.random.default_rng(seed)
    return Ranking.from_scores([rng.random(d.num_kv_heads) for _ in range(d.num_layers)],
                               [rng.random(d.intermediate) for _ in range(d.num_layers)], None, "random",
                               head_scores=[rng.random(d.num_heads) for _ in range(d.num_layers)])  # not always head 0


def _nonuniform(model, seed: int) -> Subnet:
    """Random widths per layer, one or two layers dropped, at least two kept layers of different shapes."""
    space = SubnetSpace.from_model(model, granularity=16)
    d, rng = space.dims, np.random.default_rng(seed)
    drop = set(rng.choice(d.num_layers, size=int(rng.integers(1, 3)), replace=False).tolist())
    q = d.q_per_group  # query heads cut inside each kept group too (GQA, MQA); MHA has no such choice
    layers = [LayerChoice(int(rng.integers(1, d.num_kv_heads + 1)), int(rng.choice(space.neuron_choices)), i not in drop,
                          int(rng.integers(1, q + 1)) if q > 1 else None)
              for i in range(d.num_layers)]
    kept = [i for i in range(d.num_layers) if i not in drop]
    a, b = kept[0], kept[1]
    if (layers[a].kv_groups, layers[a].neurons) == (layers[b].kv_groups, layers[b].neurons):
        layers[b] = LayerChoice(layers[b].kv_groups, 16 if layers[b].neurons != 16 else 32, True, layers[b].heads_per_group)
    if q > 1:  # at least one kept layer cuts query heads inside its groups (the per-layer head_count arrays)
        layers[a] = LayerChoice(layers[a].kv_groups, layers[a].neurons, True, 1)
    return space.validate(Subnet(tuple(layers)))


def _sliced(name: str, subnet_fn, seed: int = 0):
    model = tiny_model(name, seed)
    sub = subnet_fn(model, seed)
    return slice_model(model, _random_ranking(model, seed).resolve(sub), subnet=sub)


def _ids(seed: int = 0, n: int = N_IDS) -> list[int]:
    return torch.randint(0, 99, (n,), generator=torch.Generator().manual_seed(seed)).tolist()


def _torch_logits(model, ids) -> np.ndarray:
    with torch.no_grad():
        return model(torch.tensor([ids])).logits[0].numpy()


def _torch_greedy(model, prompt, n=16) -> list[int]:
    ids = list(prompt)
    with torch.no_grad():
        for _ in range(n):
            ids.append(int(model(torch.tensor([ids])).logits[0, -1].argmax()))
    return ids[len(prompt):]


def _cpp(path):
    return llamacpp.open_model(path, n_ctx=64, threads=1, f32_kv=True, logits_all=True)


def _diff(model, path, ids) -> float:
    return float(np.abs(llamacpp.logits(_cpp(path), ids) - _torch_logits(model, ids)).max())


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("seed", [0, 1])
def test_nonuniform_subnet_with_dropped_layers_matches_pytorch(family, seed, tmp_path):
    sliced = _sliced(family, _nonuniform, seed)
    assert len(sliced.model.layers) < 4
    path = export_gguf(sliced, tmp_path / "s.gguf", bpe_tokenizer(), check=seed == 0)
    ids = _ids(seed)
    llm = _cpp(path)
    got, want = llamacpp.logits(llm, ids), _torch_logits(sliced, ids)
    assert np.abs(want).max() > 1.0  # the comparison has something to compare
    assert np.abs(got - want).max() < ATOL
    assert llamacpp.greedy(llm, ids[:8], 16) == _torch_greedy(sliced, ids[:8])


@pytest.mark.parametrize("family,arch", [("llama-mha", "llama"), ("llama-gqa", "llama"), ("mistral", "llama"),
                                         ("qwen2", "deci"), ("qwen3", "qwen3")])
def test_uniform_subnet_uses_the_family_architecture(family, arch, tmp_path):
    """A uniform cut keeps the family's own llama.cpp architecture; Qwen2's needs q of the full hidden size."""
    model = tiny_model(family)
    space = SubnetSpace.from_model(model, granularity=16)
    sub = space.uniform(max(1, space.dims.num_kv_heads // 2), 48, drop=[2])
    sliced = slice_model(model, _random_ranking(model, 3).resolve(sub), subnet=sub)
    assert choose_arch(sliced).name == arch
    path = export_gguf(sliced, tmp_path / "u.gguf", bpe_tokenizer(), check=False)
    assert _diff(sliced, path, _ids(3)) < ATOL


def test_qwen2_mlp_only_cut_stays_qwen2_and_the_dense_model_exports(tmp_path):
    model = tiny_model("qwen2")
    space = SubnetSpace.from_model(model, granularity=16)
    sliced = slice_model(model, _random_ranking(model, 4).resolve(space.uniform(None, 64)))
    assert choose_arch(sliced).name == "qwen2" and choose_arch(model).name == "qwen2"
    for m, name in ((sliced, "q.gguf"), (model, "dense.gguf")):
        assert _diff(m, export_gguf(m, tmp_path / name, bpe_tokenizer(), check=False), _ids(4)) < ATOL


@pytest.mark.parametrize("family", ["llama-gqa", "qwen2"])
def test_unpermuted_rotary_rows_fail_the_comparison(family, tmp_path):
    """Without llama.cpp's q/k permutation the logits are far off: the comparison above can fail."""
    sliced = _sliced(family, _nonuniform, 5)
    arch = choose_arch(sliced)
    assert arch.name == "deci" and arch.rotary_permute
    write_f32(sliced, tmp_path / "bad.gguf", bpe_tokenizer(), arch=arch, permute=False)
    write_f32(sliced, tmp_path / "good.gguf", bpe_tokenizer(), arch=arch)
    ids = _ids(5)
    bad, good = _diff(sliced, tmp_path / "bad.gguf", ids), _diff(sliced, tmp_path / "good.gguf", ids)
    assert good < ATOL and bad > 100 * ATOL


def _with_bias(model, roles=("o", "down"), seed=0):
    from search_spaces import get_family

    fam = get_family(model)
    g = torch.Generator().manual_seed(seed)
    for layer in fam.decoder_layers(model):
        lin = {**fam.attn_linears(layer), **fam.mlp_linears(layer)}
        for r in roles:
            lin[r].bias = nn.Parameter(torch.randn(lin[r].out_features, generator=g) * 0.3)
    return model


def test_bias_compensation_is_exported_where_llama_cpp_reads_it(tmp_path):
    """deci (and llama) read o/down biases; Qwen2 moves to deci for them; Qwen3's archs do not: refused."""
    for family, arch in (("llama-gqa", "deci"), ("qwen2", "deci")):
        sliced = _with_bias(_sliced(family, _nonuniform, 6))
        assert choose_arch(sliced).name == arch
        path = export_gguf(sliced, tmp_path / f"{family}.gguf", bpe_tokenizer(), check=False)
        assert _diff(sliced, path, _ids(6)) < ATOL
    sliced = _with_bias(_sliced("qwen3", _nonuniform, 6))
    with pytest.raises(GGUFError, match=r"layer 0 \(dense layer \d\): o_proj has a bias.*does not read"):
        export_gguf(sliced, tmp_path / "q3.gguf", bpe_tokenizer())
    assert not (tmp_path / "q3.gguf").exists()


def test_an_architecture_that_cannot_express_the_subnet_is_refused(tmp_path):
    """Non-uniform Qwen3 with an untied head: qwen3 takes one width for all layers, openelm ties the head."""
    model = tiny_model("qwen3")
    model.config.tie_word_embeddings = False
    model.lm_head.weight = nn.Parameter(model.lm_head.weight.detach().clone())
    sub = _nonuniform(model, 7)
    sliced = slice_model(model, _random_ranking(model, 7).resolve(sub), subnet=sub)
    with pytest.raises(GGUFError, match=r"qwen3: layer \d \(dense layer \d\): (head_count|head_count_kv|feed_forward_length) "
                                        r"\d+ differs.*openelm: the output projection is not tied"):
        export_gguf(sliced, tmp_path / "x.gguf", bpe_tokenizer())
    assert list(tmp_path.iterdir()) == []


def test_a_gguf_llama_cpp_refuses_is_reported_and_removed(tmp_path):
    """Forcing arch 'llama' on per-layer widths writes a file llama.cpp rejects: its message, nothing left."""
    sliced = _sliced("llama-gqa", _nonuniform, 8)
    with pytest.raises(GGUFError, match=r"llama.cpp cannot load the GGUF: .*wrong shape.*nothing was written"):
        export_gguf(sliced, tmp_path / "f.gguf", bpe_tokenizer(), arch="llama")
    assert list(tmp_path.iterdir()) == []


def test_bad_type_existing_file_and_unconvertible_tokenizer(tmp_path):
    from test_select import char_tokenizer

    model = tiny_model("llama-gqa")
    with pytest.raises(GGUFError, match="unknown GGUF type 'q5'; valid types: f32, f16, q8_0, q4_k_m"):
        export_gguf(model, tmp_path / "a.gguf", bpe_tokenizer(), outtype="q5")
    (tmp_path / "a.gguf").write_text("old")
    with pytest.raises(FileExistsError, match="overwrite=True"):
        export_gguf(model, tmp_path / "a.gguf", bpe_tokenizer())
    with pytest.raises(FileExistsError, match="replaces only a GGUF file"):  # a user's file is never replaced
        export_gguf(model, tmp_path / "a.gguf", bpe_tokenizer(), overwrite=True)
    assert (tmp_path / "a.gguf").read_text() == "old"
    (tmp_path / "a.gguf").write_bytes(b"GGUF" + b"\0" * 60)  # a previous GGUF is
    export_gguf(model, tmp_path / "a.gguf", bpe_tokenizer(), overwrite=True)
    assert (tmp_path / "a.gguf").stat().st_size > 10_000
    with pytest.raises(GGUFError, match="no WordLevel tokenizer"):
        export_gguf(model, tmp_path / "b.gguf", char_tokenizer())
    with pytest.raises(GGUFError, match="carries its tokenizer"):
        export_gguf(model, tmp_path / "b.gguf")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.gguf"]


@pytest.mark.parametrize("outtype,tol", [("f16", 0.05), ("q8_0", 0.5)])
def test_llama_cpp_quantiser_types_load_and_stay_close(outtype, tol, tmp_path):
    sliced = _sliced("llama-gqa", _nonuniform, 9)
    path = export_gguf(sliced, tmp_path / f"{outtype}.gguf", bpe_tokenizer(), outtype=outtype)
    f32 = export_gguf(sliced, tmp_path / "f32.gguf", bpe_tokenizer(), check=False)
    assert path.stat().st_size < f32.stat().st_size
    assert 0 < _diff(sliced, path, _ids(9)) < tol


@pytest.mark.parametrize("rope", [
    {"rope_type": "llama3", "rope_theta": 10000.0, "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
     "original_max_position_embeddings": 16},
    {"rope_type": "linear", "rope_theta": 10000.0, "factor": 4.0},
])
def test_scaled_rope(rope, tmp_path):
    """llama3 rope becomes llama.cpp's rope_freqs factors, linear its scaling keys; positions past 16 show it."""
    from transformers import AutoModelForCausalLM

    base = tiny_model("llama-gqa")
    cfg = base.config
    cfg.rope_parameters = rope
    model = AutoModelForCausalLM.from_config(cfg).eval()
    model.load_state_dict(base.state_dict())
    sliced = slice_model(model, _random_ranking(model, 10).resolve(_nonuniform(model, 10)))
    path = export_gguf(sliced, tmp_path / "r.gguf", bpe_tokenizer(), check=False)
    assert _diff(sliced, path, _ids(10, 40)) < ATOL


def test_sentencepiece_style_tokenizer_is_converted(tmp_path):
    """Llama-2/Mistral-style BPE with byte fallback: llama.cpp's 'llama' tokenizer, same ids as HF's, same logits."""
    from transformers import AutoModelForCausalLM

    from tiny_bpe import spm_tokenizer

    base = tiny_model("mistral")
    cfg = base.config
    cfg.vocab_size = 320
    torch.manual_seed(11)
    model = AutoModelForCausalLM.from_config(cfg).eval()
    tok = spm_tokenizer()
    path = export_gguf(model, tmp_path / "spm.gguf", tok)
    llm = _cpp(path)
    for text in ["the theme", "hello world", "tthe the\nthé", "athe"]:
        assert llm.tokenize(text.encode(), add_bos=False) == tok(text, add_special_tokens=False).input_ids
    assert llm.token_bos() == 1 and llm.token_eos() == 2 and llm.n_vocab() == 320
    assert _diff(model, path, _ids(11)) < ATOL


def test_kquant_fallbacks_are_read_from_the_file_llama_cpp_wrote(tmp_path):
    """llama.cpp stores a k-quant row only if it holds a multiple of 256 values: a layer cut to 320 neurons
    gets its ffn_down in a legacy type, one cut to 256 keeps the k-quant; a q8_0 file reports nothing."""
    import gguf
    from transformers import LlamaConfig, LlamaForCausalLM

    from nas_llm.model.gguf import kquant_fallbacks, kquant_note

    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(hidden_size=64, intermediate_size=512, num_hidden_layers=2, vocab_size=128,
                                         num_attention_heads=4, num_key_value_heads=2)).eval()
    space = SubnetSpace.from_model(model, granularity=64)
    sub = space.validate(Subnet((LayerChoice(2, 256, True), LayerChoice(2, 320, True))))
    sliced = slice_model(model, _random_ranking(model, 0).resolve(sub), subnet=sub)
    path = export_gguf(sliced, tmp_path / "k.gguf", bpe_tokenizer(), outtype="q4_k_m", check=False)
    kinds = {t.name: t.tensor_type for t in gguf.GGUFReader(str(path)).tensors}
    K = {gguf.GGMLQuantizationType.Q4_K, gguf.GGMLQuantizationType.Q6_K}
    assert kinds["blk.0.ffn_down.weight"] in K and kinds["blk.1.ffn_down.weight"] not in K  # the rule, independently
    fb = kquant_fallbacks(path)
    assert 320 in fb["ffn_down"] and 256 not in fb["ffn_down"] and 64 in fb["attn_output"]  # 4 heads x 16
    assert "ffn_down rows of 320" in kquant_note(path) and "--granularity 256" in kquant_note(path)
    q8 = export_gguf(sliced, tmp_path / "q8.gguf", bpe_tokenizer(), outtype="q8_0", check=False)
    assert kquant_fallbacks(q8) == {} and kquant_note(q8) is None
