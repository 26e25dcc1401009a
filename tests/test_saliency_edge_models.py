"""Models that break naive hooks: in-place ops, wrong output rows, unused layers."""

import pytest
import torch
from torch import nn

from course_utils import reference as ref
from course_utils import saliency as sal

basic_models = pytest.importorskip("captum.testing.helpers.basic_models")


@pytest.mark.parametrize("inplace", [False, True])
def test_grad_cam_on_captums_one_conv_model(inplace):
    """Captum's own LayerGradCam test case, with and without in-place ReLUs."""
    model = basic_models.BasicModel_ConvNet_One_Conv(inplace=inplace)
    x = torch.arange(16.0).view(1, 1, 4, 4)
    cam = sal.grad_cam(model, x, 0, layer="conv1", relu=False, upsample=False)
    expected = torch.tensor([[[[11.25, 13.5], [20.25, 22.5]]]])
    torch.testing.assert_close(cam, expected)
    guided = sal.guided_grad_cam(model, x, 0, layer="conv1")
    torch.testing.assert_close(guided, ref.guided_grad_cam(model, x, 0, layer="conv1"))


class InPlaceAfterLayer(nn.Module):
    """conv → (hooked layer) → in-place add and in-place ReLU → linear."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 3, 3, padding=1)
        self.relu = nn.ReLU(inplace=True)
        self.fc = nn.Linear(3 * 6 * 6, 4)

    def forward(self, x):
        a = self.conv(x)
        a += 1.0  # modifies the layer's output in place
        a = nn.functional.relu(a, inplace=True)
        return self.fc(self.relu(a - 0.5).flatten(1))


def test_in_place_ops_after_the_layer_and_on_relus_match_captum():
    torch.manual_seed(0)
    model = InPlaceAfterLayer().eval()
    x = torch.randn(3, 1, 6, 6)
    for method in ("grad_cam", "guided_grad_cam"):
        ours = getattr(sal, method)(model, x, [0, 1, 2], layer="conv")
        theirs = getattr(ref, method)(model, x, [0, 1, 2], layer="conv")
        torch.testing.assert_close(ours, theirs)
    for method in ("guided_backprop", "deconvnet"):
        ours = getattr(sal, method)(model, x, [0, 1, 2])
        theirs = getattr(ref, method)(model, x, [0, 1, 2])
        torch.testing.assert_close(ours, theirs)
        assert model.relu.inplace  # the model is left as it was


class Reused(nn.Module):
    """One in-place nn.ReLU module called twice per forward (as in ResNet blocks)."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 4, 3, padding=1)
        self.conv2 = nn.Conv2d(4, 4, 3, padding=1)
        self.relu = nn.ReLU(inplace=True)
        self.fc = nn.Linear(4 * 25, 3)

    def forward(self, x):
        x = self.relu(self.conv1(x))
        x = self.relu(self.conv2(x))
        return self.fc(x.flatten(1))


@pytest.mark.parametrize("method", ["guided_backprop", "deconvnet"])
def test_reused_in_place_relu_matches_the_out_of_place_model(method):
    torch.manual_seed(0)
    model = Reused().eval()
    x = torch.randn(2, 1, 5, 5)
    ours = getattr(sal, method)(model, x, [0, 2])
    torch.testing.assert_close(ours, getattr(ref, method)(model, x, [0, 2]))
    model.relu.inplace = False
    torch.testing.assert_close(ours, getattr(sal, method)(model, x, [0, 2]))


class WrongRows(nn.Module):
    """Returns one row whatever the batch (a model that averages over the batch)."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 2, 3)
        self.fc = nn.Linear(2, 3)

    def forward(self, x):
        return self.fc(self.conv(x).mean((0, 2, 3))[None])


@pytest.mark.parametrize("method", list(sal.METHODS))
def test_wrong_number_of_output_rows_with_an_int_target(method):
    model = WrongRows()
    x = torch.rand(4, 1, 8, 8)
    kwargs = {"layer": "conv"} if "cam" in method else {}
    if method == "gradient_shap":  # baselines of x's shape (default: digits)
        kwargs = {"baselines": torch.zeros(2, 1, 8, 8), "n_samples": 2}
    with pytest.raises(ValueError, match=r"model returned 1 rows for \d+ inputs"):
        sal.METHODS[method](model, x, 1, **kwargs)


class SideBranch(nn.Module):
    """`side` runs in the forward pass but its output is thrown away."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 2, 3)
        self.side = nn.Conv2d(2, 2, 1)
        self.fc = nn.Linear(2, 3)

    def forward(self, x):
        a = self.conv(x)
        self.side(a)
        return self.fc(a.mean((2, 3)))


@pytest.mark.parametrize("method", ["grad_cam", "guided_grad_cam"])
def test_layer_that_does_not_feed_the_output(method):
    x = torch.rand(2, 1, 8, 8)
    with pytest.raises(ValueError, match="layer 'side' runs in the forward pass but"):
        getattr(sal, method)(SideBranch(), x, 0, layer="side")


def test_occlusion_fold_back_equals_the_membership_matrix():
    """The separable fold-back is Σ_j drop_j M[j, p] / Σ_j M[j, p]."""
    from course_utils.saliency.occlusion import window_matrix

    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.Flatten(), nn.Linear(2 * 9 * 7, 3))
    x = torch.rand(2, 1, 11, 9)
    for patch, stride in ((3, 2), (4, 3), (2, 1), (5, 5)):
        attr = sal.occlusion(model, x, [0, 2], patch=patch, stride=stride, baseline=0.0)
        member = window_matrix(11, 9, patch, stride)
        drops = []
        with torch.no_grad():
            clean = torch.softmax(model(x), 1)[[0, 1], [0, 2]]
            for m in member:
                occluded = torch.where(m.view(1, 1, 11, 9).bool(), 0.0, x)
                drops.append(clean - torch.softmax(model(occluded), 1)[[0, 1], [0, 2]])
        expected = (torch.stack(drops).T @ member) / member.sum(0)
        torch.testing.assert_close(attr[:, 0].reshape(2, -1), expected)
