"""Grading throughput: N submissions of a problem set with 1 and 2 workers.

    .venv/bin/python bench/bench_grading.py [--set ps1_gradients] [--n 20]
                                            [--workers 1 2] [--memory-scan]

Builds a throw-away course (a copy of the set's solution, released with
nbgrader) and N submissions cycling through a perfect one (the solution), a
blank one (the exercise as released) and a partial one (only the first answer
written), then runs `course grade` on them once per worker count, reusing one
kernel fork server so that its start-up is measured once, apart.

Reported per run: wall time of the whole command and of its grading phase,
seconds per submission of wall time, and seconds per submission per core
(grading phase × workers / N; the goal is ≤ 10 s). Timings on the shared
course machines swing by tens of percent; compare the two worker counts from
one run. With --memory-scan it also grades the perfect submission under
decreasing memory caps and reports the smallest cap that still earns every
point (the default cap, 6 GiB, keeps a margin above it).
"""

from __future__ import annotations

import argparse
import copy
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from course_utils.grading import notebooks as nbs
from course_utils.grading.course import Course
from course_utils.grading.grade import GradeOptions, grade, server_env
from course_utils.grading.release import release
from course_utils.grading.sandbox import ForkServer


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


def run(course: Course, set_id: str, workers: int, server: ForkServer, **extra):
    options = GradeOptions(workers=workers, progress=False, **extra)
    start = time.perf_counter()
    summary = grade(course, set_id, options=options, server=server)
    return summary, time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--set", default="ps1_gradients")
    parser.add_argument("--n", type=int, default=20)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--memory-scan", action="store_true")
    args = parser.parse_args(argv)
    if args.n < 1:
        parser.error(f"--n must be ≥ 1, got {args.n}")
    root = Path(tempfile.mkdtemp(prefix="bench-grading-"))
    try:
        course = make_course(args.set, args.n, root)
        start = time.perf_counter()
        with ForkServer(server_env(root), root / "forkserver.log") as server:
            startup = time.perf_counter() - start
            print(
                f"{args.set}: {args.n} submissions; kernel fork server ready in "
                f"{startup:.1f} s (paid once per `course grade`)"
            )
            print(
                f"{'workers':>7} {'total s':>8} {'grading s':>9} {'s/sub':>6} "
                f"{'s/sub/core':>10} {'kernel s/sub':>12}  statuses"
            )
            base = None
            for workers in args.workers:
                reset(course)
                summary, total = run(course, args.set, workers, server)
                grading = summary.phases.get("grading", total)
                per_core = grading * workers / args.n
                kernel = sum(r.seconds for r in summary.results) / args.n
                base = base or grading
                print(
                    f"{workers:>7} {total:>8.1f} {grading:>9.1f} "
                    f"{grading / args.n:>6.2f} {per_core:>10.2f} {kernel:>12.2f}  "
                    f"{summary.counts()['graded']}/{args.n} graded; "
                    f"speed-up {base / grading:.2f}×; phases {summary.phases}"
                )
                if per_core > 10:
                    print(
                        f"  over the goal of 10 s per submission per core "
                        f"({per_core:.1f} s)"
                    )
            if args.memory_scan:
                perfect = sorted(
                    p.parent.name
                    for p in course.submitted.glob(f"*_perfect/{args.set}")
                )[:1]
                print("memory cap scan (perfect submission):")
                for gib in (2.5, 3.0, 3.5, 4.0, 4.5, 5.0, 6.0):
                    reset(course)
                    summary, _ = run(
                        course, args.set, 1, server, memory_gib=gib, students=perfect
                    )
                    (result,) = summary.results
                    print(
                        f"  {gib:>4} GiB: {result.status:<10} total {result.total:g}"
                        f"  {'; '.join(result.details)[:120]}"
                    )
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
