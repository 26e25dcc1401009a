"""Where each student's notebooks are, found without following a link a student made."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import nbformat

from . import notebooks as nbs
from . import sanitize
from .outcome import Status


@dataclass
class Entry:
    """A student's folder as found: where the notebooks are, what is wrong."""

    folder: Path | None
    flags: list[str] = field(default_factory=list)


def _inside(path: Path, roots: list[Path]) -> Path | None:
    for root in roots:
        try:
            if path.resolve().is_relative_to(root.resolve()):
                return root
        except OSError:
            continue
    return None


def discover(
    submissions: Path,
    set_id: str,
    only: list[str] | None,
    private: list[Path] | None = None,
) -> tuple[dict[str, Entry], list[str]]:
    """Student → Entry for every folder of SUBMISSIONS_DIR, and what was skipped.

    Any printable name is a student id (spaces and non-ASCII letters too),
    shown as `sanitize.student_id` shows it (HTML, formula and bidi characters
    made visible; an honest name is unchanged). A
    symlinked student or set folder is never followed: the student gets a
    flagged row saying where it points. A folder inside `private` (the
    solutions, …) or another student's folder is flagged the same way.
    """
    found: dict[str, Entry] = {}
    skipped: list[str] = []
    private = private or []
    entries = sorted(submissions.iterdir(), key=lambda p: p.name)
    for entry in entries:
        if entry.name.startswith("."):
            continue
        # The id every output uses (gradebook, CSV, formgrader, terminal): an
        # honest folder name unchanged, a hostile one with its characters shown.
        name = sanitize.student_id(entry.name)
        if not entry.name.isprintable() or len(entry.name) > 128:
            skipped.append(f"{name}: not a usable student id (control characters)")
            continue
        if name in found:
            skipped.append(f"{name}: a second folder with this id (not graded twice)")
            continue
        if entry.is_symlink():
            link = os.readlink(entry)
            found[name] = Entry(
                None,
                [f"the student folder is a symbolic link to {link!r} (not followed)"],
            )
            continue
        if not entry.is_dir():
            skipped.append(f"{name}: not a folder")
            continue
        nested = entry / set_id
        if nested.is_symlink():
            target = os.readlink(nested)
            where = _inside(nested, [*private, *(e for e in entries if e != entry)])
            what = f" — inside {where}" if where else ""
            found[name] = Entry(
                None,
                [
                    f"the set folder is a symbolic link to {target!r}{what} (not followed)"
                ],
            )
            continue
        folder = nested if nested.is_dir() else entry
        found[name] = Entry(folder)
    if only is not None:
        only = [sanitize.student_id(s) for s in only]
        unknown = sorted(set(only) - set(found))
        if unknown:
            raise ValueError(f"students {unknown} have no folder in {submissions}")
        found = {s: found[s] for s in only}
    return found, skipped


def read_timestamp(folder: Path | None) -> tuple[str | None, str]:
    """The submission's timestamp.txt as nbgrader will parse it, or (None, why)."""
    if folder is None:
        return None, ""
    path = folder / "timestamp.txt"
    if not path.exists():
        return None, ""
    try:
        if path.is_symlink() or not path.is_file():
            raise ValueError("not a regular file")
        text = path.read_bytes()[:200].decode("utf-8").strip()
        if not text:
            raise ValueError("empty")
        from dateutil.parser import parse

        parse(text)
    except (OSError, ValueError, OverflowError, UnicodeDecodeError) as exc:
        return None, f"timestamp.txt ignored ({type(exc).__name__}: {str(exc)[:80]})"
    return text, ""


@dataclass
class Unusable:
    """Why a student's notebook cannot be run: the status it gets, the reason."""

    status: Status
    reason: str = ""
    flags: list[str] = field(default_factory=list)


def read_submission(entry: Entry, name: str) -> nbformat.NotebookNode | Unusable:
    """The student's notebook NAME.ipynb, or why it cannot be graded.

    A notebook that is not there is "missing" (the folder is the student's,
    this set's notebook is not in it); an unreadable one is a crash; a link
    (symbolic, or a hard link shared with another file) is flagged for
    review, never followed.
    """
    if entry.folder is None:
        return Unusable(Status.FLAGGED, "", list(entry.flags))
    path = entry.folder / f"{name}.ipynb"
    if path.is_symlink():
        return Unusable(
            Status.FLAGGED, "", [f"{name}.ipynb is a symbolic link (not followed)"]
        )
    if not path.is_file():
        where = "/".join(entry.folder.parts[-2:])
        return Unusable(Status.MISSING, f"no {name}.ipynb in {where}/")
    if path.stat().st_nlink > 1:
        return Unusable(
            Status.FLAGGED,
            "",
            [f"{name}.ipynb is a hard link shared with another file"],
        )
    try:
        return nbs.read_notebook(path, student=True)
    except (ValueError, OSError) as exc:
        return Unusable(Status.CRASHED, str(exc))
