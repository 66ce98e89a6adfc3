"""GGUF export of the real SmolLM2-135M: llama.cpp computes the sliced model's logits and perplexity.

Uniform 80 %, a non-uniform ~80 % subnet with a dropped layer (the shape a search picks) and a 50 %
subnet, written in f32: logits agree (f32 KV cache) and WikiText-2 test perplexity on 2 x 2048 tokens
agrees within 0.1 %; q8_0 from llama.cpp's quantiser stays within 1 % of f32. The tokenizer comes
from the built-in GGUF, so llama.cpp tokenises text exactly as the HF tokenizer does.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from nas_llm.model import llamacpp
from nas_llm.model.data import calibration_batch, eval_windows
from nas_llm.model.gguf import choose_arch, export_gguf
from nas_llm.model.importance import compute_scores
from nas_llm.model.metrics import perplexity
from nas_llm.model.slicing import slice_model
from search_spaces import Subnet, SubnetSpace

pytestmark = pytest.mark.smollm2


@pytest.fixture(scope="module")
def setup(smollm2):
    model, tok = smollm2
    ranking = compute_scores(model, calibration_batch(tok, "wikitext2-valid", 8, 128, seed=0), "wanda", progress=False).ranking()
    windows = eval_windows(tok, "wikitext2-test", seq_len=2048, max_windows=2)
    return model, tok, ranking, windows


def _subnets(space: SubnetSpace) -> dict[str, Subnet]:
    kv = [2 if 5 <= i < 10 else 3 for i in range(30)]
    neurons = [1152 if i % 2 == 0 else 1280 for i in range(30)]
    return {"uniform80": space.uniform_at_ratio(0.8, "both"),
            "pick80": space.validate(Subnet.from_lists(kv, neurons, [i not in (25, 27) for i in range(30)])),
            "uniform50": space.uniform_at_ratio(0.5, "both")}


@pytest.mark.parametrize("name", ["uniform80", "pick80", "uniform50"])
def test_f32_logits_and_perplexity_match(setup, name, tmp_path):
    model, tok, ranking, windows = setup
    space = SubnetSpace.from_model(model)
    sub = _subnets(space)[name]
    sliced = slice_model(model, ranking.resolve(sub), subnet=sub)
    assert choose_arch(sliced).name == ("deci" if name == "pick80" else "llama")
    path = export_gguf(sliced, tmp_path / f"{name}.gguf", tok)
    llm = llamacpp.open_model(path, n_ctx=2048, threads=2, f32_kv=True, logits_all=True)
    ids = windows[0, :256].tolist()
    with torch.no_grad():
        want = sliced(torch.tensor([ids])).logits[0].numpy()
    got = llamacpp.logits(llm, ids)
    assert np.abs(got - want).max() < 2e-2 * np.abs(want).max()
    assert (got.argmax(1) == want.argmax(1)).mean() > 0.99
    ppl_cpp = llamacpp.perplexity(llm, windows.tolist())
    ppl_torch = perplexity(sliced, windows, batch_size=1)
    assert ppl_cpp == pytest.approx(ppl_torch, rel=1e-3)
    text = "The capital of France is Paris.\nIt has 2,148,271 inhabitants!"
    assert llm.tokenize(text.encode(), add_bos=False) == tok(text).input_ids
    if name == "pick80":
        del llm
        q8 = export_gguf(sliced, tmp_path / "q8.gguf", tok, outtype="q8_0")
        assert q8.stat().st_size < 0.35 * path.stat().st_size
        ppl_q8 = llamacpp.perplexity(llamacpp.open_model(q8, n_ctx=2048, threads=2, logits_all=True), windows.tolist())
        assert ppl_q8 == pytest.approx(ppl_cpp, rel=1e-2)
