"""Crash safety and distribution in real subprocesses: SIGKILL + resume, two workers on one storage."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from test_search import Loss, problem

TESTS = Path(__file__).parent
ROOT = TESTS.parent

SCRIPT = textwrap.dedent("""
    import sys, time
    sys.path[:0] = [{tests!r}, {root!r}]
    from pathlib import Path
    from test_search import Loss, problem
    mode, run_dir, calls = sys.argv[1], Path(sys.argv[2]), sys.argv[3]
    sp = problem(objectives=[Loss(log=calls, sleep=float(sys.argv[4])), "params_ratio"])
    if mode == "pymoo":
        from nas_llm.search import run_pymoo
        run_pymoo(sp, 40, pop_size=8, seed=3, run_dir=run_dir, progress=False)
    elif mode == "optuna":
        from nas_llm.search import run_optuna
        run_optuna(sp, 30, pop_size=8, seed=3, run_dir=run_dir, progress=False)
    else:  # a worker joining a shared journal storage, after a start barrier
        sp.worker = mode
        (run_dir / f"ready-{{mode}}").touch()
        t0 = time.time()
        while len(list(run_dir.glob("ready-*"))) < 2 and time.time() - t0 < 60:
            time.sleep(0.05)
        from nas_llm.search import run_optuna
        run_optuna(sp, 24, pop_size=8, seed=3, run_dir=run_dir, storage="journal:" + str(run_dir / "study.log"),
                   join=True, write=False, progress=False)
""").format(tests=str(TESTS), root=str(ROOT))


def _start(tmp_path: Path, mode: str, run_dir: Path, calls: Path, sleep: float) -> subprocess.Popen:
    script = tmp_path / "worker.py"
    script.write_text(SCRIPT)
    return subprocess.Popen([sys.executable, str(script), mode, str(run_dir), str(calls), str(sleep)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _wait_lines(path: Path, n: int, proc: subprocess.Popen, timeout: float = 90) -> None:
    t0 = time.time()
    while time.time() - t0 < timeout:
        if path.is_file() and len(path.read_text().splitlines()) >= n:
            return
        if proc.poll() is not None:
            raise AssertionError(f"worker exited early:\n{proc.stdout.read()}")
        time.sleep(0.02)
    proc.kill()
    raise AssertionError("timed out waiting for evaluations")


def _journal_keys(path: Path) -> dict[str, dict]:
    out = {}
    for line in path.read_text().splitlines():
        try:
            r = json.loads(line)
        except json.JSONDecodeError:  # a line torn by the kill
            continue
        out[r["key"]] = r
    return out


def test_pymoo_sigkill_then_resume_loses_and_repeats_nothing(tmp_path):
    run_dir, calls = tmp_path / "run", tmp_path / "calls.txt"
    proc = _start(tmp_path, "pymoo", run_dir, calls, 0.1)
    _wait_lines(run_dir / "checkpoint.json", 1, proc)  # generation 0 is done
    n0 = json.loads((run_dir / "checkpoint.json").read_text())["evaluations"]
    _wait_lines(run_dir / "evaluations.jsonl", n0 + 3, proc)  # in the middle of generation 1
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    before = _journal_keys(run_dir / "evaluations.jsonl")
    assert n0 + 3 <= len(before) < 40
    n_calls_before = len(calls.read_text().splitlines())

    from nas_llm.search import run_pymoo

    loss = Loss(log=str(calls))
    res = run_pymoo(problem(objectives=[loss, "params_ratio"]), 40, pop_size=8, seed=3, run_dir=run_dir, resume=True, progress=False)
    t = res.table
    assert len(t) == 40 and t["id"].is_unique and t["key"].is_unique
    assert sorted(t["id"]) == list(range(40))
    # nothing finished before the kill was lost, nor evaluated again
    assert set(before) <= set(t["key"])
    for k, r in before.items():
        assert t.loc[t["key"] == k, "loss"].iloc[0] == pytest.approx(r["loss"])
    after_keys = calls.read_text().splitlines()[n_calls_before:]
    assert not set(after_keys) & set(before)
    assert loss.calls == 40 - len(before)


def test_optuna_sigkill_then_resume(tmp_path):
    run_dir, calls = tmp_path / "run", tmp_path / "calls.txt"
    proc = _start(tmp_path, "optuna", run_dir, calls, 0.15)
    _wait_lines(calls, 10, proc)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()

    import optuna
    from optuna.trial import TrialState

    from nas_llm.search import run_optuna
    from nas_llm.search.optuna_driver import make_storage

    store = make_storage(None, run_dir)
    done_before = {t.number: t.user_attrs["key"] for t in optuna.load_study(study_name="nas-llm", storage=store).get_trials(states=(TrialState.COMPLETE,))}
    assert 5 <= len(done_before) < 30
    loss = Loss()
    res = run_optuna(problem(objectives=[loss, "params_ratio"]), 30, pop_size=8, seed=3, run_dir=run_dir, resume=True, progress=False)
    study = optuna.load_study(study_name="nas-llm", storage=store)
    complete = study.get_trials(states=(TrialState.COMPLETE,))
    assert len(complete) == 30
    assert {t.number: t.user_attrs["key"] for t in complete if t.number in done_before} == done_before
    t = res.table
    assert t["key"].is_unique and t["id"].is_unique
    assert set(done_before.values()) <= set(t["key"])
    assert loss.calls <= 30 - len(done_before)


def test_two_workers_share_one_journal_storage(tmp_path):
    run_dir, calls = tmp_path / "run", tmp_path / "calls.txt"
    run_dir.mkdir()
    from nas_llm.search.optuna_driver import finish, prepare_study

    sp = problem()
    storage = "journal:" + str(run_dir / "study.log")
    prepare_study(sp, storage, run_dir, seed=3, pop_size=8)  # creates the study, enqueues generation 0
    workers = [_start(tmp_path, f"w{k}", run_dir, calls, 0.15) for k in (1, 2)]
    for w in workers:
        out, _ = w.communicate(timeout=240)
        assert w.returncode == 0, out

    import optuna
    from optuna.trial import TrialState

    study = optuna.load_study(study_name="nas-llm", storage=optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(run_dir / "study.log"))))
    complete = study.get_trials(states=(TrialState.COMPLETE,))
    assert len(complete) == 24  # together exactly N trials
    assert len({t.number for t in complete}) == 24
    res = finish(problem(), storage, run_dir, rescore_fronts=0)
    t = res.table
    assert t["key"].is_unique and t["id"].is_unique
    assert set(t["worker"].astype(str)) == {"w1", "w2"}  # both did work
    evaluated = calls.read_text().splitlines()
    assert len(evaluated) == len(set(evaluated)) or len(evaluated) - len(set(evaluated)) <= 1  # a rare race at most
    assert len(t) == len(set(evaluated))
