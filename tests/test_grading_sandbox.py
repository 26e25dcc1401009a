"""The sandbox by itself, and grading without root.

A kernel is not needed to see what the sandbox gives: a short Python command
runs in it as the sandbox user and prints what it finds (its CPUs, its user).
Then `course grade` runs as an ordinary user (nobody): bubblewrap makes a user
namespace, there is no cgroup, the limits are rlimits, and each row gets the
status and points it gets with root. Skipped where no sandbox is available
(the tests start as root and drop to the user themselves).
"""

import os
import sys
import time
from pathlib import Path

import pytest

from course_utils.grading import sandbox

pytestmark = pytest.mark.skipif(
    not sandbox.detect().usable or os.geteuid() != 0,
    reason="needs the sandbox as root (bubblewrap and a cgroup)",
)

PROBE = (
    "import os; print('cpus', sorted(os.sched_getaffinity(0))); "
    "print('uid', os.getuid())"
)


def run_inside(tmp_path, code, limits=None, **kw):
    log = tmp_path / "box.log"
    box = sandbox.Sandbox(
        [sys.executable, "-c", code],
        sandbox.SandboxView(),
        limits or sandbox.SandboxLimits(),
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


def _cpus() -> list[int]:
    return sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []


def _cpuset_controller() -> bool:
    root = sandbox.CGROUP_ROOT
    v2 = "cpuset" in sandbox._read(root / "cgroup.controllers").split()
    return v2 or (root / "cpuset" / "cpuset.cpus").is_file()


@pytest.mark.skipif(len(_cpus()) < 2, reason="needs 2 CPUs")
@pytest.mark.skipif(not _cpuset_controller(), reason="no cpuset controller here")
def test_a_sandbox_runs_only_on_its_workers_cpus(tmp_path):
    last = max(_cpus())
    code, out = run_inside(tmp_path, PROBE, cpuset=str(last))
    assert code == 0, out
    assert f"cpus [{last}]" in out and "uid 64390" in out


def test_without_a_cpuset_it_may_use_every_cpu(tmp_path):
    code, out = run_inside(tmp_path, PROBE)
    assert code == 0, out
    assert f"cpus {_cpus()}" in out


def test_workers_get_cpus_of_their_own_when_they_fit():
    from course_utils.grading.grade import _spread_over_cores, worker_cpusets

    allowed = _spread_over_cores(_cpus())  # first threads of each core first
    assert sorted(allowed) == _cpus()
    pins = worker_cpusets([64300, 64301][: len(allowed)], 1.0)
    assert sorted(pins.values()) == [str(c) for c in allowed[: len(pins)]]
    if len(allowed) >= 2:  # a worker with 2 cores' quota gets 2 CPUs of its own
        assert worker_cpusets([64300], 2.0) == {64300: f"{allowed[0]},{allowed[1]}"}
    assert worker_cpusets([64300], len(allowed) + 0.5) == {}  # does not fit
    # more workers than CPUs, or no sandbox users: no pinning, the quota shares
    assert worker_cpusets([64300 + k for k in range(len(allowed) + 1)], 1.0) == {}
    assert worker_cpusets([None, None], 1.0) == {}


# ------------------------------------------------------ grading without root

NOBODY = 65534
AS_NOBODY = """
import json, sys
from course_utils.grading.course import Course
from course_utils.grading.grade import GradeOptions, grade

course = Course.load(sys.argv[1])
summary = grade(course, "tiny", options=GradeOptions(
    workers=2, cell_timeout=8.0, notebook_timeout=25.0, interrupt_grace=2.0,
    progress=False))
print(json.dumps({"sandbox": summary.sandbox, "unsafe": summary.unsafe,
                  "rows": {r.student: [r.status.value, r.total, "; ".join(r.details)]
                           for r in summary.results}}))
"""


def as_user(uid: int, argv: list[str]) -> list[str]:
    """argv run as `uid`. Where this Python lives in a home folder the user
    cannot enter (pyenv in /root here), it runs in a private mount namespace
    whose /root holds only that Python tree, readable, as on an instructor's
    own machine; nothing changes outside that namespace."""
    import shlex

    drop = ["setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups"]
    home = Path(sys.base_prefix).resolve()
    blocked = [p for p in home.parents if p != Path("/") and not p.stat().st_mode & 1]
    if not blocked:
        return drop + argv
    top = blocked[-1]  # e.g. /root
    keep = home.relative_to(top).parts[0]  # e.g. .pyenv
    view = f"/tmp/course-view-{os.getpid()}"
    script = (
        f"mkdir -p {view} && mount --bind {top / keep} {view} && "
        f"mount -t tmpfs -o mode=0755 tmpfs {top} && mkdir {top / keep} && "
        f"mount --move {view} {top / keep} && rmdir {view} && exec "
        + shlex.join(drop + argv)
    )
    return ["unshare", "--mount", "--propagation", "private", "sh", "-c", script]


# student → (status, points of 3 auto-graded): the same as with root and a cgroup
WITHOUT_ROOT = {
    "correct": ("graded", 3.0),
    "wrong": ("graded", 0.0),
    "infinite_loop": ("timed out", 1.0),
    "os_exit": ("crashed", 0.0),
    "read_solutions": ("graded", 3.0),
    "memory_bomb": ("crashed", 3.0),
}


@pytest.mark.slow
def test_an_instructor_without_root_grades_in_a_user_namespace():
    """`course grade` as an ordinary user: bubblewrap makes a user namespace,
    there is no cgroup (limits are rlimits), and every row is as with root."""
    import json
    import shutil
    import subprocess
    import tempfile

    from course_utils.grading.course import Course
    from course_utils.grading.release import release

    cases = Path(__file__).parent / "grading_cases"
    sys.path.insert(0, str(cases))
    import build

    # The instructor's own course, outside pytest's private (0700) temp tree;
    # released here (nbgrader makes the gradebook), then handed to the user.
    work = Path(tempfile.mkdtemp(prefix="course-nobody-"))
    os.chmod(work, 0o755)
    root = work / "course"
    shutil.copytree(cases / "course" / "solutions", root / "solutions")
    course = Course.load(root)
    release(course)
    build.write_submissions(
        course.release / "tiny" / "tiny.ipynb",
        course.submitted,
        "tiny",
        {c: c for c in WITHOUT_ROOT},
        {},
    )
    for path in [work, *work.rglob("*")]:
        os.chown(path, NOBODY, NOBODY, follow_symlinks=False)
    venv_bin = str(Path(sys.executable).parent)  # as in an activated venv
    env = {"PATH": f"{venv_bin}:/usr/bin:/bin", "HOME": str(work), "LANG": "C.UTF-8"}
    env["PYTHONPATH"] = str(Path(__file__).resolve().parents[1])
    try:
        out = subprocess.run(
            as_user(NOBODY, [sys.executable, "-c", AS_NOBODY, str(root)]),
            capture_output=True, text=True, env=env, cwd=work, timeout=400,
            check=False,
        )  # fmt: skip
    finally:
        shutil.rmtree(work, ignore_errors=True)
    assert out.returncode == 0, out.stderr[-3000:]
    report = json.loads(out.stdout.strip().splitlines()[-1])
    assert "user namespace" in report["sandbox"] and "cgroup" not in report[
        "sandbox"
    ].replace("no cgroup", ""), report["sandbox"]
    assert report["unsafe"] is False
    rows = report["rows"]
    for student, (status, points) in WITHOUT_ROOT.items():
        got = rows[student]
        assert (got[0], got[1]) == (status, points), (student, got)
    assert "per process; no cgroup here" in rows["memory_bomb"][2]
