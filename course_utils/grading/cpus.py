"""Which CPUs each grading worker is pinned to, read from the Linux CPU topology."""

from __future__ import annotations

import math
import os
from pathlib import Path


def _spread_over_cores(cpus: list[int]) -> list[int]:
    """`cpus` ordered first threads of each physical core first, then second
    threads (Linux topology), so workers pinned to the first ones do not share
    a core with hyper-threading."""

    def rank(cpu: int) -> tuple[int, int]:
        path = Path(f"/sys/devices/system/cpu/cpu{cpu}/topology/thread_siblings_list")
        try:
            text = path.read_text().strip()
        except OSError:
            return (0, cpu)
        siblings: list[int] = []
        for part in text.split(","):
            lo, _, hi = part.partition("-")
            siblings += range(int(lo), int(hi or lo) + 1)
        return (siblings.index(cpu) if cpu in siblings else 0, cpu)

    return sorted(cpus, key=rank)


def worker_cpusets(uids: list[int | None], cpus: float) -> dict[int, str]:
    """Each worker's own CPUs (sandbox uid → "2" or "2,3"), when the workers,
    each given ceil(cpus) CPUs, fit on the CPUs this process may use; else {}
    (no pinning: the quota alone shares the CPUs)."""
    try:
        allowed = _spread_over_cores(sorted(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return {}
    per = max(1, math.ceil(cpus))
    real = [u for u in uids if u is not None]
    if not real or len(real) * per > len(allowed):
        return {}
    out = {}
    for k, uid in enumerate(real):
        mine = allowed[k * per : (k + 1) * per]
        out[uid] = ",".join(str(c) for c in mine)
    return out
