"""`course handout DIR`: the student repository, without any answer in it.

What students get is the course repository minus

* the instructor's side: ``solutions/``, the gradebook and its backups,
  ``submitted/``, ``autograded/``, ``feedback/``, grade and collect CSVs,
  ``.git``;
* grading fixtures that hold answers: ``tests/grading_cases/`` and the tests
  of the grading and of the problem sets (``tests/test_grading_*.py``,
  ``tests/test_exercises.py``, ``tests/test_exercise_bug_bank.py``);
* the reference implementation of every graded question: the course modules
  a set's solution notebook declares absent from the grading sandbox
  (``metadata.course_grading.absent_modules``; see `notebooks.absent_modules`)
  — ``course_utils.saliency``, ``reference``, ``sanity``, ``metrics`` … — and,
  transitively, every module, test and notebook that imports one of them when
  it runs (imports inside functions do not count). A set whose references
  ship with an earlier set declares less (``handout_withholds``, see
  `notebooks.handout_withholds`): ps6's Grad-CAM reference is in
  ``course_utils.saliency``, handed out after ps1–ps3.

Default: **everything ships from week one** — the lecture notebooks and
``course_utils`` in full, reference modules included — so students can follow
the course lecture by lecture; copying is detected instead (`course
similarity`, see `copying`). `scan` then looks for what must never ship: every
hidden test of every set, and the model answers (solution blocks) anywhere
but the course modules, which hold the course's own implementations by design.

Option ``withhold=True`` (``course handout --withhold``): the reference
modules of a set **ship after its deadline**. ``--after-deadline SET``
(repeatable) lists the sets whose deadline has passed; their modules (and the
lecture notebooks that need them) are then included. Until then a student
cannot run the lecture notebooks that use them, which is the price of a
hand-out from which no graded answer can be copied; `scan` checks such a
hand-out for every solution block and every hidden test of the open sets.
"""

from __future__ import annotations

import ast
import os
import re
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from . import notebooks as nbs
from .course import Course

ALWAYS_OUT = (
    "tests/grading_cases",
    "tests/test_exercises.py",
    "tests/test_exercise_bug_bank.py",  # wrong answers next to the right ones
    ".git",
    "grades-*.csv",
    "collect-*.csv",  # who submitted what: names and LMS ids
    "gradebook.db*",
    "similarity-*",  # who looks like whom: names and answers
)
GRADING_TESTS = "tests/test_grading_*.py"
SOLUTION_RE = re.compile(r"### BEGIN SOLUTION\n(.*?)### END SOLUTION", re.DOTALL)
IMPORT_RE = re.compile(r"(from\s+[\w.]+\s+)?import\s")  # an import line tells nothing
HIDDEN_RE = re.compile(r"### BEGIN HIDDEN TESTS\n(.*?)### END HIDDEN TESTS", re.DOTALL)


@dataclass
class HandoutReport:
    """What `handout` wrote and left out (relative paths)."""

    dest: Path
    written: list[str] = field(default_factory=list)
    left_out: dict[str, str] = field(default_factory=dict)
    absent_modules: list[str] = field(default_factory=list)


def _files(root: Path) -> list[str]:
    """The course's files: git's tracked files when it is a repository."""
    try:
        out = subprocess.run(
            ["git", "-C", str(root), "ls-files", "-z"],
            capture_output=True,
            check=True,
            timeout=60,
        ).stdout.decode()
        files = [f for f in out.split("\0") if f]
        if files:
            return sorted(f for f in files if (root / f).is_file())
    except (OSError, subprocess.SubprocessError):
        pass
    return sorted(
        str(p.relative_to(root))
        for p in root.rglob("*")
        if p.is_file() and ".git" not in p.parts and "__pycache__" not in p.parts
    )


def _module_of(rel: str) -> str | None:
    if not rel.startswith("course_utils/") or not rel.endswith(".py"):
        return None
    parts = rel[: -len(".py")].split("/")
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _top_level(tree: ast.Module):
    """Statements run on import: the module body, into if/try/with, not defs."""
    todo = list(tree.body)
    while todo:
        node = todo.pop()
        yield node
        if isinstance(node, (ast.If, ast.Try, ast.With)):
            for name in ("body", "orelse", "finalbody"):
                todo.extend(getattr(node, name, []) or [])
            for handler in getattr(node, "handlers", []) or []:
                todo.extend(handler.body)


def _imports(text: str, package: str | None) -> set[str]:
    """Modules a Python source imports when it runs (relative imports resolved
    in `package`); imports inside functions are left to whoever calls them."""
    try:
        tree = ast.parse(text)
    except SyntaxError:
        return set()
    out: set[str] = set()
    for node in _top_level(tree):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level and package:
                parent = package.split(".")
                parent = parent[: len(parent) - node.level + 1]
                base = ".".join([*parent, base] if base else parent)
            out.add(base)
            out.update(f"{base}.{a.name}" for a in node.names)
    return out


def _source_of(root: Path, rel: str) -> str | None:
    path = root / rel
    if rel.endswith(".py"):
        return path.read_text(errors="replace")
    if rel.endswith(".ipynb"):
        from .static import python_source

        try:
            nb = nbs.read_notebook(path)
        except ValueError:
            return None
        return "\n".join(
            python_source(c.source) for c in nb.cells if c.cell_type == "code"
        )
    return None


def _hits(imported: set[str], absent: set[str]) -> list[str]:
    return sorted(
        m for m in imported for a in absent if m == a or m.startswith(a + ".")
    )


def absent_for(course: Course, after_deadline: list[str]) -> list[str]:
    """The course's own modules kept out by every set still open: each set's
    `notebooks.handout_withholds` (third-party libraries such as Captum are
    public and installed by `make setup`; they are absent only from the
    grading sandbox)."""
    out: set[str] = set()
    for set_id in course.sets():
        if set_id in after_deadline:
            continue
        for path in course.source_notebooks(set_id):
            out.update(nbs.handout_withholds(nbs.read_notebook(path)))
    return sorted(out)


def handout(
    course: Course,
    dest: Path,
    after_deadline: list[str] | None = None,
    *,
    withhold: bool = False,
) -> HandoutReport:
    """Write the student repository into `dest` (which must not exist).

    Args:
        withhold: keep the reference modules of the sets not in
            `after_deadline` out (default False: everything ships).

    Raises:
        ValueError: dest exists, a set in after_deadline is unknown, or
            after_deadline without withhold.
    """
    after = list(after_deadline or [])
    if after and not withhold:
        raise ValueError("--after-deadline needs --withhold (by default everything ships)")
    unknown = sorted(set(after) - set(course.sets()))
    if unknown:
        raise ValueError(f"--after-deadline: unknown sets {unknown}")
    dest = Path(dest).resolve()
    if dest.exists():
        raise ValueError(f"DIR {dest} already exists; give a new folder")
    root = course.root
    withheld = absent_for(course, after) if withhold else []
    report = HandoutReport(dest, absent_modules=withheld)
    absent = set(report.absent_modules)
    private = [
        os.path.relpath(p, root)
        for p in (
            course.source,
            course.submitted,
            course.autograded,
            course.feedback,
            course.gradebook,
        )
    ]
    files = _files(root)
    kept = []
    for rel in files:
        path = Path(rel)
        if any(rel == p or rel.startswith(p.rstrip("/") + "/") for p in private):
            report.left_out[rel] = "instructor's files"
        elif any(path.match(g) or rel.startswith(g + "/") for g in ALWAYS_OUT):
            report.left_out[rel] = "grading fixtures or answers"
        elif path.match(GRADING_TESTS):
            report.left_out[rel] = "tests of the grading (hold answers)"
        elif (m := _module_of(rel)) and any(
            m == a or m.startswith(a + ".") for a in absent
        ):
            report.left_out[rel] = "reference implementation (ships after the deadline)"
        else:
            kept.append(rel)
    # Whatever imports a module left out would not run: leave it out too.
    absent_now = set(absent)
    changed = True
    while changed:
        changed = False
        for rel in list(kept):
            text = _source_of(root, rel)
            if text is None:
                continue
            hits = _hits(_imports(text, _package_of(rel)), absent_now)
            if hits:
                kept.remove(rel)
                report.left_out[rel] = f"imports {hits[0]} (ships after the deadline)"
                if (m := _module_of(rel)) is not None:
                    absent_now.add(m)
                changed = True
    for rel in kept:
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(root / rel, target)
        report.written.append(rel)
    return report


def _package_of(rel: str) -> str | None:
    module = _module_of(rel)
    if module is None:
        return None
    return module if rel.endswith("__init__.py") else module.rpartition(".")[0]


def secrets_of(
    course: Course,
    after_deadline=(),
    *,
    solutions: bool = True,
    solution_lines: bool = True,
) -> list[tuple[str, str]]:
    """(where, text) to look for: every solution block and hidden-test block of
    the solutions of the sets still open (not in `after_deadline`, whose
    answers may ship), whole, and each of their lines long enough to be
    telling (≥ 24 characters, not an import) that the released exercises do not show anyway.
    With `solutions` False, the hidden tests only; with `solution_lines`
    False, solution blocks whole only."""
    public = ""
    if course.release.is_dir():
        public = (
            "\n".join(
                p.read_text(errors="ignore") for p in course.release.rglob("*.ipynb")
            )
            .replace("\\n", "\n")
            .replace('\\"', '"')
        )
    out = []
    for set_id in course.sets():
        if set_id in after_deadline:
            continue
        for path in course.source_notebooks(set_id):
            nb = nbs.read_notebook(path)
            for cell in nb.cells:
                src = (
                    cell.source
                    if isinstance(cell.source, str)
                    else "".join(cell.source)
                )
                where = f"{path.name} {nbs.grade_id(cell)}"
                for regex in (SOLUTION_RE, HIDDEN_RE) if solutions else (HIDDEN_RE,):
                    for block in regex.findall(src):
                        if block.strip():
                            out.append((where, _squash(block)))
                        if regex is SOLUTION_RE and not solution_lines:
                            continue
                        for line in block.splitlines():
                            line = line.strip()
                            if (
                                len(line) >= 24
                                and not line.startswith("#")
                                and not IMPORT_RE.match(line)
                                and (line not in public)
                            ):
                                out.append((where, line))
    return out


def _squash(text: str) -> str:
    return " ".join(text.split())


def scan(
    course: Course, tree: Path, after_deadline=(), *, withhold: bool = False
) -> list[str]:
    """What must not ship, in any file under `tree`.

    withhold=True: solution or hidden-test text of a set still open, anywhere.
    Default (everything ships): hidden-test text of every set anywhere, and
    whole solution blocks outside ``course_utils/`` (whose modules are the
    course's own implementations, shipped on purpose).
    """
    if withhold:
        needles, hidden = secrets_of(course, after_deadline), set()
    else:
        needles = secrets_of(course, solution_lines=False)
        hidden = set(secrets_of(course, solutions=False))
    found = []
    for path in sorted(Path(tree).rglob("*")):
        if not path.is_file():
            continue
        try:
            text = path.read_text(errors="ignore")
        except OSError:
            continue
        text = text.replace("\\n", "\n").replace('\\"', '"')
        squashed = _squash(text)
        shipped_code = path.relative_to(tree).parts[:1] == ("course_utils",)
        for where, needle in needles:
            if shipped_code and not withhold and (where, needle) not in hidden:
                continue
            if needle in text or needle in squashed:
                found.append(f"{path.relative_to(tree)}: {where}: {needle[:60]}")
    return found


def format_report(report: HandoutReport) -> str:
    reasons: dict[str, int] = {}
    for why in report.left_out.values():
        reasons[why] = reasons.get(why, 0) + 1
    lines = [f"hand-out written to {report.dest}: {len(report.written)} file(s)"]
    lines += [f"  left out {n} file(s): {why}" for why, n in sorted(reasons.items())]
    if report.absent_modules:
        lines.append(
            "  modules shipped after the deadline: " + ", ".join(report.absent_modules)
        )
    return "\n".join(lines)
