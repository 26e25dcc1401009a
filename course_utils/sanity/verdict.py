"""The verdict: did a method's map change when the model did?"""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd

from ._shared import check_metrics, check_real
from .result import SanityResult
from .similarity import METRICS

VERDICT_METRICS = ("spearman", "spearman_abs", "ssim")


def verdict(
    result: SanityResult,
    at: str | None = None,
    metrics: Sequence[str] = VERDICT_METRICS,
    threshold: float = 0.5,
) -> pd.DataFrame:
    """Pass/fail per method: did the map change when the model did?

    A method passes at a step if its mean similarity to the trained model's
    map (over the images) is below `threshold` on every one of `metrics`: the
    map changed, whichever way one looks at it. A map that stays similar on
    any of them after the weights or labels were destroyed fails — it shows
    something that does not depend on what was destroyed.

    Args:
        result: a `SanityResult`.
        at: the step label to judge, e.g. "fc2" (top layer randomized),
            "conv1" (full SmallCNN cascade), "random labels"; None = the last
            step.
        metrics: names from `METRICS`. Default signed and absolute Spearman
            and SSIM.
        threshold: in (−1, 1]. Default 0.5.
    Returns:
        DataFrame indexed by method: one column of mean similarity per
        metric, then "passes" (bool).
    """
    metrics = check_metrics(metrics, METRICS)
    check_real(threshold, "threshold", -1, 1)
    labels = result.order
    at = labels[-1] if at is None else at
    if at not in labels:
        raise ValueError(f"at must be one of {labels}, got {at!r}")
    t = result.table
    t = t[(t.metric.isin(metrics)) & (t[result.key] == at)]
    out = t.pivot(index="method", columns="metric", values="mean")
    out = out.loc[list(dict.fromkeys(t.method)), metrics]
    out.columns.name = None
    out["passes"] = (out[metrics] < threshold).all(axis=1)
    return out
