"""Who a file of an LMS's submissions zip belongs to: each LMS's naming, and
the map from LMS identities to the course's student ids.

The two layouts (from each LMS's own code):

- **Canvas** (``ContentZipper#zip_assignment``): one flat zip of files named
  ``NAME_[LATE_]USERID_FILEID_FILENAME``, e.g.
  ``smithjohn_late_12345_6789012_gradients-1.ipynb``. NAME is the sortable
  name ("Smith, John") with every non-word character removed, lowercased, and
  any ``_digits_`` in it squeezed (so the first ``_digits_digits_`` is the
  ids); ``late`` (upper case in older Canvas) marks a late submission; USERID
  is the Canvas user id (the ``ID`` column of Canvas's gradebook export, the
  same for every assignment); FILEID the file's id, which grows with each
  upload. A resubmitted file gets ``-1``, ``-2`` … before its extension.
- **Moodle** (``mod/assign`` "Download all submissions"): since 3.1 one folder
  per participant and plugin, ``Full Name_123456_assignsubmission_file[_]/``,
  holding the files as uploaded (older sites, or "download in folders" off:
  ``Full Name_123456_assignsubmission_file_FILENAME``). 123456 is the
  participant id, which Moodle makes per assignment; underscores of the name
  become spaces. Online text (``assignsubmission_onlinetext``) is no file.

Whose folder: with ``--roster CSV`` (columns ``student_id`` and ``lms_id``
and/or ``name``) an LMS identity is looked up by LMS id first, then by name
(letters and digits only, any case, "Smith, John" = "John Smith" = Canvas's
"smithjohn"); one not found is reported, never guessed. Without a roster the
id is Canvas's user id (stable across assignments, and what Canvas's grade
import matches on) and Moodle's full name (its participant id changes from
one assignment to the next, so a student would get a folder per set). The id
must be an honest student id (`sanitize.is_student_id`: letters, digits, space
and ``. _ - @ +``) not starting with a dot.
"""

from __future__ import annotations

import csv
import io
import re
import unicodedata
import zipfile
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from . import sanitize

LMS_NAMES = ("canvas", "moodle")
ID_MAX_CHARS = 128  # as discover: a longer folder name is no student id
ROSTER_MAX_BYTES = 10 * 2**20


@dataclass(frozen=True)
class Identity:
    """Who a zip entry belongs to, as the LMS named it."""

    lms: str
    lms_id: str
    name: str
    late: bool
    order: tuple  # larger is later: Canvas file id; Moodle zip time
    file: str  # the student's path inside their submission


_DIGITS = re.compile(r"[0-9]+")
_MOODLE_FOLDER = re.compile(r"([^_/]*)_([0-9]+)_assignsubmission_([a-z0-9]+)_?")
_MOODLE_FLAT = re.compile(r"([^_/]*)_([0-9]+)_assignsubmission_([a-z0-9]+)_(.+)")


def parse_canvas(name: str, info: zipfile.ZipInfo) -> Identity | str:
    """NAME_[LATE_]USERID_FILEID_FILENAME → Identity, or why not."""
    parts = name.split("_")
    if "/" not in name:
        for i in range(len(parts) - 2):
            if _DIGITS.fullmatch(parts[i]) and _DIGITS.fullmatch(parts[i + 1]):
                prefix, late = parts[:i], False
                if prefix and prefix[-1].lower() == "late":
                    prefix, late = prefix[:-1], True
                return Identity(
                    "canvas",
                    parts[i],
                    "_".join(prefix),
                    late,
                    (int(parts[i + 1]),),
                    "_".join(parts[i + 2 :]),
                )
    where = "in a folder: " if "/" in name else ""
    return f"{where}not in Canvas's flat naming (NAME_[LATE_]USERID_FILEID_FILENAME)"


def parse_moodle(name: str, info: zipfile.ZipInfo) -> Identity | str:
    """Full Name_ID_assignsubmission_PLUGIN[_]/PATH (or _FILENAME) → Identity."""
    head, slash, rest = name.partition("/")
    match = _MOODLE_FOLDER.fullmatch(head) if slash else _MOODLE_FLAT.fullmatch(name)
    if not match:
        return "not in Moodle's naming (Full Name_ID_assignsubmission_file_/FILE)"
    if match.group(3) != "file":
        return f"a Moodle {match.group(3)} submission, not an uploaded file"
    who = " ".join(match.group(1).split())
    path = rest if slash else match.group(4)
    return Identity("moodle", match.group(2), who, False, (info.date_time,), path)


PARSERS = {"canvas": parse_canvas, "moodle": parse_moodle}


def detect_lms(names: list[str]) -> str:
    """ "moodle" when any entry has Moodle's ``_ID_assignsubmission_`` marker, else
    "canvas" when any has Canvas's ``_USERID_FILEID_``; ValueError otherwise."""
    if any(re.search(r"_[0-9]+_assignsubmission_", n) for n in names):
        return "moodle"
    if any(re.search(r"_[0-9]+_[0-9]+_", n) for n in names):
        return "canvas"
    raise ValueError(
        "ZIP is neither a Canvas nor a Moodle submissions download "
        "(no NAME_USERID_FILEID_FILE nor Full Name_ID_assignsubmission_ entry)"
    )


def id_problem(student: str) -> str | None:
    """Why `student` cannot name a folder of submitted/ (None: it can)."""
    if not student:
        return "empty"
    if not sanitize.is_student_id(student) or not student.isprintable():
        return "characters other than letters, digits, space and . _ - @ +"
    if student.startswith(".") or student != student.strip():
        return "a leading dot or space, or a trailing space"
    if len(student) > ID_MAX_CHARS or len(student.encode()) > 255:
        return f"longer than {ID_MAX_CHARS} characters"
    return None


def name_keys(name: str) -> set[str]:
    """Comparison keys of a person's name: letters and digits, case folded, in
    the order given and with the last word first ("Smith, John" ~ "John Smith")."""

    def key(s: str) -> str:
        return "".join(
            c for c in unicodedata.normalize("NFC", s).casefold() if c.isalnum()
        )

    words = name.replace(",", " ").split()
    keys = {key(name)}
    if len(words) > 1:
        keys.add(key("".join([words[-1], *words[:-1]])))
    return keys - {""}


@dataclass
class Roster:
    """LMS id → student id, and name key → student ids (from `load_roster`)."""

    by_id: dict[str, str] = field(default_factory=dict)
    by_name: dict[str, set[str]] = field(default_factory=lambda: defaultdict(set))

    def student_for(self, who: Identity) -> tuple[str | None, str]:
        if who.lms_id in self.by_id:
            return self.by_id[who.lms_id], ""
        found = set().union(*(self.by_name.get(k, set()) for k in name_keys(who.name)))
        if len(found) == 1:
            return found.pop(), ""
        if found:
            return None, f"the name matches {len(found)} students of the roster"
        return None, "not in the roster (neither its LMS id nor its name)"


def load_roster(path: str | Path) -> Roster:
    """Read ``--roster``: a CSV with ``student_id`` and ``lms_id`` and/or ``name``."""
    path = Path(path)
    try:
        with open(path, "rb") as fh:
            raw = fh.read(ROSTER_MAX_BYTES + 1)
        text = raw.decode("utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"--roster {path}: not a readable UTF-8 CSV ({exc})") from None
    if len(raw) > ROSTER_MAX_BYTES:
        raise ValueError(f"--roster {path}: more than {ROSTER_MAX_BYTES} bytes")
    reader = csv.DictReader(io.StringIO(text, newline=""))
    columns = set(reader.fieldnames or ())
    if "student_id" not in columns or not columns & {"lms_id", "name"}:
        raise ValueError(
            f"--roster {path}: needs the columns student_id and lms_id and/or name, "
            f"has {sorted(columns)}"
        )
    roster = Roster()
    try:
        for line, row in enumerate(reader, start=2):
            _add_row(roster, row, f"--roster {path} line {line}")
    except csv.Error as exc:
        raise ValueError(f"--roster {path}: not a readable CSV ({exc})") from None
    return roster


def _add_row(roster: Roster, row: dict, where: str) -> None:
    student = unicodedata.normalize("NFC", (row.get("student_id") or "").strip())
    if why := id_problem(student):
        raise ValueError(f"{where}: student_id {student!r}: {why}")
    lms_id = (row.get("lms_id") or "").strip()
    if lms_id and roster.by_id.setdefault(lms_id, student) != student:
        raise ValueError(
            f"{where}: lms_id {lms_id!r} is given to "
            f"{roster.by_id[lms_id]!r} and {student!r}"
        )
    for key in name_keys(row.get("name") or ""):
        roster.by_name[key].add(student)
