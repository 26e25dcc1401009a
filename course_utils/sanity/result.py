"""`SanityResult`: what a sanity check computed, as tidy tables for Altair."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property

import numpy as np
import pandas as pd
import torch

from ._shared import check_metrics
from .similarity import METRICS


@dataclass
class SanityResult:
    """What a sanity check computed.

    Attributes:
        test: "cascading", "independent" or "labels".
        key: the column naming what was randomized: "layer" (model tests) or
            "model" (label test).
        per_image: tidy DataFrame, one row per (step, key, method, metric,
            image): value, constant (a map was constant; value follows the
            documented rule).
        maps: {key label: {method: (N, C, H, W) or (N, 1, H, W) maps}} in step
            order; the first entry is the trained model ("original").
        x: (N, C, H, W) inputs. target: (N,) classes explained on the trained
            model.
        settings: the arguments that produced it (rule, seed, …).
    """

    test: str
    key: str
    per_image: pd.DataFrame
    maps: dict[str, dict[str, torch.Tensor]]
    x: torch.Tensor
    target: torch.Tensor
    settings: dict = field(default_factory=dict)

    @cached_property
    def table(self) -> pd.DataFrame:
        """Tidy summary: step, key, method, metric, mean, std, n, n_constant.

        mean and std (ddof=0) are over the images; n_constant counts images
        whose value came from the constant-map rule. Computed once from
        `per_image` (do not edit `per_image` in place afterwards).
        """
        cols = ["step", self.key, "method", "metric"]
        g = self.per_image.groupby(cols, sort=False)
        out = g["value"].agg(mean="mean", std=lambda v: float(np.std(v))).reset_index()
        out["n"] = g["value"].size().to_numpy()
        out["n_constant"] = g["constant"].sum().astype(int).to_numpy()
        return out

    @property
    def order(self) -> list[str]:
        """The key labels in step order ("original" first)."""
        return list(self.maps)

    def pivot(self, metric: str = "spearman") -> pd.DataFrame:
        """Mean similarity as a methods × steps table for one metric."""
        check_metrics([metric], METRICS)
        t = self.table[self.table.metric == metric]
        p = t.pivot(index="method", columns=self.key, values="mean")
        methods = list(dict.fromkeys(t.method))
        return p.loc[methods, [k for k in self.order if k in p.columns]]
