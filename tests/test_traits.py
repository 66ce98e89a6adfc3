"""Objective traits: a plug-in objective declared with a kind behaves exactly like the built-in one of that kind.

Every test registers its own objectives under unique names (the registry refuses duplicates) and removes
them afterwards. References are independent: the same objective registered with another kind, a built-in
objective of the kind, hand-computed knees on log and linear values, the reformed model rebuilt by
``reform_for_run``.
"""
from __future__ import annotations

import math

import numpy as np
import pytest

from nas_llm.errors import ConfigError
from nas_llm.search import SearchProblem, run_pymoo
from objectives import OBJECTIVES, Objective, Traits, describe_objective, get_objective
from objectives.testing import ObjectiveTestSuite
from test_search import Loss, make_ctx


class ToyLatency(Objective):
    """A latency that grows with the subnet: 10 x the decoder params ratio."""

    def score(self, subnet, ctx):
        return 10.0 * ctx.space.ratio(subnet)


class ParamCount(Objective):
    """A 'quality' scored on a built model: ``scale`` x its parameter count (calls are recorded)."""

    seen: list = []  # (model, ctx) of every score_model call

    def __init__(self, scale: float = 1.0):
        self.scale = scale

    def score(self, subnet, ctx):
        return float(ctx.space.params(subnet))

    def score_model(self, model, ctx):
        ParamCount.seen.append((model, ctx))
        return self.scale * float(sum(p.numel() for p in model.parameters()))


class NoModelScore(Objective):
    """A quality objective that cannot score a built model."""

    def score(self, subnet, ctx):
        return 1.0


class ImportedQuality(Objective):
    """Used by import path, without registering: its class attributes are its traits."""

    name, kind, log_scale, unit = "imported_quality", "quality", True, "nats"

    def score(self, subnet, ctx):
        return 1.0


@pytest.fixture
def register():
    """``register(name, cls, **traits)``: a subclass of ``cls`` named and registered as ``name``, removed after the test."""
    names = []

    def reg(name, cls, **traits):
        sub = type(f"{cls.__name__}_{name}", (cls,), {"name": name})
        OBJECTIVES.register(name, **traits)(sub)
        names.append(name)
        return sub

    yield reg
    for n in names:
        OBJECTIVES.remove(n)


# -- declaring traits ------------------------------------------------------------------------------------
def test_bad_traits_are_refused_at_registration():
    for bad, match in ((dict(kind="speed"), "kind='speed' is not one of"), (dict(log_scale="yes"), "log_scale='yes' must be True"),
                       (dict(measured=1), "measured=1 must be True"), (dict(unit=3), "unit=3 must be a string"),
                       (dict(higher_is_better=True), "unknown trait 'higher_is_better'")):
        with pytest.raises(ConfigError, match=match):
            OBJECTIVES.register("traits_test_bad", **bad)(type("Bad", (ToyLatency,), {}))
        assert "traits_test_bad" not in OBJECTIVES

    class BadPath(ToyLatency):
        kind = "fast"

    with pytest.raises(ConfigError, match="objective 'objective': objective trait kind='fast'"):
        get_objective(BadPath)


def test_builtin_traits_and_run_json_entries(register):
    assert Traits.of_name("perplexity") == Traits("quality", True, "", True)
    assert Traits.of_name("latency") == Traits("latency", False, "ms", True)
    assert Traits.of_name("latency_lut") == Traits("latency", False, "ms", False)
    assert Traits.of_name("latency_roofline").measured is False
    assert {Traits.of_name(n).kind for n in ("params", "params_ratio", "weight_bytes", "kv_cache_bytes")} == {"size"}
    # a run.json from before traits: the registry's by name; an unknown name is "other"; stored ones win
    assert Traits.of_entry({"name": "latency_lut", "direction": "minimize"}).measured is False
    assert Traits.of_entry({"name": "nobody_registered_this"}) == Traits()
    assert Traits.of_entry({"name": "latency_lut", "kind": "other"}) == Traits()
    # SearchProblem.describe stores them, and the import path of an objective given by path
    register("traits_test_lat", ToyLatency, kind="latency", unit="ms", measured=False)
    sp = SearchProblem(make_ctx(), ["traits_test_lat", f"{__name__}:ImportedQuality"])
    entries = sp.describe()["objectives"]
    assert entries[0] == {"name": "traits_test_lat", "direction": "minimize", "kind": "latency", "log_scale": False,
                          "unit": "ms", "measured": False}
    assert entries[1] == {"name": "imported_quality", "direction": "minimize", "kind": "quality", "log_scale": True,
                          "unit": "nats", "measured": True, "path": f"{__name__}:ImportedQuality"}
    assert describe_objective(get_objective("params_ratio"))["kind"] == "size"
    # the optimiser sees log_scale objectives on a log scale
    assert sp.search_values({"traits_test_lat": 2.0, "imported_quality": math.e}).tolist() == [2.0, 1.0]


# -- the constraint pre-check -------------------------------------------------------------------------------
def test_plugin_latency_gets_the_constraint_precheck(register):
    register("traits_test_lat", ToyLatency, kind="latency", unit="ms", measured=False)
    register("traits_test_other", ToyLatency, kind="other")
    loss = Loss()
    # like params (a built-in size objective): an impossible bound is refused before any evaluation
    for name in ("params", "traits_test_lat"):
        bound = 100.0 if name == "params" else 0.2  # the smallest subnet: 7264 params, 10 x ratio 0.042
        sp = SearchProblem(make_ctx(), [loss, "params_ratio"], constraints=[f"{name}<={bound}"])
        with pytest.raises(ValueError, match=rf"constraint {name} <= {bound}: no subnet can meet it"):
            run_pymoo(sp, 10, pop_size=4, progress=False)
        assert loss.calls == 0 and sp.n_calls == 0
    # the same objective without the latency kind is not pre-checked (the trait decides, not the name)
    sp = SearchProblem(make_ctx(), [loss, "params_ratio"], constraints=["traits_test_other<=0.5"])
    sp.setup()
    assert sp._setup_done and loss.calls == 0


# -- knee selection ----------------------------------------------------------------------------------------
# a front where the knee on log values (id 1) differs from the knee on linear values (id 2)
KNEE_ROWS = [(0, "dense", 20.0, 100.0, True), (1, "nsga2", 25.0, 50.0, True), (2, "nsga2", 1e6, 10.0, True),
             (3, "nsga2", 1e9, 9.0, True)]


def das_knee(q, lat) -> int:
    """Independent reference: the point farthest below the line through the normalised extremes."""
    P = np.column_stack([q, lat]).astype(float)
    N = (P - P.min(0)) / (P.max(0) - P.min(0))
    return int(np.argmax(1.0 - N.sum(1)))


def _with_objective(run, name: str, entry: dict | None = None):
    """The run with its quality column renamed to ``name`` (run.json lists ``name`` first)."""
    s = run.settings()
    s["objectives"][0] = {"name": name, "direction": "minimize", **(entry or {})}
    run.write_settings(s)
    run.write_table(run.table().rename(columns={"perplexity": name}))
    return run


def test_plugin_log_scale_quality_changes_the_knee_as_perplexity_does(tmp_path, register):
    from nas_llm.select import select
    from test_select import make_run

    q, lat = [r[2] for r in KNEE_ROWS], [r[3] for r in KNEE_ROWS]
    log_knee, lin_knee = das_knee(np.log(q), lat), das_knee(q, lat)
    assert (log_knee, lin_knee) == (1, 2)  # the table is crafted so the two differ
    assert select(make_run(tmp_path / "ppl", rows=KNEE_ROWS), "knee").id == log_knee
    register("traits_test_logq", ToyLatency, kind="quality", log_scale=True)
    register("traits_test_linq", ToyLatency, kind="quality", log_scale=False)
    run = _with_objective(make_run(tmp_path / "logq", rows=KNEE_ROWS), "traits_test_logq")
    assert select(run, "knee").id == log_knee
    run = _with_objective(make_run(tmp_path / "linq", rows=KNEE_ROWS), "traits_test_linq")
    assert select(run, "knee").id == lin_knee
    # traits stored in run.json are read as well (an objective nobody registered)
    run = _with_objective(make_run(tmp_path / "stored", rows=KNEE_ROWS), "traits_test_stored",
                          {"kind": "quality", "log_scale": True, "unit": "", "measured": True})
    assert select(run, "knee").id == log_knee


# -- reformation --------------------------------------------------------------------------------------------
def _reform_run(tmp_path, objectives: list[str], args: dict | None = None):
    """test_reform's hand-made run with extra objective columns; returns (run, model, tokenizer)."""
    from test_reform import CharTokenizer, _make_run
    from tiny import tiny_model

    model = tiny_model("llama-gqa")
    run = _make_run(tmp_path, model)
    s = run.settings()
    s["objectives"] = [{"name": "perplexity", "direction": "minimize"}, *({"name": n, "direction": "minimize"} for n in objectives)]
    s["objective_args"] = {**s["objective_args"], **(args or {})}
    run.write_settings(s)
    df = run.table()
    for k, n in enumerate(objectives):
        df[n] = [5.0 + k, 4.0 + k, 3.0 + k]
    run.write_table(df)
    return run, model, CharTokenizer()


def test_plugin_latency_is_copied_after_reformation_like_latency_lut(tmp_path, register):
    from nas_llm.reform import reform_run

    register("traits_test_lat", ToyLatency, kind="latency", unit="ms", measured=False)
    run, model, tok = _reform_run(tmp_path, ["latency_lut", "traits_test_lat"])
    before = run.table()
    reform_run(run, model, tok, "exact", n_samples=4, seq_len=16, progress=False)
    df = run.table()
    pareto = df["pareto"].astype(bool)
    for n in ("latency_lut", "traits_test_lat"):
        assert df.loc[pareto, f"{n}_reformed"].tolist() == before.loc[pareto, n].tolist()  # shapes unchanged: same values
        assert df.loc[~pareto, f"{n}_reformed"].isna().all()
    assert df["traits_test_lat_reformed"].isna().tolist() == df["latency_lut_reformed"].isna().tolist()


def test_quality_objectives_are_rescored_through_score_model(tmp_path, register):
    from nas_llm.reform import reform_for_run, reform_run

    ParamCount.seen = []
    register("traits_test_q", ParamCount, kind="quality")
    register("traits_test_noscore", NoModelScore, kind="quality")
    register("traits_test_misc", ToyLatency, kind="other")
    run, model, tok = _reform_run(tmp_path, ["traits_test_q", "traits_test_noscore", "traits_test_misc"],
                                  {"traits_test_q": {"scale": 2.0}})
    with pytest.warns(UserWarning, match=r"cannot re-score objectives \['traits_test_noscore', 'traits_test_misc'\]"):
        reform_run(run, model, tok, "exact", n_samples=4, seq_len=16, progress=False)
    df = run.table()
    pareto = df.index[df["pareto"].astype(bool)].tolist()
    assert len(ParamCount.seen) == len(pareto)  # once per reformed row, with the run's tokenizer and dense model
    assert all(ctx.tokenizer is tok and ctx.model is model for _, ctx in ParamCount.seen)
    for i in pareto:  # the reformed model, rebuilt independently, has the recorded value (x the run.json scale)
        m = reform_for_run(run.path, run.subnet(int(df.at[i, "id"])), model, tok, progress=False)
        assert df.at[i, "traits_test_q_reformed"] == 2.0 * sum(p.numel() for p in m.parameters())
    assert df["traits_test_noscore_reformed"].isna().all() and df["traits_test_misc_reformed"].isna().all()
    # the built-in perplexity is re-scored on its own windows (run.json objective_args), as the search scored it
    from nas_llm.model.data import calibration_batch
    from nas_llm.model.metrics import perplexity

    a = run.settings()["objective_args"]["perplexity"]
    ids = calibration_batch(tok, a["source"], a["n_samples"], a["seq_len"], a["seed"])
    m = reform_for_run(run.path, run.subnet(2), model, tok, progress=False)
    assert df.loc[df["id"] == 2, "perplexity_reformed"].item() == pytest.approx(perplexity(m, ids), rel=1e-9)


# -- labels and the report -----------------------------------------------------------------------------------
def test_report_labels_a_predicted_latency_predicted(tmp_path, register):
    from nas_llm.report.data import RunData, front_info, x_axis_text
    from nas_llm.select import label
    from test_select import make_run

    register("traits_test_pred", ToyLatency, kind="latency", unit="ms", measured=False)
    for name, word in (("latency", "measured"), ("latency_lut", "predicted"), ("traits_test_pred", "predicted")):
        run = make_run(tmp_path / name)
        s = run.settings()
        s["objectives"][1]["name"] = name
        run.write_settings(s)
        run.write_table(run.table().rename(columns={"latency": name}))
        d = RunData(run)
        info = front_info(d)
        other = ({"measured", "predicted"} - {word}).pop()
        assert d.x == name and word in info.x_title and other not in info.x_title
        assert word in x_axis_text(d) and ("predicted" in x_axis_text(d)) == (word == "predicted")
        assert info.log_y and "log scale" in info.y_title  # perplexity's log_scale trait
        assert word in info.title
    assert label("latency_lut") == "latency_lut (ms, predicted)" and label("latency") == "latency (ms)"  # model cards
    assert label("latency", say_measured=True) == "latency (ms, measured)" and label("perplexity") == "perplexity"


# -- the conformance suite checks what a kind promises --------------------------------------------------------
class TestKVCacheBytesConformance(ObjectiveTestSuite):
    """A built-in size objective passes the suite, including "extreme at the ends"."""

    @pytest.fixture
    def objective(self):
        return get_objective("kv_cache_bytes")

    @pytest.fixture
    def context(self):
        from test_perplexity import make_ctx as model_ctx

        return model_ctx()


class NotMonotone(Objective):
    """Largest in the middle: declared a size, it breaks what the constraint pre-check assumes."""

    def score(self, subnet, ctx):
        r = ctx.space.ratio(subnet)
        return r * (1.0 - r)


def test_suite_catches_a_size_objective_that_is_not_extreme_at_the_ends(register):
    from test_perplexity import make_ctx as model_ctx

    suite, ctx = ObjectiveTestSuite(), model_ctx()
    with pytest.raises(AssertionError):
        suite.test_size_and_latency_are_extreme_at_the_ends(get_objective(register("traits_test_bump", NotMonotone, kind="size")), ctx)
    with pytest.raises(pytest.skip.Exception):  # kind "other" promises nothing
        suite.test_size_and_latency_are_extreme_at_the_ends(get_objective(register("traits_test_bump2", NotMonotone)), ctx)
