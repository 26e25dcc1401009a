"""IG's quadrature rules: exact degrees, nesting, and completeness on the photo model."""

import itertools

import numpy as np
import pytest
import torch

from course_utils import models, photos
from course_utils import photo_model as pm
from course_utils import saliency as sal
from course_utils.saliency.integrated_gradients import _clenshaw_curtis, quadrature
from course_utils.widgets.incremental import IG_STEPS, PathIG

# The highest polynomial degree each rule with n points integrates exactly on [0, 1].
EXACT_DEGREE = {
    "riemann_left": lambda n: 0,
    "riemann_right": lambda n: 0,
    "riemann_middle": lambda n: 1,
    "riemann_trapezoid": lambda n: 1,
    "gausslegendre": lambda n: 2 * n - 1,
    "clenshaw_curtis": lambda n: n if n % 2 else n - 1,
}


def _moment_errors(alphas, weights, degrees) -> list[float]:
    """|Σ_k w_k α_k^d − 1/(d + 1)| for each degree d (float64)."""
    a, w = np.asarray(alphas, np.float64), np.asarray(weights, np.float64)
    return [abs(float(w @ a**d) - 1 / (d + 1)) for d in degrees]


@pytest.mark.parametrize("method", sal.QUADRATURE_RULES)
def test_each_rule_integrates_polynomials_up_to_its_degree(method):
    for n in (1, 2, 3, 4, 5, 8, 9, 16, 17):
        if n == 1 and method == "riemann_trapezoid":
            continue
        alphas, weights = quadrature(method, n)
        assert alphas.dtype == weights.dtype == torch.float32
        assert alphas.shape == weights.shape == (n,)
        assert 0 <= float(alphas.min()) and float(alphas.max()) <= 1
        assert float(weights.sum()) == pytest.approx(1, abs=1e-6)
        top = min(EXACT_DEGREE[method](n), 30)
        assert max(_moment_errors(alphas, weights, range(top + 1))) < 1e-6, (method, n)
        if method in ("gausslegendre", "clenshaw_curtis") and n > 1:
            # and not one degree more (so the degree above is the true one)
            assert _moment_errors(alphas, weights, [top + 1])[0] > 1e-9, (method, n)


def test_clenshaw_curtis_in_float64_and_by_hand():
    # n = 2: the trapezoid; n = 3: Simpson's rule (1/6, 4/6, 1/6).
    a, w = _clenshaw_curtis(2)
    np.testing.assert_array_equal(a, [0, 1])
    np.testing.assert_allclose(w, [0.5, 0.5], rtol=0, atol=1e-15)
    a, w = _clenshaw_curtis(3)
    np.testing.assert_allclose(a, [0, 0.5, 1], rtol=0, atol=1e-15)
    np.testing.assert_allclose(w, [1 / 6, 4 / 6, 1 / 6], rtol=0, atol=1e-15)
    for n in (4, 7, 17, 65):
        a, w = _clenshaw_curtis(n)
        assert (w > 0).all() and (np.diff(a) > 0).all()
        np.testing.assert_allclose(a + a[::-1], 1, atol=1e-15)  # symmetric
        np.testing.assert_allclose(w, w[::-1], atol=1e-15)
        # float64 exactness up to degree n − 1 (n for odd n), to round-off
        top = n if n % 2 else n - 1
        assert max(_moment_errors(a, w, range(top + 1))) < 1e-14


def test_clenshaw_curtis_grids_nest_bit_for_bit():
    assert IG_STEPS == (2, 3, 5, 9, 17, 33, 65)
    for coarse, fine in itertools.pairwise(IG_STEPS):
        a, _ = quadrature("clenshaw_curtis", coarse)
        b, _ = quadrature("clenshaw_curtis", fine)
        assert torch.equal(a, b[::2]), (coarse, fine)
    # Gauss–Legendre's do not: no point of 17 is a point of 33 (but the middle)
    g17, g33 = quadrature("gausslegendre", 17)[0], quadrature("gausslegendre", 33)[0]
    shared = (g17[:, None] == g33[None, :]).sum()
    assert int(shared) <= 1


@pytest.fixture(scope="module")
def model():
    return models.load_pretrained("efficientnet_lite0")


def test_completeness_of_clenshaw_curtis_vs_gauss_legendre_on_a_photo(model):
    """The widget's rule against the one it replaced, on the lecture's cat.

    The integrand of IG on chelsea ("tiger cat") lives in the first few per
    cent of the path (notebook 11, section 2), so every rule needs many
    points; at the same n Clenshaw–Curtis and Gauss–Legendre leave
    completeness errors of the same size, and both beat the trapezoid.
    """
    x = photos.load("chelsea")
    target = pm.categories().index("tiger cat")
    path = PathIG(model, x, target)
    path.compute(path.todo())  # the 65 points give every nested rule
    gain = path.gain()
    delta = {}
    for method in ("gausslegendre", "riemann_trapezoid"):
        _, d = sal.integrated_gradients(model, x, target, n_steps=33, method=method,
                                        return_delta=True)
        delta[method] = float(d)
    print(f"\nchelsea, 'tiger cat': f(x) − f(black) = {gain:.2f}; completeness error "
          f"with 33 points: Gauss–Legendre {delta['gausslegendre']:+.3f}, trapezoid "
          f"{delta['riemann_trapezoid']:+.3f}; Clenshaw–Curtis, from one path of 65:")
    print("  " + ", ".join(f"{n}: {path.delta(n):+.3f}" for n in IG_STEPS))
    # the widget's map is sal.integrated_gradients with the same rule
    attr, d5 = sal.integrated_gradients(model, x, target, n_steps=5,
                                        method="clenshaw_curtis", return_delta=True)
    torch.testing.assert_close(path.attribution(5), attr, rtol=1e-4,
                               atol=1e-5 * float(attr.abs().max()))
    assert path.delta(5) == pytest.approx(float(d5), abs=1e-3 * gain)
    gl, cc = delta["gausslegendre"], path.delta(33)
    assert abs(cc) < 2 * abs(gl) < gain / 2  # the same size at the widget's default
    assert abs(delta["riemann_trapezoid"]) > 2 * abs(cc)
    assert abs(path.delta(65)) < 0.02 * gain  # 65 points: below 2 % of the gain
