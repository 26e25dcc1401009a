"""Each visible test cell of solutions/ against a bank of typical wrong answers.

For every classic bug (mutating the caller's x, accumulating into .grad, forgetting
to detach, a flipped sign, summing instead of averaging, a wrong per-row target,
the probability or the loss instead of the logit, Banzhaf weights for Shapley
values…) the test runs the notebook's setup cell, the model solution's answer
cells, the wrong answer in place of the right one, then the visible part of the
question's test cell, and asserts that the cell fails with the hint meant for
that bug. A wrong idea never gets a ✓.

Short answers (a number, TRUE/FALSE, a letter) are never said right or wrong
before grading (README, "Short answers"): a wrong answer of the right form must
print exactly what the right one prints, and no ✓; an answer of the wrong form
fails with what is accepted.

The bank: BANK[(notebook, test cell)] = [(wrong idea, answer source, what the
hint must say)], SHORT[(notebook, test cell)] = [(wrong idea, answer source,
what the failure must say, or None for a wrong answer of the right form)]. One
block per problem set, in order. The tests are parametrized at collection
(`pytest_generate_tests`), so a block added at the end of this file is tested.
"""

import contextlib
import io
import json
import re
import types
from pathlib import Path

import pytest

from course_utils.grading.withheld import SHORT_ANSWERS

SOLUTIONS = Path(__file__).resolve().parents[1] / "solutions"
HIDDEN = re.compile(r"### BEGIN HIDDEN TESTS.*?### END HIDDEN TESTS\n?", re.DOTALL)
BANK: dict[tuple[str, str], list[tuple[str, str, str]]] = {}
SHORT: dict[tuple[str, str], list[tuple[str, str, str | None]]] = {}

# =================================================================== ps1_gradients
PS1 = "ps1_gradients/gradients.ipynb"

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
          ".requires_grad_(True)", ret="grad", grad_call=None, first=""):
    grad_call = grad_call or f"(grad,) = torch.autograd.grad({body_target}.sum(), x)"
    return f"""
def gradient_saliency(model, x, target):
    {first}
    {prep}
    logits = model(x)
    rows = torch.arange(len(x))
    target = torch.as_tensor(target).expand(len(x))
    {grad_call}
    return {ret}
"""


PROB = "explains the softmax probability p_c, not the logit f_c"
LOSS = "explains the cross-entropy loss −log p_c, not the class score f_c"
BANK[(PS1, "q1_tests")] = [
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
    # the lecture's f is the probability; the course explains the logit
    ("the softmax probability (the lecture's f)",
     _grad(body_target="torch.softmax(logits, 1)[rows, target]"), PROB),
    ("the probability, negated",
     _grad(body_target="-torch.softmax(logits, 1)[rows, target]"),
     PROB + ": the lecture writes f for the probability"),
    ("the cross-entropy loss (summed)",
     _grad(grad_call="(grad,) = torch.autograd.grad(torch.nn.functional.cross_entropy("
                     "logits, target, reduction='sum'), x)"),
     LOSS + ": the loss falls where the score rises, so the sign is flipped too"),
    ("the cross-entropy loss (averaged over the batch)",
     _grad(grad_call="(grad,) = torch.autograd.grad(torch.nn.functional.cross_entropy("
                     "logits, target), x)"),
     "Also divided by 3, the batch size"),
    ("log-probability", _grad(body_target="torch.log_softmax(logits, 1)[rows, target]"),
     "explains log p_c (log_softmax)"),
    ("the sum of all classes' logits", _grad(body_target="logits"),
     "the sum of all the classes' logits"),
    ("the predicted class", _grad(body_target="logits[rows, logits.argmax(1)]"),
     "explains the predicted class (argmax), not target"),
    ("absolute value", _grad(ret="grad.abs()"), "absolute value of the reference"),
    ("returns a numpy array", _grad(ret="grad.numpy()"), "returns a numpy array"),
    ("switches the model to train mode", _grad(first="model.train()"),
     "left the model in train mode"),
    ("freezes the model's weights",
     _grad(first="[p.requires_grad_(False) for p in model.parameters()]"),
     "changed requires_grad of the model's parameters"),
]

BANK[(PS1, "q2_tests")] = [
    ("flipped sign", GRAD_OK + """
def input_x_gradient(model, x, target):
    return -x * gradient_saliency(model, x, target)
""", "sign flipped"),
    ("forgets to detach", GRAD_OK + """
def input_x_gradient(model, x, target):
    x = x.clone().requires_grad_(True)
    return x * gradient_saliency(model, x, target)
""", "still attached"),
    ("the gradient alone", GRAD_OK + """
def input_x_gradient(model, x, target):
    return gradient_saliency(model, x, target)
""", "the gradient alone: multiply it by x"),
    ("the probability's gradient", """
def input_x_gradient(model, x, target):
    x = x.detach().clone().requires_grad_(True)
    probs = torch.softmax(model(x), 1)
    t = torch.as_tensor(target).expand(len(x))
    (grad,) = torch.autograd.grad(probs[torch.arange(len(x)), t].sum(), x)
    return x.detach() * grad
""", PROB),
    ("multiplies into the caller's x", GRAD_OK + """
def input_x_gradient(model, x, target):
    return x.mul_(gradient_saliency(model, x, target))
""", "changed the caller's x in place"),
    ("absolute value", GRAD_OK + """
def input_x_gradient(model, x, target):
    return (x * gradient_saliency(model, x, target)).abs()
""", "absolute value of the reference"),
]

SHORT[(PS1, "q3_tests")] = [
    ("input × gradient is not zero on black pixels", 'q3 = "FALSE"', None),
    ("yes instead of TRUE", 'q3 = "yes"', 'expected "TRUE" or "FALSE"'),
]
SHORT[(PS1, "q4_tests")] = [
    ("confuses the gradient with input × gradient", 'q4 = "c"', None),
    ("the input itself", 'q4 = "a"', None),
    ("a letter that is not offered", 'q4 = "e"', "must be one of"),
    ("a number instead of a letter", "q4 = 2", "expected a letter"),
]
SHORT[(PS1, "q5_tests")] = [
    ("one backward pass per image", "q5 = 16", None),
    ("a string", 'q5 = "1"', "expected a number"),
    ("a bool", "q5 = True", "expected a number"),
]

# ======================================================== ps2_integrated_gradients
PS2 = "ps2_integrated_gradients/integrated_gradients.ipynb"


def _path(alphas="torch.arange(1, n_steps + 1, dtype=x.dtype) / n_steps",
          point="base + alphas.view(-1, 1, 1, 1, 1) * (x - base)"):
    return f"""
def path_points(x, baseline, n_steps):
    base = torch.as_tensor(baseline, dtype=x.dtype).expand_as(x)
    alphas = {alphas}
    return {point}
"""


BANK[(PS2, "q1_tests")] = [
    ("flattened the steps into the batch",
     _path(point="(base + alphas.view(-1, 1, 1, 1, 1) * (x - base)).reshape(-1, "
                 "*x.shape[1:])"),
     "right number of values but shape"),
    ("mutates x in place", """
def path_points(x, baseline, n_steps):
    alphas = torch.arange(1, n_steps + 1, dtype=x.dtype) / n_steps
    out = baseline + alphas.view(-1, 1, 1, 1, 1) * (x - baseline)
    x.mul_(1.0).add_(1.0)
    return out
""", "changed the caller's x in place"),
    ("steps k = 0 … m − 1",
     _path(alphas="torch.arange(0, n_steps, dtype=x.dtype) / n_steps"),
     "steps k = 0 … m−1"),
    ("linspace(0, 1, m)", _path(alphas="torch.linspace(0, 1, n_steps)"),
     "α = linspace(0, 1, m)"),
    ("from x back to the baseline",
     _path(alphas="torch.arange(n_steps, 0, -1, dtype=x.dtype) / n_steps"),
     "run from x back to the baseline"),
    ("forgets the baseline", _path(point="alphas.view(-1, 1, 1, 1, 1) * x"),
     "your points are α·x"),
    ("steps on the second axis",
     _path(point="torch.stack([base + a * (x - base) for a in alphas], dim=1)"),
     "right number of values but shape"),
    ("returns a numpy array",
     _path(point="(base + alphas.view(-1, 1, 1, 1, 1) * (x - base)).numpy()"),
     "returns a numpy array"),
]


def _ig(ret="(x - base) * mean_grad", logit="logits[torch.arange(len(flat)), target]",
        mean="grad.reshape(points.shape).mean(0)"):
    return f"""
def integrated_gradients(model, x, target, baseline, n_steps):
    points = path_points(x, baseline, n_steps)
    flat = points.reshape(-1, *x.shape[1:]).requires_grad_(True)
    target = torch.as_tensor(target).expand(len(x)).repeat(n_steps)
    logits = model(flat)
    (grad,) = torch.autograd.grad({logit}.sum(), flat)
    mean_grad = {mean}
    base = torch.as_tensor(baseline, dtype=x.dtype).expand_as(x)
    return {ret}
"""


BANK[(PS2, "q2_tests")] = [
    ("summed instead of averaged", _ig(mean="grad.reshape(points.shape).sum(0)"),
     "summed instead of averaged"),
    ("baseline minus x", _ig(ret="(base - x) * mean_grad"), "sign flipped"),
    ("x instead of x − baseline", _ig(ret="x * mean_grad"),
     "multiply the averaged gradient by x, not by x − baseline"),
    ("the gradient at x only", _ig(mean="grad.reshape(points.shape)[-1]"),
     "the gradient at x alone"),
    ("a left Riemann sum", """
def integrated_gradients(model, x, target, baseline, n_steps):
    base = torch.as_tensor(baseline, dtype=x.dtype).expand_as(x)
    alphas = torch.arange(0, n_steps, dtype=x.dtype) / n_steps
    points = base + alphas.view(-1, 1, 1, 1, 1) * (x - base)
    flat = points.reshape(-1, *x.shape[1:]).requires_grad_(True)
    target = torch.as_tensor(target).expand(len(x)).repeat(n_steps)
    (grad,) = torch.autograd.grad(model(flat)[torch.arange(len(flat)), target].sum(), flat)
    return (x - base) * grad.reshape(points.shape).mean(0)
""", "a left Riemann sum"),
    ("IG of the probability",
     _ig(logit="torch.softmax(logits, 1)[torch.arange(len(flat)), target]"), PROB),
    ("every row explains target[0]",
     _ig(logit="logits[torch.arange(len(flat)), target[0]]"),
     "every row explains target[0]"),
    ("targets not repeated in step order", """
def integrated_gradients(model, x, target, baseline, n_steps):
    points = path_points(x, baseline, n_steps)
    flat = points.reshape(-1, *x.shape[1:]).requires_grad_(True)
    target = torch.as_tensor(target).expand(len(x)).repeat_interleave(n_steps)
    (grad,) = torch.autograd.grad(model(flat)[torch.arange(len(flat)), target].sum(), flat)
    base = torch.as_tensor(baseline, dtype=x.dtype).expand_as(x)
    return (x - base) * grad.reshape(points.shape).mean(0)
""", "its targets are target.repeat(n_steps), not repeat_interleave"),
]

SHORT[(PS2, "q3_tests")] = [
    ("the steps of one digit only", "q3 = 32", None),
    ("the batch only", "q3 = 4", None),
    ("a string", 'q3 = "128"', "expected a number"),
]
SHORT[(PS2, "q4_tests")] = [("IG is not x ⊙ w", 'q4 = "FALSE"', None)]
SHORT[(PS2, "q5_tests")] = [
    ("completeness forgets the baseline", 'q5 = "a"', None),
    ("a word", 'q5 = "f(x) - f(x0)"', "must be one of"),
]

# ======================================================== ps3_smoothgrad_occlusion
PS3 = "ps3_smoothgrad_occlusion/smoothgrad_occlusion.ipynb"

BANK[(PS3, "q1_tests")] = [
    ("one sigma for the whole batch", """
def noise_sigma(x, noise_level):
    return noise_level * (x.max() - x.min())
""", "a single number for the whole batch"),
    ("percent instead of fraction", """
def noise_sigma(x, noise_level):
    return 100 * noise_level * (x.amax(dim=(1, 2, 3)) - x.amin(dim=(1, 2, 3)))
""", "100.0× the reference: a percentage"),
    ("the standard deviation", """
def noise_sigma(x, noise_level):
    return noise_level * x.reshape(len(x), -1).std(1, unbiased=False)
""", "standard deviation"),
    ("forgets the minimum", """
def noise_sigma(x, noise_level):
    return noise_level * x.amax(dim=(1, 2, 3))
""", "σ from the maximum alone"),
    ("the batch's range for every image", """
def noise_sigma(x, noise_level):
    return (noise_level * (x.max() - x.min())).expand(len(x))
""", "one σ for the whole batch"),
    ("reduces over the batch axis", """
def noise_sigma(x, noise_level):
    return noise_level * (x.amax(dim=0) - x.amin(dim=0))
""", "the wrong axis"),
    ("returns a numpy array", """
def noise_sigma(x, noise_level):
    flat = x.reshape(len(x), -1).numpy()
    return noise_level * (flat.max(1) - flat.min(1))
""", "returns a numpy array"),
]


def _sg(inside="x + eps", reduce=".mean(0)", grad="_gradient"):
    return f"""
def smoothgrad_from_noise(model, x, target, noise):
    return torch.stack([{grad}(model, {inside}, target) for eps in noise]){reduce}
"""


BANK[(PS3, "q2_tests")] = [
    ("summed over the samples", _sg(reduce=".sum(0)"),
     "4.0× the reference: summed instead of averaged"),
    ("negated", _sg(reduce=".mean(0).neg()"), "sign flipped"),
    ("ignores the noise", _sg(inside="x"), "ignores the noise"),
    ("scales the noise again", """
def smoothgrad_from_noise(model, x, target, noise):
    flat = x.reshape(len(x), -1)
    sigma = (0.15 * (flat.max(1).values - flat.min(1).values)).view(-1, 1, 1, 1)
    return torch.stack([_gradient(model, x + sigma * eps, target) for eps in noise]).mean(0)
""", "the noise is scaled twice"),
    ("averages over the batch axis", _sg(reduce=".mean(1)"), "the wrong axis"),
    ("the probability's gradient", """
def _prob_gradient(model, x, target):
    x = x.detach().clone().requires_grad_(True)
    t = torch.as_tensor(target).expand(len(x))
    p = torch.softmax(model(x), 1)[torch.arange(len(x)), t]
    return torch.autograd.grad(p.sum(), x)[0]
""" + _sg(grad="_prob_gradient"), PROB),
    ("noise added into the caller's x", """
def smoothgrad_from_noise(model, x, target, noise):
    grads = []
    for eps in noise:
        x += eps
        grads.append(_gradient(model, x, target))
        x -= eps
    return torch.stack(grads).mean(0)
""", "changed the caller's x in place"),
]


def _occ(prob="torch.softmax(model(z), 1)[rows, target]", grey="model.normalize.mean",
         tops="range(0, h, patch)", drop="clean - prob",
         fill="out[:, :, top:top + patch, left:left + patch]", shape="n, 1, 1, 1"):
    return f"""
def occlusion_map(model, x, target, patch):
    n, c, h, w = x.shape
    rows = torch.arange(n)
    target = torch.as_tensor(target).expand(n)
    grey = {grey}

    def score(z):
        return {prob}

    with torch.no_grad():
        clean = score(x)
        out = torch.zeros_like(x)
        for top in {tops}:
            for left in {tops.replace("(0, h", "(0, w")}:
                hidden = x.clone()
                hidden[:, :, top:top + patch, left:left + patch] = grey
                prob = score(hidden)
                {fill} = ({drop}).view({shape})
    return out
"""


BANK[(PS3, "q3_tests")] = [
    ("drop with the wrong sign", _occ(drop="prob - clean"), "sign flipped"),
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
    ("drops of the logit", _occ(prob="model(z)[rows, target]"),
     "your drops are of the logit f_c, not of the softmax probability"),
    ("black patches", _occ(grey="0.0"), "set to 0 (black), not to the grey of model.normalize.mean"),
    ("the last row and column of patches skipped", _occ(tops="range(0, h - patch, patch)"),
     "is every window visited and every patch filled"),
    ("only the patch's corner filled", _occ(fill="out[:, :, top, left]", shape="n, 1"),
     "is every window visited and every patch filled"),
    ("the occluded probability, not the drop", _occ(drop="prob"),
     "your map holds p(x̃), the probability with the patch grey"),
]

SHORT[(PS3, "q4_tests")] = [
    ("forgets the clean image's pass", "q4 = 169", None),
    ("stride = patch", "q4 = 50", None),
    ("one pass per pixel", "q4 = 784", None),
]
SHORT[(PS3, "q5_tests")] = [("one σ for every image", 'q5 = "TRUE"', None)]
SHORT[(PS3, "q6_tests")] = [
    ("reads the sign of the drop backwards", 'q6 = "a"', None),
    ("two letters", 'q6 = "b, c"', "must be one of"),
]

# =============================================================== ps4_sanity_checks
PS4 = "ps4_sanity_checks/sanity_checks.ipynb"


def _rand(pick="[-1]", reset="top.reset_parameters()", seed="torch.manual_seed(seed)",
          copy_="copy.deepcopy(model)"):
    return f"""
def randomize_top_layer(model, seed):
    clone = {copy_}
    top = [m for m in clone.modules() if isinstance(m, (torch.nn.Linear, torch.nn.Conv2d))]{pick}
    {seed}
    {reset}
    return clone
"""


BANK[(PS4, "q1_tests")] = [
    ("randomizes the caller's model", _rand(copy_="model"), "Return a copy"),
    ("copies, but randomizes the original", """
def randomize_top_layer(model, seed):
    clone = copy.deepcopy(model)
    torch.manual_seed(seed)
    [m for m in model.modules() if isinstance(m, torch.nn.Linear)][-1].reset_parameters()
    return clone
""", "The model you were given changed"),
    ("the first layer, not the top", _rand(pick="[0]"),
     "the top layer's weight and bias"),
    ("the weights but not the bias",
     _rand(reset="torch.nn.init.normal_(top.weight, std=0.1)"),
     "the top layer's weight and bias (fc2) should get new random values"),
    ("every layer", _rand(pick="", reset="[m.reset_parameters() for m in top]"),
     "and nothing else"),
    ("ignores the seed", _rand(seed="pass"), "The same seed must give the same weights"),
    ("names fc2", """
def randomize_top_layer(model, seed):
    clone = copy.deepcopy(model)
    torch.manual_seed(seed)
    clone.fc2.reset_parameters()
    return clone
""", "find it among the copy's modules()"),
]


def _spear(rank="scipy.stats.rankdata(u.flatten().numpy())",
           corr="np.corrcoef(ru, rv)[0, 1]", ret="torch.tensor(rows, dtype=torch.float64)"):
    return f"""
import numpy as np
import scipy.stats


def spearman(a, b):
    rows = []
    for u, v in zip(a.detach(), b.detach()):
        ru = {rank}
        rv = {rank.replace("u.", "v.")}
        rows.append({corr})
    return {ret}
"""


BANK[(PS4, "q2_tests")] = [
    ("negated", """
import scipy.stats


def spearman(a, b):
    rows = [-scipy.stats.spearmanr(u.flatten().numpy(), v.flatten().numpy())[0]
            for u, v in zip(a.detach(), b.detach())]
    return torch.tensor(rows, dtype=torch.float64)
""", "sign flipped"),
    ("Pearson of the values", _spear(rank="u.flatten().numpy()"),
     "the Pearson correlation of the values, not of their ranks"),
    ("ties ranked in order (argsort of argsort)",
     _spear(rank="u.flatten().argsort().argsort().numpy().astype(float)"),
     "argsort().argsort() does not"),
    ("one correlation for the whole batch", """
import scipy.stats


def spearman(a, b):
    return torch.tensor(scipy.stats.spearmanr(a.flatten().numpy(), b.flatten().numpy())[0])
""", "a single number for the whole batch"),
    ("returns a numpy array", _spear(ret="np.array(rows)"), "returns a numpy array"),
]

SHORT[(PS4, "q3_tests")] = [
    ("the convolutions only", "q3 = 2", None),
    ("every module", "q3 = 10", None),
]
SHORT[(PS4, "q4_tests")] = [("the top layer alone changes GBP a lot", 'q4 = "TRUE"', None)]
SHORT[(PS4, "q5_tests")] = [
    ("bottom-up", 'q5 = "b"', None),
    ("a layer chosen at random", 'q5 = "d"', None),
]

# ===================================================================== ps5_shapley
PS5 = "ps5_shapley/shapley.ipynb"


def _shapley(weight="math.factorial(len(s)) * math.factorial(d - len(s) - 1) / math.factorial(d)",
             other="baseline", marginal="worth[s | {i}] - worth[s]",
             target_row="targets[row]", no_grad=True, out="phi"):
    worth = (
        f"model(z[None])[0, {target_row}].item()" if no_grad
        else f"model(z[None])[0, {target_row}]"
    )
    return f"""
def shapley_values(model, x, target, baseline):
    n, d = x.shape
    targets = torch.as_tensor(target).expand(n)
    subsets = [frozenset(s) for k in range(d + 1) for s in itertools.combinations(range(d), k)]
    phi = torch.zeros(n, d, dtype=torch.float64)
    for row in range(n):
        worth = {{}}
        for s in subsets:
            keep = torch.tensor([j in s for j in range(d)])
            z = torch.where(keep, x[row], {other})
            worth[s] = {worth}
        for s in subsets:
            for i in range(d):
                if i not in s:
                    phi[row, i] = phi[row, i] + {weight} * ({marginal})
    return {out}
"""


ADD_UP = "the values do not add up (efficiency)"
BANK[(PS5, "q1_tests")] = [
    ("Banzhaf weights 1/2^(D−1)", _shapley(weight="1 / 2 ** (d - 1)"),
     ADD_UP + ": row 0 sums to"),
    ("no 1/D!", _shapley(
        weight="math.factorial(len(s)) * math.factorial(d - len(s) - 1)"),
     "They add up to 6× f(x) − f(baseline): a factor missing in the weights"),
    ("features outside S set to 0", _shapley(other="torch.zeros(d)"),
     "They add up to f(x) − f(0) instead"),
    ("v(S) − v(S ∪ {i})", _shapley(marginal="worth[s] - worth[s | {i}]"),
     "sign flipped"),
    ("leave one out (occlusion)", """
def shapley_values(model, x, target, baseline):
    n, d = x.shape
    targets = torch.as_tensor(target).expand(n)
    phi = torch.zeros(n, d)
    with torch.no_grad():
        for row in range(n):
            full = model(x[row][None])[0, targets[row]]
            for i in range(d):
                z = x[row].clone()
                z[i] = baseline[i]
                phi[row, i] = full - model(z[None])[0, targets[row]]
    return phi
""", ADD_UP),
    ("every row explains target[0]", _shapley(target_row="targets[0]"),
     "every row explains target[0]"),
    ("keeps the autograd graph", _shapley(no_grad=False),
     "still attached to the autograd graph"),
    ("returns a numpy array", _shapley(out="phi.numpy()"), "returns a numpy array"),
    ("writes the coalitions into the caller's x", """
def shapley_values(model, x, target, baseline):
    n, d = x.shape
    targets = torch.as_tensor(target).expand(n)
    subsets = [frozenset(s) for k in range(d + 1) for s in itertools.combinations(range(d), k)]
    phi = torch.zeros(n, d, dtype=torch.float64)
    with torch.no_grad():
        for row in range(n):
            worth = {}
            for s in subsets:
                z = x[row]  # a view of the caller's x, not a copy
                for j in range(d):
                    if j not in s:
                        z[j] = baseline[j]
                worth[s] = float(model(z[None])[0, targets[row]])
            for s in subsets:
                for i in range(d):
                    if i not in s:
                        w = math.factorial(len(s)) * math.factorial(d - len(s) - 1)
                        phi[row, i] += w / math.factorial(d) * (worth[s | {i}] - worth[s])
    return phi
""", "changed the caller's x in place"),
]

SHORT[(PS5, "q2_tests")] = [
    ("the whole interaction to feature 2", "q2 = 3", None),
    ("the interaction split four ways", "q2 = 0.75", None),
    ("a fraction as a string", 'q2 = "3/2"', "expected a number"),
]
SHORT[(PS5, "q3_tests")] = [("IG and Shapley differ on linear models", 'q3 = "FALSE"', None)]
SHORT[(PS5, "q4_tests")] = [
    ("the same total means the same attributions", 'q4 = "d"', None),
    ("Shapley values sum to f(x)", 'q4 = "c"', None),
]


# ====================================================================== ps6_photos
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


BANK[(PS6, "q1_tests")] = [
    ("forgot the ReLU", _cam(ret="weighted.detach()"), "no ReLU"),
    ("gradient times A position by position",
     _cam(combine="(dA * recorded['A']).sum(dim=1, keepdim=True)"),
     "position by position"),
    ("weights averaged over the channels",
     _cam(weights="dA.mean(dim=1, keepdim=True)"), "averaged over the channels"),
    ("gradient summed over (h, w)", _cam(weights="dA.sum(dim=(2, 3), keepdim=True)"),
     "49.0× the reference: summed instead of averaged"),
    ("gradient of the probability",
     _cam(score="torch.softmax(logits, 1).gather(1, classes[:, None]).sum()"), PROB),
    ("gradient of every logit", _cam(score="logits.sum()"),
     "the sum of all the classes' logits"),
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
    ("returns a numpy array", _cam(ret="torch.relu(weighted).detach().numpy()"),
     "returns a numpy array"),
    ("never removes its hook", """
def grad_cam(model, x, target, layer):
    recorded = {}
    model.get_submodule(layer).register_forward_hook(
        lambda module, inputs, output: recorded.update(A=output))
    logits = model(x.detach().clone().requires_grad_(True))
    score = logits.gather(1, torch.as_tensor(target).expand(len(x))[:, None]).sum()
    (dA,) = torch.autograd.grad(score, recorded["A"])
    weighted = (dA.mean(dim=(2, 3), keepdim=True) * recorded["A"]).sum(dim=1, keepdim=True)
    return torch.relu(weighted).detach()
""", "left hooks registered on the model"),
    ("switches the model to train mode",
     _cam(prep="model.train()\n        photo = x.detach().clone().requires_grad_(True)"),
     "left the model in train mode"),
]
SHORT[(PS6, "q2_tests")] = [
    ("the signed gradients' Spearman (no absolute value)", "q2 = -0.015", None),
    ("the Pearson correlation of the absolute maps", "q2 = 0.29", None),
    ("a string", 'q2 = "0.23"', "expected a number"),
]
SHORT[(PS6, "q3_tests")] = [
    ("the last activation's answer carried over to _blocks.10", 'q3 = "TRUE"', None),
]
SHORT[(PS6, "q4_tests")] = [
    ("the largest gradients, whatever their sign", 'q4 = "c"', None),
    ("only the channels with a positive weight", 'q4 = "d"', None),
    ("a letter that is not offered", 'q4 = "e"', "must be one of"),
]


# ====================================================================== the tests


def _cells(path):
    nb = json.loads((SOLUTIONS / path).read_text())
    out = {}
    for i, c in enumerate(nb["cells"]):
        gid = c.get("metadata", {}).get("nbgrader", {}).get("grade_id", f"cell{i}")
        if c["cell_type"] == "code":
            out[gid] = "".join(c["source"])
    return out


def _namespace(notebook, answer):
    """The setup cell, the model solution's answers, then `answer` in their place."""
    cells = _cells(notebook)
    ns: dict = {}
    exec(cells["setup"], ns)  # noqa: S102 — our own notebooks' cells
    for gid, src in cells.items():  # the model solution for every answer first
        if gid.endswith("_answer"):
            exec(src, ns)  # noqa: S102
    exec(answer, ns)  # noqa: S102 — then the wrong answer in its place
    return cells, ns


def _visible(cells, test_id, ns) -> str:
    """Run the visible part of a test cell; what it printed."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(HIDDEN.sub("", cells[test_id]), ns)  # noqa: S102
    return out.getvalue()


def _notebooks():
    return sorted({nb for nb, _ in BANK} | {nb for nb, _ in SHORT})


def pytest_generate_tests(metafunc):
    """Parametrize from the bank as it is once this whole file has run."""
    names = metafunc.fixturenames
    if "bug" in names:
        cases = [(nb, gid, name, src, hint) for (nb, gid), bugs in BANK.items()
                 for name, src, hint in bugs]
        metafunc.parametrize(
            "notebook, test_id, bug, answer, hint", cases,
            ids=[f"{nb.split('/')[0]}-{gid}-{name}" for nb, gid, name, _, _ in cases],
        )
    if "short" in names:
        cases = [(nb, gid, name, src, hint) for (nb, gid), answers in SHORT.items()
                 for name, src, hint in answers]
        metafunc.parametrize(
            "notebook, test_id, short, answer, hint", cases,
            ids=[f"{nb.split('/')[0]}-{gid}-{name}" for nb, gid, name, _, _ in cases],
        )
    if "notebook" in names and "bug" not in names and "short" not in names:
        metafunc.parametrize("notebook", _notebooks())


def test_visible_cell_catches_bug_with_its_hint(
    notebook, test_id, bug, answer, hint, monkeypatch
):
    monkeypatch.delenv("COURSE_GRADING_MODE", raising=False)
    cells, ns = _namespace(notebook, answer)
    out = io.StringIO()
    with pytest.raises(AssertionError) as err, contextlib.redirect_stdout(out):
        exec(HIDDEN.sub("", cells[test_id]), ns)  # noqa: S102
    assert hint in str(err.value), f"{bug}: {err.value}"
    assert "✓" not in out.getvalue() + str(err.value), f"{bug} got a ✓"


def test_a_short_answer_is_never_said_right_or_wrong(
    notebook, test_id, short, answer, hint, monkeypatch
):
    """A wrong answer of the right form prints what the model answer prints."""
    monkeypatch.delenv("COURSE_GRADING_MODE", raising=False)
    cells, ns = _namespace(notebook, "")
    right = _visible(cells, test_id, ns)
    assert right.startswith("○ form ok") and SHORT_ANSWERS in right
    cells, ns = _namespace(notebook, answer)
    if hint is None:
        assert _visible(cells, test_id, ns) == right, short
        return
    with pytest.raises(AssertionError, match=re.escape(hint)):
        _visible(cells, test_id, ns)


def test_every_question_has_wrong_answers_in_the_bank(notebook):
    tests = [gid for gid in _cells(notebook) if gid.endswith("_tests")]
    banked = {gid for nb, gid in BANK if nb == notebook}
    banked |= {gid for nb, gid in SHORT if nb == notebook}
    assert set(tests) <= banked, f"{notebook}: no wrong answers for {set(tests) - banked}"


def test_visible_cells_pass_the_model_solution(notebook, monkeypatch):
    monkeypatch.delenv("COURSE_GRADING_MODE", raising=False)
    cells = _cells(notebook)
    ns: dict = {}
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        for src in cells.values():
            exec(HIDDEN.sub("", src), ns)  # noqa: S102
    assert "✗" not in out.getvalue()


# Functions a visible cell may define: builders of test inputs, never of answers.
INPUT_BUILDERS = {"_maps", "_visible"}


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

