"""The Grad-CAM hints (ps6) at their edges; the bug bank runs them on the notebook.

`hints.grad_cam_alternatives` computes wrong variants of Grad-CAM. It must stay
silent for any other reference and wherever the course's reference
implementation is missing (the grading sandbox, a hand-out before a deadline),
so that it never computes an answer a student could call instead.
"""

import sys

import numpy as np
import pytest
import torch

from course_utils import models
from course_utils.grading import checks, hints


@pytest.fixture(scope="module")
def case():
    torch.manual_seed(0)
    return models.load_pretrained("small_cnn"), torch.rand(2, 1, 28, 28), torch.tensor([3, 7])


def test_grad_cam_alternatives_name_each_classic_bug(case):
    model, x, target = case
    reference = checks.saliency("grad_cam", upsample=False)
    alts = hints.grad_cam_alternatives(reference, (model, x, target, "relu1"), {})
    expected = reference(model, x, target, "relu1").numpy()
    assert len(alts) == 7 and any("default layer" in k for k in alts)
    for what, alt in alts.items():
        if "default layer" in what:  # relu2 is 14×14: the shape hint speaks instead
            assert alt.shape == (2, 1, 14, 14)
            continue
        assert alt.shape == expected.shape, what
        assert not np.allclose(alt, expected), what  # a right answer never matches a bug


def test_grad_cam_alternatives_are_silent_elsewhere(case, monkeypatch):
    model, x, target = case
    args = (model, x, target, "relu1")
    assert hints.grad_cam_alternatives(checks.saliency("gradient"), args, {}) == {}
    monkeypatch.setitem(sys.modules, "course_utils.saliency.core", None)
    reference = checks.saliency("grad_cam", upsample=False)
    assert hints.grad_cam_alternatives(reference, args, {}) == {}


def test_grad_cam_shape_hints(case):
    model, x, target = case
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
