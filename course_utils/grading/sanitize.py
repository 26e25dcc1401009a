"""One sanitiser for every student-controlled string that leaves the grader.

A submission controls more text than its answers: its folder name (the
student id), exception names and messages, printed output, file names in its
records. Before any of it reaches the gradebook, the CSV, formgrader or a
terminal it passes one of these pure functions:

- `text` — any object to valid, visible, bounded text. Lone surrogates (what
  Python makes of invalid UTF-8, and what SQLite refuses to encode) become
  U+FFFD; control characters, the bidirectional controls of Trojan Source
  (CVE-2021-42574, Boucher & Anderson 2021: U+202A–202E, U+2066–2069,
  U+200E/200F, U+061C) and the other invisible format characters are shown as
  ``⟨U+202E⟩``, so a terminal never obeys an escape sequence (a window title,
  an OSC 52 clipboard write ``ESC ] 52 ; c ; … BEL``, a CSI cursor move), a
  carriage return never overwrites what was printed before it, and a reader
  sees the code that ran. Newlines and tabs stay; so does the CR of a CRLF.
  The length is capped with a visible ``… [N more characters]``.
- `line` — the same on one line (newlines visible too): a terminal line, a
  CSV field.
- `csv_field` — OWASP's CSV Injection rule, exactly: a field whose first
  character is ``=``, ``+``, ``-``, ``@``, tab or carriage return gets a
  leading ``'`` so a spreadsheet reads it as text (quotes and separators are
  the csv module's job). OWASP names no other prefix: a leading space is left
  alone, and so is a field that starts with ``'`` already.
  https://owasp.org/www-community/attacks/CSV_Injection
- `html` — `text`, then ``html.escape(quote=True)``: safe in element content
  and in quoted attributes.
- `student_id` — the id shown anywhere (gradebook, CSV, formgrader, terminal):
  letters, marks, digits, space and ``. _ - @ +`` are kept, every other
  character is shown as ``⟨U+XXXX⟩``. No HTML, quote, formula or escape
  character survives, so even pages of nbgrader's that print the id raw are
  safe, and an honest id is its own.
- `notebook` — the student's cells and outputs as formgrader will show them
  (in place): the same visibility rules, keeping the ANSI colours nbconvert
  renders.

Every function but `html` is idempotent: sanitising twice gives what sanitising
once gave (`html` escapes each `&` again, as HTML escaping must).
"""

from __future__ import annotations

import html as _html
import re
import unicodedata

TEXT_LIMIT = 10_000
LINE_LIMIT = 1_000
ID_LIMIT = 2_600  # a folder name is at most 255 bytes: never truncated
FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")  # OWASP CSV Injection

_SURROGATE = "\ud800-\udfff"
# Cc except tab and newline; the Cf format characters (bidi controls, zero-width
# space, word joiner, BOM, interlinear annotations, tags …) except ZWNJ/ZWJ,
# which emoji and several scripts need; the line and paragraph separators.
_INVISIBLE = (
    "\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f"
    "\u00ad\u0600-\u0605\u061c\u06dd\u070f\u0890\u0891\u08e2\u180e"
    "\u200b\u200e\u200f\u2028-\u202e\u2060-\u2064\u2066-\u206f\ufeff\ufff9-\ufffb"
    "\U000110bd\U000110cd\U00013430-\U0001343f\U0001bca0-\U0001bca3"
    "\U0001d173-\U0001d17a\U000e0001\U000e0020-\U000e007f"
)
# A CR is shown unless it starts a CRLF (a CR alone rewrites the line).
_TEXT_UNSAFE = re.compile(f"[{_SURROGATE}{_INVISIBLE}]|\r(?!\n)")
_LINE_UNSAFE = re.compile(f"[{_SURROGATE}{_INVISIBLE}\r\n]")
# In outputs nbconvert turns SGR sequences (colours) into HTML, and a CR is a
# line break in HTML: both stay.
_OUTPUT_UNSAFE = re.compile(f"(?!\x1b\\[[0-9;]*m)[{_SURROGATE}{_INVISIBLE}]")
_MARK = re.compile(r"⟨U\+[0-9A-F]{4,6}⟩")
_ID_PUNCTUATION = frozenset("._-@+ ")


def _mark(char: str) -> str:
    if "\ud800" <= char <= "\udfff":
        return "\ufffd"
    return f"⟨U+{ord(char):04X}⟩"


def _coerce(value: object) -> str:
    """Any object as a str (bytes decoded as UTF-8, bad bytes → U+FFFD)."""
    if isinstance(value, str):
        return value
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value).decode("utf-8", errors="replace")
    try:
        return str(value)
    except Exception:  # noqa: BLE001 — a hostile __str__ must not stop us
        return f"<unprintable {type(value).__name__}>"


def _pieces(s: str, unsafe: re.Pattern) -> list[tuple[str, bool]]:
    """`s` as (piece, atomic) pairs: safe runs, and each unsafe character's mark."""
    out, pos = [], 0
    for m in unsafe.finditer(s):
        if m.start() > pos:
            out.append((s[pos : m.start()], False))
        out.append((_mark(m.group()), True))
        pos = m.end()
    if pos < len(s):
        out.append((s[pos:], False))
    return out


def _bounded(s: str, unsafe: re.Pattern, limit: int | None) -> str:
    """`s` with every unsafe character marked, at most `limit` characters long."""
    if limit is None:
        return "".join(p for p, _ in _pieces(s, unsafe))
    if limit < 40:
        raise ValueError(f"limit must be at least 40 characters, not {limit}")
    # every input character gives at least one output character
    pieces = _pieces(s[: limit + 1], unsafe)
    if len(s) <= limit and sum(len(p) for p, _ in pieces) <= limit:
        return "".join(p for p, _ in pieces)
    budget = limit - len(f"… [{len(s)} more characters]")
    kept, used, consumed = [], 0, 0
    for piece, atomic in pieces:
        room = budget - used
        if len(piece) > room:
            if not atomic and room > 0:
                kept.append(piece[:room])
                consumed += room
            break
        kept.append(piece)
        used += len(piece)
        consumed += 1 if atomic else len(piece)
    return "".join(kept) + f"… [{len(s) - consumed} more characters]"


def text(value: object, limit: int | None = TEXT_LIMIT) -> str:
    """Valid, visible text of at most `limit` characters (None: no cap).

    Newlines, tabs and CRLF stay; every other control, bidi or invisible
    format character is shown as ``⟨U+XXXX⟩``; lone surrogates become U+FFFD.
    """
    return _bounded(_coerce(value), _TEXT_UNSAFE, limit)


def line(value: object, limit: int | None = LINE_LIMIT) -> str:
    """`text` on one line: newlines and carriage returns are shown too."""
    return _bounded(_coerce(value), _LINE_UNSAFE, limit)


def csv_field(value: object) -> str:
    """A CSV field a spreadsheet reads as text (OWASP's CSV Injection rule).

    Only the prefix is added here; pass the result to `csv.writer`, which
    quotes separators and doubles quotes. Numbers the grader writes itself are
    not student-controlled and must not pass through here (``-1`` would read
    as text).
    """
    s = _coerce(value)
    return "'" + s if s.startswith(FORMULA_PREFIXES) else s


def html(value: object, limit: int | None = TEXT_LIMIT) -> str:
    """`text`, HTML-escaped (quotes too): element content or a quoted attribute."""
    return _html.escape(text(value, limit), quote=True)


def _id_char_ok(char: str) -> bool:
    return char in _ID_PUNCTUATION or unicodedata.category(char)[0] in "LMN"


def student_id(value: object, limit: int | None = ID_LIMIT) -> str:
    """The student id as shown anywhere: an honest id unchanged, others marked.

    Letters, combining marks, digits, space and ``. _ - @ +`` are kept, and so
    is a ``⟨U+XXXX⟩`` mark already present (this is idempotent); every other
    character becomes its mark (a lone surrogate, from a folder name that is
    not UTF-8, shows its code point). Two hostile ids may map to the same
    result; an honest id (only kept characters) is its own and never shared.
    Past `limit` characters the id ends with ``... N more characters``.
    """
    s = _coerce(value)
    tokens, pos = [], 0
    for m in _MARK.finditer(s):
        tokens.extend(_id_tokens(s[pos : m.start()]))
        tokens.append(m.group())
        pos = m.end()
    tokens.extend(_id_tokens(s[pos:]))
    result = "".join(tokens)
    if limit is None or len(result) <= limit:
        return result
    suffix = f"... {len(tokens)} more characters"
    kept, used = [], 0
    for token in tokens:
        if used + len(token) > limit - len(suffix):
            break
        kept.append(token)
        used += len(token)
    return "".join(kept) + f"... {len(tokens) - len(kept)} more characters"


def _id_tokens(s: str) -> list[str]:
    return [c if _id_char_ok(c) else f"⟨U+{ord(c):04X}⟩" for c in s]


def is_student_id(value: object) -> bool:
    """Whether `value` is an honest id: a str that `student_id` leaves unchanged
    and that holds no ``⟨U+…⟩`` mark."""
    return (
        isinstance(value, str)
        and not _MARK.search(value)
        and all(_id_char_ok(c) for c in value)
    )


def output_text(value: object, limit: int | None = None) -> str:
    """Text of a cell output for formgrader: `text`, keeping ANSI colours and CR.

    nbconvert renders SGR colour sequences (``ESC [ … m``) as HTML, and HTML
    reads a CR as a line break, so neither can hide anything there; every
    other escape sequence, bidi or invisible character is marked.
    """
    return _bounded(_coerce(value), _OUTPUT_UNSAFE, limit)


def _sanitize_output(out) -> None:
    kind = out.get("output_type")
    if kind == "stream":
        out["text"] = output_text(_joined(out.get("text", "")))
    elif kind == "error":
        out["ename"] = line(out.get("ename", ""), None)
        out["evalue"] = output_text(out.get("evalue", ""))
        out["traceback"] = [output_text(t) for t in out.get("traceback", [])]
    elif kind in ("display_data", "execute_result"):
        data = out.get("data", {})
        for mime in list(data):
            if mime.startswith("text/"):
                data[mime] = output_text(_joined(data[mime]))


def _joined(value: object) -> object:
    """A multiline notebook string (str or list of str) as one str."""
    return "".join(map(_coerce, value)) if isinstance(value, list) else value


def notebook(nb) -> None:
    """What formgrader shows of a notebook, made visible and valid, in place.

    Cell sources follow `text` (a bidi override, a lone CR or an escape in the
    student's code is shown where it is, so the manual grader reads the code
    that ran); outputs follow `output_text`; each cell's nbgrader grade id
    follows `line`; every other string anywhere in the notebook (metadata,
    keys included) loses its lone surrogates, so writing it as UTF-8 cannot
    fail. No length cap: bounding the notebook is the parser's job. Honest
    notebooks are unchanged.
    """
    for cell in nb.get("cells", []):
        cell["source"] = text(_joined(cell.get("source", "")), None)
        grading = cell.get("metadata", {}).get("nbgrader")
        if isinstance(grading, dict) and isinstance(grading.get("grade_id"), str):
            grading["grade_id"] = line(grading["grade_id"], None)
        for out in cell.get("outputs", []):
            _sanitize_output(out)
    _valid_everywhere(nb)


_SURROGATES = re.compile(f"[{_SURROGATE}]")


def _valid(s: str) -> str:
    return _SURROGATES.sub("\ufffd", s)


def _valid_everywhere(root) -> None:
    """Replace lone surrogates in every str of nested dicts and lists, in place.

    Iterative, so a deeply nested metadata value cannot exhaust the stack.
    """
    stack = [root]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            for key in list(node):
                value = node[key]
                if isinstance(key, str) and _SURROGATES.search(key):
                    del node[key]
                    key = _valid(key)
                    node[key] = value
                    value = node[key]  # a NotebookNode stores a copy of a dict
                if isinstance(value, str):
                    node[key] = _valid(value)
                elif isinstance(value, (dict, list)):
                    stack.append(value)
        elif isinstance(node, list):
            for i, value in enumerate(node):
                if isinstance(value, str):
                    node[i] = _valid(value)
                elif isinstance(value, (dict, list)):
                    stack.append(value)
