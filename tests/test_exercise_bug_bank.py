"""Each visible test cell of solutions/ against a bank of typical wrong answers.

For every classic bug (mutating the caller's x, accumulating into .grad, forgetting
to detach, a flipped sign, summing instead of averaging, a wrong per-row target…)
the test runs the notebook's setup cell, the model solution's answer cells, the
wrong answer in place of the right one, then the visible part of the question's
test cell, and asserts that the cell fails with the hint meant for that bug.
"""

import json
import re
import types
from pathlib import Path

import pytest

SOLUTIONS = Path(__file__).resolve().parents[1] / "solutions"
HIDDEN = re.compile(r"### BEGIN HIDDEN TESTS.*?### END HIDDEN TESTS\n?", re.DOTALL)

GRAD_OK = """
def gradient_saliency(model, x, target):
    x = x.detach().clone().requires_grad_(True)
    logits = model(x)
    rows = torch.arange(len(x))
    target = torch.as_tensor(target).expand(len(x))
    (grad,) = torch.autograd.grad(logits[rows, target].sum(), x)
    return grad
"""


def _grad(body_target="logits[rows, target]", prep="x = x.detach().clone()"
          ".requires_grad_(True)", ret="grad", grad_call=None):
    grad_call = grad_call or f"(grad,) = torch.autograd.grad({body_target}.sum(), x)"
    return f"""
def gradient_saliency(model, x, target):
    {prep}
    logits = model(x)
    rows = torch.arange(len(x))
    target = torch.as_tensor(target).expand(len(x))
    {grad_call}
    return {ret}
"""


BANK = {
    ("ps1_gradients/gradients.ipynb", "q1_tests"): [
        ("accumulates into the caller's x.grad",
         _grad(prep="x.requires_grad_(True)",
               grad_call="logits[rows, target].sum().backward()", ret="x.grad"),
         "2.0× the first"),
        ("mutates the caller's x (requires_grad_)",
         _grad(prep="x.requires_grad_(True)"), "switched on requires_grad"),
        ("forgets to detach",
         _grad(grad_call="(grad,) = torch.autograd.grad(logits[rows, target].sum(), x,"
                         " create_graph=True)"),
         "still attached to the autograd graph"),
        ("flipped sign", _grad(ret="-grad"), "sign flipped"),
        ("logits[:, target]", _grad(body_target="logits[:, target]"),
         "logits[:, target]"),
        ("every row uses target[0]", _grad(body_target="logits[rows, target[0]]"),
         "every row explains target[0]"),
        ("rows swapped", _grad(body_target="logits[rows, target.flip(0)]"),
         "rows swapped"),
        ("summed over rows and channels", _grad(ret="grad * 3"),
         "3.0× the reference"),
    ],
    ("ps1_gradients/gradients.ipynb", "q2_tests"): [
        ("flipped sign", GRAD_OK + """
def input_x_gradient(model, x, target):
    return -x * gradient_saliency(model, x, target)
""", "sign flipped"),
        ("forgets to detach", GRAD_OK + """
def input_x_gradient(model, x, target):
    x = x.clone().requires_grad_(True)
    return x * gradient_saliency(model, x, target)
""", "still attached"),
    ],
    ("ps2_integrated_gradients/integrated_gradients.ipynb", "q1_tests"): [
        ("flattened the steps into the batch", """
def path_points(x, baseline, n_steps):
    base = torch.as_tensor(baseline, dtype=x.dtype).expand_as(x)
    alphas = torch.arange(1, n_steps + 1, dtype=x.dtype) / n_steps
    return (base + alphas.view(-1, 1, 1, 1, 1) * (x - base)).reshape(-1, *x.shape[1:])
""", "right number of values but shape"),
        ("mutates x in place", """
def path_points(x, baseline, n_steps):
    alphas = torch.arange(1, n_steps + 1, dtype=x.dtype) / n_steps
    out = baseline + alphas.view(-1, 1, 1, 1, 1) * (x - baseline)
    x.mul_(1.0).add_(1.0)
    return out
""", "changed the caller's x in place"),
    ],
    ("ps2_integrated_gradients/integrated_gradients.ipynb", "q2_tests"): [
        ("summed instead of averaged", """
def integrated_gradients(model, x, target, baseline, n_steps):
    points = path_points(x, baseline, n_steps)
    flat = points.reshape(-1, *x.shape[1:]).requires_grad_(True)
    target = torch.as_tensor(target).expand(len(x)).repeat(n_steps)
    logits = model(flat)
    (grad,) = torch.autograd.grad(logits[torch.arange(len(flat)), target].sum(), flat)
    base = torch.as_tensor(baseline, dtype=x.dtype).expand_as(x)
    return (x - base) * grad.reshape(points.shape).sum(0)
""", "summed instead of averaged"),
        ("baseline minus x", """
def integrated_gradients(model, x, target, baseline, n_steps):
    points = path_points(x, baseline, n_steps)
    flat = points.reshape(-1, *x.shape[1:]).requires_grad_(True)
    target = torch.as_tensor(target).expand(len(x)).repeat(n_steps)
    logits = model(flat)
    (grad,) = torch.autograd.grad(logits[torch.arange(len(flat)), target].sum(), flat)
    base = torch.as_tensor(baseline, dtype=x.dtype).expand_as(x)
    return (base - x) * grad.reshape(points.shape).mean(0)
""", "sign flipped"),
    ],
    ("ps3_smoothgrad_occlusion/smoothgrad_occlusion.ipynb", "q1_tests"): [
        ("one sigma for the whole batch", """
def noise_sigma(x, noise_level):
    return noise_level * (x.max() - x.min())
""", "a single number for the whole batch"),
        ("percent instead of fraction", """
def noise_sigma(x, noise_level):
    return 100 * noise_level * (x.amax(dim=(1, 2, 3)) - x.amin(dim=(1, 2, 3)))
""", "100.0× the reference: a percentage"),
    ],
    ("ps3_smoothgrad_occlusion/smoothgrad_occlusion.ipynb", "q2_tests"): [
        ("summed over the samples", """
def smoothgrad_from_noise(model, x, target, noise):
    return torch.stack([_gradient(model, x + eps, target) for eps in noise]).sum(0)
""", "4.0× the reference: summed instead of averaged"),
        ("subtracted the noise", """
def smoothgrad_from_noise(model, x, target, noise):
    grads = torch.stack([_gradient(model, x + eps, target) for eps in noise]).mean(0)
    return -grads
""", "sign flipped"),
    ],
    ("ps3_smoothgrad_occlusion/smoothgrad_occlusion.ipynb", "q3_tests"): [
        ("drop with the wrong sign", """
def occlusion_map(model, x, target, patch):
    n, c, h, w = x.shape
    rows = torch.arange(n)
    target = torch.as_tensor(target).expand(n)
    grey = model.normalize.mean
    with torch.no_grad():
        clean = torch.softmax(model(x), 1)[rows, target]
        out = torch.zeros_like(x)
        for top in range(0, h, patch):
            for left in range(0, w, patch):
                hidden = x.clone()
                hidden[:, :, top:top + patch, left:left + patch] = grey
                prob = torch.softmax(model(hidden), 1)[rows, target]
                out[:, :, top:top + patch, left:left + patch] = (
                    (prob - clean).view(n, 1, 1, 1))
    return out
""", "sign flipped"),
        ("greys the caller's x", """
def occlusion_map(model, x, target, patch):
    n, c, h, w = x.shape
    rows = torch.arange(n)
    target = torch.as_tensor(target).expand(n)
    grey = model.normalize.mean
    with torch.no_grad():
        clean = torch.softmax(model(x), 1)[rows, target]
        out = torch.zeros_like(x)
        for top in range(0, h, patch):
            for left in range(0, w, patch):
                saved = x[:, :, top:top + patch, left:left + patch].clone()
                x[:, :, top:top + patch, left:left + patch] = grey
                prob = torch.softmax(model(x), 1)[rows, target]
                out[:, :, top:top + patch, left:left + patch] = (
                    (clean - prob).view(n, 1, 1, 1))
                x[:, :, top:top + patch, left:left + patch] = saved + 0.5
    return out
""", "changed the caller's x in place"),
    ],
    ("ps4_sanity_checks/sanity_checks.ipynb", "q1_tests"): [
        ("randomizes the caller's model", """
def randomize_top_layer(model, seed):
    torch.manual_seed(seed)
    model.fc2.reset_parameters()
    return model
""", "Return a copy"),
    ],
    ("ps4_sanity_checks/sanity_checks.ipynb", "q2_tests"): [
        ("negated", """
import scipy.stats


def spearman(a, b):
    rows = [-scipy.stats.spearmanr(u.flatten().numpy(), v.flatten().numpy())[0]
            for u, v in zip(a.detach(), b.detach())]
    return torch.tensor(rows, dtype=torch.float64)
""", "sign flipped"),
    ],
}


def _cells(path):
    nb = json.loads((SOLUTIONS / path).read_text())
    out = {}
    for i, c in enumerate(nb["cells"]):
        gid = c.get("metadata", {}).get("nbgrader", {}).get("grade_id", f"cell{i}")
        if c["cell_type"] == "code":
            out[gid] = "".join(c["source"])
    return out


CASES = [(nb, gid, name, src, hint) for (nb, gid), bugs in BANK.items()
         for name, src, hint in bugs]


@pytest.mark.parametrize(
    "notebook, test_id, bug, answer, hint", CASES,
    ids=[f"{nb.split('/')[0]}-{gid}-{name}" for nb, gid, name, _, _ in CASES],
)
def test_visible_cell_catches_bug_with_its_hint(
    notebook, test_id, bug, answer, hint, monkeypatch
):
    monkeypatch.delenv("COURSE_GRADING_MODE", raising=False)
    cells = _cells(notebook)
    ns: dict = {}
    exec(cells["setup"], ns)  # noqa: S102 — our own notebooks' cells
    for gid, src in cells.items():  # the model solution for every answer first
        if gid.endswith("_answer"):
            exec(src, ns)  # noqa: S102
    exec(answer, ns)  # noqa: S102 — then the wrong answer in its place
    visible = HIDDEN.sub("", cells[test_id])
    with pytest.raises(AssertionError) as err:
        exec(visible, ns)  # noqa: S102
    assert hint in str(err.value), f"{bug}: {err.value}"


@pytest.mark.parametrize("notebook", sorted({nb for nb, _ in BANK}))
def test_visible_cells_pass_the_model_solution(notebook, monkeypatch):
    monkeypatch.delenv("COURSE_GRADING_MODE", raising=False)
    cells = _cells(notebook)
    ns: dict = {}
    for src in cells.values():
        exec(HIDDEN.sub("", src), ns)  # noqa: S102


# Functions a visible cell may define: builders of test inputs, never of answers.
INPUT_BUILDERS = {"_maps"}


@pytest.mark.parametrize("notebook", sorted({nb for nb, _ in BANK}))
def test_no_reference_implementation_in_the_visible_namespace(notebook, monkeypatch):
    monkeypatch.delenv("COURSE_GRADING_MODE", raising=False)
    cells = _cells(notebook)
    ns: dict = {}
    for gid, src in cells.items():
        if not gid.endswith("_tests"):
            exec(src, ns)  # noqa: S102
    before = set(ns)
    for gid, src in cells.items():
        if gid.endswith("_tests"):
            exec(HIDDEN.sub("", src), ns)  # noqa: S102
    added = {k for k in set(ns) - before
             if isinstance(ns[k], types.FunctionType)}
    assert added <= INPUT_BUILDERS, f"{notebook}: visible cells define {added}"


# ======================================================================
# ps6_photos (issue 23): Grad-CAM on the photo model. Kept in its own block,
# with its own parametrised tests reusing the ones above.
# ======================================================================

PS6 = "ps6_photos/photos.ipynb"


def _cam(*, module="model.get_submodule(layer)", hook_arg="output",
         prep="photo = x.detach().clone().requires_grad_(True)",
         score="logits.gather(1, classes[:, None]).sum()",
         weights="dA.mean(dim=(2, 3), keepdim=True)",
         combine="(alpha * recorded['A']).sum(dim=1, keepdim=True)",
         ret="torch.relu(weighted).detach()"):
    """The model solution's grad_cam with one part replaced."""
    return f"""
def grad_cam(model, x, target, layer):
    feature_layer = {module}
    recorded = {{}}
    handle = feature_layer.register_forward_hook(
        lambda module, inputs, output: recorded.update(A={hook_arg}))
    try:
        {prep}
        logits = model(photo)
        classes = torch.as_tensor(target).expand(len(photo))
        score = {score}
        (dA,) = torch.autograd.grad(score, recorded["A"])
    finally:
        handle.remove()
    alpha = {weights}
    weighted = {combine}
    return {ret}
"""


PS6_BANK = {
    (PS6, "q1_tests"): [
        ("forgot the ReLU", _cam(ret="weighted.detach()"), "no ReLU"),
        ("gradient times A position by position",
         _cam(combine="(dA * recorded['A']).sum(dim=1, keepdim=True)"),
         "position by position"),
        ("weights averaged over the channels",
         _cam(weights="dA.mean(dim=1, keepdim=True)"), "averaged over the channels"),
        ("gradient summed over (h, w)", _cam(weights="dA.sum(dim=(2, 3), keepdim=True)"),
         "49.0× the reference: summed instead of averaged"),
        ("gradient of the probability",
         _cam(score="torch.softmax(logits, 1).gather(1, classes[:, None]).sum()"),
         "softmax probability"),
        ("gradient of every logit", _cam(score="logits.sum()"), "every logit summed"),
        ("the layer's input as A", _cam(hook_arg="inputs[0]"), "layer's input"),
        ("ignores layer: always the last activation", _cam(module="model._relu_head"),
         "default layer"),
        ("one map per channel", _cam(combine="alpha * recorded['A']"),
         "one map per channel"),
        ("upsampled to the photo",
         _cam(ret="torch.nn.functional.interpolate(torch.relu(weighted), "
                  "size=x.shape[2:], mode='bilinear').detach()"),
         "upsampled to the input's"),
        ("the input gradient instead", """
def grad_cam(model, x, target, layer):
    x = x.detach().clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(model(x)[:, target].sum(), x)
    return grad
""", "input's shape"),
        ("switches on requires_grad of the caller's x",
         _cam(prep="photo = x.requires_grad_(True)"), "switched on requires_grad"),
        ("forgets to detach", _cam(ret="torch.relu(weighted)"),
         "still attached to the autograd graph"),
    ],
}
PS6_CASES = [(nb, gid, name, src, hint) for (nb, gid), bugs in PS6_BANK.items()
             for name, src, hint in bugs]


@pytest.mark.parametrize(
    "notebook, test_id, bug, answer, hint", PS6_CASES,
    ids=[f"ps6_photos-{gid}-{name}" for _, gid, name, _, _ in PS6_CASES],
)
def test_ps6_visible_cell_catches_bug_with_its_hint(
    notebook, test_id, bug, answer, hint, monkeypatch
):
    test_visible_cell_catches_bug_with_its_hint(
        notebook, test_id, bug, answer, hint, monkeypatch
    )


def test_ps6_visible_cells_pass_the_model_solution(monkeypatch):
    test_visible_cells_pass_the_model_solution(PS6, monkeypatch)


def test_ps6_no_reference_implementation_in_the_visible_namespace(monkeypatch):
    test_no_reference_implementation_in_the_visible_namespace(PS6, monkeypatch)
