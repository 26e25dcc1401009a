"""`course collect SET ZIP`: an LMS's "download all submissions" zip into
``submitted/<student>/<set>/<notebook>.ipynb``, with a report of what it could
not place.

Which files are whose is `lms`'s part (each LMS's naming, the roster); two LMS
identities with one student id are reported, neither placed.

The zip comes from students through the LMS, so it is read as hostile input:
its entry count and central directory are bounded before Python parses them
(`Limits`); a name with ``..``, a leading ``/``, a drive letter, a backslash or
a control character, a symbolic link or other non-regular entry, an encrypted
entry and a name that appears twice are refused; names without the UTF-8 flag
are read as UTF-8 when they are valid UTF-8 (rubyzip writes them so) and as
cp437 otherwise. Only the notebooks placed are decompressed, each counted in
actual bytes against a per-file cap (the grader's own notebook cap) and a
total; nothing is ever written at a path taken from the zip. A student's
single notebook under another name (``gradients (1).ipynb``,
``Gradients-2.ipynb``, ``homework.ipynb``) is placed under the set's name when
that is unambiguous; of several, the latest (Canvas: highest file id; Moodle:
newest time in the zip) is placed and the others reported.

Writing is atomic per student: the set folder is built beside the target and
renamed into place. A folder already there is left alone (reported) unless
its notebooks are the same bytes ("unchanged"); with ``force`` it is renamed
to ``SET.bak-TIMESTAMP`` first, and put back if the new one cannot be moved
in, so nothing is lost. Folders are private (0700, files 0600).
"""

from __future__ import annotations

import csv
import json
import lzma
import os
import re
import shutil
import stat
import struct
import tempfile
import time
import unicodedata
import zipfile
import zlib
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from . import notebooks as nbs
from . import sanitize
from .atomic import atomic_write
from .course import Course
from .lms import LMS_NAMES, PARSERS, Identity, Roster, detect_lms, id_problem

PLACED, REPLACED, UNCHANGED = "placed", "replaced", "unchanged"
EXISTS, SUPERSEDED, NOT_PLACED = "exists", "superseded", "not placed"
IGNORED = "ignored"
NEEDS_ATTENTION = (EXISTS, NOT_PLACED)
REPORT_FIELDS = (
    "entry",
    "student",
    "lms",
    "lms_id",
    "name",
    "late",
    "outcome",
    "detail",
)


@dataclass(frozen=True)
class Limits:
    """Bounds on a zip, checked on the actual bytes (headers only refuse early)."""

    entries: int = 20_000
    directory_bytes: int = 32 * 2**20  # the central directory Python parses
    file_bytes: int = nbs.MAX_NOTEBOOK_BYTES  # one notebook, decompressed
    total_bytes: int = 2 * 2**30  # every notebook placed, decompressed


@dataclass
class Row:
    """One file of the zip and what became of it (every str is as found)."""

    entry: str
    outcome: str
    detail: str = ""
    student: str = ""
    lms: str = ""
    lms_id: str = ""
    name: str = ""
    late: bool = False


@dataclass
class CollectReport:
    set_id: str
    zip_path: Path
    lms: str
    rows: list[Row] = field(default_factory=list)
    csv_path: Path | None = None

    def counts(self) -> Counter:
        return Counter(r.outcome for r in self.rows)

    def needs_attention(self) -> bool:
        return any(r.outcome in NEEDS_ATTENTION for r in self.rows)


# ---------------------------------------------------------------- the zip


def _directory_size(fh) -> tuple[int, int]:
    """(entries, central directory bytes) from the end record, as zipfile finds
    it (the last 22 bytes first, then the last signature in the comment area),
    reading the zip64 record where the classic fields are saturated."""
    fh.seek(0, os.SEEK_END)
    size = fh.tell()
    fh.seek(max(0, size - 22 - 0xFFFF))
    tail = fh.read()
    at = len(tail) - 22
    if at < 0 or tail[at : at + 4] != b"PK\x05\x06" or tail[-2:] != b"\0\0":
        at = tail.rfind(b"PK\x05\x06", 0, max(0, len(tail) - 21))
    if at < 0:
        raise ValueError("ZIP is not a zip file (no end of central directory record)")
    entries, cd_bytes = struct.unpack("<HI", tail[at + 10 : at + 16])
    locator = at - 20
    zip64 = entries == 0xFFFF or cd_bytes == 0xFFFFFFFF
    if zip64 and locator >= 0 and tail[locator : locator + 4] == b"PK\x06\x07":
        (offset,) = struct.unpack("<Q", tail[locator + 8 : locator + 16])
        fh.seek(offset)
        record = fh.read(56)
        if record[:4] == b"PK\x06\x06":
            entries, cd_bytes = struct.unpack("<QQ", record[32:48])
    fh.seek(0)
    return entries, cd_bytes


def open_zip(path: Path, limits: Limits) -> zipfile.ZipFile:
    """The zip, opened only once its directory is known to be within `limits`."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"ZIP must be a zip file, {path} is not a file")
    fh = open(path, "rb")  # noqa: SIM115 — handed to ZipFile, closed with it
    try:
        entries, cd_bytes = _directory_size(fh)
        if entries > limits.entries:
            raise ValueError(
                f"ZIP {path.name} has {entries} entries, more than {limits.entries}"
            )
        if cd_bytes > limits.directory_bytes:
            raise ValueError(
                f"ZIP {path.name}'s directory is {cd_bytes} bytes, "
                f"more than {limits.directory_bytes}"
            )
        try:  # a name flagged UTF-8 that is not, offsets out of the file …
            zf = zipfile.ZipFile(fh)
        except (zipfile.BadZipFile, ValueError, OSError, EOFError, struct.error) as exc:
            raise ValueError(
                f"ZIP {path.name} is not a readable zip file: {exc}"
            ) from None
        if len(zf.infolist()) > limits.entries:
            raise ValueError(f"ZIP {path.name} has more than {limits.entries} entries")
        return zf
    except BaseException:
        fh.close()
        raise


def entry_name(info: zipfile.ZipInfo) -> str:
    """The entry's name: UTF-8 when flagged or valid as UTF-8, else cp437 (NFC)."""
    name = info.filename
    if not info.flag_bits & 0x800:
        try:
            name = name.encode("cp437").decode("utf-8")
        except (UnicodeEncodeError, UnicodeDecodeError):
            pass
    return unicodedata.normalize("NFC", name)


_DRIVE = re.compile(r"[A-Za-z]:")


def name_problem(name: str, raw: str = "") -> str | None:
    """Why an entry name is refused (None: a plain relative path)."""
    if "\0" in raw or not name.isprintable():
        return "control characters in the name"
    if "\\" in name:
        return "a backslash in the name"
    if name.startswith("/") or _DRIVE.match(name):
        return "an absolute path"
    parts = name.rstrip("/").split("/")
    if ".." in parts:
        return "a path with '..'"
    if any(p in ("", ".") for p in parts) or len(name) > 1024:
        return "an odd path (empty or '.' parts, or over 1024 characters)"
    return None


def type_problem(info: zipfile.ZipInfo) -> str | None:
    """Why an entry is refused for what it is (None: a plain file or folder)."""
    mode = info.external_attr >> 16
    kind = stat.S_IFMT(mode)
    if kind == stat.S_IFLNK:
        return "a symbolic link"
    if mode and kind not in (0, stat.S_IFREG, stat.S_IFDIR):
        return "not a regular file (device, pipe or socket)"
    if info.flag_bits & 0x1:
        return "encrypted"
    if info.compress_type not in (
        zipfile.ZIP_STORED,
        zipfile.ZIP_DEFLATED,
        zipfile.ZIP_BZIP2,
        zipfile.ZIP_LZMA,
    ):
        return f"an unsupported compression ({info.compress_type})"
    return None


def read_entry(zf: zipfile.ZipFile, info: zipfile.ZipInfo, limit: int) -> bytes:
    """The entry's bytes, counted as they are decompressed (ValueError past `limit`)."""
    out = bytearray()
    with zf.open(info) as fh:
        while chunk := fh.read(1 << 16):
            out += chunk
            if len(out) > limit:
                raise ValueError(f"more than {limit} bytes once decompressed")
    return bytes(out)


# ---------------------------------------------------------------- matching

_COPY = r"(?:\s*\(\d+\)|-\d+|_\d+|\s+copy(?:\s+\d+)?)*"


def _copy_number(file: str) -> int:
    numbers = re.findall(r"\d+", Path(file).stem[-12:])
    return int(numbers[-1]) if numbers else 0


def match_notebooks(
    expected: list[str], files: list[tuple[Identity, zipfile.ZipInfo, str]]
) -> tuple[dict[str, tuple], list[tuple[str, str, str]]]:
    """One student's notebooks → ({notebook: (who, info, entry)}, [(entry, outcome,
    detail)] for the rest).

    A file is a notebook NB when its name is NB.ipynb up to case and copy
    suffixes (`` (1)``, ``-2``, ``_3``, `` copy``); when the set has one
    notebook and the student one .ipynb, it is that notebook whatever its
    name. Of several, the latest is kept: (Canvas file id or Moodle time, copy
    number); a tie is reported, nothing placed.
    """
    notebooks = [f for f in files if f[0].file.lower().endswith(".ipynb")]
    groups: dict[str, list] = {nb: [] for nb in expected}
    rest = []
    for item in notebooks:
        stem = Path(item[0].file).name[: -len(".ipynb")]
        hits = [
            nb
            for nb in expected
            if re.fullmatch(re.escape(nb) + _COPY, stem, re.IGNORECASE)
        ]
        (groups[hits[0]] if len(hits) == 1 else rest).append(item)
    if len(expected) == 1 and len(notebooks) == 1:
        groups, rest = {expected[0]: notebooks}, []
    chosen, notes = {}, []
    for nb, items in groups.items():
        items.sort(key=_order)
        if len(items) > 1 and _order(items[-1]) == _order(items[-2]):
            why = f"one of {len(items)} copies of {nb}.ipynb, none of them the latest"
            notes += [(f[2], NOT_PLACED, why) for f in items]
            continue
        if items:
            chosen[nb] = items[-1]
        why = f"an earlier copy of {nb}.ipynb than the one placed"
        notes += [(f[2], SUPERSEDED, why) for f in items[:-1]]
    for item in rest:
        notes.append((item[2], NOT_PLACED, f"a notebook that is not one of {expected}"))
    for item in files:
        if item not in notebooks:
            notes.append((item[2], NOT_PLACED, "not a notebook (.ipynb)"))
    return chosen, notes


def _order(item) -> tuple:
    return (item[0].order, _copy_number(item[0].file))


# ---------------------------------------------------------------- writing


def _same(target: Path, files: dict[str, bytes]) -> bool:
    if target.is_symlink() or not target.is_dir():
        return False
    for name, data in files.items():
        path = target / name
        if path.is_symlink() or not path.is_file() or path.stat().st_size != len(data):
            return False
        if path.read_bytes() != data:
            return False
    return True


def place(
    submitted: Path, student: str, set_id: str, files: dict[str, bytes], force: bool
) -> tuple[str, str]:
    """Write one student's notebooks as submitted/STUDENT/SET/, atomically.

    Returns (outcome, detail): placed, replaced (detail: the backup), unchanged,
    or exists (a different folder is there and `force` is off).
    """
    folder = submitted / student
    if folder.is_symlink() or (folder.exists() and not folder.is_dir()):
        return NOT_PLACED, f"{folder} is a link or a file, not a folder"
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / set_id
    there = target.exists() or target.is_symlink()
    if there and _same(target, files):
        return UNCHANGED, ""
    if there and not force:
        return EXISTS, f"{student}/{set_id} is there already (--force replaces it)"
    stage = Path(tempfile.mkdtemp(prefix=f".{set_id}.collect-", dir=folder))
    try:
        for name, data in files.items():
            fd = os.open(stage / name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
        backup = None
        if there:
            stamp = time.strftime("%Y%m%d-%H%M%S") + f"-{time.time_ns() % 10**6:06d}"
            backup = folder / f"{set_id}.bak-{stamp}"
            os.rename(target, backup)
        try:
            os.rename(stage, target)
        except OSError:
            if backup is not None:
                os.rename(backup, target)
            raise
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    if backup is not None:
        return REPLACED, f"the previous folder is kept as {student}/{backup.name}"
    return PLACED, ""


# ---------------------------------------------------------------- the run

_READ_ERRORS = (
    ValueError,
    OSError,
    EOFError,
    zipfile.BadZipFile,
    zlib.error,
    lzma.LZMAError,
    NotImplementedError,
    RuntimeError,
)


def collect(
    course: Course,
    set_id: str,
    zip_path: str | Path,
    *,
    roster: Roster | None = None,
    force: bool = False,
    lms: str = "auto",
    limits: Limits = Limits(),
    report_path: str | Path | None = None,
) -> CollectReport:
    """Place a Canvas or Moodle submissions zip into course.submitted.

    Args:
        course: the course (its solutions name the set's notebooks).
        set_id: the problem set.
        zip_path: the LMS's "download all submissions" zip.
        roster: LMS identity → student id (`load_roster`); None: Canvas's user
            id, Moodle's full name.
        force: replace a student's different set folder (kept as a backup).
        lms: "canvas", "moodle" or "auto" (from the entry names).
        limits: bounds on the zip.
        report_path: the CSV report (default ROOT/collect-SET.csv).
    Returns:
        The report: one row per file of the zip, also written as CSV.
    Raises:
        ValueError: a bad argument, an unreadable zip, one past `limits`.
    """
    course.check_set(set_id)
    if lms not in ("auto", *LMS_NAMES):
        raise ValueError(
            f"--lms must be one of auto, {', '.join(LMS_NAMES)}; got {lms!r}"
        )
    expected = [p.stem for p in course.source_notebooks(set_id)]
    with open_zip(Path(zip_path), limits) as zf:
        members, rows = _screen(zf)
        if lms == "auto":  # a zip whose every file was refused has no layout
            lms = detect_lms([name for _, name in members]) if members else "unknown"
        report = CollectReport(set_id, Path(zip_path), lms, rows)
        plan = _plan(_identify(members, lms, roster, report), expected, report)
        declared = sum(
            f[1].file_size for chosen in plan.values() for f in chosen.values()
        )
        if declared > limits.total_bytes:
            raise ValueError(
                f"ZIP's notebooks would be {declared} bytes, more than {limits.total_bytes}"
            )
        _write_all(zf, plan, course, set_id, force, limits, report)
    report.rows.sort(key=lambda r: r.entry)
    path = Path(report_path) if report_path else course.root / f"collect-{set_id}.csv"
    report.csv_path = write_csv(report, path)
    return report


def _screen(zf: zipfile.ZipFile) -> tuple[list[tuple[zipfile.ZipInfo, str]], list[Row]]:
    """The zip's files that may be read, and a row for each one refused."""
    named = [(info, entry_name(info)) for info in zf.infolist()]
    seen = Counter(name for _, name in named)
    members, rows = [], []
    for info, name in named:
        why = name_problem(name, info.orig_filename) or type_problem(info)
        if not why and seen[name] > 1:
            why = f"its name appears {seen[name]} times in the zip"
        if why:
            rows.append(Row(name, NOT_PLACED, f"refused: {why}"))
        elif not info.is_dir():
            members.append((info, name))
    return members, rows


def _row(entry: str, outcome: str, detail: str, student: str, who: Identity) -> Row:
    return Row(entry, outcome, detail, student, who.lms, who.lms_id, who.name, who.late)


def _student_of(who: Identity, roster: Roster | None) -> tuple[str | None, str]:
    if roster is not None:
        student, why = roster.student_for(who)
    else:
        student, why = (who.lms_id if who.lms == "canvas" else who.name), ""
    if student and (bad := id_problem(student)):
        return (
            None,
            f"{student!r} is not a usable student id ({bad}): map it with --roster",
        )
    return student, why


def _identify(members, lms: str, roster: Roster | None, report: CollectReport) -> dict:
    """Student id → [(Identity, ZipInfo, entry)]; a row for each file not theirs."""
    files: dict[str, list] = defaultdict(list)
    for info, entry in members:
        who = PARSERS[lms](entry, info)
        if isinstance(who, str):
            report.rows.append(Row(entry, NOT_PLACED, who, lms=lms))
            continue
        student, why = _student_of(who, roster)
        if not student:
            report.rows.append(_row(entry, NOT_PLACED, why, "", who))
        elif any(p.startswith(".") or p == "__MACOSX" for p in who.file.split("/")):
            report.rows.append(
                _row(entry, IGNORED, "hidden or macOS metadata", student, who)
            )
        else:
            files[student].append((who, info, entry))
    for student in list(files):
        owners = sorted({who.lms_id for who, _, _ in files[student]})
        if len(owners) > 1:
            why = (
                f"{len(owners)} {lms} identities ({', '.join(owners)}) are all "
                f"{student!r}: tell them apart with --roster"
            )
            for who, _, entry in files.pop(student):
                report.rows.append(_row(entry, NOT_PLACED, why, student, who))
    return files


def _plan(files: dict, expected: list[str], report: CollectReport) -> dict:
    """Student id → {notebook: (Identity, ZipInfo, entry)} to place."""
    plan = {}
    for student, items in sorted(files.items()):
        chosen, notes = match_notebooks(expected, items)
        who_of = {entry: who for who, _, entry in items}
        for entry, outcome, detail in notes:
            report.rows.append(_row(entry, outcome, detail, student, who_of[entry]))
        if chosen:
            plan[student] = chosen
    return plan


def _notebook_problem(data: bytes) -> str:
    try:
        nbs.check_json_limits(data)
        nb = json.loads(data)
    except (ValueError, RecursionError) as exc:
        return f"not a readable notebook, placed for the grader to report ({exc})"
    if not isinstance(nb, dict) or not isinstance(nb.get("cells"), list):
        return "not a notebook (no cell list), placed for the grader to report"
    return ""


def _write_all(
    zf,
    plan: dict,
    course: Course,
    set_id: str,
    force: bool,
    limits: Limits,
    report: CollectReport,
) -> None:
    """Read each student's chosen notebooks and place them (one student at a time)."""
    used = 0
    for student, chosen in plan.items():
        files, notes = {}, {}
        try:
            for nb, (who, info, entry) in chosen.items():
                if info.file_size > limits.file_bytes:
                    raise ValueError(
                        f"{info.file_size} bytes, more than {limits.file_bytes}"
                    )
                data = read_entry(zf, info, limits.file_bytes)
                used += len(data)
                if used > limits.total_bytes:
                    raise OverflowError(
                        f"ZIP's notebooks passed {limits.total_bytes} bytes"
                    )
                files[f"{nb}.ipynb"] = data
                notes[nb] = _notebook_problem(data)
            outcome, detail = place(course.submitted, student, set_id, files, force)
        except OverflowError as exc:
            raise ValueError(str(exc)) from None
        except _READ_ERRORS as exc:
            outcome, detail = NOT_PLACED, f"could not be read or written: {exc}"
        for nb, (who, info, entry) in chosen.items():
            said = [detail, notes.get(nb, "")]
            if Path(who.file).name != f"{nb}.ipynb":
                said.append(f"placed as {nb}.ipynb")
            if who.late:
                said.append("late (the LMS says so)")
            report.rows.append(
                _row(entry, outcome, "; ".join(s for s in said if s), student, who)
            )


# ---------------------------------------------------------------- the report


def write_csv(report: CollectReport, path: Path) -> Path:
    """The report as CSV, every field safe for a spreadsheet (formulas disarmed)."""

    def cell(value: object) -> str:
        return sanitize.csv_field(sanitize.line(value))

    with atomic_write(path, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(REPORT_FIELDS)
        for r in report.rows:
            late = "yes" if r.late else ""
            values = (
                r.entry,
                r.student,
                r.lms,
                r.lms_id,
                r.name,
                late,
                r.outcome,
                r.detail,
            )
            writer.writerow([cell(v) for v in values])
    return path


def format_report(report: CollectReport, limit: int = 200) -> str:
    """What `course collect` prints: counts, then every row that is not a plain
    placement, each field made safe for the terminal."""
    counts = report.counts()
    summary = ", ".join(f"{counts[o]} {o}" for o in sorted(counts, key=str))
    zip_name = sanitize.line(report.zip_path.name)
    lines = [
        f"collect {report.set_id} from {zip_name} ({report.lms}): {summary or 'nothing'}"
    ]
    notable = [
        r for r in report.rows if r.outcome not in (PLACED, UNCHANGED) or r.detail
    ]
    for r in notable[:limit]:
        who = sanitize.line(r.student or r.name or "?", 200)
        lines.append(
            f"  {r.outcome.upper():<10} {who}: {sanitize.line(r.entry, 300)}"
            + (f" — {sanitize.line(r.detail, 500)}" if r.detail else "")
        )
    if len(notable) > limit:
        lines.append(f"  … {len(notable) - limit} more in the report")
    if report.csv_path:
        lines.append(f"report: {sanitize.line(report.csv_path)}")
    return "\n".join(lines)
