"""The grading record format: one check's outputs as a numpy archive NAME.npz.

A record holds the arrays ``case_0``, ``case_1`` … (numeric only) and a JSON
metadata entry ``__meta__`` (bytes). Three writers, one format: `checks` in
"reference" mode (the instructor's solution: the expected outputs, the
comparison settings, the hint), the grader's `harness` in a submission's
sandbox (what the student's code returned, or the error it raised) and
nothing else. One reader, `load_record`, in the grader's own process: it
opens the file once, reads at most `MAX_RECORD_BYTES`, loads the arrays
with ``allow_pickle=False`` (reading executes nothing) and accepts only the
metadata keys, types and lengths listed here; the writer checks the same
rules, so a record the course writes always loads.

Importing this module has no side effects and imports no torch.
"""

from __future__ import annotations

import io
import json
import math
import os
import re
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .atomic import atomic_write
from .compare import COMPARE_MODES, VALUE_KINDS

MODE_ENV = "COURSE_GRADING_MODE"
RECORD_DIR_ENV = "COURSE_GRADING_RECORD_DIR"
MODES = ("", "record", "reference")
RECORD_VERSION = 1
KINDS = ("arrays", "value")

# A check's name: its record is NAME.npz, its inputs NAME.cases.pt.
NAME_RE = re.compile(r"[A-Za-z][A-Za-z0-9_]{0,63}")
RECORD_FILE_RE = re.compile(NAME_RE.pattern + r"\.npz")
CASES_FILE_RE = re.compile(NAME_RE.pattern + r"\.cases\.pt")

MAX_CASES = 64
MAX_RECORD_BYTES = 32 * 2**20
MAX_META_BYTES = 2**20
MAX_TEXT = 10_000  # characters of a label, hint, error or short answer

# Metadata keys by record kind: (required, optional).
_KEYS = {
    "arrays": ({"version", "name", "kind", "cases"}, {"compare", "hint", "transform"}),
    "value": ({"version", "name", "kind", "value", "error"}, {"value_kind", "tol"}),
}


class RecordError(ValueError):
    """A record file that is not what `checks` or the harness writes."""


@dataclass
class Record:
    """One check's record: its metadata and the arrays of the cases that ran."""

    meta: dict
    arrays: dict[int, np.ndarray]


def mode() -> str:
    """The grading mode from COURSE_GRADING_MODE: "", "record" or "reference"."""
    value = os.environ.get(MODE_ENV, "")
    if value not in MODES:
        raise RuntimeError(f"{MODE_ENV} must be one of {MODES}, got {value!r}")
    return value


def check_name(name: str) -> None:
    """ValueError unless `name` can name a check (and so a record file)."""
    if not isinstance(name, str) or not NAME_RE.fullmatch(name):
        raise ValueError(
            f"name must be a letter then up to 63 letters, digits or _, got {name!r}"
        )


def record_file(name: str) -> str:
    """The file name of check `name`'s record."""
    check_name(name)
    return f"{name}.npz"


def cases_file(name: str) -> str:
    """The file name of check `name`'s case inputs (written in "reference" mode)."""
    check_name(name)
    return f"{name}.cases.pt"


def record_dir() -> Path:
    """The directory COURSE_GRADING_RECORD_DIR names (set whenever a mode is)."""
    path = os.environ.get(RECORD_DIR_ENV)
    if not path:
        raise RuntimeError(f"{MODE_ENV} is set but {RECORD_DIR_ENV} is not")
    return Path(path)


def error_text(exc: BaseException) -> str:
    """An exception as a record's error entry: "Type: message", at most MAX_TEXT."""
    return f"{type(exc).__name__}: {exc}"[:MAX_TEXT]


def write_record(
    name: str, meta: dict, arrays: dict[int, np.ndarray], out: Path | None = None
) -> None:
    """Write NAME.npz (arrays case_i plus JSON meta) atomically into `out`
    (default: `record_dir()`); ValueError if `load_record` would refuse it."""
    out = record_dir() if out is None else Path(out)
    try:
        validate_meta(meta, name)
    except RecordError as exc:
        raise ValueError(f"not a valid record: {exc}") from None
    payload = {f"case_{i}": np.ascontiguousarray(a) for i, a in arrays.items()}
    payload["__meta__"] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
    with atomic_write(out / record_file(name), "wb", chmod=0o644) as fh:
        np.savez(fh, **payload)


# ------------------------------------------------------------------- reading


def _read_capped(path: Path, name: str, max_bytes: int) -> bytes:
    """The file's bytes, opened once without following a link, at most max_bytes."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        with os.fdopen(fd, "rb") as fh:
            data = fh.read(max_bytes + 1)
    except OSError as exc:
        raise RecordError(f"record {name} cannot be read: {exc.strerror}") from None
    if len(data) > max_bytes:
        raise RecordError(f"record {name} is larger than {max_bytes} bytes")
    return data


def _open_archive(data: bytes, name: str, max_bytes: int) -> dict[str, np.ndarray]:
    """The archive's arrays, after checking what it would expand to."""
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            members = archive.infolist()
    except (zipfile.BadZipFile, OSError) as exc:
        raise RecordError(f"record {name} is not a numpy archive: {exc}") from None
    if sum(m.file_size for m in members) > 4 * max_bytes or any(
        not m.filename.endswith(".npy") or "/" in m.filename for m in members
    ):
        raise RecordError(
            f"record {name} expands beyond its budget or holds other files"
        )
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as archive:
            return dict(archive.items())
    except Exception as exc:  # noqa: BLE001 — whatever is wrong, it is not a record
        raise RecordError(f"record {name} is not a numpy archive: {exc}") from None


def _parse_meta(raw: np.ndarray | None, name: str) -> dict:
    if raw is None or raw.dtype != np.uint8 or raw.ndim != 1:
        raise RecordError(f"record {name} has no metadata")
    if raw.size > MAX_META_BYTES:
        raise RecordError(f"record {name} has metadata over {MAX_META_BYTES} bytes")
    try:
        meta = json.loads(raw.tobytes().decode())
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise RecordError(f"record {name} has unreadable metadata") from None
    validate_meta(meta, name)
    return meta


def load_record(path: Path, name: str, max_bytes: int = MAX_RECORD_BYTES) -> Record:
    """Read and validate a record without executing anything it contains.

    Raises:
        RecordError: the file is too large, not a numpy archive, or its
            metadata or arrays break the rules of this module.
    """
    files = _open_archive(_read_capped(Path(path), name, max_bytes), name, max_bytes)
    meta = _parse_meta(files.pop("__meta__", None), name)
    arrays: dict[int, np.ndarray] = {}
    for key, value in files.items():
        index = key[5:]
        if not (key.startswith("case_") and index.isdigit()) or index != str(
            int(index)
        ):
            raise RecordError(f"record {name} holds an unexpected entry {key!r}")
        if value.dtype.kind not in "biuf":
            raise RecordError(f"record {name} holds non-numeric data")
        arrays[int(index)] = value
    n_cases = len(meta["cases"]) if meta["kind"] == "arrays" else 0
    if any(i >= n_cases for i in arrays):
        raise RecordError(f"record {name} holds more cases than it lists")
    return Record(meta, arrays)


# ---------------------------------------------------------------- the rules


def _text(value, what: str, optional: bool = False) -> None:
    if optional and value is None:
        return
    if not isinstance(value, str) or len(value) > MAX_TEXT:
        raise RecordError(f"{what} is not a string of at most {MAX_TEXT} characters")


def _number(value, what: str) -> None:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    if not ok or not math.isfinite(value) or value < 0:
        raise RecordError(f"{what} is not a finite number ≥ 0")


def _validate_cases(cases) -> None:
    if not isinstance(cases, list) or len(cases) > MAX_CASES:
        raise RecordError(f"cases is not a list of at most {MAX_CASES}")
    for i, case in enumerate(cases):
        if not isinstance(case, dict) or set(case) != {"label", "error"}:
            raise RecordError(f"case {i} is not {{'label': …, 'error': …}}")
        _text(case["label"], f"case {i}'s label")
        _text(case["error"], f"case {i}'s error", optional=True)


def _validate_arrays_meta(meta: dict) -> None:
    _validate_cases(meta["cases"])
    if "compare" in meta:
        cmp = meta["compare"]
        if not isinstance(cmp, dict) or set(cmp) != {"mode", "rtol", "atol"}:
            raise RecordError("compare is not {'mode': …, 'rtol': …, 'atol': …}")
        if cmp["mode"] not in COMPARE_MODES:
            raise RecordError(f"compare mode is not one of {COMPARE_MODES}")
        _number(cmp["rtol"], "rtol")
        _number(cmp["atol"], "atol")
    if "hint" in meta:
        _text(meta["hint"], "hint")
    transform = meta.get("transform")
    if transform is not None and not (
        isinstance(transform, str) and NAME_RE.fullmatch(transform)
    ):
        raise RecordError("transform is not a function name")


def _validate_value_meta(meta: dict) -> None:
    value = meta["value"]
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if not math.isfinite(value):
            raise RecordError("value is not a finite number")
    else:
        _text(value, "value", optional=True)
    _text(meta["error"], "error", optional=True)
    if "value_kind" in meta and meta["value_kind"] not in VALUE_KINDS:
        raise RecordError(f"value_kind is not one of {VALUE_KINDS}")
    if "tol" in meta:
        _number(meta["tol"], "tol")


def validate_meta(meta, name: str) -> None:
    """RecordError unless `meta` is the metadata of check `name`'s record."""
    if not isinstance(meta, dict):
        raise RecordError(f"record {name} has an unknown format")
    version = meta.get("version")
    if type(version) is not int or version != RECORD_VERSION:
        raise RecordError(f"record {name} has an unknown format")
    if meta.get("name") != name or meta.get("kind") not in KINDS:
        raise RecordError(f"record {name} does not describe check {name}")
    required, optional = _KEYS[meta["kind"]]
    keys = set(meta)
    if not required <= keys or not keys <= required | optional:
        raise RecordError(
            f"record {name} has keys {sorted(keys)}; a {meta['kind']} record has "
            f"{sorted(required)} and may have {sorted(optional)}"
        )
    try:
        if meta["kind"] == "arrays":
            _validate_arrays_meta(meta)
        else:
            _validate_value_meta(meta)
    except RecordError as exc:
        raise RecordError(f"record {name}: {exc}") from None
