"""Rows per call sized by the model's activation memory; balanced chunks."""

import itertools

import pytest
import torch
from torch import nn

from course_utils import saliency as sal
from course_utils.saliency import batching
from course_utils.saliency.core import chunks, grid_chunks


@pytest.mark.parametrize(
    ("n", "limit", "sizes"),
    [(8, 5, [4, 4]), (50, 8, [8, 7, 7, 7, 7, 7, 7]), (6, 6, [6]), (7, 1, [1] * 7)],
)
def test_chunks_are_balanced(n, limit, sizes):
    pieces = list(chunks(n, limit))
    assert [p.stop - p.start for p in pieces] == sizes
    assert pieces[0].start == 0 and pieces[-1].stop == n
    assert all(a.stop == b.start for a, b in itertools.pairwise(pieces))


def test_grid_chunks_fill_every_block():
    # a step of 8 rows with batch 5: 4 + 4 per step, never 5 + 3
    blocks = list(grid_chunks(3, 8, 5))
    assert [(o.stop - o.start) * (r.stop - r.start) for o, r in blocks] == [4] * 6
    # 50 steps of 1 row with batch 8: 7 blocks, none a small remainder
    blocks = list(grid_chunks(50, 1, 8))
    assert [o.stop - o.start for o, _ in blocks] == [8, 7, 7, 7, 7, 7, 7]


class Counted(nn.Module):
    def __init__(self, width):
        super().__init__()
        self.conv = nn.Conv2d(1, width, 3, padding=1)
        self.bn = nn.BatchNorm2d(width)
        self.fc = nn.Linear(width, 3)
        self.calls = 0

    def forward(self, x):
        self.calls += 1
        return self.fc(self.bn(self.conv(x)).mean((2, 3)))


def test_rows_follow_activation_memory_and_are_cached():
    x = torch.rand(2, 1, 28, 28)
    narrow, wide = Counted(2).train(), Counted(256).train()
    # activation values per row: conv + bn outputs (+ the linear's 3)
    assert batching.activation_values(narrow, x) == 2 * (2 * 28 * 28) + 3
    assert sal.default_batch_size(x, narrow) == batching.MAX_ROWS
    rows_wide = sal.default_batch_size(x, wide)
    assert batching.MIN_ROWS <= rows_wide < batching.MAX_ROWS
    assert rows_wide == 2 ** round(
        torch.log2(
            torch.tensor(batching.ACTIVATION_BUDGET / (2 * 256 * 784 + 3))
        ).item()
    )
    calls = wide.calls
    assert sal.default_batch_size(x, wide) == rows_wide  # cached: no new forward
    assert wide.calls == calls
    # the measuring pass leaves modes, hooks and BatchNorm statistics alone
    assert wide.training and wide.bn.training
    assert not wide.bn._forward_hooks and int(wide.bn.num_batches_tracked) == 0


class Sizes(Counted):
    """Counted, recording the rows of every call."""

    def __init__(self, width):
        super().__init__(width)
        self.sizes = []

    def forward(self, x):
        self.sizes.append(x.shape[0])
        return super().forward(x)


def test_metrics_and_shapley_use_the_same_rows_per_call():
    """One rule everywhere: the metrics and Shapley values chunk by the measured
    rows per call, as the saliency methods do (no fixed count)."""
    from course_utils import metrics, shapley

    x = torch.rand(3, 1, 28, 28)
    model = Sizes(256).eval()
    rows = sal.default_batch_size(x, model)
    assert rows < sal.DEFAULT_BATCH_SIZE
    model.sizes.clear()
    metrics.perturbation_curve(model, x, 0, torch.rand_like(x), n_steps=50)
    # 3 · 51 rows in the fewest balanced chunks of ≤ rows (not one call of 153)
    assert sum(model.sizes) == 153 and max(model.sizes) <= rows
    assert len(model.sizes) == -(-153 // rows)
    model.sizes.clear()
    metrics.completeness_gap(model, x, 1, torch.rand_like(x))
    assert model.sizes == [6]  # x and its baseline: 6 rows ≤ rows per call
    model.sizes.clear()
    shapley.exact(model, x[:1], 2, grid=2)
    assert sum(model.sizes) == 16 and max(model.sizes) <= rows


def test_huge_rows_get_one_row_per_call():
    huge = nn.Sequential(nn.Upsample(scale_factor=9), nn.Flatten(), nn.Identity())
    x = torch.rand(1, 3, 224, 224)  # upsampled: 12.2 M values, counted thrice
    values = batching.activation_values(huge, x)
    assert values == 3 * 3 * 2016 * 2016
    assert batching.MIN_ROWS * values > 8 * batching.ACTIVATION_BUDGET
    assert sal.default_batch_size(x, huge) == 1
