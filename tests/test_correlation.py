"""course_utils.correlation: the one Pearson r, checked against numpy's corrcoef."""

import importlib
import math

import numpy as np
import pytest
import torch

from course_utils import metrics
from course_utils.correlation import pearson, pearson_matrix


def test_pearson_matches_corrcoef_and_is_scale_free():
    gen = torch.Generator().manual_seed(0)
    a, b = torch.randn(4, 30, generator=gen), torch.randn(4, 30, generator=gen)
    expected = [np.corrcoef(p, q)[0, 1] for p, q in zip(a.numpy(), b.numpy())]
    np.testing.assert_allclose(pearson(a, b).numpy(), expected, rtol=1e-6)
    torch.testing.assert_close(
        pearson(a, 3 * a + 1), torch.ones(4, dtype=torch.float64)
    )
    torch.testing.assert_close(pearson(a, -a), -torch.ones(4, dtype=torch.float64))


def test_constant_row_is_nan_and_shapes_are_checked():
    a = torch.tensor([[1.0, 2.0, 3.0], [5.0, 5.0, 5.0]])
    r = pearson(a, torch.tensor([[1.0, 0.0, 1.0], [1.0, 2.0, 3.0]]))
    assert float(r[0]) == 0.0 and math.isnan(float(r[1]))
    with pytest.raises(ValueError, match="same shape"):
        pearson(a, a[:1])


def test_matrix_entries_are_the_row_correlations():
    gen = torch.Generator().manual_seed(1)
    a, b = torch.randn(3, 12, generator=gen), torch.randn(5, 12, generator=gen)
    m = pearson_matrix(a, b)
    assert m.shape == (3, 5)
    for i in range(3):
        for j in range(5):
            assert float(m[i, j]) == pytest.approx(
                float(pearson(a[i : i + 1], b[j : j + 1])[0])
            )


def test_metrics_and_sanity_use_the_same_definition():
    gen = torch.Generator().manual_seed(2)
    a, b = (
        torch.randn(2, 1, 4, 4, generator=gen),
        torch.randn(2, 1, 4, 4, generator=gen),
    )
    direct = pearson(a.flatten(1), b.flatten(1))
    torch.testing.assert_close(metrics.map_correlation(a, b), direct.float())
    similarity = importlib.import_module("course_utils.sanity.similarity")
    rows = similarity.pearson_rows(
        a.flatten(1).double().numpy(), b.flatten(1).double().numpy()
    )
    np.testing.assert_allclose(rows, direct.numpy())
