"""`course similarity SET`: copies of the course's code or a classmate's are listed.

A verbatim, a renamed and a reordered copy of the course's own implementation
of a question are reported; the model answers and the bug bank's answers are
not (the false-positive rate is printed). Short answers are not compared.
Hostile answers (HTML, huge, nested too deep, broken) are handled and bounded.
"""

import ast
import csv
import json
import shutil
import sys
from pathlib import Path

import pytest

from course_utils import cli
from course_utils.grading import copying
from course_utils.grading import notebooks as nbs
from course_utils.grading import similarity as S
from course_utils.grading.course import Course

ROOT = Path(__file__).resolve().parents[1]
COURSE = Course.load(ROOT)
sys.path.insert(0, str(ROOT / "tests"))
import test_exercise_bug_bank as bank

# question → the course function a student would paste in its place
COPIED = {
    ("ps1_gradients", "q1_answer"): "course_utils/saliency/gradient.py: gradient_textbook",
    ("ps2_integrated_gradients", "q2_answer"):
        "course_utils/saliency/integrated_gradients.py: integrated_gradients_textbook",
    ("ps3_smoothgrad_occlusion", "q3_answer"):
        "course_utils/saliency/occlusion.py: occlusion_textbook",
    ("ps5_shapley", "q1_answer"): "course_utils/shapley/game.py: shapley_textbook",
    ("ps6_photos", "q1_answer"): "course_utils/saliency/grad_cam.py: grad_cam_textbook",
}


def _model(set_id):
    (path,) = COURSE.source_notebooks(set_id)
    nb = nbs.read_notebook(path)
    return {
        nbs.grade_id(c): copying._source(c)
        for c in nb.cells
        if nbs.is_answer(c) and c.cell_type == "code"
    }


UNITS = {s: copying.course_units(COURSE, s) for s in COURSE.sets()}


def _references(set_id, *, closed_form=True, model=True):
    units = [u for u in UNITS[set_id] if closed_form or "closed_form" not in u.where]
    return {
        gid: [*units, *([S.Unit("course", f"model answer {gid}", src)] if model else [])]
        for gid, src in _model(set_id).items()
    }


def _stubs(set_id):
    return {gid: copying.stub_of(src) for gid, src in _model(set_id).items()}


class _Rename(ast.NodeTransformer):
    def __init__(self):
        self.names = {}

    def _new(self, old):
        return self.names.setdefault(old, f"renamed_{len(self.names)}")

    def visit_Name(self, node):
        if node.id not in ("torch", "math", "itertools", "len", "range", "float",
                           "int", "isinstance", "zip", "frozenset", "dict", "list"):
            node.id = self._new(node.id)
        return node

    def visit_arg(self, node):
        node.arg = self._new(node.arg)
        return node


class _Reorder(ast.NodeTransformer):
    """Every block's statements but its last in reverse order."""

    def generic_visit(self, node):
        super().generic_visit(node)
        body = getattr(node, "body", None)
        if isinstance(body, list) and len(body) > 2 and isinstance(body[0], ast.stmt):
            node.body = body[-2::-1] + body[-1:]
        return node


def _copies(set_id, gid):
    where = COPIED[(set_id, gid)]
    (unit,) = [u for u in UNITS[set_id] if u.where == where]
    stub_name = ast.parse(copying.stub_of(_model(set_id)[gid])).body[-1].name
    # pasted under the exercise's name, docstring and comments included
    verbatim = unit.source.replace(unit.where.split(": ")[1], stub_name, 1)
    renamed = ast.unparse(_Rename().visit(ast.parse(verbatim)))
    reordered = ast.unparse(_Reorder().visit(ast.parse(verbatim)))
    return where, {"verbatim": verbatim, "renamed": renamed, "reordered": reordered}


@pytest.mark.parametrize("set_id, gid", sorted(COPIED))
def test_verbatim_renamed_and_reordered_copies_of_the_reference_are_reported(set_id, gid):
    where, copies = _copies(set_id, gid)
    assert copies["renamed"] != copies["verbatim"] != copies["reordered"]
    answers = {name: {gid: src} for name, src in copies.items()}
    answers["honest"] = {gid: _model(set_id)[gid]}
    result = S.compare_answers(answers, _references(set_id), _stubs(set_id))
    ref = {p.a.who: p for p in result.pairs if p.kind == "reference"}
    for name in copies:
        assert name in ref, f"{name} copy of {where} not reported"
        assert ref[name].score >= S.THRESHOLD and ref[name].b.who == "course"
        print(f"{set_id} {gid} {name}: {ref[name].score:.2f} like {ref[name].b.where}")
    # the model answer is only like itself (a reference unit too)
    assert ref["honest"].b.where == f"model answer {gid}"
    # the three copies are one another's too
    mates = {(p.a.who, p.b.who) for p in result.pairs if p.kind == "classmate"}
    assert {("renamed", "reordered"), ("renamed", "verbatim")} <= mates


def _honest_class():
    """set → {student: {question: answer}}: the model answers and the bug bank."""
    out = {}
    for set_id in COURSE.sets():
        out[set_id] = {"model": dict(_model(set_id))}
    for (nb, test_id), bugs in bank.BANK.items():  # ps6 included
        set_id, gid = nb.split("/")[0], test_id.replace("_tests", "_answer")
        for name, src, _ in bugs:
            out[set_id][f"bank: {name}"] = {gid: src}
    return out


def test_model_answers_and_the_bug_bank_are_not_reported():
    """Against the course's code (functions of its modules and notebooks): none.

    `grading.closed_form` holds the graders' closed-form answers, written as the
    model answers were (ps4's spearman is the model answer): there the model
    answer is the reference, and a bank answer that is the model answer with one
    sign flipped is, rightly, close; both rates are printed."""
    for closed_form in (False, True):
        compared = flagged = 0
        highest, listed = 0.0, []
        for set_id, answers in _honest_class().items():
            refs = _references(set_id, closed_form=closed_form, model=False)
            result = S.compare_answers(answers, refs, _stubs(set_id))
            loose = S.compare_answers(answers, refs, _stubs(set_id), threshold=0.01)
            highest = max([highest, *(p.score for p in loose.pairs if p.kind == "reference")])
            compared += result.compared
            pairs = [p for p in result.pairs if p.kind == "reference"]
            flagged += len(pairs)
            listed += [f"{set_id} {p.a.who} {p.question} ~ {p.b.where} {p.score:.2f}"
                       for p in pairs]
        print(f"closed_form among the references: {closed_form}: {flagged} of "
              f"{compared} honest answers reported ({flagged / compared:.1%}); highest "
              f"similarity {highest:.2f}", listed)
        if not closed_form:
            assert compared >= 30 and flagged == 0, listed
        else:
            assert all("closed_form" in line for line in listed)


MINE = """
def gradient_saliency(model, x, target):
    inp = x.detach().clone()
    inp.requires_grad = True
    out = model(inp)
    idx = torch.as_tensor(target)
    if idx.dim() == 0:
        idx = idx.repeat(inp.shape[0])
    picked = out.gather(1, idx.view(-1, 1))
    picked.sum().backward()
    return inp.grad
"""


def test_an_honest_classmate_is_not_paired_but_a_renamed_copy_is():
    copy = ast.unparse(_Rename().visit(ast.parse(MINE)))
    answers = {"ann": {"q1_answer": MINE}, "bob": {"q1_answer": copy},
               "cid": {"q1_answer": _model("ps1_gradients")["q1_answer"]}}
    result = S.compare_answers(answers, _references("ps1_gradients"),
                               _stubs("ps1_gradients"))
    pairs = {(p.a.who, p.b.who): p.score for p in result.pairs}
    assert pairs[("ann", "bob")] == 1.0
    assert ("ann", "cid") not in pairs and ("bob", "cid") not in pairs
    assert not any(p.kind == "reference" and p.a.who in ("ann", "bob")
                   for p in result.pairs)


def test_short_answers_are_not_compared_and_say_why():
    sizes = {}
    for set_id in COURSE.sets():
        stubs = _stubs(set_id)
        for gid, src in _model(set_id).items():
            fp = S.fingerprint(src, S.fingerprint(stubs[gid]))
            sizes[f"{set_id} {gid}"] = fp.size
    print("grams per model answer:", sizes)
    assert sizes["ps1_gradients q2_answer"] < S.MIN_GRAMS  # one line
    assert sizes["ps1_gradients q3_answer"] < S.MIN_GRAMS  # a short answer
    assert min(sizes[f"{s} {g}"] for s, g in COPIED) >= 2 * S.MIN_GRAMS
    answers = {"a": {"q2_answer": _model("ps1_gradients")["q2_answer"]},
               "b": {"q2_answer": _model("ps1_gradients")["q2_answer"]}}
    result = S.compare_answers(answers, _references("ps1_gradients"),
                               _stubs("ps1_gradients"))
    assert result.pairs == [] and result.compared == 0
    assert "too short to tell apart" in result.skipped[("a", "q2_answer")]


@pytest.mark.parametrize("source, why", [
    ("x = " + "-" * 45_000 + "1", "nested too deeply"),
    ("x = 1" + " + 1" * 11_000, "nested too deeply"),
    ("x = " + "(" * 300 + "1" + ")" * 300, "does not parse"),
    ("def f(:\n  pass", "does not parse"),
    ("x = 1\n" * 20_000, "characters, over the"),
    ("x = [" + "1," * 24_000 + "]", "syntax nodes"),
    (b"x = 1", "not text"),
])
def test_a_hostile_answer_is_skipped_with_its_reason(source, why):
    fp = S.fingerprint(source)
    assert fp.skipped and why in fp.skipped and fp.size == 0


def test_bad_threshold_is_refused():
    with pytest.raises(ValueError, match="threshold"):
        S.compare_answers({}, {}, threshold=1.5)


def _submit(folder: Path, student: str, answers: dict[str, str]):
    """A submission of ps1: the released notebook with these answer cells."""
    nb = json.loads((ROOT / "exercises/ps1_gradients/gradients.ipynb").read_text())
    for cell in nb["cells"]:
        gid = cell.get("metadata", {}).get("nbgrader", {}).get("grade_id")
        if gid in answers:
            cell["source"] = answers[gid]
    target = folder / student / "ps1_gradients"
    target.mkdir(parents=True)
    (target / "gradients.ipynb").write_text(json.dumps(nb))


def test_the_command_writes_a_safe_page_and_csv(tmp_path, capsys):
    where, copies = _copies("ps1_gradients", "q1_answer")
    xss = "</pre><script>alert(1)</script><img src=x onerror=alert(2)>"
    hostile = copies["renamed"] + f"\n# {xss}\nx_ = '{xss}'\n"
    subs = tmp_path / "submitted"
    _submit(subs, "=HYPERLINK(1)", {"q1_answer": hostile})
    _submit(subs, "<b>eve<i>", {"q1_answer": copies["verbatim"]})
    _submit(subs, "huge", {"q1_answer": "x = 1\n" * 20_000})
    _submit(subs, "honest", {"q1_answer": MINE})
    out = tmp_path / "out"
    gradebook = COURSE.gradebook.read_bytes() if COURSE.gradebook.exists() else None
    code = cli.main(["similarity", "ps1_gradients", str(subs), "--out", str(out),
                     "--root", str(ROOT)])
    printed = capsys.readouterr().out
    assert code == 0 and "no score changed" in printed and "<script" not in printed
    page = (out / "similarity.html").read_text()
    assert "<script" not in page and "<img" not in page and "<b>eve" not in page
    assert "&lt;script&gt;" in page and "default-src 'none'" in page
    assert "http://" not in page and "https://" not in page
    assert "too short to tell apart" in page or "unreadable" in page
    rows = list(csv.DictReader((out / "similarity.csv").open()))
    assert not any(v.startswith(("=", "+", "-", "@")) for r in rows for v in r.values())
    ref = {r["student"]: r for r in rows if r["kind"] == "reference"}
    hyperlink, eve = "⟨U+003D⟩HYPERLINK⟨U+0028⟩1⟨U+0029⟩", "⟨U+003C⟩b⟨U+003E⟩eve⟨U+003C⟩i⟨U+003E⟩"
    assert set(ref) == {hyperlink, eve}
    assert {r["where"] for r in ref.values()} == {where}
    mates = {(r["student"], r["like"]) for r in rows if r["kind"] == "classmate"}
    assert mates == {(eve, hyperlink)}  # sorted by id
    if COURSE.gradebook.exists():
        assert COURSE.gradebook.read_bytes() == gradebook  # no score touched


def test_the_section_for_the_class_report_is_a_fragment(tmp_path):
    subs = tmp_path / "submitted"
    _, copies = _copies("ps1_gradients", "q1_answer")
    _submit(subs, "ann", {"q1_answer": copies["reordered"]})
    result = copying.check_set(COURSE, "ps1_gradients", subs)
    section = copying.html_section(result)
    assert "<html" not in section and "<script" not in section
    assert "ann" in section and "For a person to judge" in section
    assert [p.a.who for p in result.comparison.pairs] == ["ann"]
    shutil.rmtree(subs)
