"""run_search on a tiny model: the run folder, resume refusals, one writer per folder, import-path objectives,
local workers, --join before the study exists, failed candidates, budgets below the seeds, nothing feasible."""
from __future__ import annotations

import math
import subprocess
import sys
import textwrap
import threading
import warnings
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from nas_llm.errors import ConfigError, RunFolderError
from nas_llm.run import Run
from nas_llm.search import SearchConfig, run_optuna, run_pymoo, run_random, run_search
from nas_llm.search.loop import AllCandidatesFailed
from nas_llm.search.optuna_driver import StudyNotFoundError, prepare_study
from objectives import Objective
from test_perplexity import TEXT, CharTokenizer
from test_search import Loss, check_front, problem
from tiny import tiny_model

ROOT = Path(__file__).resolve().parents[1]
PLUGIN = textwrap.dedent("""
    from objectives import OBJECTIVES, Objective

    @OBJECTIVES.register(__name__ + "_kept")  # imported twice (validation, then the search) = registered twice?
    class KeptNeurons(Objective):
        name = "kept_neurons"

        def score(self, subnet, ctx):
            return float(sum(c.neurons for c in subnet.layers if c.keep))
""")


@pytest.fixture(scope="module")
def calib(tmp_path_factory) -> Path:
    p = tmp_path_factory.mktemp("data") / "calib.txt"
    p.write_text(TEXT)
    return p


def make_config(tmp_path: Path, calib: Path, **kw) -> SearchConfig:
    base = dict(out=str(tmp_path / "run"), objectives=["params_ratio", "kv_cache_bytes"], evaluations=8, pop_size=4,
                granularity=32, calibration=str(calib), calib_samples=2, calib_seq_len=16, importance="magnitude",
                progress=False)
    return SearchConfig(**{**base, **kw})


def search(config: SearchConfig):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # budgets below the seeds, on purpose
        return run_search(config, model=tiny_model(), tokenizer=CharTokenizer())


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file() and p.name != ".lock"}


def test_run_search_writes_the_folder_from_the_config(tmp_path, calib):
    cfg = make_config(tmp_path, calib)
    res = search(cfg)
    run = Run(cfg.out)
    assert len(res.table) == 8 == len(run.table()) and run.ranking_file.is_file()
    s = run.settings()
    # --screen-dtype auto (the default) is stored as the dtype measured faster when the run started
    assert s["search"]["screen_dtype"] == s["screen_dtype_probe"]["chosen"] in ("float32", "bfloat16")
    assert SearchConfig.from_json(s, out=cfg.out) == replace(cfg, screen_dtype=s["search"]["screen_dtype"])
    assert [o["name"] for o in s["objectives"]] == ["params_ratio", "kv_cache_bytes"] and s["n_calls"] == 8
    assert res.context.space.num_layers == 4  # the context the search used, for --reform
    # the space's size, by hand: tiny llama-gqa, 4 layers of 3 KV groups x 1..2 query heads x 3 widths (32/64/96),
    # or the layer dropped (its widths then do not matter)
    assert s["space"]["heads_per_group"] == [1, 2] and s["space"]["choices_per_layer"] == 3 * 2 * 3 + 1
    assert s["space"]["log10_subnets"] == round(math.log10(19 ** 4 - 1), 3)


def test_resume_with_other_settings_refuses_before_writing_anything(tmp_path, calib, capsys):
    cfg = make_config(tmp_path, calib)
    search(cfg)
    before = snapshot(Path(cfg.out))
    other = replace(cfg, resume=True, model="another-model", ppl_samples=4, granularity=64, calib_seq_len=32)
    with pytest.raises(ConfigError) as e:
        search(other)
    for flag in ("--model", "--ppl-samples", "--granularity", "--calib-seq-len"):
        assert flag in str(e.value)
    assert snapshot(Path(cfg.out)) == before
    from nas_llm.cli import main  # the CLI refuses before loading the model (it names one that does not exist)

    assert main(["search", *other.to_argv()]) == 2
    assert "--ppl-samples 8 (run) vs 4 (now)" in capsys.readouterr().err
    assert snapshot(Path(cfg.out)) == before
    with pytest.raises(RunFolderError, match="--resume"):  # no --resume at all
        search(cfg)
    res = search(replace(cfg, resume=True, evaluations=12))  # the same settings and a larger budget continue
    assert len(res.table) == 12 and res.table["id"].is_unique and res.table["key"].is_unique


def test_auto_screen_dtype_is_measured_once_and_kept_on_resume(tmp_path, calib, monkeypatch):
    """A new run records the probe's choice; a resume with ``auto`` keeps the run's dtype whatever the probe
    says now (its screening values were computed in it), and an explicit other dtype is a settings change."""
    import objectives.perplexity as P

    monkeypatch.setattr(P, "fastest_dtype", lambda: ("bfloat16", {"float32": 1.0, "bfloat16": 2.0}))
    cfg = make_config(tmp_path, calib, objectives=["perplexity", "params_ratio"], ppl_samples=2, ppl_seq_len=16)
    search(cfg)
    s = Run(cfg.out).settings()
    assert s["search"]["screen_dtype"] == "bfloat16" and s["screen_dtype_probe"]["gflops"]["bfloat16"] == 2.0
    assert "--screen-dtype bfloat16" in s["command"]  # the reproduce command is explicit
    monkeypatch.setattr(P, "fastest_dtype", lambda: pytest.fail("a resume must not probe"))
    res = search(replace(cfg, resume=True, evaluations=12))
    assert len(res.table) == 12 and Run(cfg.out).settings()["search"]["screen_dtype"] == "bfloat16"
    with pytest.raises(ConfigError, match="--screen-dtype 'bfloat16' \\(run\\) vs 'float32' \\(now\\)"):
        search(replace(cfg, resume=True, evaluations=12, screen_dtype="float32"))


def test_fastest_dtype_measures_both():
    from objectives.perplexity import SCREEN_DTYPES, fastest_dtype

    best, speeds = fastest_dtype(64, 64, 64, min_run_time=0.01)
    assert set(speeds) == set(SCREEN_DTYPES) and all(v > 0 for v in speeds.values())
    assert speeds[best] == max(speeds.values())


def test_fastest_dtype_is_measured_once_per_thread_count(monkeypatch):
    """Config helpers ask on every call: the second answer comes from the first measurement, not a new timing."""
    import torch.utils.benchmark as tb

    from objectives.perplexity import fastest_dtype

    first = fastest_dtype(32, 32, 32, min_run_time=0.01)
    monkeypatch.setattr(tb, "Timer", lambda *a, **k: pytest.fail("measured again"))
    assert fastest_dtype(32, 32, 32, min_run_time=0.01) == first
    with pytest.raises(pytest.fail.Exception, match="measured again"):
        fastest_dtype(32, 32, 48, min_run_time=0.01)  # another shape is another measurement


def test_one_writer_per_run_folder(tmp_path, calib, capsys):
    cfg = make_config(tmp_path, calib)
    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import sys, time
        sys.path.insert(0, {str(ROOT)!r})
        from nas_llm.run import Run
        with Run({cfg.out!r}).lock():
            print("locked", flush=True)
            time.sleep(120)
    """)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(RunFolderError, match=rf"in use by another nas-llm process \(pid {holder.pid}\)"):
            search(cfg)
        from nas_llm.cli import main

        assert main(["search", *cfg.to_argv()]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and f"pid {holder.pid}" in err
        assert not Run(cfg.out).exists()
    finally:
        holder.kill()  # SIGKILL: the kernel releases the lock
        holder.wait()
    with Run(cfg.out).lock():  # re-entrant in one process: the CLI holds it around run_search
        assert len(search(cfg).table) == 8


def _plugin(tmp_path: Path, module: str) -> Path:
    d = tmp_path / "plugins"
    d.mkdir(exist_ok=True)
    (d / f"{module}.py").write_text(PLUGIN)
    return d


def test_import_path_objectives_resume(tmp_path, calib, monkeypatch):
    """``pkg.mod:Name`` and ``file.py:Name`` are recorded as given and re-resolved on resume."""
    d = _plugin(tmp_path, "nasllm_plugin_a")
    monkeypatch.syspath_prepend(str(d))
    specs = ["params_ratio", "nasllm_plugin_a:KeptNeurons", f"{d / 'nasllm_plugin_a.py'}:KeptNeurons"]
    for k, spec in enumerate(specs[1:]):
        cfg = make_config(tmp_path / str(k), calib, objectives=[specs[0], spec])
        search(cfg)
        assert Run(cfg.out).settings()["search"]["objectives"] == [specs[0], spec]
        res = search(replace(cfg, resume=True, evaluations=10))
        assert len(res.table) == 10 and "kept_neurons" in res.table


def test_workers_resolve_import_path_objectives(tmp_path, calib, monkeypatch, capfd):
    """``--workers 2`` with a ``pkg.mod:Name`` objective: the child process resolves it, joins and finishes."""
    import optuna

    monkeypatch.syspath_prepend(str(_plugin(tmp_path, "nasllm_plugin_w")))
    model_dir = _tiny_model_dir(tmp_path)
    cfg = make_config(tmp_path, calib, model=str(model_dir), driver="optuna", workers=2, evaluations=10,
                      objectives=["params_ratio", "nasllm_plugin_w:KeptNeurons"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        res = run_search(cfg)  # raises WorkerFailedError when a child exits with an error
    assert "worker 1 done" in capfd.readouterr().err
    study = optuna.load_study(study_name="nas-llm", storage=f"sqlite:///{Path(cfg.out) / 'study.db'}")
    assert len([t for t in study.trials if t.state.name == "COMPLETE"]) == 10
    assert res.table["key"].is_unique and "kept_neurons" in res.table


def _tiny_model_dir(tmp_path: Path) -> Path:
    """The tiny LLaMA with a character tokenizer on disk (what a worker process loads)."""
    from tokenizers import Regex, Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {chr(i): i for i in range(32, 127)} | {"\n": 10, "[UNK]": 0}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Split(Regex(".|\n"), behavior="isolated")
    d = tmp_path / "tiny-model"
    tiny_model().save_pretrained(d)
    PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]").save_pretrained(d)
    return d


# -- --join ---------------------------------------------------------------------------------------------
def test_join_before_the_study_exists_refuses_and_creates_nothing(tmp_path, calib):
    run_dir = tmp_path / "j"
    with pytest.raises(StudyNotFoundError, match=r"after waiting 0.3 s; start the coordinator"):
        run_optuna(problem(), 10, run_dir=run_dir, join=True, join_timeout=0.3, write=False, progress=False)
    assert not (run_dir / "study.db").exists()
    log = tmp_path / "study.log"
    with pytest.raises(StudyNotFoundError):
        run_optuna(problem(), 10, storage=f"journal:{log}", join=True, join_timeout=0.2, write=False, progress=False)
    assert not log.exists()
    cfg = make_config(tmp_path, calib, driver="optuna", join=True, join_timeout=0.2)
    with pytest.raises(StudyNotFoundError):
        search(cfg)
    assert not Run(cfg.out).exists() and not (Path(cfg.out) / "study.db").exists()


def test_join_waits_for_the_study(tmp_path):
    storage = f"journal:{tmp_path / 'study.log'}"
    timer = threading.Timer(1.0, lambda: prepare_study(problem(), storage, tmp_path, seed=0, pop_size=8))
    timer.start()
    try:
        res = run_optuna(problem(), 12, storage=storage, join=True, join_timeout=60, write=False, progress=False)
    finally:
        timer.join()
    assert len(res.table) >= 1 and res.table["key"].is_unique


def test_join_with_other_settings_is_refused(tmp_path, calib):
    storage = f"journal:{tmp_path / 'study.log'}"
    cfg = make_config(tmp_path, calib, driver="optuna", storage=storage)
    search(cfg)
    with pytest.raises(ConfigError, match="--granularity"):  # the run folder's run.json
        search(replace(cfg, join=True, granularity=16))
    elsewhere = replace(cfg, out=str(tmp_path / "other-machine"), join=True, calib_samples=3)
    with pytest.raises(ConfigError, match=r"study 'nas-llm' was started with other settings \(--calib-samples 2"):
        search(elsewhere)  # no run.json there: the study remembers the coordinator's settings


# -- weak spots: failed candidates, budgets, nothing feasible ---------------------------------------------
class NaNWhenSmall(Loss):
    """Loss, but NaN (or inf) for subnets below 60% of the parameters: a user objective's bug."""

    name = "loss"

    def __init__(self, bad: float = math.nan):
        super().__init__()
        self.bad = bad

    def score(self, subnet, ctx):
        return self.bad if ctx.space.ratio(subnet) < 0.6 else super().score(subnet, ctx)


@pytest.mark.parametrize("bad", [math.nan, math.inf])
def test_a_failing_candidate_is_recorded_and_the_search_goes_on(bad):
    for run in (lambda sp: run_pymoo(sp, 40, pop_size=10, progress=False),
                lambda sp: run_optuna(sp, 30, pop_size=10, progress=False)):
        res = run(problem(objectives=[NaNWhenSmall(bad), "params_ratio"]))
        t = res.table
        failed = t["reason"].notna() if "reason" in t else np.zeros(len(t), bool)
        assert failed.any() and (~failed).any()
        assert (t.loc[failed, "params_ratio"] < 0.6).all() and (t.loc[~failed, "params_ratio"] >= 0.6).all()
        assert t.loc[failed, "reason"].str.contains(f"objective 'loss' returned {bad}").all()
        assert not t.loc[failed, "feasible"].any() and not t.loc[failed, "pareto"].any()
        check_front(res)


class AlwaysNaN(Objective):
    name = "broken"

    def score(self, subnet, ctx):
        return float("nan")


def test_every_candidate_failing_stops_the_search():
    with pytest.raises(AllCandidatesFailed, match="every candidate failed.*'broken' returned nan"):
        run_random(problem(objectives=[AlwaysNaN(), "params_ratio"]), 30, batch=10, progress=False)


def test_budget_below_the_seeded_first_generation_says_so():
    with pytest.warns(UserWarning, match=r"budget of 5 evaluations is smaller than the seeded first generation \(\d+ subnets\)"):
        res = run_pymoo(problem(), 5, pop_size=8, progress=False)
    assert len(res.table) == 5 and res.table["source"].iloc[0] == "dense"
    with pytest.warns(UserWarning, match="smaller than the seeded first generation"):
        run_optuna(problem(), 5, pop_size=8, progress=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        run_pymoo(problem(), 40, pop_size=8, progress=False)  # a budget above the seeds: silent


def test_nothing_feasible_names_the_closest_point():
    res = run_random(problem(constraints=["loss<=-1"]), 12, batch=6, progress=False)
    t = res.table
    assert not t["feasible"].any()
    best = int(t.loc[t["loss"].idxmin(), "id"])  # violation = loss + 1: the lowest loss is the closest
    assert f"nothing was feasible; the closest point is id {best} (loss=" in repr(res)


def test_a_different_model_at_the_searched_path_is_refused(tmp_path, calib, monkeypatch):
    """Issue 21 #2: run.json records the weights' fingerprint; resume, reform and export refuse other weights."""
    from nas_llm.deploy import export_pick
    from nas_llm.errors import ModelMismatchError
    from nas_llm.reform import reform_run

    d = _tiny_model_dir(tmp_path)
    monkeypatch.chdir(tmp_path)
    cfg = make_config(tmp_path, calib, model="tiny-model")  # relative, as typed
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        run_search(cfg)
    settings = Run(cfg.out).settings()
    assert Path(settings["model"]).is_absolute() and len(settings["model_fingerprint"]) == 16
    other = tiny_model(seed=1)  # same shapes, other weights (another ./tiny-model)
    other.save_pretrained(d)
    before = (Path(cfg.out) / "run.json").read_text()
    with pytest.raises(ModelMismatchError, match="not the one"):
        run_search(replace(cfg, resume=True, evaluations=10))  # loads ./tiny-model: the other weights
    assert (Path(cfg.out) / "run.json").read_text() == before
    with pytest.raises(ModelMismatchError):
        reform_run(Run(cfg.out), other, CharTokenizer(), "exact", n_samples=2, seq_len=16, progress=False)
    with pytest.raises(ModelMismatchError):
        export_pick(cfg.out, 0, tmp_path / "exp")
    assert not (tmp_path / "exp").exists()


def test_torch_threads_are_set_for_the_search_and_restored(tmp_path, calib):
    import json

    import torch

    from nas_llm.search.runner import free_cores, torch_threads

    before = torch.get_num_threads()
    with torch_threads(1) as n:
        assert n == 1 and torch.get_num_threads() == 1
    assert torch.get_num_threads() == before
    assert 1 <= free_cores() <= (len(__import__("os").sched_getaffinity(0)))
    search(make_config(tmp_path, calib, threads=1))
    s = json.loads((tmp_path / "run" / "run.json").read_text())
    assert s["threads"] == 1 and s["setup_s"] >= 0 and torch.get_num_threads() == before
