"""`nas-llm select`: each rule returns the point an independent brute-force reference picks on a hand-made front.

``make_run`` (also used by test_report / test_export_cli) writes a run folder by hand with ``nas_llm.run.Run``:
a tiny saved model + char tokenizer, a random ranking, and rows with hand-chosen objective values.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from nas_llm.run import Run
from nas_llm.select import Objectives, by_budget, by_knee, by_weights, effective_table, parse_weights, pick, select

# (id, source, perplexity, latency, feasible)
ROWS = [
    (0, "dense", 10.0, 100.0, True),
    (1, "nsga2", 11.0, 60.0, True),
    (2, "nsga2", 12.0, 40.0, True),   # the knee
    (3, "nsga2", 20.0, 35.0, True),
    (4, "nsga2", 40.0, 30.0, True),
    (5, "nsga2", 13.0, 70.0, True),   # dominated by 1
    (6, "random", 15.0, 50.0, True),  # dominated by 2
    (7, "nsga2", 9.0, 20.0, False),   # would dominate everything but violates a constraint
    (8, "uniform", 14.0, 45.0, True),  # baseline, dominated by 2
    (9, "nsga2", float("nan"), 25.0, True),  # failed measurement
]


def char_tokenizer():
    """A character-level fast tokenizer with < 128 ids, so it fits the tiny models' vocabulary."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    chars = [chr(i) for i in range(32, 127)] + ["\n"]
    vocab = {"<unk>": 0, "<eos>": 1, **{c: i + 2 for i, c in enumerate(chars)}}
    t = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    t.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")
    t.decoder = decoders.Fuse()
    return PreTrainedTokenizerFast(tokenizer_object=t, unk_token="<unk>", eos_token="<eos>", pad_token="<eos>")


def make_run(root: Path, rows=ROWS, model_name: str | None = None, granularity: int = 32, seed: int = 0, reform: dict | None = None) -> Run:
    """A run folder by hand: tiny model saved in ``root/model`` (or ``model_name``), random ranking, given rows."""
    from search_spaces import Ranking, SubnetSpace

    from tiny import tiny_model

    root = Path(root)
    if model_name is None:
        model = tiny_model("llama-gqa")
        model.config.max_position_embeddings = 4096  # zero-shot continuations are long in characters
        model.save_pretrained(root / "model")
        char_tokenizer().save_pretrained(root / "model")
        model_name = str(root / "model")
        config = model.config
    else:
        from nas_llm import load_model

        config = load_model(model_name)[0].config
    space = SubnetSpace.from_model(config, granularity=granularity)
    d = space.dims
    rng = np.random.default_rng(seed)
    ranking = Ranking.from_scores([rng.random(d.num_kv_heads) for _ in range(d.num_layers)],
                                  [rng.random(d.intermediate) for _ in range(d.num_layers)], rng.random(d.num_layers), "random",
                                  head_scores=[np.random.default_rng(seed + 1).random(d.num_heads) for _ in range(d.num_layers)])
    run = Run(root / "run")
    run.path.mkdir(parents=True)
    ranking.save(run.ranking_file)
    settings = {"model": model_name, "objectives": [{"name": "perplexity", "direction": "minimize"}, {"name": "latency", "direction": "minimize"}],
                "constraints": ["latency>=10"], "seed": seed, "granularity": granularity,
                "calibration": {"source": "wikitext2-valid", "n_samples": 4, "seq_len": 32, "seed": 0},
                "importance": "random", "driver": "nsga2", "command": "hand-made test run", "space": space.size()}
    if reform:
        settings["reform"] = reform
    run.write_settings(settings)
    table = []
    for rid, source, ppl, lat, feas in rows:
        s = space.dense() if source == "dense" else space.sample(np.random.default_rng(100 + rid), p_drop=0.25)
        table.append({"id": rid, "key": s.key(), "subnet": s.to_json(), "encoding": json.dumps(space.encode(s).tolist()),
                      "source": source, "params": space.params(s, decoder_only=False), "params_ratio": space.ratio(s),
                      "perplexity": ppl, "latency": lat, "feasible": feas, "time_s": 0.1, "worker": 0})
    run.write_table(pd.DataFrame(table))
    return run


def _brute(rows, keep):
    """The feasible, measured rows that satisfy ``keep`` (reference for the budget rule)."""
    return [r for r in rows if r[4] and not math.isnan(r[2]) and keep(r)]


def _front(rows):
    ok = [r for r in rows if r[4] and not math.isnan(r[2])]
    return [r for r in ok if not any(o[2] <= r[2] and o[3] <= r[3] and (o[2], o[3]) != (r[2], r[3]) for o in ok)]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return make_run(tmp_path_factory.mktemp("sel"))


def test_budget_latency_picks_lowest_ppl_within_budget(run):
    for budget in (45.0, 36.0, 100.0, 30.0):
        ok = _brute(ROWS, lambda r: r[3] <= budget)
        expect = min(ok, key=lambda r: r[2])[0]
        assert select(run, "budget", max_latency_ms=budget).id == expect


def test_budget_ppl_only_minimises_latency(run):
    ok = _brute(ROWS, lambda r: r[2] <= 12.5)
    assert select(run, "budget", max_ppl=12.5).id == min(ok, key=lambda r: r[3])[0] == 2


def test_budget_params_ratio_against_brute_force(run):
    df = run.table()
    ratio = dict(zip(df["id"], df["params_ratio"]))
    cap = float(np.median([ratio[r[0]] for r in ROWS]))
    ok = _brute(ROWS, lambda r: ratio[r[0]] <= cap + 1e-12)
    expect = min(ok, key=lambda r: r[2])[0]
    assert select(run, "budget", max_params_ratio=cap).id == expect


def test_budget_impossible_names_the_closest(run):
    with pytest.raises(ValueError, match=r"no evaluated subnet meets latency <= 10.*closest is id 4 \(latency 30"):
        select(run, "budget", max_latency_ms=10)
    with pytest.raises(ValueError, match="closest is id 0"):  # ppl 10 is 1% over a 9.9 budget
        select(run, "budget", max_ppl=9.9)


def _scaled(front):
    """Reference scaling: perplexity compared on a log scale (cross-entropy), latency as is."""
    return np.array([[math.log(r[2]), r[3]] for r in front])


def test_knee_matches_das_distance_on_the_front(run):
    front = _front(ROWS)
    P = _scaled(front)
    N = (P - P.min(0)) / (P.max(0) - P.min(0))
    das = front[int(np.argmax(1 - N.sum(1)))][0]
    assert das == 2
    assert select(run, "knee").id == das
    assert pick(run, "knee").id == das


@pytest.mark.parametrize("w", [(1, 1), (1, 10), (10, 1), (1, 0)])
def test_weights_match_brute_force_asf(run, w):
    front = _front(ROWS)
    P = _scaled(front)
    N = (P - P.min(0)) / (P.max(0) - P.min(0))
    asf = [max(wi * n for wi, n in zip(w, row) if wi > 0) for row in N]
    expect = front[int(np.argmin(asf))][0]
    assert select(run, "weights", weights=f"perplexity={w[0]},latency={w[1]}").id == expect


def test_reformed_values_are_what_select_sees(tmp_path):
    run = make_run(tmp_path)
    df = run.table()
    df["reformed"] = df["id"].isin([4])
    df["perplexity_reformed"] = np.where(df["id"] == 4, 16.0, np.nan)
    run.write_table(df)
    assert select(run, "budget", max_latency_ms=36).id == 4  # unreformed it would be id 3 (ppl 20 vs 40)
    _, eff, obj = __import__("nas_llm.select", fromlist=["load"]).load(run)
    r4 = eff[eff["id"] == 4].iloc[0]
    assert r4["perplexity"] == 16.0 and r4["perplexity_unreformed"] == 40.0 and bool(r4["is_reformed"])


def test_errors_are_clear(run):
    obj = Objectives(["perplexity", "latency"], ["minimize", "minimize"])
    with pytest.raises(ValueError, match="unknown objective 'speed'"):
        parse_weights("speed=1", obj)
    with pytest.raises(ValueError, match="no evaluation with id 99"):
        pick(run, 99)
    with pytest.raises(ValueError, match="--pick must be a row id"):
        pick(run, "best")
    with pytest.raises(ValueError, match="needs --weights"):
        select(run, "weights")


def test_cli_prints_choice_and_export_command(run, capsys):
    from nas_llm.cli import main

    assert main(["select", str(run.path), "--max-latency-ms", "45"]) == 0
    out = capsys.readouterr().out
    assert "chosen: id 2" in out and "why: meets latency <= 45" in out and f"nas-llm export {run.path} --pick 2" in out
    assert main(["select", str(run.path), "--weights", "ppl=1,latency=10", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["row"]["id"] == 3
    assert main(["select", str(run.path), "--max-latency-ms", "5"]) == 2
    assert "closest is id 4" in capsys.readouterr().err
    assert main(["select", str(run.path), "--knee", "--weights", "1,1"]) == 2


def test_knee_is_not_a_broken_model(tmp_path):
    """Perplexity spans orders of magnitude; on a linear scale the knee would be the ppl-1e6 model (id 2)."""
    rows = [(0, "dense", 20.0, 100.0, True), (1, "nsga2", 25.0, 50.0, True), (2, "nsga2", 1e6, 10.0, True), (3, "nsga2", 1e9, 9.0, True)]
    run = make_run(tmp_path, rows=rows)
    P = np.array([[r[2], r[3]] for r in rows])
    lin = (P - P.min(0)) / (P.max(0) - P.min(0))
    assert int(np.argmax(1 - lin.sum(1))) == 2  # what a linear-scale knee would pick
    assert select(run, "knee").id == 1


def test_screened_only_rows_are_not_candidates(tmp_path):
    """A row measured only at a cheap screening fidelity (fidelity < 1) must not be selected or be on the front."""
    run = make_run(tmp_path)
    df = run.table()
    df["fidelity"] = [0.25 if i == 2 else 1.0 for i in df["id"]]
    run.write_table(df)
    ok = _brute([r for r in ROWS if r[0] != 2], lambda r: r[3] <= 45)
    assert select(run, "budget", max_latency_ms=45).id == min(ok, key=lambda r: r[2])[0] == 8
    from nas_llm.report import figures

    names = {t.name.split(" (")[0]: sorted(int(i) for i in t.customdata) for t in figures(run)["front"].data if t.meta == "subnets"}
    assert names["screened only"] == [2] and 2 not in names["Pareto front"]



def test_describe_names_each_value_once(run):
    """params_ratio is printed once: as an objective when it is one (it was printed twice), else on its own line."""
    from dataclasses import replace

    choice = select(run, "budget", max_latency_ms=45.0)
    assert choice.describe(run).count("params_ratio:") == 1 and "per layer (kv groups/neurons" in choice.describe(run)
    as_objective = replace(choice, objectives=Objectives(["perplexity", "params_ratio"], ["minimize", "minimize"]))
    assert as_objective.describe(run).count("params_ratio:") == 1
