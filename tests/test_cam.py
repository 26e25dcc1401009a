"""sal.cam: CAM = hw · Grad-CAM on GAP + linear nets, the textbook loop, clear errors."""

import pytest
import torch
from test_saliency_side_effects import assert_unchanged, snapshot
from torch import nn

from course_utils import saliency as sal
from course_utils.saliency.cam import cam_textbook


class GapNet(nn.Module):
    """conv → ReLU → AdaptiveAvgPool2d(1) → Flatten → Linear: the smallest CAM net."""

    def __init__(self, h_out=5):
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.relu = nn.ReLU()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flat = nn.Flatten()
        self.fc = nn.Linear(4, 3)

    def forward(self, x):
        return self.fc(self.flat(self.pool(self.relu(self.conv(x)))))


class FakeGap(GapNet):
    """Looks like GAP + linear, but reads the max instead of the mean."""

    def forward(self, x):
        a = self.relu(self.conv(x))
        self.pool(a)
        return self.fc(a.amax((2, 3)))


def test_cam_is_hw_times_grad_cam_on_resnet(resnet_small, digits):
    """∂y_c/∂A^k_ij = w_ck / (hw): Grad-CAM = CAM / 49 at layer3 (7 × 7)."""
    x, y = digits
    for relu in (True, False):
        for upsample in (True, False):
            c = sal.cam(resnet_small, x, y, relu=relu, upsample=upsample)
            g = sal.grad_cam(
                resnet_small, x, y, layer="layer3", relu=relu, upsample=upsample
            )
            torch.testing.assert_close(c, 49 * g, rtol=1e-5, atol=1e-5)
    assert c.shape == (8, 1, 7, 7)
    assert float(c.abs().max()) > 1  # not a trivially small map


def test_cam_equals_weights_times_maps_by_hand():
    torch.manual_seed(0)
    model = GapNet().eval()
    x = torch.rand(3, 1, 5, 5)
    a = model.relu(model.conv(x)).detach()
    w = model.fc.weight.detach()
    want = torch.stack(
        [(w[t][:, None, None] * a[i]).sum(0) for i, t in enumerate([0, 2, 1])]
    )
    got = sal.cam(model, x, [0, 2, 1], relu=False, upsample=False)
    torch.testing.assert_close(got[:, 0], want)
    # the logit is the mean of the map plus the bias: y_c = mean(M_c) + b_c
    torch.testing.assert_close(
        got.mean((1, 2, 3)) + model.fc.bias.detach()[[0, 2, 1]],
        model(x).detach()[[0, 1, 2], [0, 2, 1]],
    )


def test_textbook_loop_equals_batched(resnet_small, digits):
    x, y = digits
    torch.testing.assert_close(
        cam_textbook(resnet_small, x, y),
        sal.cam(resnet_small, x, y, relu=False, upsample=False),
        rtol=1e-5,
        atol=1e-5,
    )


def test_int_target_and_per_row_target_agree(resnet_small, digits):
    x, _ = digits
    torch.testing.assert_close(
        sal.cam(resnet_small, x, 3), sal.cam(resnet_small, x, [3] * len(x))
    )


def test_small_cnn_gets_a_clear_error(small_cnn, digits):
    x, y = digits
    with pytest.raises(ValueError, match="global average pooling and one linear"):
        sal.cam(small_cnn, x, y)


def test_wrong_layer_and_fake_gap_are_refused(resnet_small, digits):
    x, y = digits
    with pytest.raises(ValueError, match="does not read the global average"):
        sal.cam(resnet_small, x, y, layer="layer2")
    with pytest.raises(ValueError, match="not found"):
        sal.cam(resnet_small, x, y, layer="layer9")
    torch.manual_seed(0)
    with pytest.raises(ValueError, match="does not read the global average"):
        sal.cam(FakeGap().eval(), torch.rand(2, 1, 5, 5), 0)


def test_bad_target_is_refused(resnet_small, digits):
    x, _ = digits
    with pytest.raises(ValueError, match="target must be a class index in 0..9"):
        sal.cam(resnet_small, x, 10)


def test_cam_is_not_in_methods_but_exported():
    assert "cam" in sal.__all__ and sal.cam is not None
    assert "cam" not in sal.METHODS  # METHODS entries must run on SmallCNN too


def test_no_side_effects_also_after_errors():
    torch.manual_seed(0)
    model = GapNet().train()
    model.conv.weight.requires_grad_(False)
    model.relu.register_forward_hook(lambda *a: None)
    x = torch.rand(2, 1, 5, 5)
    before = snapshot(model, x)
    sal.cam(model, x, 1)
    assert_unchanged(before, model, x)
    with pytest.raises(ValueError):
        sal.cam(model, x, 7)  # target out of range, raised inside the hooks
    assert_unchanged(before, model, x)
