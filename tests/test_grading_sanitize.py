"""The sanitiser turns student-controlled strings into valid, visible, bounded text."""

import csv
import io
import sqlite3
import unicodedata

import nbformat
import pytest

from course_utils.grading import sanitize as san

BIDI = "\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069\u200e\u200f\u061c"
OSC52 = "\x1b]52;c;aGk=\x07"  # write "hi" to the terminal's clipboard
TITLE = "\x1b]0;pwned\x07"  # set the window title
CSI = "\x1b[2J\x1b[1;1H"  # clear the screen, cursor home


def marks(s: str) -> str:
    return "".join(f"⟨U+{ord(c):04X}⟩" for c in s)


# ---- text ---------------------------------------------------------------------


def test_honest_text_is_unchanged():
    honest = "Σ ∂f/∂x — naïve café, 数学, emoji 👩‍💻\n\tindented\r\nCRLF"
    assert san.text(honest) == honest
    assert san.line("student-42 crashed: ZeroDivisionError") == (
        "student-42 crashed: ZeroDivisionError"
    )


def test_lone_surrogates_become_the_replacement_character():
    out = san.text("a\ud800b\udfffc")
    assert out == "a\ufffdb\ufffdc"
    out.encode("utf-8")  # valid UTF-8 now
    con = sqlite3.connect(":memory:")  # and SQLite stores it
    con.execute("create table t (x text)")
    con.execute("insert into t values (?)", (out,))
    with pytest.raises(UnicodeEncodeError):
        con.execute("insert into t values (?)", ("a\ud800",))


def test_invalid_utf8_bytes_are_replaced():
    assert san.text(b"ok \xff\xfe end") == "ok \ufffd\ufffd end"
    assert san.text(bytearray(b"\xc3\xa9")) == "é"


@pytest.mark.parametrize(
    "char",
    [chr(c) for c in range(0x20) if chr(c) not in "\t\n\r"]
    + ["\x7f"]
    + [chr(c) for c in range(0x80, 0xA0)],
)
def test_every_c0_and_c1_control_and_del_is_made_visible(char):
    assert san.text(f"a{char}b") == f"a{marks(char)}b"
    assert san.line(f"a{char}b") == f"a{marks(char)}b"


@pytest.mark.parametrize("char", list(BIDI))
def test_every_bidi_control_is_made_visible(char):
    assert san.text(f"x{char}y") == f"x{marks(char)}y"


def test_trojan_source_shows_the_code_that_runs():
    # CVE-2021-42574's early-return example: the RLO/LRI … PDI pair hides
    # "return" inside what an editor displays as a comment.
    code = 'if access_level != "user\u202e \u2066// Check if admin\u2069 \u2066":\n'
    out = san.text(code)
    assert not set(BIDI) & set(out)
    assert "⟨U+202E⟩" in out and out.count("⟨U+2066⟩") == 2


def test_every_invisible_format_character_but_zwj_and_zwnj_is_made_visible():
    visible = {"\u200c", "\u200d"}  # emoji sequences and several scripts need them
    for c in range(0x110000):
        char = chr(c)
        cat = unicodedata.category(char)
        if cat in ("Cf", "Zl", "Zp") and char not in visible:
            assert san.text(char) == marks(char), hex(c)
    assert san.text("a\u200db\u200cc") == "a\u200db\u200cc"


def test_terminal_escape_sequences_are_inert():
    for seq in (OSC52, TITLE, CSI, "\x9b31m", "\x1bP+q\x1b\\"):  # C1 CSI, DCS
        out = san.text(f"ZeroDivisionError: {seq}")
        assert "\x1b" not in out and "\x07" not in out and "\x9b" not in out
    assert san.line(OSC52) == "⟨U+001B⟩]52;c;aGk=⟨U+0007⟩"


def test_carriage_return_cannot_overwrite_a_line():
    # "\r" alone returns the cursor: "OK" would be printed over "FAIL"
    assert san.text("FAIL\rOK  ") == "FAIL⟨U+000D⟩OK  "
    assert san.text("a\r\nb") == "a\r\nb"  # CRLF is a line break
    assert san.line("a\r\nb") == "a⟨U+000D⟩⟨U+000A⟩b"
    assert san.text("\r\r\n") == "⟨U+000D⟩\r\n"


def test_line_is_one_line():
    out = san.line("one\ntwo\u2028three\u2029four\x0bfive\x0cend")
    assert len(out.splitlines()) == 1
    assert out.startswith("one⟨U+000A⟩two⟨U+2028⟩three")


def test_long_strings_are_capped_visibly():
    s = "x" * 150_000
    out = san.text(s, limit=100)
    assert len(out) <= 100
    kept = out.index("…")
    assert out.endswith(f"… [{150_000 - kept} more characters]")
    assert san.text("y" * 100, limit=100) == "y" * 100  # exactly at the limit
    assert len(san.line("z" * 10**7)) <= san.LINE_LIMIT
    assert san.text("w" * 10**6, limit=None) == "w" * 10**6


def test_the_cap_counts_marks_and_never_splits_one():
    out = san.text("\x1b" * 1000, limit=100)
    assert len(out) <= 100
    head, tail = out.split("…")
    n = len(head) // len(marks("\x1b"))
    assert n > 0 and head == marks("\x1b") * n
    assert tail == f" [{1000 - n} more characters]"


def test_limit_below_the_suffix_is_refused():
    with pytest.raises(ValueError, match="at least"):
        san.text("abc", limit=5)


def test_non_str_input():
    assert san.text(12) == "12"
    assert san.text(None) == "None"
    assert san.line(ValueError("bad\nthing")) == "bad⟨U+000A⟩thing"

    class Hostile:
        def __str__(self):
            raise RuntimeError("no")

    assert san.text(Hostile()) == "<unprintable Hostile>"

    class Sneaky:
        def __str__(self):
            return "\x1b]0;t\x07\ud800"

    assert san.text(Sneaky()) == "⟨U+001B⟩]0;t⟨U+0007⟩\ufffd"


HOSTILE = [
    "a\ud800b",
    OSC52,
    TITLE + CSI,
    "FAIL\rOK",
    "x\u202ey",
    '=HYPERLINK("http://x","click")',
    "<img src=x onerror=alert(1)>",
    "line\nbreak\r\n",
    "⟨U+202E⟩ literal mark",
    "x" * 5000,
    "\x1b" * 500,
]


@pytest.mark.parametrize("s", HOSTILE)
def test_every_function_is_idempotent(s):
    for fn in (san.text, san.line, san.student_id, san.output_text, san.csv_field):
        once = fn(s)
        assert fn(once) == once, fn.__name__
    once = san.text(s, limit=64)
    assert san.text(once, limit=64) == once


# ---- csv_field ------------------------------------------------------------------


@pytest.mark.parametrize("prefix", ["=", "+", "-", "@", "\t", "\r"])
def test_owasp_formula_prefixes_are_neutralised(prefix):
    field = f'{prefix}HYPERLINK("http://x")'
    assert san.csv_field(field) == "'" + field


def test_other_fields_are_left_alone_as_owasp_says():
    for field in ["alice", " =1+1", "'=1", "", "1-2", "a=b", "é=1"]:
        assert san.csv_field(field) == field
    assert san.csv_field(-1) == "'-1"  # so grader numbers must not pass here


def test_csv_fields_round_trip_through_the_csv_module():
    fields = [san.csv_field(san.line(s)) for s in HOSTILE + ['a,"b",c']]
    buf = io.StringIO()
    csv.writer(buf).writerow(fields)
    assert next(csv.reader(io.StringIO(buf.getvalue()))) == fields
    assert buf.getvalue().count("\n") == 1  # one record, one line
    for field in fields:
        assert not field.startswith(san.FORMULA_PREFIXES)


# ---- html -----------------------------------------------------------------------


def test_html_escapes_markup_and_quotes_after_text():
    out = san.html('<img src=x onerror="alert(1)">\u202e\'')
    assert out == "&lt;img src=x onerror=&quot;alert(1)&quot;&gt;⟨U+202E⟩&#x27;"
    assert san.html("a & b") == "a &amp; b"


# ---- student_id -----------------------------------------------------------------


def test_honest_ids_are_their_own():
    for sid in [
        "alice",
        "s1234567",
        "jean-luc.picard",
        "a_b",
        "x@uni.edu",
        "Zoë",
        "王小明",
        "Jane Doe",
        "e\u0301",
    ]:
        assert san.student_id(sid) == sid
        assert san.is_student_id(sid)


def test_hostile_ids_keep_no_dangerous_character():
    for sid in [
        "<img src=x onerror=alert(1)>",
        '=HYPERLINK("http://x")',
        'x"; alert(1); //',
        "a'b",
        OSC52,
        "ev\u202eil",
        "caf\udce9",  # a folder name that is not UTF-8
        "a\nb",
        "a&amp;b",
    ]:
        out = san.student_id(sid)
        assert not set(out) & set("<>\"'&=();\x1b\x07\n") and "\u202e" not in out
        assert not san.is_student_id(sid)
        out.encode("utf-8")
    assert san.student_id("caf\udce9") == "caf⟨U+DCE9⟩"
    assert san.student_id("<b>") == "⟨U+003C⟩b⟨U+003E⟩"


def test_a_literal_mark_in_an_id_is_not_honest():
    assert san.student_id("⟨U+003C⟩") == "⟨U+003C⟩"
    assert not san.is_student_id("⟨U+003C⟩")
    assert san.student_id("⟨x⟩") == "⟨U+27E8⟩x⟨U+27E9⟩"


def test_long_ids_are_capped_with_id_characters():
    out = san.student_id("<" * 1000, limit=100)
    assert len(out) <= 100 and out.endswith(" more characters")
    assert san.student_id(out) == out
    folder = "é" * 127  # the longest UTF-8 folder name: never cut
    assert san.student_id(folder) == folder
    assert len(san.student_id("\x01" * 255)) < san.ID_LIMIT


# ---- notebooks for formgrader ---------------------------------------------------


def hostile_notebook():
    v4 = nbformat.v4
    code = v4.new_code_cell('s = "user\u202e \u2066# admin\u2069 \u2066"\rimport os')
    code.metadata["nbgrader"] = {"grade_id": "q1\u202e", "solution": True}
    code.outputs = [
        v4.new_output("stream", name="stdout", text="\x1b[31mred\x1b[0m" + OSC52),
        v4.new_output(
            "error",
            ename="Boom" + TITLE,
            evalue="bad\ud800",
            traceback=["\x1b[0;31mTraceback\x1b[0m", "x\u202ey"],
        ),
        v4.new_output(
            "execute_result",
            data={"text/plain": ["a\u2066", "b"], "image/png": "iVBORw0KGgo="},
            execution_count=1,
        ),
    ]
    md = v4.new_markdown_cell("answer \u202e reversed \ud800")
    md.metadata["tags"] = ["t\udc80"]
    md.metadata["deep"] = {"k\ud800": [{"v": "\udc00"}]}
    return v4.new_notebook(
        cells=[code, md], metadata={"x\udfff": "y\ud801", "k\ud800": {"v": "\udc01"}}
    )


def test_notebook_shows_every_hidden_character_to_the_grader():
    nb = hostile_notebook()
    san.notebook(nb)
    code, md = nb.cells
    assert code.source == (
        's = "user⟨U+202E⟩ ⟨U+2066⟩# admin⟨U+2069⟩ ⟨U+2066⟩"⟨U+000D⟩import os'
    )
    assert code.metadata.nbgrader.grade_id == "q1⟨U+202E⟩"
    stream, error, result = code.outputs
    # nbconvert renders the colours; the clipboard write is shown, not obeyed
    assert stream.text == "\x1b[31mred\x1b[0m⟨U+001B⟩]52;c;aGk=⟨U+0007⟩"
    assert error.ename == "Boom⟨U+001B⟩]0;pwned⟨U+0007⟩"
    assert error.evalue == "bad\ufffd"
    assert error.traceback == ["\x1b[0;31mTraceback\x1b[0m", "x⟨U+202E⟩y"]
    assert result.data["text/plain"] == "a⟨U+2066⟩b"
    assert result.data["image/png"] == "iVBORw0KGgo="
    assert md.source == "answer ⟨U+202E⟩ reversed \ufffd"
    assert md.metadata.tags == ["t\ufffd"] and nb.metadata == {
        "x\ufffd": "y\ufffd",
        "k\ufffd": {"v": "\ufffd"},
    }
    assert md.metadata.deep == {"k\ufffd": [{"v": "\ufffd"}]}
    nbformat.validate(nb)
    nbformat.writes(nb).encode("utf-8")  # writing autograded/ cannot fail now
    once = nbformat.writes(nb)
    san.notebook(nb)
    assert nbformat.writes(nb) == once


def test_notebook_walks_deep_metadata_without_recursion():
    deep = nested = {}
    for _ in range(100_000):  # far deeper than Python's recursion limit
        nested["k\ud800"] = nested = {}
    nb = {"cells": [], "metadata": deep}
    san.notebook(nb)
    node, depth = nb["metadata"], 0
    while node:
        (key,) = node
        assert key == "k\ufffd"
        node, depth = node[key], depth + 1
    assert depth == 100_000


def test_an_honest_notebook_is_unchanged():
    v4 = nbformat.v4
    code = v4.new_code_cell("for i in tqdm(range(3)):\n    print(f'{i}\\n')")
    code.outputs = [
        v4.new_output("stream", name="stderr", text="10%|█ \r100%|██████████|\n"),
        v4.new_output(
            "error",
            ename="NameError",
            evalue="name 'x' is not defined",
            traceback=["\x1b[0;31m---------\x1b[0m", "\x1b[0;31mNameError\x1b[0m: x"],
        ),
    ]
    nb = v4.new_notebook(cells=[code, v4.new_markdown_cell("Σ *naïve* 👩‍💻\n\n$x$")])
    before = nbformat.writes(nb)
    san.notebook(nb)
    assert nbformat.writes(nb) == before
