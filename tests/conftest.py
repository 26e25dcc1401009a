"""Shared fixtures: the shipped models and a few test digits (loaded once)."""

import pytest
import torch

from course_utils import data, models


@pytest.fixture(scope="session")
def small_cnn():
    return models.load_pretrained("small_cnn")


@pytest.fixture(scope="session")
def resnet_small():
    return models.load_pretrained("resnet_small")


@pytest.fixture(scope="session")
def test_split():
    return data.load_split("test")


@pytest.fixture(scope="session")
def digits(test_split):
    """Eight fixed test digits (8, 1, 28, 28) and their labels."""
    return test_split.x[:8].clone(), test_split.y[:8].clone()


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
