"""Grading throughput in the OS sandbox, its start-up cost, and CPU isolation.

    .venv/bin/python bench/bench_grading.py [--set ps1_gradients] [--n 20]
                                            [--workers 1 2] [--spinners]
                                            [--memory-scan] [--hostile]

Builds a throw-away course (a copy of the set's solution, released with
nbgrader) and N submissions cycling through a perfect one (the solution), a
blank one (the exercise as released) and a partial one (only the first answer
written), then runs `course grade` on them once per worker count. Every
submission runs in its own bubblewrap sandbox and cgroup, started cold.

Reported per run: wall time of the whole command and of its grading phase,
seconds per submission of wall time, seconds per submission per core
(grading phase × workers / N; goal ≤ 2 s), and the sandbox start-up: seconds
from starting bubblewrap until the kernel (with torch and the course's data
imported) answers. With --spinners: one perfect submission graded alone, then
again next to a submission that starts 60 background spinners (its cgroup
holds them to one CPU; goal: within 10 %), --repeats times interleaved, as
the ratio of the medians. Timings on shared machines swing by
tens of percent; compare numbers from one run. With --memory-scan it grades
the perfect submission under decreasing memory caps. With --hostile: the
grader's own peak memory (VmHWM of the `course grade` process, which no
sandbox cap covers) grading three honest submissions alone, then beside one
hostile submission of each kind of issue 22 (an iopub flood, a planted record
bomb, deeply nested notebook metadata, a thousand big outputs); goal: within
0.5 GB of the honest run, and the honest rows unchanged.
"""

from __future__ import annotations

import argparse
import copy
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from course_utils.grading import notebooks as nbs
from course_utils.grading import sandbox
from course_utils.grading.course import Course
from course_utils.grading.grade import GradeOptions, grade
from course_utils.grading.release import release

SPINNERS = """
import os
for _ in range(60):
    if os.fork() == 0:
        while True:
            pass
import time
time.sleep(20)
"""


def make_course(set_id: str, n: int, root: Path) -> Course:
    """A course with one set and n submissions (perfect / blank / partial)."""
    os.chmod(root, 0o755)
    shutil.copytree(ROOT / "solutions" / set_id, root / "solutions" / set_id)
    course = Course.load(root)
    release(course)
    (source_path,) = course.source_notebooks(set_id)
    source = nbs.read_notebook(source_path)
    blank = nbs.read_notebook(course.release / set_id / source_path.name)
    partial = copy.deepcopy(blank)
    first = next(nbs.grade_id(c) for c in source.cells if nbs.is_answer(c))
    solved = {nbs.grade_id(c): c.source for c in source.cells}
    for cell in partial.cells:
        if nbs.grade_id(cell) == first:
            cell.source = solved[first]
    variants = [("perfect", source), ("blank", blank), ("partial", partial)]
    for i in range(n):
        name, nb = variants[i % len(variants)]
        folder = course.submitted / f"s{i:02d}_{name}" / set_id
        folder.mkdir(parents=True)
        nbformat.write(nb, folder / source_path.name)
    return course


def reset(course: Course) -> None:
    """Forget earlier grading (gradebook, backups, autograded/)."""
    for path in course.root.glob("gradebook.db*"):
        path.unlink()
    shutil.rmtree(course.autograded, ignore_errors=True)


def run(course: Course, set_id: str, workers: int, **extra):
    options = GradeOptions(workers=workers, progress=False, sandbox_uid=64500, **extra)
    start = time.perf_counter()
    summary = grade(course, set_id, options=options)
    return summary, time.perf_counter() - start


def startup_cost(repeats: int = 3) -> None:
    """The sandbox's own start-up: the same interpreter start, plain and sandboxed."""
    import subprocess

    import course_utils

    package = Path(course_utils.__file__).resolve().parent
    work = Path(tempfile.mkdtemp(prefix="bench-startup-"))
    view = sandbox.SandboxView(sandbox.filtered_package(package, work, []), [])
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(package.parent), "HOME": "/tmp"}
    uid = 64500 if os.geteuid() == 0 else None
    for label, code in (("python", "pass"), ("python + torch", "import torch")):
        plain, boxed = [], []
        for _ in range(repeats):
            t0 = time.perf_counter()
            subprocess.run([sys.executable, "-c", code], env=env, check=True)
            plain.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            box = sandbox.Sandbox(
                [sys.executable, "-c", code],
                view,
                sandbox.SandboxLimits(),
                env,
                {},
                work / "log",
                f"bench-{len(boxed)}",
                uid=uid,
            )
            box.proc.wait()
            boxed.append(time.perf_counter() - t0)
            box.close()
        p, b = min(plain), min(boxed)
        print(
            f"start-up {label:<15} plain {p:.2f} s, sandboxed {b:.2f} s "
            f"(+{b - p:.2f} s, ×{b / p:.2f}; best of {repeats})"
        )
    shutil.rmtree(work, ignore_errors=True)


def add_spinner(course: Course, set_id: str) -> str:
    """A submission whose first answer cell starts 60 spinning processes."""
    (source_path,) = course.source_notebooks(set_id)
    nb = nbs.read_notebook(source_path)
    first = next(c for c in nb.cells if nbs.is_answer(c) and c.cell_type == "code")
    first.source = first.source + "\n" + SPINNERS
    folder = course.submitted / "zz_spinners" / set_id
    folder.mkdir(parents=True)
    nbformat.write(nb, folder / source_path.name)
    return "zz_spinners"


# Hostile payloads (issue 22), each an extra code cell after a perfect answer.
FLOOD = """
import sys
_big = "x" * (300 * 2**20)
for _ in range(10):
    sys.stdout.write(_big)
    sys.stdout.flush()
del _big
"""
BOMB = """
import glob, os, threading, time
import numpy as np
_blob = np.frombuffer(("[" * (64 * 2**20) + "]" * (64 * 2**20)).encode(), dtype=np.uint8)
def _plant():
    for _ in range(2000):
        for d in glob.glob("/tmp/*/records"):
            for name in os.listdir(d) or ["q1.npz"]:
                try:
                    np.savez_compressed(os.path.join(d, name), __meta__=_blob)
                except Exception:
                    pass
        time.sleep(0.005)
threading.Thread(target=_plant, daemon=True).start()
"""
OUTPUTS = [f'print("{i:04d}" + "y" * 19000)' for i in range(1000)]


def write_hostile(course: Course, set_id: str, kind: str) -> str:
    """One hostile submission (a perfect one plus the payload); its student id."""
    (source_path,) = course.source_notebooks(set_id)
    nb = nbs.read_notebook(source_path)
    if kind == "flood":
        nb.cells.append(nbformat.v4.new_code_cell(FLOOD))
    elif kind == "record bomb":
        nb.cells.append(nbformat.v4.new_code_cell(BOMB))
    elif kind == "many outputs":
        nb.cells += [nbformat.v4.new_code_cell(src) for src in OUTPUTS]
    folder = course.submitted / f"zz_{kind.replace(' ', '_')}" / set_id
    folder.mkdir(parents=True)
    path = folder / source_path.name
    nbformat.write(nb, path)
    if kind == "nested metadata":
        depth = 2**20
        raw = path.read_text().replace(
            '"metadata": {',
            '"metadata": {"deep": ' + "[" * depth + "]" * depth + ", ",
            1,
        )
        path.write_text(raw)
    return folder.parent.name


def grader_peak(course: Course, set_id: str, students: list[str]) -> tuple[float, dict]:
    """`course grade` for `students` in its own process: (its peak RSS in GiB,
    student → status)."""
    import json
    import subprocess

    script = (
        f"import json, sys; sys.path[:0] = [{str(ROOT)!r}]\n"
        "from course_utils.grading.course import Course\n"
        "from course_utils.grading.grade import GradeOptions, grade\n"
        f"s = grade(Course.load({str(course.root)!r}), {set_id!r}, options=GradeOptions("
        f"workers=2, progress=False, sandbox_uid=64500, students={students!r}))\n"
        "hwm = [l for l in open('/proc/self/status') if l.startswith('VmHWM')][0]\n"
        "print(json.dumps({'kb': int(hwm.split()[1]), "
        "'status': {r.student: r.status.value for r in s.results}}))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True
    ).stdout
    found = json.loads(out.strip().splitlines()[-1])
    return found["kb"] / 2**20, found["status"]


def hostile_memory(course: Course, set_id: str) -> None:
    honest = sorted(p.parent.name for p in course.submitted.glob(f"*_perfect/{set_id}"))
    honest = honest[:3]
    reset(course)
    base, statuses = grader_peak(course, set_id, honest)
    print(
        f"grader peak, {len(honest)} honest submissions alone: {base:.2f} GiB "
        f"({', '.join(sorted(set(statuses.values())))})"
    )
    for kind in ("flood", "record bomb", "nested metadata", "many outputs"):
        reset(course)
        student = write_hostile(course, set_id, kind)
        try:
            peak, statuses = grader_peak(course, set_id, [*honest, student])
        finally:
            shutil.rmtree(course.submitted / student)
        same = all(statuses[h] == "graded" for h in honest)
        print(
            f"  beside {kind:<16} {peak:.2f} GiB (Δ {peak - base:+.2f}, goal < 0.5); "
            f"hostile: {statuses[student]}; honest rows graded: {same}"
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--set", default="ps1_gradients")
    parser.add_argument("--n", type=int, default=20)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--memory-scan", action="store_true")
    parser.add_argument("--spinners", action="store_true")
    parser.add_argument(
        "--hostile", action="store_true", help="grader memory (issue 22)"
    )
    parser.add_argument("--repeats", type=int, default=5, help="spinner runs (median)")
    args = parser.parse_args(argv)
    if args.n < 1:
        parser.error(f"--n must be ≥ 1, got {args.n}")
    root = Path(tempfile.mkdtemp(prefix="bench-grading-"))
    print(f"sandbox: {sandbox.detect().describe()}")
    startup_cost()
    try:
        course = make_course(args.set, args.n, root)
        print(
            f"{'workers':>7} {'total s':>8} {'grading s':>9} {'s/sub':>6} "
            f"{'s/sub/core':>10} {'start-up s':>10}  statuses"
        )
        base = None
        for workers in args.workers:
            reset(course)
            summary, total = run(course, args.set, workers)
            grading = summary.phases.get("grading", total)
            per_core = grading * workers / args.n
            startup = (
                sum(
                    nb.startup_seconds
                    for r in summary.results
                    for nb in r.notebooks.values()
                )
                / args.n
            )
            base = base or grading
            print(
                f"{workers:>7} {total:>8.1f} {grading:>9.1f} "
                f"{grading / args.n:>6.2f} {per_core:>10.2f} {startup:>10.2f}  "
                f"{summary.counts()['graded']}/{args.n} graded; "
                f"speed-up {base / grading:.2f}×; phases {summary.phases}"
            )
            if per_core > 2:
                print(
                    f"  over the goal of 2 s per submission per core ({per_core:.1f} s)"
                )
        perfect = sorted(
            p.parent.name for p in course.submitted.glob(f"*_perfect/{args.set}")
        )[:1]
        if args.spinners:
            spinner = add_spinner(course, args.set)
            times: dict[str, list[float]] = {"alone": [], "next to 60 spinners": []}
            for _ in range(args.repeats):  # interleaved: drifts hit both alike
                for label, students in (
                    ("alone", perfect),
                    ("next to 60 spinners", [*perfect, spinner]),
                ):
                    reset(course)
                    summary, _ = run(course, args.set, 2, students=students)
                    mine = next(r for r in summary.results if r.student == perfect[0])
                    times[label].append(mine.seconds)
            for label, values in times.items():
                print(
                    f"perfect submission {label}: median {statistics.median(values):.2f} s"
                    f" of {len(values)} ({', '.join(f'{v:.2f}' for v in values)})"
                )
            ratio = statistics.median(times["next to 60 spinners"]) / statistics.median(
                times["alone"]
            )
            print(f"  ratio of medians {ratio:.2f} (goal ≤ 1.10)")
        if args.hostile:
            hostile_memory(course, args.set)
        if args.memory_scan:
            print("memory cap scan (perfect submission):")
            for gib in (3.0, 4.0, 5.0, 6.0):
                reset(course)
                summary, _ = run(course, args.set, 1, memory_gib=gib, students=perfect)
                (result,) = summary.results
                print(
                    f"  {gib:>4} GiB: {result.status.value:<10} total {result.total:g}"
                    f"  {'; '.join(result.details)[:120]}"
                )
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
