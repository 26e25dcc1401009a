"""What kind of mistake a wrong answer makes: one stable id per kind, with its words.

The hints a student sees (`hints`, in their kernel) name the likely bug of a
failed visible test in a sentence: "sign flipped: your map is −1.0× the
reference …", "… summed instead of averaged?", "rows swapped: …". The grader
sees only numbers — the student's output on each hidden case and the
reference's — and this module gives it the same vocabulary, so a class report
can count which mistake dominates a question and feedback can name it
without revealing the case:

* `CATEGORIES` — id → words, e.g. ``"sign_flipped"`` → "sign flipped
  (subtracted in the wrong order, or negated)". The ids are stored in the
  gradebook; `known` turns anything else (a hand-edited row, an id a later
  version dropped) into ``"other"``.
* `classify(actual, expected, alternatives)` — the category of one failed
  array case, decided the way `hints.diagnose` decides its sentence (the same
  fit and correlation thresholds, the same order): shape, NaN/Inf, a match
  all zeros, a match with the reference under a wrong choice (`alternatives`,
  keyed by category), a constant factor (−1: sign flipped; n ≥ 2: summed
  instead of averaged; 1/n; 100 or 255), the absolute value, output rows in
  another row's place, entries left at zero, then a few values (at most
  SMALL_OUTPUT) as wrong values, else the correlation.
* `category_of_hint(sentence)` — the category of a hint sentence `hints`,
  `alternatives` (the wrong choice a visible test names: the probability
  instead of the logit, Grad-CAM without its ReLU…) or `invariants` write,
  so the two sides provably agree (tests/test_grading_report.py).

Pure: numpy and the standard library only (the grader's process imports it;
no torch), and nothing it returns carries student text.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np

# The same thresholds as `hints`: a least-squares fit a ≈ s·e within this
# relative residual means "s× the reference"; above this correlation two maps
# have "the same shape".
FIT_TOLERANCE = 0.02
SAME_SHAPE = 0.99
# Outputs of at most this many values: only a near-exact fit is "s×", and a
# mismatch is "wrong values" rather than a correlation (as `hints` does).
SMALL_OUTPUT = 4
# Rows compared pairwise when looking for rows in another row's place (O(n²)).
MAX_ROWS = 64

CATEGORIES: dict[str, str] = {
    "sign_flipped": "sign flipped (subtracted in the wrong order, or negated)",
    "summed_not_averaged": "n× the reference: summed instead of averaged",
    "averaged_not_summed": "1/n of the reference: averaged where the formula sums",
    "percent_or_255": "a percentage or 0…255 instead of a fraction",
    "sign_and_scale": "sign flipped and the scale off",
    "scaled": "off by a constant factor",
    "rows_swapped": "rows swapped: a row answers another row's target",
    "target_first_row": "every row explains target[0]",
    "targets_summed": "every row explains the sum of all targets (logits[:, target])",
    "some_rows_wrong": "some rows wrong, the others right",
    "absolute_value": "the absolute value where the signed one is asked",
    "left_zero": "some entries left at 0 (a window not visited?)",
    "detail_off": "right pattern, wrong values: a detail of the formula",
    "imprecise": "close to the reference but outside the tolerance",
    "different_quantity": "a different quantity",
    "wrong_values": "a few values, not the reference's",
    "predicted_class": "explains the predicted class, not the target",
    "probability_not_logit": "the softmax probability instead of the logit",
    "loss_not_score": "the cross-entropy loss instead of the class score",
    "log_probability": "log p_c (log_softmax) instead of the logit",
    "all_logits": "the sum of all the classes' logits instead of the target's",
    "logit_not_probability": "the logit where the question asks for the probability",
    "wrong_steps": "the wrong steps or quadrature rule (α_k = k/m, k = 1 … m)",
    "wrong_path": "path points not from the baseline to x",
    "black_not_grey": "patches set to black, not to the grey baseline",
    "not_the_drop": "the occluded probability, not the drop",
    "gradient_alone": "the gradient alone, not multiplied by the input",
    "gradient_at_x_only": "the gradient at x alone, not averaged along the path",
    "times_x_not_difference": "multiplied by x, not by x − baseline",
    "noise_ignored": "SmoothGrad without its noise",
    "noise_scaled_twice": "the noise scaled twice",
    "pearson_not_spearman": "Pearson of the values, not of their ranks",
    "ties_not_averaged": "tied values not given their average rank",
    "wrong_sigma": "σ not from each image's own range max − min",
    "not_efficient": "values that do not add up to f(x) − f(baseline) (Banzhaf weights?)",
    "grad_cam_no_relu": "Grad-CAM without its ReLU",
    "grad_cam_weights": "Grad-CAM's weights not the mean of ∂f/∂A^k over (h, w)",
    "wrong_layer": "Grad-CAM at the wrong layer (its input, the default one)",
    "all_zeros": "all zeros",
    "not_finite": "NaN or Inf in the output",
    "one_value_for_batch": "one number for the whole batch",
    "wrong_shape": "wrong shape",
    "extra_axis": "an extra leading axis",
    "raised": "raised an error or returned the wrong type",
    "wrong_answer": "short answer: not the expected one",
    "wrong_form": "short answer: not of the asked form",
    "not_detached": "result still attached to the autograd graph",
    "mutates_input": "changes the caller's input",
    "grad_accumulated": "gradients accumulate across calls",
    "model_changed": "changes the model (train mode, weights, flags, hooks)",
    "not_run": "not reached (an earlier cell stopped the kernel)",
    "malformed": "its record was unreadable",
    "other": "not recognised",
}
# Not a misconception: the code never produced an answer to judge. A class
# report counts these under the statuses (timed out, crashed), not as mistakes.
RUN_FAILURES = frozenset({"not_run", "malformed"})
MAX_CASES_COUNTED = 10_000  # a stored count above this is not ours


def known(category: object) -> str:
    """`category` if it is one of CATEGORIES, else "other"."""
    return category if isinstance(category, str) and category in CATEGORIES else "other"


def words(category: object) -> str:
    """The words of a category (of "other" for an unknown one)."""
    return CATEGORIES[known(category)]


def _flat(a) -> np.ndarray:
    return np.asarray(a, dtype=np.float64).ravel()


def _close(a, e, rtol: float = 1e-3, atol: float = 1e-5) -> bool:
    """`compare.compare_arrays`' "allclose" rule at the default tolerances."""
    a, e = _flat(a), _flat(e)
    if a.shape != e.shape:
        return False
    err = float(np.linalg.norm(a - e))
    return err <= rtol * float(np.linalg.norm(e)) + atol * math.sqrt(max(a.size, 1))


def scale_factor(actual, expected) -> tuple[float, float]:
    """The s minimising ‖actual − s·expected‖ and the relative residual of that fit."""
    a, e = _flat(actual), _flat(expected)
    ee = float((e * e).sum())
    if ee == 0 or a.shape != e.shape:
        return math.nan, math.inf
    s = float((a * e).sum()) / ee
    res = float(np.linalg.norm(a - s * e)) / max(float(np.linalg.norm(a)), 1e-300)
    return s, res


def correlation(a, b) -> float:
    """Pearson correlation of two arrays (NaN when either is constant)."""
    a, b = _flat(a), _flat(b)
    if a.size != b.size or a.size < 2:
        return math.nan
    a, b = a - a.mean(), b - b.mean()
    den = math.sqrt(float((a * a).sum() * (b * b).sum()))
    return float((a * b).sum() / den) if den > 0 else math.nan


def ratio_category(s: float) -> str:
    """The category of an answer that is s× the reference (`hints._ratio_hint`)."""
    if abs(s + 1) < 0.02:
        return "sign_flipped"
    if s < 0:
        return "sign_and_scale"
    n = round(s)
    if n in (100, 255) and abs(s - n) < 0.02 * n:
        return "percent_or_255"
    if n >= 2 and abs(s - n) < 0.02 * n:
        return "summed_not_averaged"
    if 0 < s < 1 and round(1 / s) >= 2 and abs(1 / s - round(1 / s)) < 0.02 / s:
        return "averaged_not_summed"
    return "scaled"


def _shape_category(a: np.ndarray, e: np.ndarray) -> str:
    if a.size == 1 and e.size > 1:
        return "one_value_for_batch"
    if a.size != e.size and a.ndim == e.ndim + 1 and a.shape[1:] == e.shape:
        return "extra_axis"
    return "wrong_shape"


def _rows_elsewhere(a: np.ndarray, e: np.ndarray) -> bool:
    """Some wrong row of `a` is another row of `e` (rows in the wrong place)."""
    if a.ndim < 2 or not 1 < len(a) <= MAX_ROWS:
        return False
    for i in range(len(a)):
        if _close(a[i], e[i]):
            continue
        if any(j != i and _close(a[i], e[j]) for j in range(len(e))):
            return True
    return False


def _by_correlation(a: np.ndarray, e: np.ndarray) -> str:
    r = correlation(a, e)
    if not math.isfinite(r):
        return "other"
    if r > SAME_SHAPE:
        return "detail_off"
    if r < -SAME_SHAPE:
        return "sign_flipped"
    rows = a.ndim >= 2 and 1 < len(a) <= MAX_ROWS
    if rows and any(_close(a[i], e[i]) for i in range(len(a))):
        return "some_rows_wrong"
    return "different_quantity"


def classify(
    actual,
    expected,
    alternatives: Mapping[str, np.ndarray] | None = None,
    tolerance: tuple[float, float] | None = None,
) -> str:
    """The category of an array answer that did not match the reference.

    Args:
        actual: the student's output on one case (array-like, numeric).
        expected: the reference output on that case.
        alternatives: {category: the reference's output under that wrong
            choice}; a match names the category (unknown keys count as "other").
        tolerance: (rtol, atol) the check compared with (default `compare`'s
            1e-3, 1e-5); a failed answer within ten times it is "imprecise".
    Returns:
        A key of CATEGORIES ("other" when nothing is recognised).
    """
    a = np.asarray(actual, dtype=np.float64)
    e = np.asarray(expected, dtype=np.float64)
    with np.errstate(all="ignore"):  # 1e308² is inf here, not a warning
        return _classify(a, e, alternatives or {}, tolerance or (1e-3, 1e-5))


def _classify(a: np.ndarray, e: np.ndarray, alternatives: Mapping, tolerance) -> str:
    if a.shape != e.shape:
        return _shape_category(a, e)
    if not np.isfinite(a).all():
        return "not_finite"
    rtol, atol = tolerance
    if _close(a, e, 10 * rtol, 10 * atol):
        return "imprecise"
    if not a.any():
        return "all_zeros"
    for category, alt in alternatives.items():
        if np.shape(alt) == a.shape and _close(a, alt):
            return known(category)
    s, res = scale_factor(a, e)
    fit = FIT_TOLERANCE if a.size > SMALL_OUTPUT else 1e-4  # a few values fit any s
    if math.isfinite(s) and res < fit and abs(s - 1) > 0.01:
        return ratio_category(s)
    if (e < 0).any() and _close(a, np.abs(e)):
        return "absolute_value"
    if _rows_elsewhere(a, e):
        return "rows_swapped"
    if _left_zero(a, e):
        return "left_zero"
    if a.size <= SMALL_OUTPUT:
        return "wrong_values"
    return _by_correlation(a, e)


def _left_zero(a: np.ndarray, e: np.ndarray) -> bool:
    """`a` is `e` with some non-zero entries left at 0 (a window not visited)."""
    missing = (a == 0) & (np.abs(e) > 1e-9 * max(float(np.abs(e).max()), 1e-300))
    return bool(missing.any()) and _close(np.where(missing, 0.0, e), a)


# Phrases of the sentences `hints`, `alternatives` and `invariants` write,
# most specific first: a wrong choice's name before the generic words it may
# contain ("the loss … so the sign is flipped too" is the loss, not a sign).
_HINT_PHRASES = (
    ("explains the predicted class (argmax)", "predicted_class"),
    ("explains the softmax probability p_c", "probability_not_logit"),
    ("depends on the logits only through the softmax", "probability_not_logit"),
    ("explains the cross-entropy loss", "loss_not_score"),
    ("explains log p_c", "log_probability"),
    ("the sum of all the classes' logits", "all_logits"),
    ("your drops are of the logit f_c", "logit_not_probability"),
    ("you use the logit f_c, not the softmax probability", "logit_not_probability"),
    ("steps k = 0 … m−1", "wrong_steps"),
    ("steps at the midpoints", "wrong_steps"),
    ("the trapezoid rule", "wrong_steps"),
    ("Gauss–Legendre nodes", "wrong_steps"),
    ("α = linspace(0, 1, m)", "wrong_steps"),
    ("your points run from x back to the baseline", "wrong_path"),
    ("your points are α·x", "wrong_path"),
    ("your patches are set to 0 (black)", "black_not_grey"),
    ("not the drop p(x) − p(x̃)", "not_the_drop"),
    ("the gradient alone: multiply it by x", "gradient_alone"),
    ("the gradient at x alone", "gradient_at_x_only"),
    ("by x, not by x − baseline", "times_x_not_difference"),
    ("your average ignores the noise", "noise_ignored"),
    ("the noise is scaled twice", "noise_scaled_twice"),
    ("the Pearson correlation of the values", "pearson_not_spearman"),
    ("ties get different ranks", "ties_not_averaged"),
    ("σ from each image's standard deviation", "wrong_sigma"),
    ("σ from the maximum alone", "wrong_sigma"),
    ("one σ for the whole batch", "wrong_sigma"),
    ("do not add up (efficiency)", "not_efficient"),
    ("no ReLU: Grad-CAM", "grad_cam_no_relu"),
    ("the gradient and A position by position", "grad_cam_weights"),
    ("weights averaged over the channels", "grad_cam_weights"),
    ("A is the layer's input", "wrong_layer"),
    ("Grad-CAM at the model's default layer", "wrong_layer"),
    ("hook that layer", "wrong_layer"),
    ("your map has the input's shape", "wrong_shape"),
    ("one map per channel", "wrong_shape"),
    ("upsampled to the input's", "wrong_shape"),
    ("the first axis should be the batch's", "wrong_shape"),
    ("left the model in train mode", "model_changed"),
    ("changed the model's weights or buffers", "model_changed"),
    ("requires_grad of the model's parameters", "model_changed"),
    ("left hooks registered on the model", "model_changed"),
    ("returns a numpy array", "raised"),
    ("a factor too many or too few", "scaled"),
    ("your values [", "wrong_values"),
    ("a single number for the whole batch", "one_value_for_batch"),
    ("right number of values but shape", "wrong_shape"),
    ("extra leading axis", "extra_axis"),
    ("every row explains target[0]", "target_first_row"),
    ("sum of all rows' targets", "targets_summed"),
    ("rows swapped", "rows_swapped"),
    ("the sign is flipped and the scale off", "sign_and_scale"),
    ("sign flipped", "sign_flipped"),
    ("the sign is flipped", "sign_flipped"),
    ("a percentage instead of a fraction", "percent_or_255"),
    ("0 … 255 intensities instead of a fraction", "percent_or_255"),
    ("summed instead of averaged", "summed_not_averaged"),
    ("averaged where the formula sums", "averaged_not_summed"),
    ("a missing or extra factor", "scaled"),
    ("your output is all zeros", "all_zeros"),
    ("the absolute value of the reference", "absolute_value"),
    ("which you leave at 0", "left_zero"),
    ("same shape as the reference", "detail_off"),
    ("are wrong, the others right", "some_rows_wrong"),
    ("a different quantity", "different_quantity"),
    ("still attached to the autograd graph", "not_detached"),
    ("in place", "mutates_input"),
    ("switched on requires_grad", "mutates_input"),
    ("left a gradient in the caller's", "grad_accumulated"),
    ("a second call on the same", "grad_accumulated"),
)


def category_of_hint(sentence: str) -> str:
    """The category of one hint sentence from `hints` ("other" if none fits)."""
    if not isinstance(sentence, str):
        return "other"
    for phrase, category in _HINT_PHRASES:
        if phrase in sentence:
            return category
    return "other"
