"""Files out of a kernel's folders, read as untrusted input within fixed bounds.

`copy_records` copies the records a kernel wrote: regular files only, named
as records are, opened relative to a held directory descriptor without
following links or blocking, within a size budget; the listing is capped in
entries and the problems it reports in count and length. `tmp_space` reads
how full the kernel's /tmp is from a held descriptor of it.
"""

from __future__ import annotations

import errno
import os
import stat
from dataclasses import dataclass
from pathlib import Path

from .records import CASES_FILE_RE, RECORD_FILE_RE

MAX_ENTRIES = 1000  # entries of a records folder looked at
MAX_PROBLEMS = 5  # problems named; the rest are counted
MAX_NAME_CHARS = 80  # of a file name quoted in a problem
NO_SPACE = (errno.ENOSPC, errno.EDQUOT)


def _shown(name: str) -> str:
    """A file name as a problem quotes it: repr, cut to MAX_NAME_CHARS."""
    text = repr(name)
    return text if len(text) <= MAX_NAME_CHARS else text[: MAX_NAME_CHARS - 1] + "…"


def summarize(problems: list[str]) -> list[str]:
    """The first MAX_PROBLEMS problems, then "and N more" for the rest."""
    if len(problems) <= MAX_PROBLEMS:
        return problems
    rest = len(problems) - MAX_PROBLEMS
    return [*problems[:MAX_PROBLEMS], f"and {rest} more problem(s) with the records"]


def _listing(source: Path | int) -> tuple[list[str], bool]:
    """Up to MAX_ENTRIES names of `source`, sorted; whether there were more."""
    names: list[str] = []
    with os.scandir(source) as entries:
        for entry in entries:
            if len(names) == MAX_ENTRIES:
                return sorted(names), True
            names.append(entry.name)
    return sorted(names), False


def _open_regular(source: Path | int, name: str) -> tuple[int | None, str]:
    """(fd of the regular file `name` in source, "") or (None, the problem)."""
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK
    try:
        if isinstance(source, int):
            fd = os.open(name, flags, dir_fd=source)
        else:
            fd = os.open(Path(source) / name, flags)
    except OSError as exc:
        return None, f"record {_shown(name)} could not be opened: {exc.strerror}"
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        return None, f"record {_shown(name)} is not a regular file"
    return fd, ""


def copy_records(
    source: Path | int, dest: Path, max_bytes: int
) -> tuple[dict[str, Path], list[str]]:
    """Copy record files out of a kernel's scratch dir, trusting nothing about them.

    `source` is the records directory, best given as a file descriptor opened
    before the kernel ran: the student owns the scratch directory and could
    swap paths for links, but not the directory an fd already points to. Only
    regular files named like records are copied, opened relative to it with
    O_NOFOLLOW and O_NONBLOCK (no links, no FIFOs), within `max_bytes` in
    total; at most MAX_ENTRIES entries are looked at. Returns ({name: copied
    path}, problems noticed: at most MAX_PROBLEMS named, then a count).
    """
    dest.mkdir(parents=True, exist_ok=True)
    copied: dict[str, Path] = {}
    problems: list[str] = []
    total = 0
    try:
        names, more = _listing(source)
    except OSError as exc:
        return copied, [f"records unreadable: {exc.strerror}"]
    for name in names:
        if name.startswith(".") and name.endswith(".tmp"):
            continue
        if not (RECORD_FILE_RE.fullmatch(name) or CASES_FILE_RE.fullmatch(name)):
            problems.append(f"unexpected file {_shown(name)} among the records")
            continue
        fd, problem = _open_regular(source, name)
        if fd is None:
            problems.append(problem)
            continue
        with os.fdopen(fd, "rb") as fh:
            size = os.fstat(fh.fileno()).st_size
            if total + size > max_bytes:
                problems.append(f"records exceed {max_bytes} bytes; {name} dropped")
                continue
            data = fh.read(max_bytes - total + 1)
        total += len(data)
        target = dest / name
        target.write_bytes(data)
        copied[name.removesuffix(".npz")] = target
    if more:
        problems.append(f"the records folder holds over {MAX_ENTRIES} entries; "
                        "the rest were not read")  # fmt: skip
    return copied, summarize(problems)


@dataclass(frozen=True)
class Space:
    """How full a file system is: its size and whether it is full."""

    size: int
    full: bool


def tmp_space(dir_fd: int) -> Space:
    """The space of the file system `dir_fd` is on (full: no block or no inode
    left to an unprivileged writer)."""
    info = os.fstatvfs(dir_fd)
    full = info.f_bavail == 0 or (info.f_files > 0 and info.f_favail == 0)
    return Space(info.f_blocks * info.f_frsize, full)
