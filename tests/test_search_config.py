"""SearchConfig: one source of flags, run.json, worker argv, reproduce command, resume check and validation."""
from __future__ import annotations

import argparse
import json
import math
import shlex
from dataclasses import fields, replace

import pytest

from nas_llm.errors import ConfigError
from nas_llm.search.config import SearchConfig, add_arguments

# a value different from the default for every field a user can set (and import-path objectives)
ARGV = ["--out", "runs/x", "--model", "some-hub/model", "--driver", "optuna", "--algorithm", "nsga3", "--sampler", "tpe",
        "--objectives", "perplexity,params_ratio,my_pkg.metrics:KVHeads", "--constraint", "params_ratio in [0.5, 0.9]",
        "--constraint", "latency_lut<=20", "--evaluations", "77", "--pop-size", "6", "--seed", "3",
        "--storage", "journal:runs/x/study.log", "--study-name", "s1", "--workers", "3", "--join-timeout", "12.5",
        "--granularity", "32", "--no-layer-drop", "--no-query-heads", "--calibration", "ptb-valid", "--calib-samples", "4",
        "--calib-seq-len", "64", "--calib-seed", "2", "--allow-test-calibration", "--ppl-samples", "5",
        "--ppl-seq-len", "48", "--importance", "wanda", "--screen", "0.5", "--rescore-fronts", "2",
        "--no-rescore-baselines", "--baseline-margin", "3", "--seed-margin", "1.5", "--init", "random", "--ref-point=-1.5,0.25,7", "--reform", "exact", "--no-progress",
        "--halving", "3", "--rung-step", "2", "--screen-dtype", "float32", "--head-chunk", "64", "--no-alloc", "--sens-samples", "2",
        "--sens-seq-len", "32", "--sens-points", "3", "--sens-metric", "nll", "--no-sens-cache", "--threads", "1"]


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser()
    add_arguments(p)
    return p


def parse(argv) -> SearchConfig:
    return SearchConfig.from_args(parser().parse_args(argv))


def test_every_field_is_set_by_the_test_argv():
    """ARGV really moves every field off its default (else the round trip below would prove less)."""
    c, d = parse(ARGV), SearchConfig(out="runs/x")
    same = [f.name for f in fields(c) if getattr(c, f.name) == getattr(d, f.name)]
    assert set(same) <= {"out", "resume", "join", "worker_id"}, same


def test_round_trip_cli_runjson_worker_argv():
    """CLI args -> config -> run.json -> config -> worker argv -> parse -> the same config."""
    c = parse(ARGV)
    assert c.objectives == ["perplexity", "params_ratio", "my_pkg.metrics:KVHeads"]
    assert c.ref_point == [-1.5, 0.25, 7.0] and c.constraints == ["params_ratio in [0.5, 0.9]", "latency_lut<=20"]
    assert (c.allow_layer_drop, c.rescore_baselines, c.progress) == (False, False, False)
    stored = json.loads(json.dumps(c.to_json()))  # what run.json holds
    back = SearchConfig.from_json(stored, out="runs/x")
    assert back == c
    w = back.worker(2)
    parsed = parse(w.to_argv())
    assert parsed == w
    assert (parsed.join, parsed.worker_id, parsed.workers, parsed.reform, parsed.progress) == (True, "2", 1, None, False)
    assert replace(parsed, join=False, worker_id="0", workers=3, reform="exact") == c
    # the recorded command starts the same search afresh
    cmd = shlex.split(c.command())
    assert cmd[:2] == ["nas-llm", "search"] and parse(cmd[2:]) == c
    assert parse(shlex.split(replace(c, resume=True).command())[2:]) == c  # never records --resume


def test_runjson_keeps_the_keys_other_commands_read():
    s = parse(ARGV).to_json()
    assert s["calibration"] == {"source": "ptb-valid", "n_samples": 4, "seq_len": 64, "seed": 2}
    assert s["objective_args"]["perplexity"]["n_samples"] == 5 and s["algorithm"] == "tpe"
    assert s["search"]["objectives"][2] == "my_pkg.metrics:KVHeads"  # the import path, re-resolvable
    assert not {"out", "resume", "join", "worker_id"} & set(s["search"])


def test_file_objectives_and_local_models_are_recorded_absolute(tmp_path, monkeypatch):
    (tmp_path / "obj.py").write_text("x = 1\n")
    (tmp_path / "tiny").mkdir()
    monkeypatch.chdir(tmp_path)
    c = SearchConfig(out="r", model="tiny", objectives="params_ratio,obj.py:Name")
    assert c.model == str(tmp_path / "tiny") and c.objectives[1] == f"{tmp_path / 'obj.py'}:Name"
    assert SearchConfig(**{f.name: getattr(c, f.name) for f in fields(c)}) == c  # idempotent


def test_objective_args_follow_the_calibration_settings():
    a = SearchConfig(out="x", calib_samples=16, calib_seed=3, ppl_samples=8, screen=0.25).objective_args()
    assert (a["perplexity_reformed"]["reform_samples"], a["perplexity_reformed"]["reform_seed"]) == (16, 3)
    assert a["perplexity_reformed"]["seed"] == 4 and a["perplexity"]["seed"] == 3 and a["perplexity"]["batch_size"] == 2


# -- the resume check ----------------------------------------------------------------------------------
def test_diff_lists_every_number_changing_setting_and_nothing_else():
    run = SearchConfig(out="r", constraints=["params_ratio in [0.5,0.9]", "latency_lut<=20"])
    same = replace(run, evaluations=500, workers=1, progress=False, resume=True, reform="admm", join_timeout=1.0,
                   rescore_baselines=False, constraints=["latency_lut <= 20", "params_ratio in [0.5, 0.9]"],
                   sampler="tpe", storage="sqlite:///x.db")  # budget, how it runs, spelling, another driver's knobs
    assert run.diff(same) == []
    other = replace(run, model="other", ppl_samples=4, calib_seq_len=128, granularity=32, importance="wanda",
                    objectives=["perplexity"], constraints=["params_ratio<=0.8"], screen=1.0, allow_layer_drop=False)
    d = run.diff(other)
    assert [x.split()[0] for x in d] == ["--model", "--objectives", "--constraint", "--granularity", "--no-layer-drop",
                                         "--calib-seq-len", "--ppl-samples", "--importance", "--screen"]
    assert "--model 'smollm2-135m' (run) vs 'other' (now)" in d
    assert replace(run, driver="optuna").diff(replace(run, driver="optuna", sampler="tpe")) == ["--sampler 'nsga2' (run) vs 'tpe' (now)"]


def test_legacy_run_json_is_read():
    """A run.json written before SearchConfig existed gives the config it was searched with."""
    legacy = {"model": "smollm2-135m", "granularity": 64, "allow_layer_drop": True,
              "calibration": {"source": "wikitext2-valid", "n_samples": 16, "seq_len": 256, "seed": 0}, "importance": "wanda",
              "objectives": [{"name": "perplexity", "direction": "minimize"}, {"name": "latency_lut", "direction": "minimize"}],
              "constraints": [{"objective": "params_ratio", "lo": 0.7, "hi": 0.9}], "screen_fidelity": 0.25,
              "objective_args": {"perplexity": {"n_samples": 8, "seq_len": 512}}, "seed": 1, "driver": "pymoo",
              "algorithm": "nsga2", "evaluations": 200, "pop_size": 24, "init": "importance", "storage": None,
              "study_name": "nas-llm", "reference_point": None}
    c = SearchConfig.from_json(legacy, out="r")
    now = SearchConfig(out="r", calib_samples=16, importance="wanda", constraints=["params_ratio in [0.7,0.9]"], seed=1,
                       ppl_seq_len=512, algorithm="nsga2", evaluations=400, **BEFORE)
    assert c.diff(now) == []
    assert c.diff(replace(now, ppl_seq_len=256)) == ["--ppl-seq-len 512 (run) vs 256 (now)"]


# what a search did before issue 18's settings existed: no halving, float32 screening, the full LM head, no alloc seeds
BEFORE = dict(halving=0, rung_step=0, screen_dtype="float32", head_chunk=0, alloc=False, query_heads=False, sens_metric="nll")


def test_runs_from_before_the_speed_settings_resume_only_with_their_behaviour():
    """A run.json without the issue-18 keys was searched without them: resuming it with today's defaults is a
    numbers change the diff names, flag by flag; with the old behaviour spelled out it resumes."""
    stored = SearchConfig(out="r").to_json()
    for k in BEFORE:
        del stored["search"][k]
    c = SearchConfig.from_json(stored, out="r")
    assert {k: getattr(c, k) for k in BEFORE} == BEFORE
    assert [d.split()[0] for d in c.diff(SearchConfig(out="r"))] == ["--no-query-heads", "--halving", "--rung-step", "--screen-dtype", "--head-chunk",
                                                                  "--no-alloc", "--sens-metric"]
    assert c.diff(SearchConfig(out="r", **BEFORE)) == []


def test_rung_step_zero_is_the_classic_ladder_for_resume():
    """A run.json from before --rung-step (halving 4, no rung_step) searched the ladder 1/8, 1/2, 1: resuming it with
    --halving 4 and today's --rung-step 4 is the same search; --halving 8 with --rung-step 0 is not."""
    stored = SearchConfig(out="r", halving=4).to_json()
    del stored["search"]["rung_step"]
    c = SearchConfig.from_json(stored, out="r")
    assert c.rung_step == 0 and c.ladder_step() == 4
    assert c.diff(SearchConfig(out="r", halving=4)) == []
    assert [d.split()[0] for d in c.diff(SearchConfig(out="r", halving=8, rung_step=0))] == ["--halving", "--rung-step"]
    assert SearchConfig(out="r", halving=0, rung_step=3).ladder_step() == 0


def test_speed_settings_reach_run_json_the_objectives_and_the_resume_check():
    c = SearchConfig(out="r", halving=4, screen_dtype="float32", head_chunk=128, sens_samples=2, sens_seq_len=64,
                     sens_points=2, threads=1)
    back = SearchConfig.from_json(json.loads(json.dumps(c.to_json())), out="r")
    assert back == c
    args = c.objective_args()["perplexity_reformed"]
    assert (args["head_chunk"], args["screen_dtype"]) == (128, "float32")
    d = [x.split()[0] for x in c.diff(replace(c, halving=8, screen_dtype="bfloat16", head_chunk=0, alloc=False,
                                                sens_samples=8, sens_seq_len=256, sens_points=3, sens_metric="nll",
                                                threads=2))]
    assert d == ["--halving", "--screen-dtype", "--head-chunk", "--no-alloc", "--sens-samples", "--sens-seq-len", "--sens-points",
                 "--sens-metric"]


def test_screen_dtypes_match_the_objective():
    from objectives.perplexity import SCREEN_DTYPES
    from nas_llm.search.config import SCREEN_DTYPES as CONFIG_DTYPES

    assert CONFIG_DTYPES == SCREEN_DTYPES


def test_sens_metrics_match_the_sensitivity_module():
    from nas_llm.search.config import SENS_METRICS as CONFIG_METRICS
    from nas_llm.search.sensitivity import SENS_METRICS

    assert CONFIG_METRICS == SENS_METRICS


# -- validation ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("kw, match", [
    ({"pop_size": 0}, r"--pop-size must be a number >= 2, got 0"),
    ({"evaluations": 0}, r"--evaluations must be a number >= 1"),
    ({"evaluations": 5.5}, r"--evaluations must be a whole number"),
    ({"screen": 2.0}, r"--screen must be in \(0, 1\]"),
    ({"screen": math.nan}, r"--screen must be in \(0, 1\]"),
    ({"constraints": ["latency_lut<=nan"]}, r"not a finite number"),
    ({"constraints": ["params_ratio in [0.5, inf]"]}, r"not a finite number"),
    ({"constraints": ["params_ratio in [0, 0.5]"]}, r"outside \(0, 1\]"),
    ({"workers": 2}, r"--workers needs --driver optuna"),
    ({"join": True}, r"--join needs --driver optuna"),
    ({"join": True, "driver": "optuna", "resume": True}, r"drop --resume"),
    ({"calibration": "wikitext2-test"}, r"test split.*--allow-test-calibration"),
    ({"calibration": "ptb-test"}, r"test split"),
    ({"calibration": "data/wikitext2/wiki.test.txt"}, r"test split"),
    ({"ref_point": [1.0]}, r"--ref-point needs 2 finite values"),
    ({"objectives": []}, r"--objectives is empty"),
    ({"objectives": ["params_ratio", "params_ratio"]}, r"listed twice"),
    ({"algorithm": "nsga4"}, r"--algorithm 'nsga4' is not one of auto, nsga2, nsga3"),
    ({"join_timeout": -1.0}, r"--join-timeout must be a number >= 0"),
    ({"halving": 1}, r"--halving 1 would promote every row"),
    ({"screen_dtype": "float16"}, r"--screen-dtype 'float16' is not one of auto, float32, bfloat16"),
    ({"head_chunk": -1}, r"--head-chunk must be a number >= 0"),
    ({"sens_samples": 0}, r"--sens-samples must be a number >= 1"),
])
def test_validate_refuses(kw, match):
    with pytest.raises(ConfigError, match=match):
        SearchConfig(out="r", **kw).validate()


def test_validate_names_unknown_objectives_and_drivers():
    with pytest.raises(KeyError, match="Did you mean 'params_ratio'"):
        SearchConfig(out="r", objectives=["params_ratoi"]).validate()
    with pytest.raises(KeyError, match="Did you mean 'optuna'"):
        SearchConfig(out="r", driver="optona").validate()
    with pytest.raises(KeyError, match="Did you mean 'latency_lut'"):
        SearchConfig(out="r", objectives=["params_ratio"], constraints=["latency_lt<=3"]).validate()


def test_test_calibration_only_when_asked():
    SearchConfig(out="r", calibration="wikitext2-test", allow_test_calibration=True).validate()
    SearchConfig(out="r", driver="optuna", workers=2).validate()


def test_choices_match_the_modules_that_implement_them():
    from nas_llm.model.importance import DEFAULT_METHOD, METHODS
    from nas_llm.model.reform import METHODS as REFORM
    from nas_llm.search.config import DEFAULT_IMPORTANCE, IMPORTANCE, REFORM_METHODS

    assert IMPORTANCE == METHODS and set(REFORM_METHODS) <= set(REFORM)
    assert DEFAULT_IMPORTANCE == DEFAULT_METHOD == SearchConfig(out="r").importance


# -- the command line ----------------------------------------------------------------------------------
def test_cli_refuses_before_writing_anything(tmp_path, capsys):
    from nas_llm.cli import main

    out = tmp_path / "r"
    for argv, msg in ((["--pop-size", "0"], "--pop-size"), (["--evaluations", "0"], "--evaluations"),
                      (["--screen", "2"], "--screen"), (["--calibration", "wikitext2-test"], "--allow-test-calibration"),
                      (["--constraint", "params_ratio<=nan"], "finite"), (["--workers", "2"], "--driver optuna")):
        assert main(["search", "--out", str(out), *argv]) == 2
        err = capsys.readouterr().err
        assert msg in err and "Traceback" not in err
        assert not out.exists()


@pytest.mark.parametrize("command", ["search", "demo"])
def test_help_ends_with_real_examples(command, capsys):
    from nas_llm.cli import main

    with pytest.raises(SystemExit) as e:
        main([command, "--help"])
    assert e.value.code == 0
    text = capsys.readouterr().out.rstrip()
    tail = text[text.rindex("examples:"):].replace("\\\n", " ")
    examples = [ln.strip() for ln in tail.splitlines()[1:] if ln.strip()]
    assert 1 <= len(examples) <= 2 and all(ln.startswith(f"nas-llm {command}") for ln in examples), examples
    if command == "search":  # real commands: they parse and validate
        for ex in examples:
            parse(shlex.split(ex)[2:]).validate()


def test_demo_searches_the_reformation_aware_objective_inside_a_band():
    from nas_llm.cli.demo import add_arguments as demo_arguments, demo_config

    p = argparse.ArgumentParser()
    demo_arguments(p)
    c = demo_config(p.parse_args([]), "runs/demo").validate()
    assert c.objectives == ["perplexity_reformed", "params_ratio"] and c.importance == "wanda"
    assert c.constraints == ["params_ratio in [0.82,0.85]"] and c.alloc and c.halving >= 2
    assert parse(shlex.split(c.command())[2:]) == c  # the demo's search is a plain `nas-llm search` command
