"""One `isolate.Sandbox` at a time: its cgroup's limits, read from inside.

A kernel is not needed to see what the sandbox gives: a short Python command
runs in it as the sandbox user and prints what it finds (its CPUs, its memory
cap, its processes' limit). Skipped where no sandbox is available.
"""

import os
import sys
import time

import pytest

from course_utils.grading import isolate

pytestmark = pytest.mark.skipif(
    not isolate.detect().usable or os.geteuid() != 0,
    reason="needs the sandbox as root (bubblewrap and a cgroup)",
)

PROBE = (
    "import os; print('cpus', sorted(os.sched_getaffinity(0))); "
    "print('uid', os.getuid())"
)


def run_inside(tmp_path, code, limits=None, **kw):
    log = tmp_path / "box.log"
    box = isolate.Sandbox(
        [sys.executable, "-c", code],
        isolate.SandboxView(),
        limits or isolate.SandboxLimits(),
        {"PATH": "/usr/bin:/bin"},
        {},
        log,
        f"t{os.getpid()}-{time.monotonic_ns()}",
        uid=64390,
        **kw,
    )
    try:
        deadline = time.monotonic() + 60
        while box.alive() and time.monotonic() < deadline:
            time.sleep(0.05)
        return box.exit_code(), log.read_text()
    finally:
        box.close()


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs 2 CPUs")
def test_a_sandbox_runs_only_on_its_workers_cpus(tmp_path):
    last = max(os.sched_getaffinity(0))
    code, out = run_inside(tmp_path, PROBE, cpuset=str(last))
    assert code == 0, out
    assert f"cpus [{last}]" in out and "uid 64390" in out


def test_without_a_cpuset_it_may_use_every_cpu(tmp_path):
    code, out = run_inside(tmp_path, PROBE)
    assert code == 0, out
    assert f"cpus {sorted(os.sched_getaffinity(0))}" in out


def test_workers_get_cpus_of_their_own_when_they_fit():
    from course_utils.grading.grade import worker_cpusets

    allowed = sorted(os.sched_getaffinity(0))
    pins = worker_cpusets([64300, 64301][: len(allowed)], 1.0)
    assert sorted(pins.values()) == [str(c) for c in allowed[: len(pins)]]
    # more workers than CPUs, or no sandbox users: no pinning, the quota shares
    assert worker_cpusets([64300 + k for k in range(len(allowed) + 1)], 1.0) == {}
    assert worker_cpusets([None, None], 1.0) == {}
