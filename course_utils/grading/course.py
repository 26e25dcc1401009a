"""Where a course's files live, and nbgrader's assignment generator run on them.

`Course(root)` reads the same ``nbgrader_config.py`` formgrader reads (source
and release directories, gradebook location), so `course` commands and nbgrader
always agree. `generate` runs nbgrader's GenerateAssignment — the step that
strips solutions and hidden tests, locks cells and computes checksums — into
any directory, optionally recording the assignment's cells in a gradebook.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import sys
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

SET_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")


@dataclass(frozen=True)
class Course:
    """A course root and its directories (absolute paths)."""

    root: Path
    source: Path
    release: Path
    submitted: Path
    autograded: Path
    feedback: Path
    gradebook: Path

    @classmethod
    def load(cls, root: str | Path = ".") -> Course:
        """Read ROOT/nbgrader_config.py (defaults: solutions, exercises, …)."""
        root = Path(root).resolve()
        if not root.is_dir():
            raise ValueError(f"course root {root} is not a directory")
        settings = {
            "source_directory": "solutions",
            "release_directory": "exercises",
            "submitted_directory": "submitted",
            "autograded_directory": "autograded",
            "feedback_directory": "feedback",
            "db_url": "",
        }
        config_file = root / "nbgrader_config.py"
        if config_file.exists():
            from traitlets.config.loader import PyFileConfigLoader

            loaded = PyFileConfigLoader(config_file.name, path=str(root)).load_config()
            course_dir = loaded.get("CourseDirectory", {})
            for key in settings:
                if key in course_dir:
                    settings[key] = str(course_dir[key])
        db_url = settings.pop("db_url")
        if db_url and not db_url.startswith("sqlite:///"):
            raise ValueError(
                f"only SQLite gradebooks are supported, got db_url {db_url!r}"
            )
        gradebook = (
            Path(db_url[len("sqlite:///") :]) if db_url else root / "gradebook.db"
        )
        if nested := [d for d in settings.values() if Path(d).is_absolute()]:
            raise ValueError(
                f"course directories must be relative to the root: {nested}"
            )
        return cls(
            root=root,
            source=root / settings["source_directory"],
            release=root / settings["release_directory"],
            submitted=root / settings["submitted_directory"],
            autograded=root / settings["autograded_directory"],
            feedback=root / settings["feedback_directory"],
            gradebook=gradebook if gradebook.is_absolute() else root / gradebook,
        )

    def sets(self) -> list[str]:
        """Problem-set names: the folders of the source directory."""
        if not self.source.is_dir():
            return []
        return sorted(
            p.name
            for p in self.source.iterdir()
            if p.is_dir() and SET_RE.fullmatch(p.name) and any(p.glob("*.ipynb"))
        )

    def check_set(self, set_id: str) -> str:
        """Validate a problem-set name; ValueError listing the known ones."""
        if not isinstance(set_id, str) or set_id not in self.sets():
            raise ValueError(
                f"SET must be one of {self.sets()} (folders of {self.source}), "
                f"got {set_id!r}"
            )
        return set_id

    def source_notebooks(self, set_id: str) -> list[Path]:
        return sorted((self.source / set_id).glob("*.ipynb"))


def generate(
    course: Course, set_id: str, out_dir: Path, db_path: Path | None = None
) -> list[Path]:
    """Run nbgrader's GenerateAssignment for one set into `out_dir`/SET.

    Args:
        course: the course (its source directory is read).
        set_id: the problem set.
        out_dir: where the student version is written (as OUT/SET/NB.ipynb).
        db_path: a gradebook to record the assignment's cells in (needed to
            grade); None writes no gradebook.
    Returns:
        The generated notebooks.
    Raises:
        RuntimeError: nbgrader failed (its log is in the message).
    """
    from nbgrader.converters import GenerateAssignment
    from nbgrader.coursedir import CourseDirectory
    from traitlets.config import Config

    out_dir = Path(out_dir).resolve()
    cfg = Config()
    cfg.CourseDirectory.root = str(course.root)
    cfg.CourseDirectory.source_directory = os.path.relpath(course.source, course.root)
    cfg.CourseDirectory.release_directory = str(out_dir)
    cfg.CourseDirectory.assignment_id = set_id
    cfg.CourseDirectory.ignore = [
        ".ipynb_checkpoints",
        "*.pyc",
        "__pycache__",
        "*.bak-*",
    ]
    cfg.CourseDirectory.db_url = f"sqlite:///{db_path}" if db_path else "sqlite://"
    cfg.GenerateAssignment.no_database = db_path is None
    cfg.SaveCells.enabled = db_path is not None
    cfg.GenerateAssignment.create_assignment = True
    cfg.ClearSolutions.code_stub = {
        "python": "# YOUR CODE HERE\nraise NotImplementedError()"
    }
    cfg.ClearSolutions.text_stub = "YOUR ANSWER HERE"
    target = out_dir / set_id
    if target.exists():
        shutil.rmtree(target)
    coursedir = CourseDirectory(config=cfg)
    app = GenerateAssignment(coursedir=coursedir, config=cfg)
    app.force = True
    handler = _CaptureLog()
    app.log.addHandler(handler)
    try:
        with venv_on_path():
            app.start()
    except Exception as exc:  # noqa: BLE001 — nbgrader raises many kinds
        raise RuntimeError(
            f"nbgrader could not generate {set_id}: {exc}\n" + "\n".join(handler.lines)
        ) from None
    finally:
        app.log.removeHandler(handler)
    return sorted(target.glob("*.ipynb"))


@contextmanager
def venv_on_path():
    """Put this interpreter's bin directory first on PATH for the duration.

    nbgrader's Gradebook runs the `alembic` executable found on PATH; from a
    venv that is not activated (`.venv/bin/course …`) it would not be found.
    """
    bin_dir = str(Path(sys.executable).parent)
    old = os.environ.get("PATH", "")
    os.environ["PATH"] = bin_dir + os.pathsep + old
    try:
        yield
    finally:
        os.environ["PATH"] = old


class _CaptureLog(logging.Handler):
    def __init__(self):
        super().__init__(logging.WARNING)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))
