"""Write a file so that readers see the old contents or the new, never a part.

    with atomic_write(path, "w") as fh:
        fh.write(text)

The data goes to a temporary file beside `path` (same folder, so the rename
stays on one file system), which replaces `path` with `os.replace` only after
the block finished without an exception. On an exception the temporary file is
removed and `path` is untouched, so an interrupted write never loses what was
there (a gradebook, a CSV, a student's notebook) nor leaves a stray file.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO


@contextlib.contextmanager
def atomic_write(
    path: str | Path, mode: str = "w", *, chmod: int | None = None, newline: str | None = None
) -> Iterator[IO]:
    """Open a temporary file for writing that replaces `path` when the block ends.

    Args:
        path: the file to write; its folder is created if missing.
        mode: "w" (text, UTF-8) or "wb" (bytes).
        chmod: permission bits for the new file (default: 0o600, `mkstemp`'s).
        newline: as `open`'s (text mode only; "" for csv).
    """
    if mode not in ("w", "wb"):
        raise ValueError(f"mode must be 'w' or 'wb', got {mode!r}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.tmp-", dir=path.parent)
    try:
        text = {"encoding": "utf-8", "newline": newline} if mode == "w" else {}
        with os.fdopen(fd, mode, **text) as fh:
            yield fh
        if chmod is not None:
            os.chmod(tmp, chmod)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
