"""`course collect SET ZIP`: Canvas and Moodle submission zips into submitted/.

Every zip is made here, laid out as each LMS lays its download out (Canvas's
``ContentZipper``, Moodle's ``mod/assign``), and then the hostile ones a
student could get through an LMS or a tampered download: path traversal,
links, bombs, lying headers, duplicate names, odd encodings, names that are
no student id, formulas and escapes in names.
"""

import csv
import struct
import warnings
import zipfile
from pathlib import Path

import nbformat
import pytest

from course_utils import cli
from course_utils.grading import collect as col
from course_utils.grading import lms
from course_utils.grading.course import Course
from course_utils.grading.discover import discover, read_submission

SET = "ps1_gradients"
T0 = (2024, 3, 1, 12, 0, 0)


def notebook(text: str) -> bytes:
    """A valid v4 notebook; the same bytes for the same text."""
    nb = nbformat.v4.new_notebook()
    nb.cells.append(nbformat.v4.new_code_cell(f"answer = {text!r}", id="answer"))
    return nbformat.writes(nb).encode()


@pytest.fixture
def course(tmp_path) -> Course:
    """A course root with two sets: ps1_gradients (one notebook), ps9 (two)."""
    root = tmp_path / "course"
    for set_id, names in ((SET, ["gradients"]), ("ps9", ["part_a", "part_b"])):
        for name in names:
            path = root / "solutions" / set_id / f"{name}.ipynb"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(notebook("solution"))
    return Course.load(root)


def make_zip(path: Path, entries) -> Path:
    """entries: (name, bytes) or (ZipInfo, bytes); duplicates allowed."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "Duplicate name"
        with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
            for name, data in entries:
                info = name if isinstance(name, zipfile.ZipInfo) else None
                if info is None:
                    info = zipfile.ZipInfo(name, date_time=T0)
                    info.compress_type = zipfile.ZIP_DEFLATED
                zf.writestr(info, data)
    return path


def patch_entry(path: Path, name: bytes, *, flags=0, size=None, new_name=None):
    """Edit an entry's flags, declared size or raw name bytes in both headers
    (what zipfile will not write: a tampered or foreign zip)."""
    data = bytearray(path.read_bytes())
    layouts = ((b"PK\x01\x02", 8, 24, 28, 46), (b"PK\x03\x04", 6, 22, 26, 30))
    for signature, flag_at, size_at, len_at, name_at in layouts:
        at = data.find(signature)
        while at >= 0:
            (length,) = struct.unpack_from("<H", data, at + len_at)
            if data[at + name_at : at + name_at + length] == name:
                (old,) = struct.unpack_from("<H", data, at + flag_at)
                struct.pack_into("<H", data, at + flag_at, old | flags)
                if size is not None:
                    struct.pack_into("<I", data, at + size_at, size)
                if new_name is not None:
                    assert len(new_name) == length
                    data[at + name_at : at + name_at + length] = new_name
            at = data.find(signature, at + 4)
    path.write_bytes(bytes(data))


def rows_by_entry(report) -> dict:
    return {r.entry: r for r in report.rows}


def read_csv(path: Path) -> list[dict]:
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


# ---------------------------------------------------------------- Canvas


def test_a_canvas_download_lands_in_submitted(course, tmp_path):
    zip_path = make_zip(
        tmp_path / "canvas.zip",
        [
            ("smithalice_101_9001_gradients.ipynb", notebook("alice")),
            ("jonesbob_late_102_9002_gradients.ipynb", notebook("bob first")),
            ("jonesbob_late_102_9010_gradients-1.ipynb", notebook("bob again")),
            ("leecarol_103_9003_homework (1).ipynb", notebook("carol")),
            ("kimdave_104_9004_gradients.pdf", b"%PDF-1.4"),
            ("stoneeve_105_9005_a.ipynb", notebook("eve a")),
            ("stoneeve_105_9006_b.ipynb", notebook("eve b")),
            ("smithalice_101_text.html", b"<p>hello</p>"),
        ],
    )
    report = col.collect(course, SET, zip_path)
    assert report.lms == "canvas"
    sub = course.submitted

    def placed(student):
        return (sub / student / SET / "gradients.ipynb").read_bytes()

    assert placed("101") == notebook("alice")
    assert placed("103") == notebook("carol")  # the one notebook, renamed
    assert placed("102") == notebook("bob again")  # the latest file id wins
    assert sorted(p.name for p in sub.iterdir()) == ["101", "102", "103"]
    rows = rows_by_entry(report)
    bob = rows["jonesbob_late_102_9010_gradients-1.ipynb"]
    assert (bob.outcome, bob.late, bob.name) == (col.PLACED, True, "jonesbob")
    assert "placed as gradients.ipynb" in bob.detail
    assert rows["jonesbob_late_102_9002_gradients.ipynb"].outcome == col.SUPERSEDED
    assert "not a notebook" in rows["kimdave_104_9004_gradients.pdf"].detail
    for eve in ("stoneeve_105_9005_a.ipynb", "stoneeve_105_9006_b.ipynb"):
        assert rows[eve].outcome == col.NOT_PLACED and "not one of" in rows[eve].detail
    assert "Canvas's flat naming" in rows["smithalice_101_text.html"].detail
    assert report.needs_attention()
    # the CSV has every file of the zip
    written = read_csv(report.csv_path)
    assert report.csv_path == course.root / f"collect-{SET}.csv"
    assert {r["entry"] for r in written} == set(rows)
    assert {r["outcome"] for r in written} >= {"placed", "superseded", "not placed"}


def test_a_second_run_is_unchanged_and_nothing_is_overwritten_without_force(
    course, tmp_path
):
    name = "smithalice_101_9001_gradients.ipynb"
    first = make_zip(tmp_path / "1.zip", [(name, notebook("v1"))])
    col.collect(course, SET, first)
    again = col.collect(course, SET, first)
    assert [r.outcome for r in again.rows] == [col.UNCHANGED]
    assert not again.needs_attention()

    second = make_zip(tmp_path / "2.zip", [(name, notebook("v2"))])
    target = course.submitted / "101" / SET / "gradients.ipynb"
    kept = col.collect(course, SET, second)
    assert [r.outcome for r in kept.rows] == [col.EXISTS]
    assert "--force" in kept.rows[0].detail
    assert target.read_bytes() == notebook("v1")

    forced = col.collect(course, SET, second, force=True)
    assert [r.outcome for r in forced.rows] == [col.REPLACED]
    assert target.read_bytes() == notebook("v2")
    backups = list((course.submitted / "101").glob(f"{SET}.bak-*"))
    assert len(backups) == 1
    assert (backups[0] / "gradients.ipynb").read_bytes() == notebook("v1")
    assert backups[0].name in forced.rows[0].detail


def test_a_failed_move_puts_the_old_folder_back(course, tmp_path, monkeypatch):
    name = "smithalice_101_9001_gradients.ipynb"
    col.collect(course, SET, make_zip(tmp_path / "1.zip", [(name, notebook("v1"))]))
    real_rename = col.os.rename

    def failing(src, dst):
        if Path(src).name.startswith(f".{SET}.collect-"):
            raise OSError(28, "No space left on device")
        return real_rename(src, dst)

    monkeypatch.setattr(col.os, "rename", failing)
    report = col.collect(
        course, SET, make_zip(tmp_path / "2.zip", [(name, notebook("v2"))]), force=True
    )
    assert [r.outcome for r in report.rows] == [col.NOT_PLACED]
    assert "No space left" in report.rows[0].detail
    folder = course.submitted / "101"
    assert (folder / SET / "gradients.ipynb").read_bytes() == notebook("v1")
    assert sorted(p.name for p in folder.iterdir()) == [SET]  # no stage, no backup


def test_a_roster_maps_lms_ids_and_names_and_reports_the_rest(course, tmp_path):
    roster_csv = tmp_path / "roster.csv"
    roster_csv.write_text(
        '\ufeffstudent_id,lms_id,name\nasmith,101,\nbjones,,"Bob Jones"\n',
        encoding="utf-8",
    )
    zip_path = make_zip(
        tmp_path / "canvas.zip",
        [
            ("smithalice_101_9001_gradients.ipynb", notebook("alice")),
            ("jonesbob_102_9002_gradients.ipynb", notebook("bob")),
            ("nobody_103_9003_gradients.ipynb", notebook("who")),
        ],
    )
    report = col.collect(course, SET, zip_path, roster=lms.load_roster(roster_csv))
    assert sorted(p.name for p in course.submitted.iterdir()) == ["asmith", "bjones"]
    rows = rows_by_entry(report)
    assert rows["jonesbob_102_9002_gradients.ipynb"].student == "bjones"
    assert "not in the roster" in rows["nobody_103_9003_gradients.ipynb"].detail


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("id,name\n1,x\n", "needs the columns student_id"),
        ("student_id,lms_id\n=cmd|calc,1\n", "line 2: student_id"),
        ("student_id,lms_id\na,1\nb,1\n", "'1' is given to 'a' and 'b'"),
        ("student_id,lms_id\n.hidden,1\n", "leading dot"),
    ],
)
def test_a_bad_roster_is_refused_naming_the_line(tmp_path, text, message):
    path = tmp_path / "roster.csv"
    path.write_text(text)
    with pytest.raises(ValueError, match="--roster") as err:
        lms.load_roster(path)
    assert message in str(err.value)


# ---------------------------------------------------------------- Moodle


CHECKPOINT = "Dan Kim_5004_assignsubmission_file/.ipynb_checkpoints/g-checkpoint.ipynb"


def test_a_moodle_download_lands_in_submitted(course, tmp_path):
    later = zipfile.ZipInfo(
        "Eve Stone_5005_assignsubmission_file_/gradients-1.ipynb",
        date_time=(2024, 3, 2, 9, 0, 0),
    )
    zip_path = make_zip(
        tmp_path / "moodle.zip",
        [
            ("Alice Smith_5001_assignsubmission_file_/", b""),
            ("Alice Smith_5001_assignsubmission_file_/gradients.ipynb", notebook("a")),
            (
                "Bob Jones_5002_assignsubmission_file_/gradients (1).ipynb",
                notebook("b"),
            ),
            ("Bob Jones_5002_assignsubmission_onlinetext_/onlinetext.html", b"<p/>"),
            ("Carol Lee_5003_assignsubmission_file_gradients-2.ipynb", notebook("c")),
            ("Dan Kim_5004_assignsubmission_file/gradients.ipynb", notebook("d")),
            ("Eve Stone_5005_assignsubmission_file_/gradients.ipynb", notebook("e1")),
            (later, notebook("e2")),
            (CHECKPOINT, notebook("old")),
            ("Sam Lee_5006_assignsubmission_file_/gradients.ipynb", notebook("s1")),
            ("Sam Lee_5007_assignsubmission_file_/gradients.ipynb", notebook("s2")),
            ("Tie Tan_5008_assignsubmission_file_/gradients.ipynb", notebook("t1")),
            ("Tie Tan_5008_assignsubmission_file_/Gradients.ipynb", notebook("t2")),
        ],
    )
    report = col.collect(course, SET, zip_path)
    assert report.lms == "moodle"
    sub = course.submitted
    expect = {
        "Alice Smith": "a",
        "Bob Jones": "b",
        "Carol Lee": "c",
        "Dan Kim": "d",
        "Eve Stone": "e2",  # the newer of two
    }
    assert sorted(p.name for p in sub.iterdir()) == sorted(expect)
    for student, text in expect.items():
        assert (sub / student / SET / "gradients.ipynb").read_bytes() == notebook(text)
    # what the grader finds there: every student, each with a readable notebook
    found, skipped = discover(sub, SET, None)
    assert sorted(found) == sorted(expect) and not skipped
    for entry in found.values():
        assert read_submission(entry, "gradients").cells[0].source.startswith("answer")
    rows = rows_by_entry(report)
    assert (
        "onlinetext"
        in rows["Bob Jones_5002_assignsubmission_onlinetext_/onlinetext.html"].detail
    )
    assert rows[CHECKPOINT].outcome == col.IGNORED
    sams = [r for r in report.rows if r.name == "Sam Lee"]
    assert [r.outcome for r in sams] == [col.NOT_PLACED] * 2
    assert "--roster" in sams[0].detail and "5006, 5007" in sams[0].detail
    ties = [r for r in report.rows if r.name == "Tie Tan"]
    assert [r.outcome for r in ties] == [col.NOT_PLACED] * 2
    assert "none of them the latest" in ties[0].detail


def test_a_set_with_two_notebooks_places_each_by_name(course, tmp_path):
    zip_path = make_zip(
        tmp_path / "moodle.zip",
        [
            ("Alice Smith_5001_assignsubmission_file_/part_a.ipynb", notebook("a")),
            ("Alice Smith_5001_assignsubmission_file_/Part_B (2).ipynb", notebook("b")),
            ("Bob Jones_5002_assignsubmission_file_/mine.ipynb", notebook("?")),
        ],
    )
    report = col.collect(course, "ps9", zip_path)
    folder = course.submitted / "Alice Smith" / "ps9"
    assert (folder / "part_a.ipynb").read_bytes() == notebook("a")
    assert (folder / "part_b.ipynb").read_bytes() == notebook("b")
    bob = rows_by_entry(report)["Bob Jones_5002_assignsubmission_file_/mine.ipynb"]
    assert bob.outcome == col.NOT_PLACED  # two notebooks expected: no guess
    assert not (course.submitted / "Bob Jones").exists()


def test_names_without_the_utf8_flag_are_read_as_utf8_or_cp437(course, tmp_path):
    real = "Jörg Müller_5001_assignsubmission_file_/gradients.ipynb".encode()
    cp437 = "Zoë Li_5002_assignsubmission_file_/gradients.ipynb".encode("cp437")
    zip_path = make_zip(
        tmp_path / "moodle.zip",
        [("J" * len(real), notebook("j")), ("Z" * len(cp437), notebook("z"))],
    )
    # as rubyzip and old Windows tools write them: raw bytes, no UTF-8 flag
    patch_entry(zip_path, b"J" * len(real), new_name=real)
    patch_entry(zip_path, b"Z" * len(cp437), new_name=cp437)
    col.collect(course, SET, zip_path)
    names = sorted(p.name for p in course.submitted.iterdir())
    assert names == ["Jörg Müller", "Zoë Li"]


def test_names_that_are_no_student_id_are_reported_safely(course, tmp_path, capsys):
    zip_path = make_zip(
        tmp_path / "moodle.zip",
        [
            ("=HYPERLINK(1+2) x_5001_assignsubmission_file_/gradients.ipynb", b"{}"),
            ("Ok Name_5002_assignsubmission_file_/gradients.ipynb", notebook("ok")),
            ("\x1b]0;pwned\x07Eve_5003_assignsubmission_file_/gradients.ipynb", b"{}"),
            ("\u202eevil_5004_assignsubmission_file_/gradients.ipynb", b"{}"),
        ],
    )
    code = cli.main(["collect", SET, str(zip_path), "--root", str(course.root)])
    out = capsys.readouterr().out
    assert code == 1  # files it could not place
    assert [p.name for p in course.submitted.iterdir()] == ["Ok Name"]
    assert "\x1b" not in out and "\x07" not in out and "\u202e" not in out
    assert "⟨U+001B⟩" in out and "not a usable student id" in out
    with open(course.root / f"collect-{SET}.csv", newline="", encoding="utf-8") as fh:
        cells = [c for row in csv.reader(fh) for c in row]
    assert "'=HYPERLINK(1+2) x" in cells
    assert not any(c.startswith(("=", "+", "-", "@")) for c in cells)
    assert not any("\x1b" in c or "\u202e" in c for c in cells)


def test_an_unreadable_notebook_is_placed_for_the_grader_to_report(course, tmp_path):
    zip_path = make_zip(
        tmp_path / "canvas.zip", [("a_101_1_gradients.ipynb", b"not json")]
    )
    report = col.collect(course, SET, zip_path)
    assert report.rows[0].outcome == col.PLACED
    assert "not a readable notebook" in report.rows[0].detail
    path = course.submitted / "101" / SET / "gradients.ipynb"
    assert path.read_bytes() == b"not json"
    assert oct(path.stat().st_mode & 0o777) == oct(0o600)


# ---------------------------------------------------------------- hostile zips


def test_traversal_absolute_drive_backslash_and_control_names_are_refused(
    course, tmp_path
):
    outside = tmp_path / "outside"
    outside.mkdir()
    bad = [
        "../a_101_1_gradients.ipynb",
        "x/../../a_102_1_gradients.ipynb",
        "/tmp/a_103_1_gradients.ipynb",
        "C:/a_104_1_gradients.ipynb",
        "a\\b_105_1_gradients.ipynb",
        "./a_106_1_gradients.ipynb",
    ]
    zip_path = make_zip(
        tmp_path / "canvas.zip",
        [(name, notebook("x")) for name in bad]
        + [("NULNUL_107_1_gradients.ipynb", notebook("n"))]
        + [("ok_108_1_gradients.ipynb", notebook("ok"))],
    )
    patch_entry(
        zip_path,
        b"NULNUL_107_1_gradients.ipynb",
        new_name=b"NUL\0UL_107_1_gradients.ipynb",
    )
    report = col.collect(course, SET, zip_path)
    rows = rows_by_entry(report)
    for name in bad:
        assert rows[name].outcome == col.NOT_PLACED
        assert rows[name].detail.startswith("refused:"), rows[name]
    assert rows["NUL"].detail == "refused: control characters in the name"
    assert [p.name for p in course.submitted.iterdir()] == ["108"]
    assert not list(outside.iterdir())
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "canvas.zip",
        "course",
        "outside",
    ]


@pytest.mark.parametrize(
    ("mode", "why"),
    [(0o120777, "a symbolic link"), (0o010644, "not a regular file")],
)
def test_links_and_special_files_are_refused(course, tmp_path, mode, why):
    info = zipfile.ZipInfo("a_101_1_gradients.ipynb", date_time=T0)
    info.external_attr = mode << 16
    info.create_system = 3
    zip_path = make_zip(tmp_path / "canvas.zip", [(info, b"/etc/passwd")])
    report = col.collect(course, SET, zip_path)
    assert report.rows[0].outcome == col.NOT_PLACED
    assert why in report.rows[0].detail
    assert not course.submitted.exists()


def test_encrypted_and_duplicated_entries_are_refused(course, tmp_path):
    zip_path = make_zip(
        tmp_path / "canvas.zip",
        [
            ("a_101_1_gradients.ipynb", notebook("one")),
            ("a_101_1_gradients.ipynb", notebook("two")),
            ("b_102_2_gradients.ipynb", notebook("locked")),
        ],
    )
    patch_entry(zip_path, b"b_102_2_gradients.ipynb", flags=0x1)
    report = col.collect(course, SET, zip_path)
    details = sorted(r.detail for r in report.rows)
    assert details == [
        "refused: encrypted",
        "refused: its name appears 2 times in the zip",
        "refused: its name appears 2 times in the zip",
    ]
    assert not course.submitted.exists()


def test_a_bomb_is_stopped_at_the_per_file_cap(course, tmp_path):
    zip_path = make_zip(
        tmp_path / "canvas.zip",
        [
            ("a_101_1_gradients.ipynb", b"\0" * 2_000_000),  # ~2 kB compressed
            ("b_102_2_gradients.ipynb", notebook("fine")),
        ],
    )
    assert zip_path.stat().st_size < 20_000
    report = col.collect(course, SET, zip_path, limits=col.Limits(file_bytes=100_000))
    rows = rows_by_entry(report)
    assert rows["a_101_1_gradients.ipynb"].outcome == col.NOT_PLACED
    assert "more than 100000" in rows["a_101_1_gradients.ipynb"].detail
    assert [p.name for p in course.submitted.iterdir()] == ["102"]


def test_a_header_that_lies_about_the_size_is_caught(course, tmp_path):
    zip_path = make_zip(
        tmp_path / "canvas.zip", [("a_101_1_gradients.ipynb", b"\0" * 500_000)]
    )
    # it claims 1 kB: the bytes actually decompressed decide
    patch_entry(zip_path, b"a_101_1_gradients.ipynb", size=1_000)
    report = col.collect(course, SET, zip_path, limits=col.Limits(file_bytes=100_000))
    assert report.rows[0].outcome == col.NOT_PLACED
    assert "could not be read" in report.rows[0].detail
    assert not (course.submitted / "101" / SET).exists()
    # and read_entry counts what it decompresses, whatever the header says
    honest = make_zip(tmp_path / "h.zip", [("x", b"\0" * 50_000)])
    with zipfile.ZipFile(honest) as zf, pytest.raises(ValueError, match="more than"):
        col.read_entry(zf, zf.infolist()[0], 10_000)


def test_the_total_is_bounded_before_anything_is_written(course, tmp_path):
    zip_path = make_zip(
        tmp_path / "canvas.zip",
        [(f"s_{100 + i}_{i}_gradients.ipynb", b"\0" * 60_000) for i in range(3)],
    )
    with pytest.raises(ValueError, match="more than 100000"):
        col.collect(course, SET, zip_path, limits=col.Limits(total_bytes=100_000))
    assert not course.submitted.exists()


def test_entry_count_and_directory_size_are_bounded_before_parsing(tmp_path):
    zip_path = make_zip(
        tmp_path / "many.zip", [(f"s_{i}_1_f.ipynb", b"{}") for i in range(6)]
    )
    with pytest.raises(ValueError, match="6 entries, more than 5"):
        col.open_zip(zip_path, col.Limits(entries=5))
    with pytest.raises(ValueError, match="directory is"):
        col.open_zip(zip_path, col.Limits(directory_bytes=100))
    col.open_zip(zip_path, col.Limits(entries=6)).close()


def test_a_name_flagged_utf8_that_is_not_is_refused_whole(tmp_path):
    zip_path = make_zip(tmp_path / "bad.zip", [("ab_1_2_gradients.ipynb", b"{}")])
    patch_entry(
        zip_path,
        b"ab_1_2_gradients.ipynb",
        flags=0x800,
        new_name=b"\xff\xfe_1_2_gradients.ipynb",
    )
    with pytest.raises(ValueError, match="bad.zip is not a readable zip file"):
        col.open_zip(zip_path, col.Limits())


def test_a_zip64_directory_is_counted_too(tmp_path, monkeypatch):
    monkeypatch.setattr(zipfile, "ZIP_FILECOUNT_LIMIT", 2)  # force a zip64 end record
    zip_path = make_zip(
        tmp_path / "z64.zip", [(f"s_{i}_1_f.ipynb", b"{}") for i in range(4)]
    )
    monkeypatch.undo()
    assert b"PK\x06\x06" in zip_path.read_bytes()
    with open(zip_path, "rb") as fh:
        assert col._directory_size(fh)[0] == 4
    with pytest.raises(ValueError, match="4 entries, more than 3"):
        col.open_zip(zip_path, col.Limits(entries=3))


def test_a_student_folder_that_is_a_link_is_not_written_through(course, tmp_path):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    course.submitted.mkdir()
    (course.submitted / "101").symlink_to(elsewhere)
    zip_path = make_zip(
        tmp_path / "c.zip", [("a_101_1_gradients.ipynb", notebook("x"))]
    )
    report = col.collect(course, SET, zip_path)
    assert report.rows[0].outcome == col.NOT_PLACED
    assert not list(elsewhere.iterdir())


@pytest.mark.parametrize(
    ("content", "args", "message"),
    [
        (b"not a zip at all", [], "not a zip file"),
        (None, ["--lms", "blackboard"], "invalid choice"),
        (None, ["--roster", "/nonexistent/roster.csv"], "--roster"),
    ],
)
def test_bad_arguments_fail_clearly(course, tmp_path, capsys, content, args, message):
    zip_path = tmp_path / "in.zip"
    if content is None:
        make_zip(zip_path, [("a_101_1_gradients.ipynb", notebook("x"))])
    else:
        zip_path.write_bytes(content)
    argv = ["collect", SET, str(zip_path), "--root", str(course.root), *args]
    try:
        code = cli.main(argv)
    except SystemExit as exit_:  # argparse's own refusal
        code = exit_.code
    assert code == 2
    assert message in capsys.readouterr().err


def test_an_unknown_set_and_a_zip_of_neither_lms_are_refused(course, tmp_path):
    zip_path = make_zip(tmp_path / "x.zip", [("homework.ipynb", notebook("x"))])
    with pytest.raises(ValueError, match="SET must be one of"):
        col.collect(course, "ps0", zip_path)
    with pytest.raises(ValueError, match="neither a Canvas nor a Moodle"):
        col.collect(course, SET, zip_path)


def test_a_clean_collect_exits_zero(course, tmp_path, capsys):
    zip_path = make_zip(
        tmp_path / "c.zip", [("a_101_1_gradients.ipynb", notebook("x"))]
    )
    argv = ["collect", SET, str(zip_path), "--root", str(course.root)]
    assert cli.main(argv) == 0
    out = capsys.readouterr().out
    assert "1 placed" in out and f"collect-{SET}.csv" in out


def test_canvas_and_moodle_names_parse_as_each_lms_writes_them():
    info = zipfile.ZipInfo("x", date_time=T0)
    who = lms.parse_canvas("smith_jones_ann_LATE_42_777_my_file-3.ipynb", info)
    assert (who.lms_id, who.name, who.late, who.order, who.file) == (
        "42",
        "smith_jones_ann",
        True,
        (777,),
        "my_file-3.ipynb",
    )
    assert isinstance(lms.parse_canvas("a_42_text.html", info), str)
    who = lms.parse_moodle("Ann  Lee_9_assignsubmission_file_/sub/nb.ipynb", info)
    assert (who.lms_id, who.name, who.file) == ("9", "Ann Lee", "sub/nb.ipynb")
    assert lms.name_keys("Smith, John") >= {"smithjohn"}
    assert lms.name_keys("John Smith") >= {"smithjohn"}
