"""Issue 21 regressions: bad inputs are refused with one line that names the value and the fix (no traceback),
before any model load; files nas-llm creates get the user's umask; an offline hub id fails in seconds."""
from __future__ import annotations


import os
import stat

import pytest

from nas_llm.errors import ConfigError
from objectives import Constraint
from test_cli_errors import assert_one_line, run_cli
from test_select import make_run


@pytest.mark.parametrize("text", ["params_ratio<=nan", "params_ratio>=inf", "params_ratio in [nan,0.8]",
                                  "params_ratio in [0.1,-inf]"])
def test_nan_or_infinite_bounds_are_refused(text):
    with pytest.raises(ConfigError, match="finite"):
        Constraint.parse(text)


def test_select_budgets_must_be_finite(tmp_path, capsys):
    run = make_run(tmp_path)
    code, err = run_cli(["select", str(run.path), "--max-params-ratio", "nan"], capsys)
    assert code == 2
    assert_one_line(err, "select", "--max-params-ratio", "finite")
    code, err = run_cli(["select", str(run.path), "--budget", "params_ratio<=nan"], capsys)
    assert code == 2 and "finite" in err


def test_select_weights_name_the_bad_value(tmp_path, capsys):
    run = make_run(tmp_path)
    code, err = run_cli(["select", str(run.path), "--weights", "perplexity=abc"], capsys)
    assert code == 2
    assert_one_line(err, "select", "'abc' is not a number")
    code, err = run_cli(["select", str(run.path), "--weights=-1,1"], capsys)
    assert code == 2 and ">= 0" in err


def test_report_pick_names_the_ids(tmp_path, capsys):
    run = make_run(tmp_path)
    code, err = run_cli(["report", str(run.path), "--pick", "999"], capsys)
    assert code == 2
    assert_one_line(err, "report", "--pick 999", "ids")
    assert not (run.path / "report.html").exists()


@pytest.mark.parametrize("args,words", [(["--max-windows", "0"], ["--max-windows", ">= 1"]),
                                        (["--limit", "-5"], ["--limit must be > 0"]),
                                        (["--limit", "2.5"], ["whole number"]),
                                        (["--batch-size", "0"], ["--batch-size"]),
                                        (["--ppl", "/nonexistent/text.txt"], ["text.txt"])])
def test_evaluate_checks_its_numbers_before_loading(tmp_path, capsys, monkeypatch, args, words):
    import nas_llm.model.loading as loading

    monkeypatch.setattr(loading, "load_model", lambda *a, **k: pytest.fail("loaded the model before checking arguments"))
    code, err = run_cli(["evaluate", str(tmp_path), *args], capsys)
    assert code == 2
    assert_one_line(err, "evaluate", *words)


@pytest.mark.parametrize("args,words", [(["--rounds", "0"], ["--rounds", ">= 1"]), (["--threads", "0"], ["--threads"]),
                                        (["--min-run-time", "0"], ["--min-run-time"]), (["--ratio", "1.5"], ["--ratio"])])
def test_latency_checks_its_numbers_before_loading(capsys, monkeypatch, args, words):
    import nas_llm.model.loading as loading

    monkeypatch.setattr(loading, "load_model", lambda *a, **k: pytest.fail("loaded the model before checking arguments"))
    code, err = run_cli(["latency", "measure", *args], capsys)
    assert code == 2
    assert_one_line(err, "latency", *words)


@pytest.mark.parametrize("args,words", [(["--iters", "0"], ["--iters"]), (["--rho", "-1"], ["--rho"]),
                                        (["--ids", "999"], ["999", "Pareto"]), (["--n-samples", "0"], ["--n-samples"])])
def test_reform_checks_its_arguments_before_loading(tmp_path, capsys, monkeypatch, args, words):
    import nas_llm.model.loading as loading

    run = make_run(tmp_path)
    df = run.table()
    df["pareto"] = df["id"] < 2
    run.write_table(df)
    monkeypatch.setattr(loading, "load_model", lambda *a, **k: pytest.fail("loaded the model before checking arguments"))
    code, err = run_cli(["reform", str(run.path), *args], capsys)
    assert code == 2
    assert_one_line(err, "reform", *words)


def test_an_offline_hub_id_fails_fast_with_the_reason(monkeypatch):
    import time

    from nas_llm import load_model
    from nas_llm.errors import ModelFileError

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    t0 = time.perf_counter()
    with pytest.raises(ModelFileError, match="cannot reach huggingface.co"):
        load_model("someorg/no-such-model")
    assert time.perf_counter() - t0 < 20  # not the ~30 s of retries (a loose bound; the point is: no retry loop)


def test_files_and_folders_get_the_users_umask(tmp_path):
    from nas_llm.model.atomic import atomic_dir, atomic_write_text

    old = os.umask(0o022)
    try:
        atomic_write_text(tmp_path / "a.json", "{}")
        with atomic_dir(tmp_path / "d") as d:
            (d / "x").write_text("1")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "a.json").stat().st_mode) == 0o644
    assert stat.S_IMODE((tmp_path / "d").stat().st_mode) == 0o755

