"""Bad-input and fault sweep of the ``nas-llm`` CLI (issue 21): what a new user would try, and what breaks.

Every case runs ``python -m nas_llm.cli ...`` in a fresh process against a tiny random LLaMA (character
tokenizer) and a finished small run, and is classified:

* **clear**  -- refused with exit code 2, one ``nas-llm CMD: error: ...`` line, no traceback, and the message
  says what the case needs said (a regex per case: the value, the allowed range or the fix);
* **weak**   -- refused without a traceback, but the message misses what the regex asks for;
* **bug**    -- a traceback, a wrong exit code, or a post-condition broken (a user file or run lost);
* cases that must *succeed* (``ok``) are clear when they exit 0 and keep their post-condition.

    python benchmarks/robustness.py                 # all cases, table to stdout, JSON to benchmarks/results/
    python benchmarks/robustness.py --only export   # cases whose name starts with "export"
    flock /tmp/nasllm-heavy.lock python benchmarks/robustness.py --md benchmarks/ROBUSTNESS.md   # the published table
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]


@dataclass
class Case:
    name: str
    argv: list[str]
    expect: str = "error"  # "error" | "ok"
    clear: str = ""  # regex the message must match to count as clear
    setup: Callable[["Env"], None] | None = None
    post: Callable[["Env"], str | None] | None = None  # returns a problem description, or None
    timeout: float = 300
    env: dict = field(default_factory=dict)
    fault: Callable[["Env"], tuple[str, str]] | None = None  # a fault scenario run instead of argv: (verdict, why)


class Env:
    """The sandbox: a tiny model, calibration text, a finished run R and an export E."""

    def __init__(self, root: Path):
        self.root = root
        self.model = root / "tiny-model"
        self.text = root / "calib.txt"
        self.run = root / "R"
        self.export = root / "E"
        self.user = root / "photos"

    def common(self) -> list[str]:
        return ["--model", str(self.model), "--calibration", str(self.text), "--calib-samples", "2", "--calib-seq-len", "16",
                "--ppl-samples", "2", "--ppl-seq-len", "16", "--granularity", "32", "--importance", "magnitude",
                "--pop-size", "4", "--no-progress"]

    def search(self, out: Path, *extra: str) -> list[str]:
        return ["search", "--out", str(out), "--evaluations", "6", "--objectives", "perplexity,params_ratio",
                *self.common(), *extra]


def build(env: Env) -> None:
    from test_perplexity import TEXT
    from test_search_runner import _tiny_model_dir

    env.root.mkdir(parents=True, exist_ok=True)
    _tiny_model_dir(env.root)
    env.text.write_text(TEXT)
    env.user.mkdir()
    (env.user / "cat.jpg").write_text("meow")
    for argv in (env.search(env.run), ["export", str(env.run), "--pick", "knee", "--out", str(env.export)]):
        p = cli(argv, env.root)
        if p.returncode != 0:
            raise SystemExit(f"setup failed: nas-llm {' '.join(argv)}\n{p.stdout}{p.stderr}")


def cli(argv: list[str], cwd: Path, timeout: float = 300, env: dict | None = None) -> subprocess.CompletedProcess:
    e = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
         "HF_HUB_OFFLINE": "1", **(env or {})}
    return subprocess.run([sys.executable, "-m", "nas_llm.cli", *argv], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, env=e)


def _intact(*paths: Callable[[Env], Path]) -> Callable[[Env], str | None]:
    def check(env: Env) -> str | None:
        for f in paths:
            p = f(env)
            if not p.exists():
                return f"{p} was deleted"
        return None
    return check


RUN_INTACT = _intact(lambda e: e.run / "run.json", lambda e: e.run / "evaluations.csv", lambda e: e.run / "ranking.json")
USER_INTACT = _intact(lambda e: e.user / "cat.jpg")


def cases(env: Env) -> list[Case]:
    R, E, S = str(env.run), str(env.export), env.search
    new = lambda n: str(env.root / f"new-{n}")  # noqa: E731 - a fresh run folder per case
    c = [
        # -- search: numbers ---------------------------------------------------------------------------------
        Case("search --evaluations 0", S(Path(new(1)), "--evaluations", "0"), clear=r"--evaluations.*>= ?1"),
        Case("search --evaluations -3", S(Path(new(2)), "--evaluations", "-3"), clear=r"--evaluations"),
        Case("search --pop-size 0", S(Path(new(3)), "--pop-size", "0"), clear=r"--pop-size"),
        Case("search --pop-size 1", S(Path(new(4)), "--pop-size", "1"), clear=r"--pop-size"),
        Case("search --screen 0", S(Path(new(5)), "--screen", "0"), clear=r"--screen.*\(0, 1\]"),
        Case("search --screen 2", S(Path(new(6)), "--screen", "2"), clear=r"--screen"),
        Case("search --calib-samples 0", S(Path(new(7)), "--calib-samples", "0"), clear=r"calib"),
        Case("search --calib-seq-len 1", S(Path(new(8)), "--calib-seq-len", "1"), clear=r"seq"),
        Case("search --calib-samples 100000", S(Path(new(9)), "--calib-samples", "100000"), clear=r"tokens|short|fewer"),
        Case("search --ppl-samples 0", S(Path(new(10)), "--ppl-samples", "0"), clear=r"ppl|samples"),
        Case("search --granularity 0", S(Path(new(11)), "--granularity", "0"), clear=r"granularity"),
        Case("search --granularity 100000", S(Path(new(12)), "--granularity", "100000"), clear=r"granularity.*width|exceeds"),
        Case("search --workers 0", S(Path(new(13)), "--workers", "0"), clear=r"--workers"),
        Case("search --workers 2 (pymoo)", S(Path(new(14)), "--workers", "2"), clear=r"optuna"),
        Case("search --ref-point wrong length", S(Path(new(15)), "--ref-point", "1,2,3"), clear=r"ref-point"),
        Case("search --ref-point nan", S(Path(new(16)), "--ref-point", "nan,1"), clear=r"ref-point.*finite"),
        Case("search --seed abc", S(Path(new(17)), "--seed", "abc"), clear=r"--seed.*invalid"),
        # -- search: objectives and constraints ------------------------------------------------------------
        Case("search --objectives empty", S(Path(new(20))) + ["--objectives", ""], clear=r"objectives.*empty|at least one"),
        Case("search --objectives typo", S(Path(new(21))) + ["--objectives", "perplexty,params_ratio"], clear=r"[Dd]id you mean 'perplexity'"),
        Case("search --objectives listed twice", S(Path(new(22))) + ["--objectives", "perplexity,perplexity"], clear=r"twice"),
        Case("search --objectives missing module", S(Path(new(23))) + ["--objectives", "nosuchmod:X"], clear=r"nosuchmod"),
        Case("search --objectives missing file", S(Path(new(24))) + ["--objectives", "/nonexistent/f.py:X"], clear=r"f\.py"),
        Case("search --objectives not an objective", S(Path(new(25))) + ["--objectives", "json:dumps,params_ratio"], clear=r"dumps|Objective"),
        Case("search --constraint nan", S(Path(new(26)), "--constraint", "params_ratio<=nan"), clear=r"finite"),
        Case("search --constraint inf", S(Path(new(27)), "--constraint", "params_ratio>=-inf"), clear=r"finite"),
        Case("search --constraint reversed band", S(Path(new(28)), "--constraint", "params_ratio in [0.9,0.1]"), clear=r"lower bound"),
        Case("search --constraint not a number", S(Path(new(29)), "--constraint", "params_ratio<=abc"), clear=r"'abc'.*not a number"),
        Case("search --constraint garbage", S(Path(new(30)), "--constraint", "hello"), clear=r"name<=x"),
        Case("search --constraint ratio > 1", S(Path(new(31)), "--constraint", "params_ratio<=1.5"), clear=r"\(0, 1\]"),
        Case("search --constraint impossible size", S(Path(new(32)), "--constraint", "params<=10"), clear=r"no subnet can meet"),
        Case("search --constraint unknown objective", S(Path(new(33)), "--constraint", "latncy<=3"), clear=r"unknown objective 'latncy'"),
        Case("search nothing feasible", S(Path(new(34)), "--constraint", "perplexity<=1.0001"), expect="ok",
             post=lambda e: None),
        Case("search bad choice --driver", S(Path(new(35)), "--driver", "foo"), clear=r"invalid choice|[Dd]id you mean"),
        Case("search bad choice --importance", S(Path(new(36)), "--importance", "foo"), clear=r"invalid choice"),
        # -- search: model and data -------------------------------------------------------------------------
        Case("search --model missing path", ["search", "--out", new(40), "--model", "/nonexistent/model", "--evaluations", "4"],
             clear=r"nonexistent"),
        Case("search --model offline hub id", ["search", "--out", new(41), "--model", "someorg/nomodel", "--evaluations", "4"],
             clear=r"cannot reach|not in the local"),
        Case("search --model a text file", ["search", "--out", new(42), "--model", str(env.text), "--evaluations", "4"],
             clear=r"neither a model folder nor a \.gguf"),
        Case("search --model truncated gguf", ["search", "--out", new(43), "--model", str(env.root / "cut.gguf"), "--evaluations", "4"],
             setup=lambda e: (e.root / "cut.gguf").write_bytes(b"GGUF\x03\x00\x00\x00" + b"\x00" * 20), clear=r"truncated"),
        Case("search --calibration test split", S(Path(new(44))) + ["--calibration", "wikitext2-test"], clear=r"test split"),
        Case("search --calibration missing file", S(Path(new(45))) + ["--calibration", "/nonexistent.txt"], clear=r"nonexistent\.txt"),
        Case("search --device-like bad storage", S(Path(new(46)), "--driver", "optuna", "--storage", "notaurl"), clear=r"storage"),
        # -- search: run folders -------------------------------------------------------------------------------
        Case("search into an existing run", S(env.run), clear=r"--resume", post=RUN_INTACT),
        Case("search --resume other objectives", ["search", "--out", R, "--resume", "--evaluations", "8",
             "--objectives", "perplexity,kv_cache_bytes", *env.common()], clear=r"objectives", post=RUN_INTACT),
        Case("search --resume other ppl windows", ["search", "--out", R, "--resume", "--evaluations", "8", "--objectives",
             "perplexity,params_ratio", *env.common()[:-1], "--ppl-samples", "3", "--no-progress"], clear=r"ppl", post=RUN_INTACT),
        Case("search --resume a missing run", S(Path(new(50)), "--resume"), expect="ok"),
        Case("search --join without a study", S(Path(new(51)), "--driver", "optuna", "--join", "--join-timeout", "1",
             "--storage", f"sqlite:///{env.root / 'nostudy.db'}"), clear=r"study", timeout=120),
        Case("search --out unwritable", S(Path("/proc/nasllm-run")), clear=r"/proc"),
        # -- reform -------------------------------------------------------------------------------------------
        Case("reform missing folder", ["reform", str(env.root / "nope")], clear=r"not a nas-llm run folder|run\.json"),
        Case("reform a user folder", ["reform", str(env.user)], clear=r"run\.json", post=USER_INTACT),
        Case("reform --method foo", ["reform", R, "--method", "foo"], clear=r"invalid choice"),
        Case("reform --ids 999", ["reform", R, "--ids", "999"], clear=r"999.*Pareto"),
        Case("reform --ids abc", ["reform", R, "--ids", "abc"], clear=r"'abc'"),
        Case("reform --n-samples 0", ["reform", R, "--n-samples", "0"], clear=r"n-samples|n_samples|>= ?1"),
        Case("reform --seq-len 1", ["reform", R, "--seq-len", "1"], clear=r"seq"),
        Case("reform --iters 0", ["reform", R, "--iters", "0", "--method", "admm"], clear=r"iters"),
        Case("reform --rho -1", ["reform", R, "--rho", "-1"], clear=r"rho"),
        Case("reform --damp -1", ["reform", R, "--damp", "-1"], clear=r"damp"),
        Case("reform --device cuda", ["reform", R, "--device", "cuda"], clear=r"no CUDA|cuda"),
        Case("reform --batch-size 0", ["reform", R, "--batch-size", "0"], clear=r"batch"),
        # -- select -------------------------------------------------------------------------------------------
        Case("select missing folder", ["select", str(env.root / "nope")], clear=r"run\.json|not a nas-llm run"),
        Case("select --max-latency-ms (no latency objective)", ["select", R, "--max-latency-ms", "5"], clear=r"no such column"),
        Case("select --max-params-ratio nan", ["select", R, "--max-params-ratio", "nan"], clear=r"finite"),
        Case("select --max-params-ratio 0.0001", ["select", R, "--max-params-ratio", "0.0001"], clear=r"closest is id"),
        Case("select --max-ppl 0", ["select", R, "--max-ppl", "0"], clear=r"closest"),
        Case("select --weights abc", ["select", R, "--weights", "perplexity=abc"], clear=r"'abc' is not a number"),
        Case("select --weights wrong count", ["select", R, "--weights", "1,2,3"], clear=r"needs 2 numbers"),
        Case("select --weights negative", ["select", R, "--weights=-1,1"], clear=r">= 0"),
        Case("select --weights unknown name", ["select", R, "--weights", "foo=1"], clear=r"unknown objective 'foo'"),
        Case("select two rules", ["select", R, "--knee", "--weights", "1,1"], clear=r"choose one rule"),
        Case("select --budget unknown column", ["select", R, "--budget", "foo<=1"], clear=r"no column 'foo'"),
        Case("select --budget nan", ["select", R, "--budget", "params_ratio<=nan"], clear=r"finite"),
        Case("select --optimize unknown", ["select", R, "--max-params-ratio", "0.9", "--optimize", "nosuch"], clear=r"nosuch"),
        Case("select a torn run.json", ["select", str(env.root / "torn")], clear=r"run\.json",
             setup=lambda e: (shutil.copytree(e.run, e.root / "torn", dirs_exist_ok=True),
                              (e.root / "torn" / "run.json").write_text('{"model": "x", "objec'))),
        Case("select a torn evaluations.csv", ["select", str(env.root / "torn2")], clear=r"damaged",
             setup=lambda e: (shutil.copytree(e.run, e.root / "torn2", dirs_exist_ok=True),
                              (e.root / "torn2" / "evaluations.csv").write_bytes(b"id,key\n0,\"a\n1,\xff\xfe\"\"\"x"))),
        Case("export without ranking.json", ["export", str(env.root / "norank"), "--pick", "knee", "--out", str(env.root / "x5")],
             clear=r"ranking\.json is missing",
             setup=lambda e: (shutil.copytree(e.run, e.root / "norank", dirs_exist_ok=True), (e.root / "norank" / "ranking.json").unlink())),
        Case("select a run without evaluations", ["select", str(env.root / "empty")], clear=r"no evaluations",
             setup=lambda e: ((e.root / "empty").mkdir(exist_ok=True), shutil.copy(e.run / "run.json", e.root / "empty"))),
        Case("select --knee (ok)", ["select", R, "--knee"], expect="ok"),
        # -- report -------------------------------------------------------------------------------------------
        Case("report --pick 999", ["report", R, "--pick", "999"], clear=r"999.*ids"),
        Case("report missing folder", ["report", str(env.root / "nope")], clear=r"run\.json|not a nas-llm run"),
        Case("report --out in a new folder (ok)", ["report", R, "--out", str(env.root / "deep" / "er" / "r.html")], expect="ok"),
        Case("report --out unwritable", ["report", R, "--out", "/proc/nasllm.html"], clear=r"/proc"),
        Case("report (ok)", ["report", R], expect="ok"),
        # -- export -------------------------------------------------------------------------------------------
        Case("export --pick 999", ["export", R, "--pick", "999", "--out", str(env.root / "x1")], clear=r"999"),
        Case("export --pick abc", ["export", R, "--pick", "abc", "--out", str(env.root / "x2")], clear=r"row id.*knee"),
        Case("export --overwrite onto the run folder", ["export", R, "--pick", "knee", "--out", R, "--overwrite"],
             clear=r"run folder", post=RUN_INTACT),
        Case("export --overwrite onto the cwd", ["export", R, "--pick", "knee", "--out", ".", "--overwrite"],
             clear=r"current directory", post=lambda e: None if (e.root / "calib.txt").exists() else "cwd deleted"),
        Case("export --overwrite onto a user folder", ["export", R, "--pick", "knee", "--out", str(env.user), "--overwrite"],
             clear=r"only a previous nas-llm export", post=USER_INTACT),
        Case("export onto an export without --overwrite", ["export", R, "--pick", "knee", "--out", E], clear=r"--overwrite"),
        Case("export --overwrite onto an export (ok)", ["export", R, "--pick", "knee", "--out", E, "--overwrite"], expect="ok"),
        Case("export missing run", ["export", str(env.root / "nope"), "--pick", "0", "--out", str(env.root / "x3")],
             clear=r"run\.json|not a nas-llm run"),
        Case("export --format gguf --type q3", ["export", R, "--pick", "knee", "--format", "gguf", "--type", "q3",
                                                 "--out", str(env.root / "m.gguf")], clear=r"q8_0|f16"),
        Case("export --materialize of a run not reformed with flexi", ["export", R, "--pick", "knee", "--materialize", "--out",
             str(env.root / "x6")], clear=r"--materialize applies to runs reformed with --method flexi"),
        Case("export --format gguf --materialize", ["export", R, "--pick", "knee", "--format", "gguf", "--materialize", "--out",
             str(env.root / "x7.gguf")], clear=r"--materialize applies to --format hf"),
        Case("export --format foo", ["export", R, "--pick", "knee", "--format", "foo", "--out", str(env.root / "m")], clear=r"invalid choice|format"),
        Case("export gguf onto an existing file", ["export", R, "--pick", "knee", "--format", "gguf", "--out", str(env.root / "calib.txt")],
             clear=r"--overwrite|exists", post=lambda e: None if e.text.read_text().strip() else "calib.txt emptied"),
        Case("export gguf --overwrite onto a non-GGUF file", ["export", R, "--pick", "knee", "--format", "gguf", "--overwrite",
                                                              "--out", str(env.run / "run.json")], clear=r"GGUF|not", post=RUN_INTACT),
        Case("export after the model changed", ["export", str(env.root / "R2"), "--pick", "knee", "--out", str(env.root / "x4")],
             setup=_changed_model_run, clear=r"not the one"),
        # -- evaluate -----------------------------------------------------------------------------------------
        Case("evaluate missing folder", ["evaluate", str(env.root / "nope")], clear=r"nope"),
        Case("evaluate --max-windows 0", ["evaluate", E, "--max-windows", "0", "--tasks", "none"], clear=r"--max-windows.*>= 1"),
        Case("evaluate --limit -5", ["evaluate", E, "--limit", "-5", "--ppl", "none"], clear=r"--limit must be > 0"),
        Case("evaluate --limit 2.5", ["evaluate", E, "--limit", "2.5", "--ppl", "none"], clear=r"whole number"),
        Case("evaluate --tasks foo", ["evaluate", E, "--tasks", "foo", "--ppl", "none"], clear=r"foo"),
        Case("evaluate --ppl missing file", ["evaluate", E, "--ppl", "/nonexistent.txt", "--tasks", "none", "--seq-len", "64"], clear=r"nonexistent\.txt"),
        Case("evaluate --seq-len 1", ["evaluate", E, "--seq-len", "1", "--tasks", "none"], clear=r"--seq-len"),
        Case("evaluate --seq-len too long", ["evaluate", E, "--seq-len", "100000", "--tasks", "none"], clear=r"max_position"),
        Case("evaluate --batch-size 0", ["evaluate", E, "--batch-size", "0", "--tasks", "none"], clear=r"batch"),
        Case("evaluate a truncated weight file", ["evaluate", str(env.root / "cut"), "--tasks", "none"], clear=r"corrupt|truncat",
             setup=_truncated_export),
        Case("evaluate a built-in name without --out", ["evaluate", "smollm2-135m", "--tasks", "none"], clear=r"--out"),
        # -- latency ------------------------------------------------------------------------------------------
        Case("latency measure --device cuda", ["latency", "measure", "--model", str(env.model), "--device", "cuda"], clear=r"CUDA"),
        Case("latency measure --seq-len 0", ["latency", "measure", "--model", str(env.model), "--seq-len", "0"], clear=r"seq_len|seq-len"),
        Case("latency measure --batch 0", ["latency", "measure", "--model", str(env.model), "--batch", "0"], clear=r"batch"),
        Case("latency measure --ratio 1.5", ["latency", "measure", "--model", str(env.model), "--ratio", "1.5"], clear=r"ratio"),
        Case("latency measure --subnet bad json", ["latency", "measure", "--model", str(env.model), "--subnet", "{bad"], clear=r"subnet"),
        Case("latency measure --dtype float8", ["latency", "measure", "--model", str(env.model), "--dtype", "float8"], clear=r"float8"),
        Case("latency measure --rounds 0", ["latency", "measure", "--model", str(env.model), "--rounds", "0"], clear=r"rounds"),
        Case("latency measure --mode foo", ["latency", "measure", "--mode", "foo"], clear=r"invalid choice"),
        Case("latency validate --n 0", ["latency", "validate", "--model", str(env.model), "--n", "0"], clear=r"--n"),
        Case("latency validate --predictors typo", ["latency", "validate", "--model", str(env.model), "--predictors", "lutt"],
             clear=r"[Dd]id you mean 'lut'"),
        # -- the command line itself ---------------------------------------------------------------------------
        Case("no subcommand", [], clear=r"usage"),
        Case("unknown subcommand", ["serch"], clear=r"invalid choice"),
    ]
    c += [Case("fault: kill -9 mid-search (pymoo), then --resume", [], fault=_kill_and_resume("pymoo")),
          Case("fault: kill -9 mid-search (optuna), then --resume", [], fault=_kill_and_resume("optuna")),
          Case("fault: kill -9 mid-search (random), then --resume", [], fault=_kill_and_resume("random")),
          Case("fault: disk full during a search", [], fault=_full_disk),
          Case("fault: read-only run folder (report, export)", [], fault=_read_only)]
    for sub in ("demo", "search", "reform", "report", "select", "export", "evaluate", "latency"):
        c.append(Case(f"{sub} --help has examples", [sub, "--help"], expect="ok",
                      post=lambda e, s=sub: None))
    return c


# -- faults: kill -9 mid-search, full disk, read-only folder -------------------------------------------------
def _journal_keys(path: Path) -> list[str]:
    keys = []
    for line in path.read_text().splitlines() if path.is_file() else []:
        try:
            keys.append(json.loads(line)["key"])
        except (json.JSONDecodeError, KeyError):
            pass  # a line torn by the kill
    return keys


def _kill_and_resume(driver: str) -> Callable[[Env], tuple[str, str]]:
    def run(env: Env) -> tuple[str, str]:
        out = env.root / f"killed-{driver}"
        argv = env.search(out, "--driver", driver) + ["--evaluations", "40", "--objectives", "perplexity,params_ratio"]
        e = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"}
        proc = subprocess.Popen([sys.executable, "-m", "nas_llm.cli", *argv], cwd=env.root, env=e,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        journal = out / ("evaluations.jsonl" if driver != "optuna" else "study.db")
        t0 = time.time()
        while time.time() - t0 < 240 and proc.poll() is None:
            if driver != "optuna" and len(_journal_keys(journal)) >= 12:
                break
            if driver == "optuna" and journal.is_file() and time.time() - t0 > 25:
                break
            time.sleep(0.05)
        proc.kill()
        proc.wait()
        before = set(_journal_keys(out / "evaluations.jsonl"))
        if driver == "optuna":
            import optuna

            optuna.logging.set_verbosity(optuna.logging.WARNING)
            study = optuna.load_study(study_name="nas-llm", storage=f"sqlite:///{journal}")
            before = {t.user_attrs["key"] for t in study.trials if t.state.name == "COMPLETE" and "key" in t.user_attrs}
        p = cli(argv + ["--resume"], env.root, 600)
        if p.returncode != 0:
            return "bug", f"resume failed: {(p.stderr or p.stdout).strip().splitlines()[-1:]}"
        import pandas as pd

        table = pd.read_csv(out / "evaluations.csv")
        if not table["key"].is_unique:
            return "bug", "a subnet is listed twice after resume"
        lost = before - set(table["key"])
        if lost:
            return "bug", f"{len(lost)} finished evaluations lost"
        return "clear", f"killed after {len(before) or 'some'} evaluations; resume finished {len(table)}, none lost or repeated"
    return run


def _tmpfs(env: Env, name: str, size: str) -> Path | None:
    d = env.root / name
    d.mkdir(exist_ok=True)
    ok = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(d)], capture_output=True).returncode == 0
    return d if ok else None


def _full_disk(env: Env) -> tuple[str, str]:
    d = _tmpfs(env, "full", "48k")
    if d is None:
        return "skipped", "cannot mount a tmpfs here (needs root)"
    try:
        p = cli(env.search(d / "run") + ["--evaluations", "30"], env.root)
        out = (p.stdout or "") + (p.stderr or "")
        if "Traceback" in out or p.returncode != 2:
            return "bug", f"exit {p.returncode}: {out.strip().splitlines()[-1:]}"
        settings = d / "run" / "run.json"
        if settings.is_file():
            json.loads(settings.read_text())  # never torn
        return "clear", out.strip().splitlines()[-1][:200]
    finally:
        subprocess.run(["umount", "-l", str(d)], capture_output=True)


def _read_only(env: Env) -> tuple[str, str]:
    d = _tmpfs(env, "ro", "50m")
    if d is None:
        return "skipped", "cannot mount a tmpfs here (needs root)"
    try:
        shutil.copytree(env.run, d / "R")
        subprocess.run(["mount", "-o", "remount,ro", str(d)], check=True, capture_output=True)
        p = cli(["report", str(d / "R")], env.root)
        q = cli(["export", str(d / "R"), "--pick", "knee", "--out", str(d / "exp")], env.root)
        for r in (p, q):
            out = (r.stdout or "") + (r.stderr or "")
            if "Traceback" in out or r.returncode != 2:
                return "bug", f"exit {r.returncode}: {out.strip().splitlines()[-1:]}"
        return "clear", ((p.stderr or "").strip().splitlines() or [""])[-1][:200]
    finally:
        subprocess.run(["umount", "-l", str(d)], capture_output=True)


def _changed_model_run(env: Env) -> None:
    """A copy of R whose model path now holds other weights (issue 21 #2)."""
    from tiny import tiny_model

    shutil.copytree(env.run, env.root / "R2", dirs_exist_ok=True)
    shutil.copytree(env.model, env.root / "tiny-model-2", dirs_exist_ok=True)
    tiny_model(seed=1).save_pretrained(env.root / "tiny-model-2")
    s = json.loads((env.root / "R2" / "run.json").read_text())
    s["model"] = str(env.root / "tiny-model-2")
    (env.root / "R2" / "run.json").write_text(json.dumps(s))


def _truncated_export(env: Env) -> None:
    shutil.copytree(env.export, env.root / "cut", dirs_exist_ok=True)
    w = env.root / "cut" / "model.safetensors"
    w.write_bytes(w.read_bytes()[: w.stat().st_size // 2])


def classify(case: Case, p: subprocess.CompletedProcess, problem: str | None) -> tuple[str, str]:
    out = (p.stdout or "") + (p.stderr or "")
    msg = next((line for line in out.splitlines() if re.match(r"(nas-llm|usage)", line) and "error" in line), "")
    msg = msg or (out.strip().splitlines() or [""])[-1]
    if problem:
        return "bug", problem
    if "Traceback (most recent call last)" in out:
        return "bug", "traceback: " + (out.strip().splitlines() or [""])[-1][:200]
    if case.expect == "ok":
        if p.returncode != 0:
            return "bug", f"exit {p.returncode}: {msg[:200]}"
        if case.name.endswith("--help has examples") and "examples:" not in out:
            return "weak", "no examples in --help"
        return "clear", "ok"
    if p.returncode == 0:
        return "bug", "accepted (exit 0)"
    if p.returncode != 2:
        return "weak", f"exit {p.returncode}: {msg[:200]}"
    if case.clear and not re.search(case.clear, out):
        return "weak", msg[:200]
    return "clear", msg[:200]


def markdown(data: dict, cmd: str) -> str:
    """benchmarks/ROBUSTNESS.md: counts, then one row per case (what was typed, what came back)."""
    from benchmarks._results import header

    rows, c = data["cases"], data["counts"]
    faults = [r for r in rows if r["case"].startswith("fault")]
    lines = [header("Bad-input and fault sweep (issue 21)", data["machine"], cmd).replace("## ", "# ", 1),
             "Each case runs `python -m nas_llm.cli ...` in a fresh process against a tiny random LLaMA and a finished "
             "small run (see the docstring of `benchmarks/robustness.py` for the classification). **clear**: exit 2, one "
             "`nas-llm CMD: error:` line, no traceback, and the message names what the case needs (value, range or fix); "
             "**weak**: refused without a traceback but the message misses that; **bug**: a traceback, a wrong exit code, "
             "or a user file / finished evaluation lost. Cases that must succeed are clear when they exit 0 and keep "
             "their post-condition. Faults are clear when nothing finished was lost.\n",
             f"**{len(rows)} cases: {c['clear']} clear, {c['weak']} weak, {c['bug']} bug**; faults survived with nothing lost: "
             f"{sum(r['verdict'] == 'clear' for r in faults)} of {len(faults)}. Tracebacks without `--debug`: "
             f"{sum('Traceback' in r['why'] for r in rows)}. Sweep time {data['seconds']} s.\n",
             "| # | case | verdict | exit | message / outcome |", "|---|---|---|---|---|"]
    for i, r in enumerate(rows, 1):
        why = r["why"].replace("|", "\\|").replace("\n", " ")
        lines.append(f"| {i} | `{r['case'].replace('|', '/')}` | {r['verdict']} | {r.get('exit', '')} | {why} |")
    return "\n".join(lines) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", default="", help="run only cases whose name starts with this")
    ap.add_argument("--json", default=str(ROOT / "benchmarks" / "results" / "robustness.json"))
    ap.add_argument("--keep", action="store_true", help="keep the sandbox folder")
    ap.add_argument("--md", default=None, help="also write the table as markdown here (benchmarks/ROBUSTNESS.md)")
    args = ap.parse_args()
    root = Path(tempfile.mkdtemp(prefix="nasllm-robust-"))
    env = Env(root / "w")
    t0 = time.time()
    build(env)
    rows = []
    for case in cases(env):
        if not case.name.startswith(args.only):
            continue
        if case.setup:
            case.setup(env)
        t1 = time.time()
        if case.fault is not None:
            verdict, why = case.fault(env)
            rows.append({"case": case.name, "verdict": verdict, "why": why, "seconds": round(time.time() - t1, 1)})
            print(f"{verdict:>5}  {case.name}: {why}", flush=True)
            continue
        try:
            p = cli(case.argv, env.root, case.timeout, case.env)
        except subprocess.TimeoutExpired:
            rows.append({"case": case.name, "verdict": "bug", "why": f"no answer within {case.timeout} s", "seconds": case.timeout})
            continue
        verdict, why = classify(case, p, case.post(env) if case.post else None)
        rows.append({"case": case.name, "argv": case.argv, "exit": p.returncode, "verdict": verdict, "why": why,
                     "seconds": round(time.time() - t1, 1)})
        print(f"{verdict:>5}  {case.name}: {why}", flush=True)
    counts = {v: sum(r["verdict"] == v for r in rows) for v in ("clear", "weak", "bug", "skipped")}
    print(json.dumps(counts), f"{len(rows)} cases in {time.time() - t0:.0f} s")
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    from benchmarks._results import command_line, machine

    data = {"counts": counts, "cases": rows, "seconds": round(time.time() - t0), "machine": machine(), "command": command_line()}
    Path(args.json).write_text(json.dumps(data, indent=1))
    if args.md:
        Path(args.md).write_text(markdown(data, command_line()))
    if not args.keep:
        shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
