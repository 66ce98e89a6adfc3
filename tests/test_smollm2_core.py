"""Integration on the real SmolLM2-135M: an ~80% subnet sliced, exported, reloaded, same perplexity."""
import pytest
import torch

from nas_llm import SubnetSpace, export, load_subnet, masked, slice_model
from nas_llm.model.data import calibration_batch, eval_windows
from nas_llm.model.importance import compute_scores
from nas_llm.model.metrics import perplexity
from search_spaces import Subnet

pytestmark = pytest.mark.smollm2


def folder_bytes(d):
    return sum(p.stat().st_size for p in d.rglob("*") if p.is_file())


def test_export_reload_same_ppl_and_smaller_on_disk(smollm2, tmp_path):
    model, tok = smollm2
    sp = SubnetSpace.from_model(model)
    assert (sp.dims.num_layers, sp.dims.num_heads, sp.dims.num_kv_heads, sp.dims.intermediate) == (30, 9, 3, 1536)
    kv = [2 if 5 <= i < 10 else 3 for i in range(30)]
    neurons = [1152 if i % 2 == 0 else 1280 for i in range(30)]
    s = sp.validate(Subnet.from_lists(kv, neurons, [i != 25 for i in range(30)]))
    assert 0.75 < sp.ratio(s) < 0.85
    ranking = compute_scores(model, calibration_batch(tok, "wikitext2-valid", 8, 128, seed=0), "wanda", progress=False).ranking()
    plan = ranking.resolve(s)
    ids = eval_windows(tok, "wikitext2-test", seq_len=2048, max_windows=2)
    with masked(model, plan):
        ppl_masked = perplexity(model, ids, batch_size=1)
    sliced = slice_model(model, plan, subnet=s)
    out = export(sliced, tmp_path / "sub", tokenizer=tok)
    dense_out = export(model, tmp_path / "dense", tokenizer=tok)
    del sliced
    reloaded = load_subnet(out)
    ppl_reloaded = perplexity(reloaded, ids, batch_size=1)
    assert ppl_reloaded == pytest.approx(ppl_masked, rel=1e-3)
    assert sum(p.numel() for p in reloaded.parameters()) == sp.params(s, decoder_only=False)
    total_ratio = sp.ratio(s, decoder_only=False)
    disk_ratio = folder_bytes(out) / folder_bytes(dense_out)
    assert disk_ratio == pytest.approx(total_ratio, abs=0.02)
    # greedy generation works on the reloaded model with its KV cache
    prompt = tok("The capital of France is", return_tensors="pt").input_ids
    gen = reloaded.generate(prompt, max_new_tokens=8, do_sample=False)
    assert gen.shape[1] == prompt.shape[1] + 8
