"""`nas-llm search` end to end on the real SmolLM2: the run-folder contract other commands read."""
import json

import pandas as pd
import pytest

from nas_llm.run import Run


@pytest.mark.smollm2
def test_cli_search_writes_the_run_folder_contract(smollm2, tmp_path):
    from nas_llm.cli import main

    out = tmp_path / "run"
    argv = ["search", "--model", "smollm2-135m", "--out", str(out), "--objectives", "params_ratio,kv_cache_bytes",
            "--constraint", "params_ratio in [0.6, 0.95]", "--evaluations", "10", "--pop-size", "6",
            "--calib-samples", "2", "--calib-seq-len", "64", "--importance", "magnitude", "--no-progress"]
    assert main(argv) == 0
    run = Run(out)
    s = run.settings()
    for k in ("model", "granularity", "calibration", "importance", "objectives", "constraints", "seed", "driver", "command", "created"):
        assert k in s, k
    assert s["calibration"] == {"source": "wikitext2-valid", "n_samples": 2, "seq_len": 64, "seed": 0}
    assert [o["name"] for o in s["objectives"]] == ["params_ratio", "kv_cache_bytes"]
    assert run.ranking().kv_order[0].shape == (3,)
    df = run.table()
    assert len(df) == 10 and df["key"].is_unique
    for c in ("id", "key", "subnet", "encoding", "source", "params", "params_ratio", "kv_cache_bytes", "feasible",
              "pareto", "time_s", "worker", "fidelity", "generation"):
        assert c in df, c
    assert "dense" in set(df["source"])
    front = json.loads((out / "front.json").read_text())
    assert sorted(front["ids"]) == sorted(df.loc[df["pareto"], "id"])
    assert df.loc[df["pareto"], "params_ratio"].between(0.6, 0.95).all()
    assert len(pd.read_csv(out / "hypervolume.csv")) >= 1
    run.subnet(int(front["ids"][0]))  # rows rebuild into subnets
    # a second start refuses to overwrite; --resume with the budget met evaluates nothing new
    assert main(argv) == 2
    assert main(argv + ["--resume"]) == 0
    assert len(Run(out).table()) == 10


def _tiny_model_dir(tok, tmp_path):
    """A tiny random LLaMA with SmolLM2's tokenizer on disk (the CLI's loading and calibration paths are real)."""
    import torch
    from transformers import AutoModelForCausalLM, LlamaConfig

    cfg = LlamaConfig(hidden_size=32, intermediate_size=128, num_hidden_layers=4, num_attention_heads=4,
                      num_key_value_heads=2, vocab_size=len(tok), max_position_embeddings=128, tie_word_embeddings=True)
    torch.manual_seed(0)
    model_dir = tmp_path / "tiny"
    AutoModelForCausalLM.from_config(cfg).save_pretrained(model_dir)
    tok.save_pretrained(model_dir)
    return model_dir


@pytest.mark.smollm2
def test_cli_two_optuna_workers(smollm2, tmp_path):
    """`--workers 2`: the parent creates the study, one child process joins, N trials in total.

    Uses a tiny random LLaMA with SmolLM2's tokenizer (so the CLI's calibration path is real) to stay fast.
    """
    from nas_llm.cli import main

    model_dir = _tiny_model_dir(smollm2[1], tmp_path)
    out = tmp_path / "dist"
    argv = ["search", "--model", str(model_dir), "--out", str(out), "--driver", "optuna", "--workers", "2",
            "--objectives", "params_ratio,kv_cache_bytes", "--evaluations", "12", "--pop-size", "6",
            "--granularity", "32", "--calib-samples", "2", "--calib-seq-len", "32", "--importance", "magnitude", "--no-progress"]
    assert main(argv) == 0
    import optuna
    from optuna.trial import TrialState

    study = optuna.load_study(study_name="nas-llm", storage=f"sqlite:///{out / 'study.db'}")
    assert len(study.get_trials(states=(TrialState.COMPLETE,))) == 12
    df = Run(out).table()
    assert df["key"].is_unique and df["id"].is_unique and len(df) <= 12


@pytest.mark.smollm2
def test_cli_search_with_reform(smollm2, tmp_path):
    """`search --reform exact` reforms every Pareto member after the search and records before/after."""
    from nas_llm.cli import main

    model_dir = _tiny_model_dir(smollm2[1], tmp_path)
    out = tmp_path / "ref"
    argv = ["search", "--model", str(model_dir), "--out", str(out), "--driver", "random", "--objectives", "perplexity,params_ratio",
            "--evaluations", "6", "--pop-size", "6", "--granularity", "32", "--calib-samples", "2", "--calib-seq-len", "32",
            "--ppl-samples", "2", "--ppl-seq-len", "32", "--importance", "magnitude", "--reform", "exact", "--no-progress"]
    assert main(argv) == 0
    run = Run(out)
    df = run.table()
    pareto = df["pareto"].astype(bool)
    assert df.loc[pareto, "reformed"].astype(bool).all() and not df.loc[~pareto, "reformed"].astype(bool).any()
    assert df.loc[pareto, "perplexity_reformed"].notna().all()
    assert (df.loc[pareto, "params_ratio_reformed"] == df.loc[pareto, "params_ratio"]).all()
    assert run.settings()["reform"]["method"] == "exact"
