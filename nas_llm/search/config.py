"""Every setting of one search, in one dataclass: :class:`SearchConfig`.

It is the only source of the command-line flags (:func:`add_arguments`), of ``run.json``
(:meth:`SearchConfig.to_json` / :meth:`SearchConfig.from_json`), of the argv of worker processes
and of the reproduce command (:meth:`SearchConfig.to_argv`, :meth:`SearchConfig.command`), of the
objectives' constructor arguments (:meth:`SearchConfig.objective_args`) and of the resume check
(:meth:`SearchConfig.diff`): a field's metadata says its flag, its help and whether it changes a
number of the run (then a resume or a joining worker must use the same value).

Validation (:meth:`SearchConfig.validate`) runs before any model load or file write.
"""
from __future__ import annotations

import argparse
import math
import shlex
from dataclasses import MISSING, Field, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from nas_llm.errors import ConfigError

DEFAULT_OBJECTIVES = ("perplexity", "latency_lut")
ALGORITHMS = ("auto", "nsga2", "nsga3")
SAMPLERS = ("nsga2", "tpe", "gp", "random")
INITS = ("importance", "random")
IMPORTANCE = ("obs", "magnitude", "wanda", "flap", "obs-greedy", "hybrid")  # == nas_llm.model.importance.METHODS (tested)
DEFAULT_IMPORTANCE = "hybrid"  # == nas_llm.model.importance.DEFAULT_METHOD (tested)
REFORM_METHODS = ("admm", "exact", "bias")
SCREEN_DTYPES = ("float32", "bfloat16")  # == objectives.perplexity.SCREEN_DTYPES (tested)
SENS_METRICS = ("kl", "nll")  # == nas_llm.search.sensitivity.SENS_METRICS (tested)
TEST_SPLITS = ("wikitext2-test", "ptb-test")  # bundled evaluation splits: never calibrate (or search) on them
# what a run.json written before a setting existed was searched with (not today's default)
_BEFORE = {"halving": 0, "rung_step": 0, "screen_dtype": "float32", "head_chunk": 0, "alloc": False, "query_heads": False,
           "sens_metric": "nll", "importance": "obs"}
# settings that matter for one driver only (a resume with another --sampler under pymoo changes nothing)
_ONLY_FOR = {"algorithm": "pymoo", "sampler": "optuna", "storage": "optuna", "study_name": "optuna"}


def _opt(default: Any, help: str, *, flag: str | None = None, kind: str = "value", choices: tuple | None = None,
         numbers: bool = True, invocation: bool = False, lo: float | None = None, metavar: str | None = None) -> Any:
    """A config field. ``numbers``: changing it changes the run's numbers (resume/join must match).
    ``invocation``: about this process only (never stored). ``kind``: value | csv | floats | append."""
    meta = dict(help=help, flag=flag, kind=kind, choices=choices, numbers=numbers and not invocation,
                invocation=invocation, lo=lo, metavar=metavar)
    if isinstance(default, (list, tuple)):
        return field(default_factory=lambda: list(default), metadata=meta)
    return field(default=default, metadata=meta)


@dataclass
class SearchConfig:
    """One search: model, space, calibration, objectives, constraints, driver and budget."""

    out: str = field(metadata=dict(help="run folder, e.g. runs/NAME", numbers=False, invocation=False, kind="value"))
    model: str = _opt("smollm2-135m", "built-in name, HF folder or .gguf")
    driver: str = _opt("pymoo", "search driver: pymoo, optuna, random (or pkg.mod:Class)")
    algorithm: str = _opt("auto", "pymoo algorithm (auto: NSGA-III for 3+ objectives)", choices=ALGORITHMS)
    sampler: str = _opt("nsga2", "Optuna sampler", choices=SAMPLERS)
    objectives: list[str] = _opt(DEFAULT_OBJECTIVES, "comma-separated names, pkg.mod:Name or path/file.py:Name", kind="csv")
    constraints: list[str] = _opt([], "e.g. 'params_ratio in [0.5,0.9]' or 'latency_lut<=20' (repeatable)",
                                  flag="--constraint", kind="append", metavar="EXPR")
    evaluations: int = _opt(200, "distinct subnets to score (Optuna: finished trials, all workers)", numbers=False, lo=1)
    pop_size: int = _opt(24, "population size (random driver: batch size)", lo=2)
    seed: int = _opt(0, "seed of the search", lo=0)
    resume: bool = _opt(False, "continue a killed or finished run in --out (with the same settings)", invocation=True)
    storage: str | None = _opt(None, "Optuna storage: RDB URL (sqlite:///f.db, postgresql://...) or journal:PATH; "
                                     "default RUN/study.db")
    study_name: str = _opt("nas-llm", "Optuna study name")
    workers: int = _opt(1, "Optuna: worker processes on this machine sharing the study", numbers=False, lo=1)
    join: bool = _opt(False, "Optuna: add this process as a worker to the study another process started",
                      invocation=True)
    join_timeout: float = _opt(600.0, "--join: seconds to wait for the study to appear", numbers=False, lo=0)
    worker_id: str = _opt("0", argparse.SUPPRESS, invocation=True)
    granularity: int = _opt(64, "MLP neurons in multiples of this", lo=1)
    allow_layer_drop: bool = _opt(True, "never drop whole layers", flag="--no-layer-drop")
    query_heads: bool = _opt(True, "cut attention in whole KV groups only, never query heads inside a group",
                             flag="--no-query-heads")
    calibration: str = _opt("wikitext2-valid", "calibration text (never a test split)")
    calib_samples: int = _opt(32, "calibration windows (importance ranking)", lo=1)
    calib_seq_len: int = _opt(256, "tokens per calibration window", lo=2)
    calib_seed: int = _opt(0, "seed of the calibration windows", lo=0)
    allow_test_calibration: bool = _opt(False, "allow calibrating on a bundled test split (its test numbers are then "
                                               "not held out)", numbers=False)
    ppl_samples: int = _opt(8, "perplexity objective: calibration windows (full fidelity)", lo=1)
    ppl_seq_len: int = _opt(256, "perplexity objective: tokens per window", lo=2)
    importance: str = _opt(DEFAULT_IMPORTANCE, "importance ranking (hybrid: KV groups and query heads by OBS, neurons by "
                                                "Wanda-sp; since 2026-12-07, was obs)", choices=IMPORTANCE)
    screen: float = _opt(0.25, "screening fidelity in (0, 1] (1 = off): score all at this fraction, re-score near the front")
    rescore_fronts: int = _opt(1, "without --halving: how many non-dominated fronts to re-score at full fidelity", lo=0)
    halving: int = _opt(8, "successive halving: after each generation the best 1/ETA of the rows at each fidelity "
                           "(the --rung-step ladder) move up one; 0: re-score --rescore-fronts fronts instead",
                        lo=0, metavar="ETA")
    rung_step: int = _opt(4, "successive halving: the fidelities are --screen, --screen x STEP, ..., 1; 0: STEP = ETA "
                             "(default 4 with ETA 8, chosen by replaying six band searches: half the promotion windows "
                             "of ETA 4, the same picks in 5 of 6; benchmarks/RESULTS.md, 'Search speed: replay')",
                          lo=0, metavar="STEP")
    screen_dtype: str = _opt("auto", "dtype of the scores below full fidelity (full fidelity is always float32); auto: "
                                     "the faster one on this CPU, measured when the run starts and recorded in run.json",
                             choices=("auto",) + SCREEN_DTYPES)
    head_chunk: int = _opt(256, "perplexity objectives: tokens per LM-head chunk (0: the full logits at once)", lo=0)
    alloc: bool = _opt(True, "no allocation seeds (first generation: per-layer sensitivity + knapsack DP)",
                       flag="--no-alloc")
    sens_samples: int = _opt(4, "allocation seeds: windows of the per-layer sensitivity measurement (4 since 2026-12-07: with "
                                "--sens-metric kl, 4 windows' seeds were within 0.2 %% of 8 windows' at half the time)", lo=1)
    sens_seq_len: int = _opt(256, "allocation seeds: tokens per sensitivity window", lo=2)
    sens_cache: bool = _opt(True, "do not share the per-layer sensitivity table with other runs of the same model and "
                                  "settings ($NAS_LLM_CACHE/sensitivity, default ~/.cache/nas_llm/sensitivity)",
                            flag="--no-sens-cache", numbers=False)
    sens_points: int = _opt(4, "allocation seeds: measured widths (and KV-group counts) per layer; the refit error "
                               "prices the others (4 since 2026-12-07: lower validation than 2 at 90 and 70 %%, benchmarks/RESULTS.md)", lo=1)
    sens_metric: str = _opt("kl", "allocation seeds: what a single-layer cut costs: kl = mean KL(dense || cut) per token, "
                                  "nll = the log-perplexity increase (noisier on the short windows; kl since 2026-12-07, "
                                  "benchmarks/RESULTS.md 'Sensitivity metric')", choices=SENS_METRICS)
    threads: int = _opt(0, "torch threads (0: the cores the load average leaves free, at least 1)", numbers=False, lo=0)
    rescore_baselines: bool = _opt(True, "do not re-score the feasible uniform baselines at full fidelity at the end",
                                   flag="--no-rescore-baselines", numbers=False)
    baseline_margin: float = _opt(2.0, "re-score a feasible baseline only when no other feasible row, at most as large "
                                        "on the other objectives, screens this factor better (<= 1: re-score them all)",
                                  lo=0, numbers=False)
    seed_margin: float = _opt(1.02, "at the end, re-score an allocation seed at full fidelity unless another feasible "
                                    "row, at most as large on the other objectives, screens this factor better (0: none, "
                                    "<= 1: all; 1.02 since 2026-12-07: the one-window screen cannot rank the seeds, "
                                    "benchmarks/RESULTS.md 'Allocation seeds re-scored')", lo=0)
    init: str = _opt("importance", "first generation", choices=INITS)
    ref_point: list[float] | None = _opt(None, "hypervolume reference point, comma-separated (default: nadir of "
                                               "generation 0 + 10%%)", kind="floats")
    reform: str | None = _opt(None, "after the search, reform every Pareto member (as `nas-llm reform RUN --method M`; "
                                    "~2 min each for SmolLM2 on a 2-core CPU)", choices=REFORM_METHODS, numbers=False)
    progress: bool = _opt(True, "no progress bars", flag="--no-progress", numbers=False)

    def __post_init__(self) -> None:
        """Normalise what the CLI, Python callers and run.json may spell differently (idempotent)."""
        self.out = str(self.out)
        if isinstance(self.objectives, str):
            self.objectives = _csv(self.objectives)
        self.objectives = [_absolute_file_spec(o) for o in self.objectives]
        if isinstance(self.constraints, str):
            self.constraints = [self.constraints]
        self.constraints = list(self.constraints or [])
        if isinstance(self.ref_point, str):
            self.ref_point = _floats(self.ref_point)
        elif self.ref_point is not None:
            self.ref_point = [float(v) for v in self.ref_point]
        if Path(self.model).exists():  # a local folder/file: record where it is, not how it was typed
            self.model = str(Path(self.model).resolve())
        self.worker_id = str(self.worker_id)

    # -- argv ---------------------------------------------------------------------------------------
    @classmethod
    def from_args(cls, ns: argparse.Namespace) -> "SearchConfig":
        """From the namespace of a parser built with :func:`add_arguments`."""
        return cls(**{f.name: getattr(ns, f.name) for f in fields(cls) if hasattr(ns, f.name)})

    def to_argv(self) -> list[str]:
        """The ``nas-llm search`` arguments that parse back into this config."""
        argv: list[str] = []
        for f in fields(self):
            v, kind, flag = getattr(self, f.name), f.metadata["kind"], _flag(f)
            if isinstance(v, bool):
                argv += [flag] if v != f.default else []
            elif v is None or (f.metadata["invocation"] and v == f.default):
                continue
            elif kind == "append":
                argv += [a for item in v for a in (flag, str(item))]
            else:
                text = ",".join(v) if kind == "csv" else ",".join(repr(float(x)) for x in v) if kind == "floats" else str(v)
                argv += [f"{flag}={text}"] if text.startswith("-") else [flag, text]
        return argv

    def command(self) -> str:
        """The shell command that starts this search afresh (recorded in run.json)."""
        return "nas-llm search " + shlex.join(replace(self, resume=False, join=False, worker_id="0").to_argv())

    def worker(self, k: int) -> "SearchConfig":
        """Worker ``k`` of ``--workers``: the same search, joining the coordinator's study."""
        return replace(self, join=True, resume=False, workers=1, worker_id=str(k), progress=False, reform=None)

    # -- run.json -----------------------------------------------------------------------------------
    def to_json(self) -> dict[str, Any]:
        """run.json's settings: the full config under ``"search"`` plus the keys other commands read."""
        search = {f.name: _plain(getattr(self, f.name)) for f in fields(self) if f.name != "out" and not f.metadata["invocation"]}
        algorithm = {"pymoo": self.algorithm, "optuna": self.sampler}.get(self.driver, self.driver)
        return {
            "model": self.model, "granularity": self.granularity, "allow_layer_drop": self.allow_layer_drop,
            "calibration": {"source": self.calibration, "n_samples": self.calib_samples, "seq_len": self.calib_seq_len,
                            "seed": self.calib_seed},
            "importance": self.importance, "objective_args": self.objective_args(), "seed": self.seed, "driver": self.driver,
            "algorithm": algorithm, "evaluations": self.evaluations, "pop_size": self.pop_size, "init": self.init,
            "storage": self.storage, "study_name": self.study_name, "reference_point": _plain(self.ref_point),
            "command": self.command(), "search": search,
        }

    @classmethod
    def from_json(cls, settings: dict[str, Any], out: str | Path) -> "SearchConfig":
        """The config a run folder was searched with (``out``: where that folder is now)."""
        s = settings["search"] if "search" in settings else _legacy(settings)
        known = {f.name for f in fields(cls)} - {"out"}
        return cls(out=str(out), **{**_BEFORE, **{k: v for k, v in s.items() if k in known}})

    def diff(self, other: "SearchConfig") -> list[str]:
        """Every setting that changes a number and differs: ``--flag RUN (run) vs OTHER (now)``."""
        out = []
        for f in fields(self):
            if not f.metadata["numbers"] or _ONLY_FOR.get(f.name, self.driver) != self.driver:
                continue
            a, b = getattr(self, f.name), getattr(other, f.name)
            if f.name == "rung_step":  # 0 means "= --halving": compare the ladders, not the spellings
                a, b = self.ladder_step(), other.ladder_step()
            if _canonical(f.name, a) != _canonical(f.name, b):
                out.append(f"{_flag(f)} {_show(a)} (run) vs {_show(b)} (now)")
        return out

    def ladder_step(self) -> int:
        """The factor between successive-halving rungs (``--rung-step``, 0 = ``--halving``); 0 without halving."""
        from .halving import ladder_step

        return ladder_step(self.rung_step, self.halving)

    # -- objectives ---------------------------------------------------------------------------------
    def objective_args(self) -> dict[str, dict]:
        """Constructor arguments per objective name: perplexity uses the run's calibration text and seed."""
        # batches of the screening size: a full-fidelity re-score then reuses the screened windows' NLL
        screen_rows = max(1, round(self.ppl_samples * self.screen)) if 0 < self.screen < 1 else 8
        ppl = {"source": self.calibration, "n_samples": self.ppl_samples, "seq_len": self.ppl_seq_len,
               "seed": self.calib_seed, "batch_size": min(screen_rows, self.ppl_samples), "head_chunk": self.head_chunk,
               "screen_dtype": self.concrete_screen_dtype()[0]}
        # reformed perplexity: reform on the run's calibration windows (what `reform` and the benchmarks refit on),
        # score on other windows (seed + 1), or the score would reward cutting more
        reformed = {**ppl, "seed": self.calib_seed + 1, "reform_samples": self.calib_samples,
                    "reform_seq_len": self.calib_seq_len, "reform_seed": self.calib_seed}
        return {"perplexity": ppl, "perplexity_reformed": reformed}

    def concrete_screen_dtype(self, stored: dict | None = None) -> tuple[str, dict | None]:
        """``screen_dtype`` with ``auto`` resolved: the value an existing run recorded (``stored``: its run.json), else
        the faster dtype measured now (:func:`objectives.perplexity.fastest_dtype`, returned as the second item)."""
        if self.screen_dtype != "auto":
            return self.screen_dtype, None
        if stored is not None:
            return SearchConfig.from_json(stored, out=self.out).screen_dtype, None
        from objectives.perplexity import fastest_dtype

        dtype, speeds = fastest_dtype()
        return dtype, {"chosen": dtype, "gflops": speeds}

    # -- validation ---------------------------------------------------------------------------------
    def validate(self) -> "SearchConfig":
        """Refuse a bad setting with a message that names it and the fix; before any model load or write."""
        self._check_numbers()
        self._check_processes()
        self._check_calibration()
        self._check_objectives()
        return self

    def _check_numbers(self) -> None:
        for f in fields(self):
            v, m, d = getattr(self, f.name), f.metadata, _default(f)
            if isinstance(d, int) and not isinstance(d, bool) and not (isinstance(v, int) and not isinstance(v, bool)):
                raise ConfigError(f"{_flag(f)} must be a whole number, got {v!r}")
            if m.get("lo") is not None and (not isinstance(v, (int, float)) or isinstance(v, bool)
                                            or not math.isfinite(v) or v < m["lo"]):
                raise ConfigError(f"{_flag(f)} must be a number >= {m['lo']:g}, got {v!r}")
            if m.get("choices") and v is not None and v not in m["choices"]:
                raise ConfigError(f"{_flag(f)} {v!r} is not one of {', '.join(m['choices'])}")
        if not (isinstance(self.screen, (int, float)) and 0 < self.screen <= 1):
            raise ConfigError(f"--screen must be in (0, 1] (1 = no screening), got {self.screen!r}")
        if self.halving == 1:
            raise ConfigError("--halving 1 would promote every row; give ETA >= 2 (e.g. 8) or 0 (re-score the front)")
        if self.rung_step == 1:
            raise ConfigError("--rung-step 1 would repeat the screening fidelity forever; give STEP >= 2 (e.g. 4) or 0 "
                              "(STEP = --halving)")
        if self.ref_point is not None and (len(self.ref_point) != len(self.objectives)
                                           or not all(math.isfinite(v) for v in self.ref_point)):
            raise ConfigError(f"--ref-point needs {len(self.objectives)} finite values (one per objective), got {self.ref_point}")

    def _check_processes(self) -> None:
        from .loop import DRIVERS

        DRIVERS.resolve(self.driver)
        if (self.workers > 1 or self.join) and self.driver != "optuna":
            raise ConfigError(f"{'--workers' if self.workers > 1 else '--join'} needs --driver optuna (workers share an Optuna storage)")
        if self.join and (self.resume or self.workers > 1):
            raise ConfigError("--join adds one worker to a running study; drop --resume/--workers (the coordinator resumes "
                              "and starts local workers)")

    def _check_calibration(self) -> None:
        name = Path(self.calibration).name
        bundled = {Path(p).name for k, p in _datasets().items() if k in TEST_SPLITS}
        if (self.calibration in TEST_SPLITS or name in bundled) and not self.allow_test_calibration:
            raise ConfigError(f"--calibration {self.calibration} is a test split: calibrating or searching on it leaks into "
                              f"the reported test numbers; use wikitext2-valid / ptb-valid, or pass --allow-test-calibration")

    def _check_objectives(self) -> None:
        from objectives import OBJECTIVES, Constraint

        if not self.objectives:
            raise ConfigError("--objectives is empty; name at least one, e.g. --objectives perplexity,latency_lut")
        dup = sorted({o for o in self.objectives if self.objectives.count(o) > 1})
        if dup:
            raise ConfigError(f"objective {dup[0]!r} is listed twice in --objectives")
        for name in self.objectives:
            OBJECTIVES.resolve(name)  # unknown name: "did you mean"; import path: imported now
        for text in self.constraints:
            c = Constraint.parse(text)
            bounds = [b for b in (c.lo, c.hi) if b is not None]
            if not all(math.isfinite(b) for b in bounds):
                raise ConfigError(f"constraint {text!r}: bound {bounds} is not a finite number (NaN/inf would disable it)")
            if c.objective == "params_ratio" and not all(0 < b <= 1 for b in bounds):
                raise ConfigError(f"constraint on params_ratio: bound {bounds} is outside (0, 1]; a ratio is kept/dense params")
            if c.objective not in self.objectives:
                OBJECTIVES.resolve(c.objective)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """One flag per :class:`SearchConfig` field (dest = the field name)."""
    for f in fields(SearchConfig):
        m, default = f.metadata, _default(f)
        kw: dict[str, Any] = {"dest": f.name, "help": m["help"]}
        if default is MISSING:
            kw.update(required=True)
        elif isinstance(default, bool):
            kw.update(action="store_false" if default else "store_true")
        elif m["kind"] == "append":
            kw.update(action="append", default=[], metavar=m.get("metavar"))
        elif m["kind"] in ("csv", "floats"):
            kw.update(type=_csv if m["kind"] == "csv" else _floats, default=default)
        else:
            kw.update(type=str if default is None else type(default), default=default, choices=m.get("choices"))
        if default not in (MISSING, None, False, True, []) and kw["help"] != argparse.SUPPRESS:
            shown = ",".join(map(str, default)) if isinstance(default, list) else default
            kw["help"] += f" (default {shown})"
        parser.add_argument(_flag(f), **kw)


# -- helpers ------------------------------------------------------------------------------------------
def _flag(f: Field) -> str:
    return f.metadata.get("flag") or "--" + f.name.replace("_", "-")


def _default(f: Field) -> Any:
    if f.default is not MISSING:
        return f.default
    return f.default_factory() if f.default_factory is not MISSING else MISSING  # type: ignore[misc]


def _csv(text: str) -> list[str]:
    return [t.strip() for t in (text or "").split(",") if t.strip()]


def _floats(text: str) -> list[float]:
    try:
        return [float(t) for t in _csv(text)]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None


def _absolute_file_spec(spec: str) -> str:
    """``path/file.py:Name`` with the file's absolute path (workers and resumes may run elsewhere)."""
    path, sep, attr = spec.partition(":")
    if sep and path.endswith(".py") and Path(path).is_file():
        return f"{Path(path).resolve()}:{attr}"
    return spec


def _plain(v: Any) -> Any:
    return list(v) if isinstance(v, (list, tuple)) else v


def _canonical(name: str, v: Any) -> Any:
    """Values that mean the same compare equal: constraints as parsed bounds, in any order."""
    if name == "constraints":
        from objectives import Constraint

        return sorted((c.objective, c.lo, c.hi) for c in map(Constraint.parse, v))
    return _plain(v)


def _show(v: Any) -> str:
    if isinstance(v, list):
        return "[" + ", ".join(map(str, v)) + "]"
    return repr(v)


def _datasets() -> dict[str, str]:
    from nas_llm.model.data import DATASETS

    return DATASETS


def _legacy(s: dict[str, Any]) -> dict[str, Any]:
    """The config of a run.json written before SearchConfig existed (keys it lacks keep their defaults)."""
    cal = s.get("calibration") or {}
    ppl = (s.get("objective_args") or {}).get("perplexity") or {}
    driver = s.get("driver", "pymoo")
    out = {
        "model": s.get("model"), "driver": driver, "evaluations": s.get("evaluations"), "pop_size": s.get("pop_size"),
        "seed": s.get("seed"), "storage": s.get("storage"), "study_name": s.get("study_name"), "init": s.get("init"),
        "granularity": s.get("granularity"), "allow_layer_drop": s.get("allow_layer_drop"), "importance": s.get("importance"),
        "objectives": [o["name"] if isinstance(o, dict) else o for o in s.get("objectives") or []] or None,
        "constraints": [_constraint_text(c) for c in s.get("constraints") or []],
        "calibration": cal.get("source"), "calib_samples": cal.get("n_samples"), "calib_seq_len": cal.get("seq_len"),
        "calib_seed": cal.get("seed"), "ppl_samples": ppl.get("n_samples"), "ppl_seq_len": ppl.get("seq_len"),
        "screen": s.get("screen_fidelity") or 1.0, "ref_point": s.get("reference_point"),
        "algorithm": s.get("algorithm") if driver == "pymoo" else None,
        "sampler": s.get("algorithm") if driver == "optuna" else None,
    }
    return {k: v for k, v in out.items() if v is not None}


def _constraint_text(c: dict | str) -> str:
    if isinstance(c, str):
        return c
    if c.get("lo") is not None and c.get("hi") is not None:
        return f"{c['objective']} in [{c['lo']},{c['hi']}]"
    return f"{c['objective']}<={c['hi']}" if c.get("hi") is not None else f"{c['objective']}>={c['lo']}"


__all__ = ["SearchConfig", "add_arguments", "DEFAULT_OBJECTIVES", "ALGORITHMS", "SAMPLERS", "INITS", "IMPORTANCE",
           "REFORM_METHODS", "SCREEN_DTYPES", "SENS_METRICS", "TEST_SPLITS"]
