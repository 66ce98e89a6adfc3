"""`nas-llm export RUN --pick ID --format gguf`: a run row becomes a GGUF llama.cpp runs, or a clear refusal."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn as nn

from nas_llm.model import llamacpp
from nas_llm.select import pick
from test_select import make_run
from tiny import tiny_model
from tiny_bpe import bpe_tokenizer


def _run(tmp_path, family="llama-gqa", untie=False):
    model = tiny_model(family)
    if untie:
        model.config.tie_word_embeddings = False
        model.lm_head.weight = nn.Parameter(model.lm_head.weight.detach().clone())
    model.save_pretrained(tmp_path / "model")
    bpe_tokenizer().save_pretrained(tmp_path / "model")
    return make_run(tmp_path, model_name=str(tmp_path / "model"), granularity=16)


def test_export_gguf_of_the_knee_matches_the_masked_dense_model(tmp_path, capsys):
    from nas_llm.cli import main
    from test_export_cli import _dense_masked_logits

    run = _run(tmp_path)
    out = tmp_path / "knee.gguf"
    assert main(["export", str(run.path), "--pick", "knee", "--format", "gguf", "--out", str(out)]) == 0
    msg = capsys.readouterr().out
    assert f"exported to {out}" in msg and "loads in llama.cpp" in msg and "f32" in msg
    ids = torch.randint(0, 98, (1, 24), generator=torch.Generator().manual_seed(0))
    want = _dense_masked_logits(run, pick(run, "knee").id, ids)[0].numpy()
    llm = llamacpp.open_model(out, n_ctx=64, threads=1, f32_kv=True, logits_all=True)
    assert np.abs(llamacpp.logits(llm, ids[0].tolist()) - want).max() < 1e-4
    import gguf

    meta = gguf.GGUFReader(str(out)).fields
    assert meta["nas_llm.id"].contents() == str(pick(run, "knee").id)
    assert meta["nas_llm.command"].contents().startswith("nas-llm export") and meta["general.architecture"].contents() == "deci"
    assert json.loads((run.path / "exports.json").read_text())[0]["out"] == str(out.resolve())
    # an existing file needs --overwrite, and nothing is touched without it
    before = out.stat().st_mtime_ns
    assert main(["export", str(run.path), "--pick", "1", "--format", "gguf", "--out", str(out)]) == 2
    assert "--overwrite" in capsys.readouterr().err and out.stat().st_mtime_ns == before
    assert main(["export", str(run.path), "--pick", "1", "--format", "gguf", "--type", "q8_0", "--out", str(out), "--overwrite"]) == 0
    msg = capsys.readouterr().out
    assert "q8_0" in msg and out.stat().st_mtime_ns != before and "k-quants" not in msg
    # a k-quant export says which cut maps llama.cpp kept out of k-quants (MLP widths here are multiples of 16)
    assert main(["export", str(run.path), "--pick", "1", "--format", "gguf", "--type", "q4_k_m", "--out", str(out), "--overwrite"]) == 0
    assert "note: llama.cpp stores k-quants only for rows that are multiples of 256: " in capsys.readouterr().out


def test_unknown_type_lists_the_valid_ones(tmp_path, capsys):
    from nas_llm.cli import main

    with pytest.raises(SystemExit) as e:
        main(["export", str(tmp_path), "--pick", "knee", "--format", "gguf", "--type", "q5", "--out", str(tmp_path / "x.gguf")])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "invalid choice: 'q5'" in err and all(t in err for t in ("f32", "f16", "q8_0", "q4_k_m"))


def test_a_subnet_no_architecture_can_express_is_refused(tmp_path, capsys):
    """Qwen3 with an untied head, non-uniform widths: the error names the layer and field; no file appears."""
    from nas_llm.cli import main

    run = _run(tmp_path, "qwen3", untie=True)
    rows = run.table()
    nonuniform = [int(r["id"]) for _, r in rows.iterrows() if r["source"] != "dense"]
    out = tmp_path / "q3.gguf"
    assert main(["export", str(run.path), "--pick", str(nonuniform[0]), "--format", "gguf", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "nas-llm export: error: llama.cpp cannot express this qwen3 subnet" in err and "dense layer" in err
    assert not out.exists() and not list(tmp_path.glob(".q3.gguf*"))


def test_hf_format_rejects_gguf_options(tmp_path, capsys):
    from nas_llm.cli import main

    run = _run(tmp_path)
    assert main(["export", str(run.path), "--pick", "knee", "--type", "q8_0", "--out", str(tmp_path / "d")]) == 2
    assert "apply to --format gguf" in capsys.readouterr().err


def test_demo_ending_runs_the_subnet_and_the_dense_model_in_llama_cpp(tmp_path, capsys):
    import nas_llm
    from nas_llm.cli.demo import run_in_llamacpp
    from search_spaces import SubnetSpace

    model = tiny_model("llama-gqa")
    space = SubnetSpace.from_model(model, granularity=16)
    sub = nas_llm.slice_model(model, __import__("search_spaces").Ranking.identity(4, 3, 96).resolve(space.uniform(2, 48, drop=[3])))
    res = run_in_llamacpp(model, sub, bpe_tokenizer(), tmp_path, "q8_0", prompt="the cat", n_tokens=8)
    out = capsys.readouterr().out
    assert "[demo] llama.cpp subnet (q8_0" in out and "tokens/s" in out and "llama-cli -m" in out
    assert res["subnet"]["gguf"].endswith("subnet.q8_0.gguf") and res["dense"]["mib"] > 0 and res["decode_speedup"] > 0
    assert isinstance(res["subnet"]["text"], str) and nas_llm.export_gguf is not None
