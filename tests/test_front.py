"""nas_llm.front against independent references: brute-force dominance, exact 2-D/grid hypervolume."""
import itertools

import numpy as np
import pytest

from nas_llm.front import asf_index, hypervolume, knee_index, knee_points, pareto_mask, reference_point


def brute_pareto(F):
    F = np.asarray(F, float)
    out = np.ones(len(F), bool)
    for i, j in itertools.product(range(len(F)), repeat=2):
        if i != j and np.all(F[j] <= F[i]) and np.any(F[j] < F[i]):
            out[i] = False
    return out


def hv2d(F, ref):
    """Sweep: sort by f1, add the rectangle each non-dominated point adds."""
    pts = sorted(p for p in map(tuple, F) if p[0] < ref[0] and p[1] < ref[1])
    hv, best2 = 0.0, ref[1]
    for x, y in pts:
        if y < best2:
            hv += (ref[0] - x) * (best2 - y)
            best2 = y
    return hv


@pytest.mark.parametrize("seed", range(5))
def test_pareto_mask_matches_brute_force(seed):
    rng = np.random.default_rng(seed)
    F = rng.integers(0, 6, size=(40, 3)).astype(float)  # many ties and duplicates
    assert np.array_equal(pareto_mask(F), brute_pareto(F))


def test_pareto_mask_directions_and_feasibility():
    F = np.array([[1.0, 5.0], [2.0, 6.0], [0.5, 1.0], [3.0, 9.0]])
    # minimise f1, maximise f2: row 3 (3, 9) and row 0 (1, 5) vs row 2 (0.5, 1)
    assert pareto_mask(F, ["minimize", "maximize"]).tolist() == brute_pareto(F * [1, -1]).tolist()
    feas = np.array([True, True, False, True])
    m = pareto_mask(F, feasible=feas)
    assert not m[2]
    assert m.tolist() == [True, False, False, False]  # (1,5) dominates the others once (0.5,1) is out
    assert not pareto_mask(F, feasible=np.zeros(4, bool)).any()


@pytest.mark.parametrize("seed", range(4))
def test_hypervolume_2d_matches_sweep(seed):
    rng = np.random.default_rng(seed)
    F = rng.random((25, 2))
    ref = [1.1, 1.2]
    assert hypervolume(F, ref) == pytest.approx(hv2d(F, ref), rel=1e-12)


def test_hypervolume_3d_matches_grid_count():
    rng = np.random.default_rng(3)
    F = rng.integers(0, 5, size=(12, 3)).astype(float)
    ref = np.array([5.0, 5.0, 5.0])
    # count unit cells [a,a+1)^3 dominated by some point (integer coordinates: exact)
    cells = 0
    for c in itertools.product(range(5), repeat=3):
        if np.any(np.all(F <= np.array(c), axis=1)):
            cells += 1
    assert hypervolume(F, ref) == pytest.approx(cells)


def test_hypervolume_ignores_points_beyond_reference_and_maximised_columns():
    assert hypervolume([[2.0, 0.0]], [1.0, 1.0]) == 0.0
    # maximise column 2: (0, 3) with ref (1, 1) covers 1 x 2
    assert hypervolume([[0.0, 3.0]], [1.0, 1.0], ["minimize", "maximize"]) == pytest.approx(2.0)


def test_reference_point_is_beyond_nadir():
    F = np.array([[0.0, 10.0], [4.0, 2.0]])
    assert reference_point(F, margin=0.5).tolist() == [6.0, 14.0]
    assert reference_point(F, ["minimize", "maximize"], margin=0.5).tolist() == [6.0, 2.0 - 0.5 * 8]


def test_knee_of_a_bent_front():
    x = np.linspace(0, 1, 21)
    line = np.c_[x, 1 - x]
    F = np.vstack([line, [[0.3, 0.3]]])  # one point far below the line: the obvious knee
    assert knee_index(F) == 21
    assert 21 in knee_points(F).tolist()
    # indices refer to F even when dominated rows come first
    G = np.vstack([[[5.0, 5.0]], F])
    assert knee_index(G) == 22


def test_asf_index_follows_weights():
    x = np.linspace(0, 1, 11)
    F = np.c_[x, 1 - x ** 2]
    assert asf_index(F, [1, 0]) == 0  # only f1 matters
    assert asf_index(F, [0, 1]) == 10
    mid = asf_index(F, [1, 1])
    assert 0 < mid < 10
    infeasible_best = np.zeros(11, bool)
    infeasible_best[5:] = True
    assert asf_index(F, [1, 0], feasible=infeasible_best) == 5


def test_bad_input_messages():
    with pytest.raises(ValueError, match="2-D"):
        pareto_mask(np.zeros((2, 2, 2)))
    with pytest.raises(ValueError, match="reference point has 3"):
        hypervolume([[1.0, 2.0]], [1, 2, 3])
    with pytest.raises(ValueError, match="2 weights for 3"):
        asf_index(np.zeros((2, 3)), [1, 1])
    with pytest.raises(ValueError, match="NaN"):
        pareto_mask([[np.nan, 1.0]])
