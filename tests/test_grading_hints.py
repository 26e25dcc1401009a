"""What a visible test says about a wrong answer: hints, alternatives, invariants.

Runs in-process in plain mode. The bank of wrong answers per question is in
test_exercise_bug_bank.py; here are the pieces it relies on, each on a case
worked out by hand: short answers are never judged before grading, a check
without a reference is never a ✓, what needs no reference is checked also
where the reference is withheld, the efficiency gap is printed as numbers,
the probability and the loss are named, and a few values need an exact fit.
Grad-CAM's (ps6) wrong variants and shape hints at their edges, at the end.
"""

import io
import itertools
import math
import sys
from contextlib import redirect_stdout

import numpy as np
import pytest
import torch

from course_utils import models, shapley
from course_utils.grading import alternatives, checks, closed_form, hints, records
from course_utils.grading.cases import Built
from course_utils.grading.withheld import SHORT_ANSWERS


@pytest.fixture(autouse=True)
def plain(monkeypatch):
    monkeypatch.setattr(checks, "_PRISTINE", checks._snapshot())
    monkeypatch.delenv(records.MODE_ENV, raising=False)


def _printed(fn, *args, **kwargs) -> str:
    out = io.StringIO()
    with redirect_stdout(out):
        fn(*args, **kwargs)
    return out.getvalue()


@pytest.mark.parametrize(
    "kind, right, wrong, choices",
    [("bool", "TRUE", "FALSE", None), ("choice", "b", "c", "abcd"),
     ("number", 128, 32, None)],
)
def test_a_short_answer_is_never_said_right_or_wrong(kind, right, wrong, choices):
    said = _printed(checks.validate, right, kind, choices)
    assert said == _printed(checks.validate, wrong, kind, choices)
    assert said.startswith("○ form ok") and SHORT_ANSWERS in said and "✓" not in said


def _plain_linear(n=3, d=4, product=(0, 1, 2), seed=0):
    g = torch.Generator().manual_seed(seed)
    model = models.LinearPlusProduct(torch.randn(2, d, generator=g),
                                     torch.randn(2, generator=g) + 2, product=product)
    return model, torch.randn(n, d, generator=g), 1, torch.randn(d, generator=g)


def _coalition_values(weight):
    """Values Σ_S weight(|S|, D)·[v(S ∪ {i}) − v(S)] of `_plain_linear`'s game."""

    def values(model, x, target, baseline):
        n, d = x.shape
        out = torch.zeros(n, d, dtype=torch.float64)
        with torch.no_grad():
            for row, i in itertools.product(range(n), range(d)):
                others = [j for j in range(d) if j != i]
                for k in range(d):
                    for s in itertools.combinations(others, k):
                        keep = torch.tensor([j in s for j in range(d)])
                        z = torch.where(keep, x[row], baseline)
                        gain = model(torch.where(keep | (torch.arange(d) == i), x[row],
                                                 baseline)[None])[0, target]
                        out[row, i] += weight(k, d) * float(gain - model(z[None])[0, target])
        return out

    return values


SHAPLEY = _coalition_values(
    lambda k, d: math.factorial(k) * math.factorial(d - k - 1) / math.factorial(d))
BANZHAF = _coalition_values(lambda k, d: 1 / 2 ** (d - 1))
CASE = checks.Inputs(lambda g: (_plain_linear(), {}), label="x0·x1·x2")


def test_efficiency_prints_the_gap_as_numbers():
    built = CASE.build()
    assert checks.efficiency(SHAPLEY, SHAPLEY(*built.args).numpy(), built) == []
    (said,) = checks.efficiency(BANZHAF, BANZHAF(*built.args).numpy(), built)
    model, x, target, base = built.args
    with torch.no_grad():
        delta = float(model(x[:1])[0, 1] - model(base[None])[0, 1])
    total = float(BANZHAF(*built.args)[0].sum())
    assert f"row 0 sums to {total:.4f}" in said
    assert f"f(x) − f(baseline) = {delta:.4f}" in said
    assert f"a gap of {total - delta:+.4f}" in said and "Banzhaf" in said


@pytest.mark.parametrize("product", [(0, 1), (0, 1, 2), (3, 1, 0)])
def test_banzhaf_differs_from_shapley_only_beyond_pairs(product):
    built = checks.Inputs(lambda g: (_plain_linear(product=product), {})).build()
    same = torch.allclose(BANZHAF(*built.args), SHAPLEY(*built.args), atol=1e-6)
    assert same == (len(product) == 2)
    exact = shapley.exact_features(*built.args[:3], baseline=built.args[3]).values
    closed = closed_form.linear_plus_product_shapley(*built.args)
    assert torch.allclose(closed.double(), exact.double(), atol=1e-5)


def test_efficiency_names_a_forgotten_baseline_and_a_flipped_sign():
    built = CASE.build()
    model, x, target, base = built.args
    (zero,) = checks.efficiency(None, SHAPLEY(model, x, target, torch.zeros(4)).numpy(), built)
    assert "f(x) − f(0) instead" in zero
    (flipped,) = checks.efficiency(None, -SHAPLEY(*built.args).numpy(), built)
    assert "the sign is flipped" in flipped


def _absent(*args, **kwargs):
    raise ModuleNotFoundError("No module named 'course_utils.shapley'",
                              name="course_utils.shapley")


def test_a_withheld_reference_still_checks_what_needs_none():
    """In a hand-out the comparison cannot run; invariants and side effects can."""
    with pytest.raises(checks.ReferenceWithheld):
        checks.check("s", SHAPLEY, [CASE], _absent, invariant=checks.efficiency)
    with pytest.raises(checks.CheckFailed, match="do not add up") as info:
        checks.check("s", BANZHAF, [CASE], _absent, invariant=checks.efficiency)
    assert not isinstance(info.value, checks.ReferenceWithheld)

    def mutating(model, x, target, baseline):
        out = SHAPLEY(model, x, target, baseline)
        x.zero_()
        return out

    with pytest.raises(checks.CheckFailed, match="changed the caller's x in place"):
        checks.check("s", mutating, [CASE], _absent)


def test_a_check_without_a_reference_is_not_a_tick():
    said = _printed(checks.check, "s", SHAPLEY, [CASE], None)
    assert said.startswith("○ s: your function ran") and "✓" not in said


def _linear_case():
    built = checks.Case("linear", digits=(0, 1, 2), target=(3, 5, 7)).build()
    return built.args


def _grad_of(head, model, x, target, mean=False):
    x = x.detach().clone().requires_grad_(True)
    out = head(model(x))[torch.arange(len(x)), target].sum()
    (grad,) = torch.autograd.grad(out / (len(x) if mean else 1), x)
    return grad.numpy()


def test_the_probability_and_the_loss_are_named():
    model, x, target = _linear_case()
    ref = checks.saliency("gradient")
    expected = ref(model, x, target).numpy()
    found = alternatives.of(ref, (model, x, target), {})
    prob = _grad_of(lambda z: torch.softmax(z, 1), model, x, target)
    (said,) = hints.diagnose(prob, expected, found)
    assert said.startswith("your map explains the softmax probability p_c")
    loss = _grad_of(lambda z: -torch.log_softmax(z, 1), model, x, target, mean=True)
    (said,) = hints.diagnose(loss, expected, found)
    assert said.startswith("your map explains the cross-entropy loss")
    assert "sign is flipped too" in said and "divided by 3, the batch size" in said


def test_a_few_values_need_an_exact_fit():
    """Two numbers fit almost any factor: they are shown, not called 1.03×."""
    (said,) = hints.diagnose([0.70, 0.69], [0.72, 0.70])
    assert said == "your values [0.7, 0.69], the reference's [0.72, 0.7]"
    (said,) = hints.diagnose([72.0, 70.0], [0.72, 0.70])
    assert "100.0× the reference: a percentage" in said


def test_what_a_function_does_to_the_model_is_named():
    model = checks.build_model("resnet_small:random", seed=1)
    states = hints.model_states((model,))
    model.train()
    model(torch.rand(2, 1, 28, 28))  # batch-norm statistics move in train mode
    model.fc.register_forward_hook(lambda *a: None)
    said = " ".join(hints.model_changes(states))
    assert "left the model in train mode" in said
    assert "changed the model's weights or buffers" in said
    assert "left hooks registered" in said


def test_a_product_of_features_is_checked():
    with pytest.raises(ValueError, match="product must name at least two distinct"):
        models.LinearPlusProduct(torch.zeros(2, 3), torch.zeros(2), product=(0, 0))
    with pytest.raises(ValueError, match="product"):
        models.LinearPlusProduct(torch.zeros(2, 3), torch.zeros(2), product=(1, 3))
    model = models.LinearPlusProduct(torch.zeros(1, 3), torch.ones(1), product=(0, 1, 2))
    assert model(torch.tensor([[2.0, 3.0, 4.0]])).item() == 24.0
    assert models.LinearPlusProduct.product == (0, 1)  # what older pickles read


def test_an_invariant_must_be_a_function_and_holds_for_the_solution(
    monkeypatch, tmp_path
):
    with pytest.raises(ValueError, match="invariant must be a function or None"):
        checks.check("s", SHAPLEY, [CASE], None, invariant=3)
    monkeypatch.setenv(records.MODE_ENV, "reference")
    monkeypatch.setenv(records.RECORD_DIR_ENV, str(tmp_path))
    with pytest.raises(AssertionError, match="the solution fails the invariant"):
        checks.check("s", BANZHAF, [CASE], None, invariant=checks.efficiency)
    checks.check("s", SHAPLEY, [CASE], None, invariant=checks.efficiency)


def _gradient_of(head):
    def fn(model, x, target):
        x = x.detach().clone().requires_grad_(True)
        t = torch.as_tensor(target).expand(len(x))
        (grad,) = torch.autograd.grad(head(model(x))[torch.arange(len(x)), t].sum(), x)
        return grad

    return fn


def _absent_saliency(*args, **kwargs):
    raise ModuleNotFoundError("No module named 'course_utils.saliency'",
                              name="course_utils.saliency")


@pytest.mark.parametrize(
    "head, said",
    [(lambda z: torch.softmax(z, 1), "your map did not move: it depends on the logits "
      "only through the softmax (the probability p_c, or the loss −log p_c)"),
     (lambda z: -torch.log_softmax(z, 1), "your map did not move"),
     (lambda z: -z, "your map moved by −k: the sign is flipped")],
)
def test_the_logit_shift_tells_the_probability_from_the_logit_without_a_reference(
    head, said
):
    """A hand-out lacks the reference; the shifted model still tells them apart."""
    cases = [checks.Case("small_cnn:random", digits=(0, 1), target=(3, 5), seed=2)]
    with pytest.raises(checks.ReferenceWithheld):
        checks.check("g", _gradient_of(lambda z: z), cases, _absent_saliency,
                      invariant=checks.logit_shift("gradient"))
    with pytest.raises(checks.CheckFailed) as info:
        checks.check("g", _gradient_of(head), cases, _absent_saliency,
                     invariant=checks.logit_shift("gradient"))
    assert said in str(info.value)
    assert not isinstance(info.value, checks.ReferenceWithheld)


def test_occlusion_on_logits_moves_under_the_shift():
    def drops(output):
        def fn(model, x, target):
            t = torch.as_tensor(target).expand(len(x))
            with torch.no_grad():
                score = output(model(x))[torch.arange(len(x)), t]
                hidden = x.clone()
                hidden[:, :, :14] = 0.0
                low = output(model(hidden))[torch.arange(len(x)), t]
            return (score - low).view(-1, 1, 1, 1).expand_as(x).clone()

        return fn

    built = checks.Case("small_cnn:random", digits=(0,), target=1, seed=2).build()
    shift = checks.logit_shift("none")
    prob = drops(lambda z: torch.softmax(z, 1))
    assert shift(prob, prob(*built.args).numpy(), built) == []
    logit = drops(lambda z: z)
    (said,) = shift(logit, logit(*built.args).numpy(), built)
    assert "you use the logit f_c, not the softmax probability p_c" in said
    with pytest.raises(ValueError, match="response must be one of"):
        checks.logit_shift("probability")


class _Absent:
    """A finder for modules whose files are not there (a hand-out before the deadline)."""

    def __init__(self, *names):
        self.names = names

    def find_spec(self, name, path=None, target=None):
        if name in self.names:
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None


def test_a_reference_missing_from_a_hand_out_is_withheld_not_an_import_error(
    monkeypatch,
):
    """`from course_utils import saliency` raises a bare ImportError there; the
    references import so that the check can say "graded after submission"."""

    import course_utils
    import course_utils.grading

    hidden = {"course_utils.saliency": course_utils,
              "course_utils.grading.closed_form": course_utils.grading}
    for name, parent in hidden.items():
        for key in [k for k in sys.modules if k == name or k.startswith(name + ".")]:
            monkeypatch.delitem(sys.modules, key)
        monkeypatch.delattr(parent, name.rpartition(".")[2], raising=False)
    monkeypatch.setattr(sys, "meta_path", [_Absent(*hidden), *sys.meta_path])
    cases = [checks.Case("linear", digits=(0,), target=3)]
    with pytest.raises(checks.ReferenceWithheld, match=r"\(course_utils.saliency\)"):
        checks.check("g", _gradient_of(lambda z: z), cases, checks.saliency("gradient"))
    path = checks.Inputs(lambda g: ((torch.zeros(1, 1, 2, 2), 0.0, 2), {}))
    with pytest.raises(checks.ReferenceWithheld, match="closed_form"):
        checks.check("p", lambda x, b, m: torch.stack([x] * m), [path],
                     checks.reference_answer("path_points"))


# ------------------------------------------------------- Grad-CAM (ps6)
#
# `alternatives.grad_cam` computes Grad-CAM's own wrong variants, `quantities`
# its probability and its sum of all logits (the layer bound as a module, so
# that it names the same module inside the head). Like every family it runs
# only where the course's reference implementation is installed: never in the
# grading sandbox or a hand-out before the deadline, so it never computes an
# answer a student could call instead.


@pytest.fixture(scope="module")
def cam_case():
    torch.manual_seed(0)
    return models.load_pretrained("small_cnn"), torch.rand(2, 1, 28, 28), torch.tensor([3, 7])


def _cam_from(model, x, target, layer, score):
    """Grad-CAM of `score(logits, target)` at `layer`, not upsampled."""
    store = {}
    handle = model.get_submodule(layer).register_forward_hook(
        lambda m, i, o: store.update(A=o))
    try:
        logits = model(x.detach().clone().requires_grad_(True))
        (grad,) = torch.autograd.grad(score(logits, target), store["A"])
    finally:
        handle.remove()
    cam = (grad.mean((2, 3), keepdim=True) * store["A"]).sum(1, keepdim=True)
    return torch.relu(cam).detach().numpy()


def test_grad_cam_alternatives_name_each_classic_bug(cam_case):
    model, x, target = cam_case
    reference = checks.saliency("grad_cam", upsample=False)
    args = (model, x, target, "relu1")
    alts = alternatives.grad_cam(reference, args, {})
    expected = reference(*args).numpy()
    assert len(alts) == 5 and any("default layer" in k for k in alts)
    for what, alt in alts.items():
        if "default layer" in what:  # relu2 is 14×14: the shape hint speaks instead
            assert alt.shape == (2, 1, 14, 14)
            continue
        assert alt.shape == expected.shape, what
        assert not np.allclose(alt, expected), what  # a right answer never matches a bug
    assert alternatives.grad_cam(reference, args[:3], {"layer": "relu1"}).keys() == alts.keys()


@pytest.mark.parametrize(
    "score, said, layers",
    [(lambda z, t: torch.softmax(z, 1)[torch.arange(len(z)), t].sum(),
      "your map explains the softmax probability p_c", ("relu1", None)),
     # at relu2 (the default) every logit's map is all zeros on these inputs
     (lambda z, t: z.sum(), "your map explains the sum of all the classes' logits",
      ("relu1",))],
)
def test_grad_cam_of_the_probability_or_every_logit_is_named(cam_case, score, said, layers):
    """`quantities` wraps the model in a head; the layer's name (or None, the
    default layer) still finds its module there."""
    model, x, target = cam_case
    reference = checks.saliency("grad_cam", upsample=False)
    for layer in layers:
        args = (model, x, target, layer)
        expected = reference(*args).numpy()
        wrong = _cam_from(model, x, target, layer or "relu2", score)
        (hint,) = hints.diagnose(wrong, expected, alternatives.of(reference, args, {}))
        assert hint.startswith(said), hint


def test_grad_cam_alternatives_are_silent_elsewhere(cam_case, monkeypatch):
    model, x, target = cam_case
    args = (model, x, target, "relu1")
    assert alternatives.grad_cam(checks.saliency("gradient"), args, {}) == {}
    reference = checks.saliency("grad_cam", upsample=False)
    assert alternatives.of(reference, args, {})  # installed here: computed
    monkeypatch.setitem(sys.modules, "course_utils.saliency", None)
    assert alternatives.of(reference, args, {}) == {}  # withheld: nothing at all


def test_grad_cam_shape_hints(cam_case):
    model, x, target = cam_case
    layer_ref = checks.saliency("grad_cam", upsample=False)
    up_ref = checks.saliency("grad_cam")
    e = np.zeros((2, 1, 7, 7))
    args = (model, x)
    photos = (model, torch.rand(2, 3, 28, 28))  # only the shape of x is read
    assert "input's shape" in hints.grad_cam_shape(
        layer_ref, np.zeros((2, 3, 28, 28)), e, photos)[0]
    assert "upsampled" in hints.grad_cam_shape(layer_ref, np.zeros((2, 1, 28, 28)), e, args)[0]
    assert "one map per channel" in hints.grad_cam_shape(
        layer_ref, np.zeros((2, 32, 7, 7)), e, args)[0]
    assert "hook that layer" in hints.grad_cam_shape(
        layer_ref, np.zeros((2, 1, 14, 14)), e, args)[0]
    # an upsampling reference, or any other method: nothing Grad-CAM-specific to say
    assert hints.grad_cam_shape(up_ref, np.zeros((2, 1, 7, 7)), np.zeros((2, 1, 28, 28)),
                                args) == []
    assert hints.grad_cam_shape(checks.saliency("gradient"), np.zeros((2, 1, 28, 28)), e,
                                args) == []
