"""Reusable conformance tests for user objectives and latency predictors (like Optuna's sampler suites).

Subclass a suite in your own test file and provide fixtures; pytest runs the inherited tests::

    from objectives.testing import LatencyPredictorTestSuite

    class TestMyPredictor(LatencyPredictorTestSuite):
        @pytest.fixture
        def predictor(self, space):          # set up (``setup(model)`` already called)
            return MyPredictor()
        @pytest.fixture
        def space(self):
            return SubnetSpace.from_model(my_config)

    class TestMyObjective(ObjectiveTestSuite):
        @pytest.fixture
        def objective(self):
            return MyObjective()
        @pytest.fixture
        def context(self):
            return Context(model, tokenizer, space, ranking)

Class attributes tune the checks: ``monotone_tolerance`` (how much slower the smallest subnet may be
predicted than the dense one, as a fraction), ``deterministic`` (objectives whose value is noisy,
like measured latency, set it to False).
"""
from __future__ import annotations

import math

import numpy as np
import pytest

from search_spaces import Subnet, SubnetSpace

from .base import Context, Objective, Traits, can_score_model, checked_score
from .predictors import LatencyPredictor, checked_predict


def _probe_subnets(space: SubnetSpace) -> list[Subnet]:
    d = space.dims
    rng = np.random.default_rng(0)
    smallest = space.uniform(1, space.neuron_choices[0])
    out = [space.dense(), smallest, space.sample(rng, 0.0)]
    if space.allow_layer_drop and d.num_layers > 1:
        out.append(space.sample(rng, 0.5))
    return out


class LatencyPredictorTestSuite:
    """Checks the ``predict(subnet) -> seconds`` contract. Needs fixtures ``predictor`` and ``space``."""

    monotone_tolerance: float = 0.0

    @pytest.fixture
    def predictor(self) -> LatencyPredictor:  # pragma: no cover - provided by the subclass
        raise NotImplementedError("define a `predictor` fixture returning a set-up predictor")

    @pytest.fixture
    def space(self) -> SubnetSpace:  # pragma: no cover - provided by the subclass
        raise NotImplementedError("define a `space` fixture returning the model's SubnetSpace")

    def test_returns_finite_positive_seconds(self, predictor, space):
        for s in _probe_subnets(space):
            v = checked_predict(predictor, s)
            assert isinstance(v, float) and math.isfinite(v) and v >= 0

    def test_deterministic(self, predictor, space):
        for s in _probe_subnets(space):
            assert checked_predict(predictor, s) == checked_predict(predictor, s)

    def test_smallest_not_slower_than_dense(self, predictor, space):
        dense = checked_predict(predictor, space.dense())
        small = checked_predict(predictor, space.uniform(1, space.neuron_choices[0]))
        assert small <= dense * (1 + self.monotone_tolerance)

    def test_dropping_a_layer_not_slower(self, predictor, space):
        if not space.allow_layer_drop or space.num_layers < 2:
            pytest.skip("space cannot drop layers")
        dense = checked_predict(predictor, space.dense())
        dropped = checked_predict(predictor, space.uniform(drop=[space.num_layers - 1]))
        assert dropped <= dense * (1 + self.monotone_tolerance)

    def test_has_a_name(self, predictor):
        assert isinstance(getattr(predictor, "name", None) or getattr(predictor, "__name__", None), str)


class ObjectiveTestSuite:
    """Checks the ``Objective`` contract. Needs fixtures ``objective`` and ``context``."""

    deterministic: bool = True

    @pytest.fixture
    def objective(self) -> Objective:  # pragma: no cover - provided by the subclass
        raise NotImplementedError("define an `objective` fixture")

    @pytest.fixture
    def context(self) -> Context:  # pragma: no cover - provided by the subclass
        raise NotImplementedError("define a `context` fixture")

    def test_name_and_direction(self, objective):
        assert isinstance(objective.name, str) and objective.name
        assert objective.direction in ("minimize", "maximize")

    def test_scores_are_finite_floats(self, objective, context):
        objective.setup(context)
        for s in _probe_subnets(context.space):
            assert math.isfinite(checked_score(objective, s, context))

    def test_deterministic(self, objective, context):
        if not self.deterministic:
            pytest.skip("objective declared non-deterministic")
        objective.setup(context)
        s = _probe_subnets(context.space)[2]
        assert checked_score(objective, s, context) == checked_score(objective, s, context)

    def test_at_fidelity_gives_an_objective(self, objective, context):
        low = objective.at_fidelity(0.5)
        assert isinstance(low, Objective) and low.name == objective.name and low.direction == objective.direction
        low.setup(context)
        assert math.isfinite(checked_score(low, context.space.dense(), context))

    def test_traits_are_valid(self, objective):
        Traits.of(objective)  # raises naming the bad trait

    def test_size_and_latency_are_extreme_at_the_ends(self, objective, context):
        """kind "size"/"latency" promises what the constraint pre-check assumes: no subnet scores outside
        [smallest subnet, dense model]."""
        if objective.traits.kind not in ("size", "latency") or not self.deterministic:
            pytest.skip("only deterministic size and latency objectives promise monotone ends")
        objective.setup(context)
        space = context.space
        drop = range(1, space.num_layers) if space.allow_layer_drop else ()
        smallest = space.uniform(1, space.neuron_choices[0], drop=drop)  # as SearchProblem.smallest, up to which layer stays
        a, b = checked_score(objective, space.dense(), context), checked_score(objective, smallest, context)
        lo, hi = min(a, b), max(a, b)
        assert all(lo <= checked_score(objective, s, context) <= hi for s in _probe_subnets(space))

    def test_score_model_gives_a_finite_float(self, objective, context):
        if not can_score_model(objective):
            pytest.skip("objective has no score_model")
        objective.setup(context)
        assert math.isfinite(float(objective.score_model(context.sliced(_probe_subnets(context.space)[1]), context)))

    def test_does_not_change_the_model(self, objective, context):
        before = {k: v.clone() for k, v in context.model.state_dict().items()}
        shapes = [tuple(p.shape) for p in context.model.parameters()]
        objective.setup(context)
        checked_score(objective, _probe_subnets(context.space)[1], context)
        assert [tuple(p.shape) for p in context.model.parameters()] == shapes
        for k, v in context.model.state_dict().items():
            assert v.shape == before[k].shape and bool((v == before[k]).all()), f"objective changed {k}"


__all__ = ["LatencyPredictorTestSuite", "ObjectiveTestSuite"]
