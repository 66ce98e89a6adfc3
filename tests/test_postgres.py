"""Distributed search on a real PostgreSQL server (Optuna RDB storage): several worker processes, one study.

The server is a private one started for this module (tests/pg.py: own data directory and port, stopped
afterwards); CI runs it, never skips it. Checked: N trials finished, every subnet scored once (no duplicate
rows, no objective call repeated for a subnet another worker already finished), none lost (every finished
trial is in the run table); then a worker is killed with SIGKILL mid-trial, the coordinator is resumed, and
the same holds for the larger budget.
"""
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

from pg import pg_bin, postgres_server
from test_perplexity import TEXT
from test_search_runner import _tiny_model_dir

pytestmark = pytest.mark.skipif(pg_bin() is None and not os.environ.get("CI") and not os.environ.get("NAS_LLM_TEST_PG_URL"),
                                reason="PostgreSQL server binaries missing (apt-get install postgresql); never skipped in CI")

PLUGIN = textwrap.dedent("""
    import json, os, time
    from objectives import Objective

    class SlowKept(Objective):
        '''Kept neurons, slowly, logging every call (start and end) with the worker's pid.'''
        name, kind, unit, measured = "slow_kept", "size", "count", False

        def score(self, subnet, ctx):
            log = os.environ["NASLLM_PG_CALLS"]
            with open(log, "a") as f:
                f.write(json.dumps({"event": "start", "key": subnet.key(), "pid": os.getpid()}) + "\\n")
            # the coordinator (a child of the test process) is slower, so the workers it starts get trials too
            coordinator = os.getppid() == int(os.environ["NASLLM_PG_TEST_PID"])
            time.sleep(float(os.environ["NASLLM_PG_SLEEP"]) * (4 if coordinator else 1))
            with open(log, "a") as f:
                f.write(json.dumps({"event": "end", "key": subnet.key(), "pid": os.getpid()}) + "\\n")
            return float(sum(c.neurons for c in subnet.layers if c.keep))
""")


@pytest.fixture(scope="module")
def pg_url():
    with postgres_server() as url:
        yield url


def _calls(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    out = []
    for line in path.read_text().splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:  # a line torn by the kill
            pass
    return out


def _search(tmp_path: Path, url: str, evaluations: int, *extra: str) -> subprocess.Popen:
    model = tmp_path / "tiny-model"
    if not model.is_dir():
        _tiny_model_dir(tmp_path)
    (tmp_path / "calib.txt").write_text(TEXT)
    (tmp_path / "pg_plugin.py").write_text(PLUGIN)
    env = {**os.environ, "NASLLM_PG_CALLS": str(tmp_path / "calls.jsonl"), "NASLLM_PG_SLEEP": "0.5",
           "NASLLM_PG_TEST_PID": str(os.getpid()), "PYTHONUNBUFFERED": "1",
           "PYTHONPATH": os.pathsep.join([str(Path(__file__).resolve().parents[1]), os.environ.get("PYTHONPATH", "")])}
    cmd = [sys.executable, "-m", "nas_llm.cli", "search", "--model", str(model), "--out", str(tmp_path / "run"),
           "--driver", "optuna", "--storage", url, "--workers", "3", "--evaluations", str(evaluations),
           "--pop-size", "6", "--granularity", "32", "--calibration", str(tmp_path / "calib.txt"),
           "--calib-samples", "2", "--calib-seq-len", "16", "--importance", "magnitude", "--no-progress",
           "--objectives", f"params_ratio,{tmp_path / 'pg_plugin.py'}:SlowKept", *extra]
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=tmp_path)


def _check(tmp_path: Path, url: str, n: int, may_repeat: frozenset = frozenset()) -> None:
    """``may_repeat``: keys whose scoring had ended when the kill landed but whose trial was not yet told
    (the kill races the victim's last steps): re-scoring those is the expected recovery, not a bug."""
    import optuna
    import pandas as pd

    study = optuna.load_study(study_name="nas-llm", storage=url)
    done = [t for t in study.trials if t.state.name == "COMPLETE"]
    assert len(done) == n, f"{len(done)} trials finished, expected {n}"
    table = pd.read_csv(tmp_path / "run" / "evaluations.csv")
    assert table["key"].is_unique, "a subnet is listed twice"
    assert set(t.user_attrs["key"] for t in done) == set(table["key"]), "a finished trial is missing from the table"
    ends = [c["key"] for c in _calls(tmp_path / "calls.jsonl") if c["event"] == "end"]
    assert set(ends) <= set(table["key"]), "a finished evaluation was lost"
    repeated = {k for k in ends if ends.count(k) > 1} - may_repeat - _concurrent(_calls(tmp_path / "calls.jsonl"))
    assert not repeated, f"a subnet was scored twice, one scoring after the other: {repeated}"


def _concurrent(calls: list[dict]) -> set[str]:
    """Keys two workers scored at the same time (each began before the other ended): two processes sampled the
    same subnet at once; the table keeps one row. Known waste (no claim of a key across workers), not a loss."""
    open_, out = {}, set()
    for c in calls:
        if c["event"] == "start":
            if any(k == c["key"] for k, _ in open_.values()):
                out.add(c["key"])
            open_[c["pid"]] = (c["key"], True)
        else:
            open_.pop(c["pid"], None)
    return out
    assert len({c["pid"] for c in _calls(tmp_path / "calls.jsonl")}) >= 2, "only one process did the work"


def _wait(proc: subprocess.Popen, timeout: float = 600) -> str:
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, _ = proc.communicate()
        raise AssertionError(f"search timed out:\n{out[-3000:]}")
    return out


def test_workers_share_one_postgres_study_then_survive_a_kill(tmp_path, pg_url):
    proc = _search(tmp_path, pg_url, 18)
    out = _wait(proc)
    assert proc.returncode == 0, out[-3000:]
    _check(tmp_path, pg_url, 18)

    # a larger budget; SIGKILL one worker child while it is inside a trial
    import psutil

    proc = _search(tmp_path, pg_url, 36, "--resume")
    calls = tmp_path / "calls.jsonl"
    n0 = len(_calls(calls))
    victim, t0 = None, time.time()
    while victim is None and time.time() - t0 < 300 and proc.poll() is None:
        children = {c.pid for c in psutil.Process(proc.pid).children(recursive=True)}
        inside = {}
        for c in _calls(calls)[n0:]:
            inside[c["pid"]] = c["event"] == "start"
        busy = [pid for pid, running in inside.items() if running and pid in children]
        if busy:
            victim = busy[0]
            os.kill(victim, signal.SIGKILL)
        time.sleep(0.05)
    if victim is None:
        proc.kill()
        raise AssertionError("no worker child was seen inside a trial:\n" + proc.communicate()[0][-3000:])
    out = _wait(proc)
    assert proc.returncode != 0 and "worker" in out, out[-3000:]  # the coordinator reports the dead worker
    last = [c for c in _calls(calls)[n0:] if c["pid"] == victim][-1]
    raced = frozenset({last["key"]}) if last["event"] == "end" else frozenset()  # it finished just before the kill

    proc = _search(tmp_path, pg_url, 36, "--resume")  # the trial the victim left RUNNING is failed and re-proposed
    out = _wait(proc)
    assert proc.returncode == 0, out[-3000:]
    _check(tmp_path, pg_url, 36, raced)
