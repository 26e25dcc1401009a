"""The grading commands of `course`: their arguments, and the call each one makes.

    course release [SET ...] [--check] [--force]   solutions/ → exercises/
    course check NOTEBOOK                          a student's self-check
    course collect SET ZIP [--roster CSV] [--force]  an LMS zip → submitted/
    course grade SET [SUBMISSIONS_DIR]             grade a class → gradebook + CSV
    course export SET                              CSV again (after manual grading)
    course report SET [--out DIR]                  the class at a glance (HTML, PNG)
    course similarity SET [SUBMISSIONS_DIR]        answers that look copied
    course feedback SET [--out DIR]                each student's feedback pages (HTML)
    course handout DIR [--withhold [--after-deadline SET]]  the student repository

`COMMANDS` maps each name to (function, help); `course_utils.cli.main` adds them
to its parser. Every command imports what it runs only when it runs.
"""

from __future__ import annotations

import sys
from pathlib import Path


def find_root(start: str | Path | None = None) -> Path:
    """The course root: the nearest folder up from `start` (default: the current
    directory) holding nbgrader_config.py, else the repository course_utils is in."""
    here = Path(start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        if (folder / "nbgrader_config.py").is_file():
            return folder
    return Path(__file__).resolve().parents[2]


def _course(args):
    from .course import Course

    return Course.load(args.root or find_root())


def _fail(name: str, exc: Exception) -> int:
    from .sanitize import line

    print(f"course {name}: {line(exc, 2000)}", file=sys.stderr)
    return 2


def _add_root(parser) -> None:
    parser.add_argument(
        "--root",
        help="course root (default: the folder with "
        "nbgrader_config.py above the current directory)",
    )


def release_command(args) -> int:
    from .release import format_report, release

    try:
        course = _course(args)
        report = release(course, args.sets or None, check=args.check, force=args.force)
    except (ValueError, RuntimeError) as exc:
        return _fail("release", exc)
    print(format_report(report, course, args.check))
    return (
        0
        if (report.up_to_date or not args.check)
        and not report.leaks
        and not report.refused
        else 1
    )


release_command.configure = lambda p: (
    p.add_argument("sets", nargs="*", metavar="SET", help="default: every set"),
    p.add_argument(
        "--check",
        action="store_true",
        help="only report whether exercises/ matches a fresh release",
    ),
    p.add_argument(
        "--force",
        action="store_true",
        help="overwrite notebooks a student worked in (a backup is kept)",
    ),
    _add_root(p),
)


def check_command(args) -> int:
    from .selfcheck import self_check

    try:
        return self_check(args.notebook, cell_timeout=args.timeout)
    except (ValueError, RuntimeError) as exc:
        return _fail("check", exc)


check_command.configure = lambda p: (
    p.add_argument("notebook", metavar="NOTEBOOK", help="your exercise notebook"),
    p.add_argument(
        "--timeout", type=float, default=120.0, help="seconds per cell (default 120)"
    ),
)


def collect_command(args) -> int:
    from .collect import collect, format_report
    from .lms import load_roster

    try:
        roster = load_roster(args.roster) if args.roster else None
        report = collect(
            _course(args),
            args.set,
            args.zip,
            roster=roster,
            force=args.force,
            lms=args.lms,
            report_path=args.report,
        )
    except (ValueError, RuntimeError, OSError) as exc:
        return _fail("collect", exc)
    print(format_report(report))
    return 1 if report.needs_attention() else 0


collect_command.configure = lambda p: (
    p.add_argument("set", metavar="SET", help="problem set (a folder of solutions/)"),
    p.add_argument("zip", metavar="ZIP", help="the LMS's submissions download"),
    p.add_argument(
        "--roster",
        metavar="CSV",
        help="student_id plus lms_id and/or name columns (default: Canvas's "
        "user id, Moodle's full name)",
    ),
    p.add_argument(
        "--force",
        action="store_true",
        help="replace a student's different set folder (the old one is kept as "
        "SET.bak-TIMESTAMP)",
    ),
    p.add_argument(
        "--lms",
        choices=("auto", "canvas", "moodle"),
        default="auto",
        help="the zip's layout (default: told from its names)",
    ),
    p.add_argument(
        "--report", type=Path, help="CSV report (default ROOT/collect-SET.csv)"
    ),
    _add_root(p),
)


def grade_command(args) -> int:
    from .grade import grade
    from .outcome import GradeOptions
    from .publish import print_summary

    if args.install_bubblewrap:
        from .sandbox import install_bwrap

        print(f"bubblewrap: {install_bwrap() or 'could not be installed'}")
    options = GradeOptions(
        workers=args.workers,
        cell_timeout=args.timeout,
        notebook_timeout=args.notebook_timeout,
        memory_gib=args.memory,
        address_space_gib=args.address_space,
        interrupt_grace=args.grace,
        sandbox_uid=args.sandbox_uid,
        csv_path=args.csv,
        students=args.student or None,
        progress=not args.no_progress,
        keep_work=args.keep_work,
        unsafe_no_sandbox=args.unsafe_no_sandbox,
    )
    try:
        summary = grade(_course(args), args.set, args.submissions, options)
    except (ValueError, RuntimeError) as exc:
        return _fail("grade", exc)
    print_summary(summary)
    return 0


def _configure_grade(p) -> None:
    from .sandbox import DEFAULT_SANDBOX_UID

    p.add_argument("set", metavar="SET", help="problem set (a folder of solutions/)")
    p.add_argument(
        "submissions",
        nargs="?",
        metavar="SUBMISSIONS_DIR",
        help="folder of student folders (default: submitted/)",
    )
    p.add_argument("--workers", type=int, help="kernels at once (default: CPU cores)")
    p.add_argument(
        "--timeout",
        type=float,
        default=60.0,
        help="seconds per cell before it is interrupted (default 60)",
    )
    p.add_argument(
        "--grace",
        type=float,
        default=5.0,
        help="seconds to recover from an interrupt before the kill (5)",
    )
    p.add_argument(
        "--notebook-timeout",
        type=float,
        default=600.0,
        help="seconds per notebook before its kernel is killed (default 600)",
    )
    p.add_argument(
        "--memory",
        type=float,
        default=6.0,
        help="memory cap of a submission's whole process tree in GiB (default 6)",
    )
    p.add_argument(
        "--address-space",
        type=float,
        default=None,
        metavar="GiB",
        help="address space each process may reserve, in GiB (default: --memory); "
        "past it an allocation raises MemoryError",
    )
    p.add_argument(
        "--unsafe-no-sandbox",
        action="store_true",
        help="grade even where no OS sandbox is available (every row says so)",
    )
    p.add_argument(
        "--install-bubblewrap",
        action="store_true",
        help="first apt-get install bubblewrap if it is missing (root, Debian/Ubuntu)",
    )
    p.add_argument("--csv", type=Path, help="CSV path (default ROOT/grades-SET.csv)")
    p.add_argument(
        "--student",
        action="append",
        metavar="ID",
        help="grade only this student (repeatable)",
    )
    p.add_argument(
        "--sandbox-uid",
        type=int,
        default=DEFAULT_SANDBOX_UID,
        help="first uid of the sandbox users when run as root "
        f"(default {DEFAULT_SANDBOX_UID})",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument(
        "--keep-work",
        action="store_true",
        help="keep the private work folder (debugging)",
    )
    _add_root(p)


grade_command.configure = _configure_grade


def export_command(args) -> int:
    from .publish import export

    try:
        path = export(_course(args), args.set, args.csv)
    except (ValueError, RuntimeError) as exc:
        return _fail("export", exc)
    print(f"grades: {path}")
    return 0


export_command.configure = lambda p: (
    p.add_argument("set", metavar="SET"),
    p.add_argument("--csv", type=Path, help="CSV path (default ROOT/grades-SET.csv)"),
    _add_root(p),
)


def report_command(args) -> int:
    from .report import format_summary, load_report
    from .report_page import write_report

    try:
        course = _course(args)
        report = load_report(course, args.set)
        out = Path(args.out or course.root / f"report-{report.set_id}")
        extra = style = ""
        if course.submitted.is_dir():  # answers that look copied, for a person to judge
            from .copying import SECTION_STYLE, check_set, html_section

            extra, style = html_section(check_set(course, report.set_id)), SECTION_STYLE
        paths = write_report(report, out, extra, style)
    except (ValueError, RuntimeError, OSError) as exc:
        return _fail("report", exc)
    print(format_summary(report))
    print(f"report: {paths[0]}")
    print("charts: " + ", ".join(p.name for p in paths[1:]))
    return 0


report_command.configure = lambda p: (
    p.add_argument("set", metavar="SET", help="problem set (a folder of solutions/)"),
    p.add_argument(
        "--out",
        type=Path,
        metavar="DIR",
        help="folder for report.html and the PNG charts (default ROOT/report-SET)",
    ),
    _add_root(p),
)


def similarity_command(args) -> int:
    from .copying import check_set, format_summary, write

    try:
        course = _course(args)
        result = check_set(course, args.set, args.submissions, args.threshold)
        out = args.out or course.root / f"similarity-{result.set_id}"
        page, _ = write(result, out)
    except (ValueError, RuntimeError, OSError) as exc:
        return _fail("similarity", exc)
    print(format_summary(result, page))
    return 0


def _threshold(text: str) -> float:
    import argparse

    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f"must be a number in (0, 1], got {text!r}")
    return value


similarity_command.configure = lambda p: (
    p.add_argument("set", metavar="SET", help="problem set (a folder of solutions/)"),
    p.add_argument(
        "submissions",
        nargs="?",
        metavar="SUBMISSIONS_DIR",
        help="folder of student folders (default: submitted/)",
    ),
    p.add_argument(
        "--out",
        type=Path,
        help="folder for similarity.html and .csv (default ROOT/similarity-SET)",
    ),
    p.add_argument(
        "--threshold",
        type=_threshold,
        default=None,
        help="list pairs at or above this similarity, 0–1 (default 0.9)",
    ),
    _add_root(p),
)


def feedback_command(args) -> int:
    from .feedback import load_feedback
    from .feedback_page import write_feedback

    try:
        course = _course(args)
        pages = load_feedback(course, args.set)
        out = Path(args.out) if args.out else course.feedback
        paths = write_feedback(pages, out, course.submitted)
    except (ValueError, RuntimeError, OSError) as exc:
        return _fail("feedback", exc)
    students = len({p.folder for p in pages})
    print(f"feedback: {len(paths)} page(s) for {students} student(s) in {out}")
    if pages:
        print("  (nbgrader release_feedback delivers them on a JupyterHub; "
              f"MathJax is in {out / 'mathjax'})")
    return 0


feedback_command.configure = lambda p: (
    p.add_argument("set", metavar="SET", help="problem set (a folder of solutions/)"),
    p.add_argument(
        "--out",
        type=Path,
        metavar="DIR",
        help="folder for DIR/<student>/SET/<notebook>.html (default: the course's "
        "feedback/, where nbgrader release_feedback looks)",
    ),
    _add_root(p),
)


def handout_command(args) -> int:
    from .handout import format_report, handout, scan

    if args.after_deadline and not args.withhold:
        return _fail("handout", ValueError("--after-deadline needs --withhold"))
    try:
        course = _course(args)
        report = handout(
            course, Path(args.dir), args.after_deadline, withhold=args.withhold
        )
    except (ValueError, RuntimeError) as exc:
        return _fail("handout", exc)
    print(format_report(report))
    found = scan(course, report.dest, args.after_deadline, withhold=args.withhold)
    for line in found[:20]:
        print(f"  LEAK {line}", file=sys.stderr)
    return 1 if found else 0


handout_command.configure = lambda p: (
    p.add_argument(
        "dir", metavar="DIR", help="a new folder for the student repository"
    ),
    p.add_argument(
        "--withhold",
        action="store_true",
        help="keep each open set's reference modules (and the notebooks that "
        "import them) out until its deadline (default: ship everything; "
        "`course similarity` reports copies)",
    ),
    p.add_argument(
        "--after-deadline",
        action="append",
        default=[],
        metavar="SET",
        help="with --withhold: a set whose deadline passed, whose modules ship "
        "(repeatable)",
    ),
    _add_root(p),
)


# name → (fn(args), help); fn.configure(parser) adds the arguments.
COMMANDS = {
    "release": (
        release_command,
        "generate exercises/ from solutions/ (nbgrader)",
    ),
    "check": (
        check_command,
        "self-check: run a notebook's visible tests and show hints",
    ),
    "collect": (
        collect_command,
        "place an LMS's submissions zip (Canvas, Moodle) into submitted/",
    ),
    "grade": (
        grade_command,
        "grade every submission of a set into the gradebook and a CSV",
    ),
    "export": (
        export_command,
        "write a set's CSV from the gradebook (after manual grading)",
    ),
    "report": (
        report_command,
        "the class at a glance: statuses, scores, frequent mistakes (HTML, PNG)",
    ),
    "similarity": (
        similarity_command,
        "answers that look copied (from the course or a classmate), side by side",
    ),
    "feedback": (
        feedback_command,
        "each graded student's feedback pages: points, kinds of mistakes, comments",
    ),
    "handout": (
        handout_command,
        "write the student repository (no solutions, no answers)",
    ),
}
