"""The checks exercise notebooks call, and the verdict computed from their records.

Runs in-process (no kernels): the three modes of `checks.check`, the tamper
evidence, and `verify` on records written by a "student" and a "reference".
"""

import numpy as np
import pytest
import torch

from course_utils.grading import checks, compare, records
from course_utils.grading.verify import (
    CaseStatus,
    RecordError,
    load_record,
    reference_checks,
    verify,
)

CASES = [
    checks.Case("linear", digits=(0, 1), target=3),
    checks.Case("small_cnn:random", digits=(2,), target="label", seed=5),
]


def gradient(model, x, target):
    x = x.detach().clone().requires_grad_(True)
    rows = torch.arange(len(x))
    target = torch.as_tensor(target).expand(len(x))
    (grad,) = torch.autograd.grad(model(x)[rows, target].sum(), x)
    return grad


def wrong(model, x, target):
    return x.clone()


def cheat(model, x, target):
    from course_utils import saliency as sal

    return sal.gradient(model, x, target)


@pytest.fixture
def mode(monkeypatch, tmp_path):
    """Switch checks into a grading mode writing records under tmp_path/NAME."""

    # In a grading kernel `checks` is imported by the setup cell, so its
    # baseline of watched functions is taken then. Here the test process
    # imported it long ago and other tests have imported torch._dynamo since;
    # take the baseline now, as a fresh kernel would.
    monkeypatch.setattr(checks, "_PRISTINE", checks._snapshot())

    def set_mode(name):
        folder = tmp_path / (name or "plain")
        folder.mkdir(exist_ok=True)
        monkeypatch.setenv(records.MODE_ENV, name)
        monkeypatch.setenv(records.RECORD_DIR_ENV, str(folder))
        return folder

    return set_mode


# ------------------------------------------------------------ pure helpers


def test_compare_arrays_tolerates_round_off_but_not_errors():
    ref = np.linspace(-1, 1, 100).reshape(1, 1, 10, 10)
    assert compare.compare_arrays(ref * (1 + 1e-5), ref)[0]
    ok, why = compare.compare_arrays(ref * 1.1, ref)
    assert not ok and "relative error" in why
    ok, why = compare.compare_arrays(ref[0], ref)
    assert not ok and "shape" in why
    bad = ref.copy()
    bad[0, 0, 0, 0] = np.nan
    assert not compare.compare_arrays(bad, ref)[0]


def test_compare_modes():
    a = np.array([0.0, 2.0, 0.0])
    assert compare.compare_arrays(a * 5, a, "nonzero_pattern")[0]
    ok, _ = compare.compare_arrays(np.array([1.0, 2.0, 0.0]), a, "nonzero_pattern")
    assert not ok
    assert compare.compare_arrays(a, a.copy(), "exact")[0]
    with pytest.raises(ValueError, match="compare must be one of"):
        compare.compare_arrays(a, a, "close-ish")


@pytest.mark.parametrize(
    "value,kind,expected",
    [
        ("true", "bool", "TRUE"),
        (False, "bool", "FALSE"),
        (" FALSE ", "bool", "FALSE"),
        ("(B)", "choice", "b"),
        ("c", "choice", "c"),
        (170, "number", 170.0),
        (np.int64(4), "number", 4.0),
        (torch.tensor(2.5), "number", 2.5),
    ],
)
def test_short_answers_are_normalised(value, kind, expected):
    assert compare.normalize_value(value, kind) == expected


@pytest.mark.parametrize(
    "value,kind",
    [
        ("yes", "bool"),
        (True, "number"),
        ("12", "number"),
        (3, "choice"),
        (float("nan"), "number"),
    ],
)
def test_short_answers_of_the_wrong_form_are_rejected(value, kind):
    with pytest.raises((TypeError, ValueError)):
        compare.normalize_value(value, kind)
    with pytest.raises(AssertionError, match="wrong form"):
        checks.validate(value, kind)


def test_validate_checks_choices():
    with pytest.raises(AssertionError, match="one of"):
        checks.validate("e", "choice", choices="abcd")
    checks.validate("b", "choice", choices="abcd")


def test_linear_case_gradient_is_the_weight_row():
    built = CASES[0].build()
    model, x, target = built.args
    grad = gradient(model, x, target)
    assert torch.allclose(grad.flatten(1), model[1].weight[3].expand(2, -1))


# ------------------------------------------------------------ plain mode


def test_plain_mode_passes_a_correct_function(mode, capsys):
    mode("")
    checks.check("gradient", gradient, CASES, reference=checks.saliency("gradient"))
    assert "✓ gradient: 2 case(s) passed" in capsys.readouterr().out


def test_plain_mode_explains_a_failure_with_the_hint(mode):
    mode("")
    with pytest.raises(AssertionError) as info:
        checks.check(
            "gradient",
            wrong,
            CASES,
            reference=checks.saliency("gradient"),
            hint="Differentiate the target logit.",
        )
    text = str(info.value)
    assert "2 of 2 case(s) failed" in text and "linear, digits [0, 1]" in text
    assert "Hint: Differentiate the target logit." in text


def test_plain_mode_refuses_a_call_into_the_reference(mode):
    mode("")
    with pytest.raises(AssertionError, match="course_utils.saliency.gradient"):
        checks.check(
            "gradient", cheat, CASES[:1], reference=checks.saliency("gradient")
        )


def test_arguments_are_validated(mode):
    mode("")
    with pytest.raises(ValueError, match="name must be"):
        checks.check("bad name!", gradient, CASES, reference=None)
    with pytest.raises(ValueError, match="cases must hold"):
        checks.check("g", gradient, [], reference=None)
    with pytest.raises(ValueError, match="model must be"):
        checks.build_model("small_cnn:pretrained")


# --------------------------------------------- record, reference, verdict


def _reference(mode):
    folder = mode("reference")
    checks.check("gradient", gradient, CASES, reference=checks.saliency("gradient"))
    checks.check_value("passes", 5, "number")
    assert (folder / "gradient.cases.pt").is_file()  # the inputs, for the harness
    return folder, reference_checks(
        {"tests": ["gradient", "passes"]},
        {n: folder / f"{n}.npz" for n in ("gradient", "passes")},
    )


def _harness(tmp_path, ref_folder, namespace, names=("gradient", "passes")):
    """Run the grader's harness in-process, as the sandbox would after the cells."""
    import json
    import shutil

    from course_utils.grading import harness

    folder = tmp_path / "h-test"
    (folder / "records").mkdir(parents=True)
    shutil.copy(ref_folder / "gradient.cases.pt", folder / "gradient.cases.pt")
    plan = {
        "gradient": {
            "kind": "arrays",
            "expr": "gradient_saliency",
            "cases": "gradient.cases.pt",
            "transform": None,
            "labels": [c.describe() for c in CASES],
        },
        "passes": {"kind": "value", "expr": "n_passes", "value_kind": "number"},
    }
    (folder / "plan.json").write_text(json.dumps(plan))
    for name in names:
        harness.run(str(folder), name, namespace)
    return {
        n: folder / "records" / f"{n}.npz"
        for n in names
        if (folder / "records" / f"{n}.npz").exists()
    }


def test_reference_mode_rejects_a_wrong_solution(mode):
    mode("reference")
    with pytest.raises(AssertionError, match="disagrees with the reference"):
        checks.check("gradient", wrong, CASES, reference=checks.saliency("gradient"))


def test_record_mode_judges_and_writes_nothing_in_the_kernel(mode, capsys):
    folder = mode("record")
    checks.check("gradient", cheat, CASES, reference=checks.saliency("gradient"))
    checks.check_value("passes", 4, "number")
    assert list(folder.iterdir()) == []
    assert "checked by the grader after your last cell" in capsys.readouterr().out


def test_harness_records_are_judged_outside_the_kernel(mode, tmp_path):
    ref, reference = _reference(mode)
    files = _harness(tmp_path, ref, {"gradient_saliency": gradient, "n_passes": 5})
    verdict = verify(reference, files, {"tests": 3.0})
    assert verdict.notes == []
    cell = verdict.cells["tests"]
    assert cell.passed == 3 and cell.complete and verdict.score("tests") == 3.0


def test_wrong_and_missing_answers_score_partially(mode, tmp_path):
    ref, reference = _reference(mode)
    files = _harness(tmp_path, ref, {"gradient_saliency": wrong}, names=["gradient"])
    verdict = verify(reference, files, {"tests": 3.0})
    cell = verdict.cells["tests"]
    assert verdict.score("tests") == 0.0 and not cell.complete
    statuses = [c.status for c in cell.cases]
    assert statuses == [CaseStatus.FAILED, CaseStatus.FAILED, CaseStatus.MISSING]
    assert "hidden tests: 0/3 cases pass" in cell.lines


def test_a_missing_function_or_answer_is_a_result(mode, tmp_path):
    ref, reference = _reference(mode)
    files = _harness(tmp_path, ref, {"n_passes": "five"})
    verdict = verify(reference, files, {"tests": 3.0})
    statuses = [c.status for c in verdict.cells["tests"].cases]
    assert statuses == [CaseStatus.RAISED] * 3


def test_only_hidden_checks_carry_points(mode, tmp_path):
    ref, _ = _reference(mode)
    reference = reference_checks(
        {"tests": ["gradient", "passes"]},
        {n: ref / f"{n}.npz" for n in ("gradient", "passes")},
        hidden={"gradient": False, "passes": True},
    )
    files = _harness(tmp_path, ref, {"gradient_saliency": gradient, "n_passes": 4})
    cell = verify(reference, files, {"tests": 3.0}).cells["tests"]
    assert cell.score == 0.0  # the visible gradient passes, but scores nothing
    assert any(line.startswith("✓ visible gradient") for line in cell.lines)


def test_a_record_is_never_trusted_to_be_what_it_claims(mode, tmp_path):
    _, reference = _reference(mode)
    forged = tmp_path / "forged.npz"
    np.savez(forged, case_0=np.array([object()], dtype=object))
    with pytest.raises(RecordError):
        load_record(forged, "gradient")
    nested = tmp_path / "nested.npz"
    deep = ("[" * 100_000 + "]" * 100_000).encode()
    np.savez(nested, __meta__=np.frombuffer(deep, dtype=np.uint8))
    verdict = verify(reference, {"gradient": forged, "passes": nested}, {"tests": 3.0})
    assert verdict.score("tests") == 0.0
    assert {c.status for c in verdict.cells["tests"].cases} == {CaseStatus.MALFORMED}
    assert len(verdict.notes) == 2 and "malformed record" in verdict.notes[0]


def test_monkeypatching_torch_in_the_kernel_changes_nothing(
    mode, monkeypatch, tmp_path
):
    ref, reference = _reference(mode)
    monkeypatch.setattr(torch, "allclose", lambda *a, **k: True)
    monkeypatch.setattr(np.testing, "assert_allclose", lambda *a, **k: None)
    files = _harness(tmp_path, ref, {"gradient_saliency": wrong, "n_passes": 4})
    assert verify(reference, files, {"tests": 3.0}).score("tests") == 0.0


def test_a_visible_failure_shows_its_message_not_a_traceback(mode):
    mode("")
    with pytest.raises(checks.CheckFailed) as info:
        checks.check("gradient", wrong, CASES, reference=checks.saliency("gradient"))
    (text,) = info.value._render_traceback_()
    assert text.startswith("CheckFailed: ✗ gradient: 2 of 2 case(s) failed")
    assert "checks.py" not in text


def test_replacing_the_helpers_is_recorded(mode, monkeypatch):
    mode("record")
    monkeypatch.setattr(checks, "compare_arrays", lambda *a, **k: (True, ""))
    assert f"{checks.__name__}.compare_arrays" in checks.tampering()


def test_parameter_changes_sees_what_a_randomization_touched(mode):
    import copy

    def randomize(model, seed):
        clone = copy.deepcopy(model)
        torch.manual_seed(seed)
        clone.fc2.reset_parameters()
        return clone

    case = checks.Inputs(lambda g: ((checks.build_model("small_cnn:random", 1), 0), {}))
    built = case.build()
    changes = checks.parameter_changes(randomize(*built.args), built)
    n = len(dict(built.model.named_parameters()))
    assert changes.shape == (2 * n,)
    assert (changes[: n - 2] == 0).all() and (changes[n - 2 : n] > 0).all()
    assert (changes[n:] == 0).all()  # the model passed in is untouched


def test_a_withheld_reference_is_said_not_passed(mode):
    """In a hand-out before the deadline the reference module is absent: the
    visible check runs the student's function and says it could not compare
    (never ✓, never a wrong-answer ✗)."""
    mode("")

    def absent(*args, **kwargs):
        raise ModuleNotFoundError("No module named 'course_utils.saliency'",
                                  name="course_utils.saliency")

    with pytest.raises(checks.ReferenceWithheld, match="ships after the deadline"):
        checks.check("gradient", gradient, CASES, reference=absent)
    # a student's own error is still reported as a failure
    with pytest.raises(checks.CheckFailed, match="raised") as info:
        checks.check("gradient", lambda *a: 1 / 0, CASES, reference=absent)
    assert not isinstance(info.value, checks.ReferenceWithheld)

    def broken(*args, **kwargs):  # a missing module that is not withheld: a bug
        raise ModuleNotFoundError("No module named 'nope'", name="nope")

    with pytest.raises(ModuleNotFoundError):
        checks.check("gradient", gradient, CASES, reference=broken)


def _forge(path, meta, **arrays):
    import json

    raw = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
    np.savez(path, __meta__=raw, **arrays)
    return path


@pytest.mark.parametrize(
    "change,why",
    [
        ({"version": True}, "unknown format"),  # True == 1, but not an int
        ({"name": "other"}, "does not describe"),
        ({"extra": 1}, "has keys"),
        ({"cases": [{"label": "a"}]}, "case 0"),
        ({"cases": [{"label": "x" * 20_000, "error": None}]}, "label"),
        ({"cases": [{"label": "a", "error": None}] * 65}, "at most 64"),
        ({"compare": {"mode": "loose", "rtol": 0.1, "atol": 0}}, "compare mode"),
        ({"compare": {"mode": "exact", "rtol": -1, "atol": 0}}, "rtol"),
        ({"transform": "os.system"}, "transform"),
        ({"hint": ["a list"]}, "hint"),
    ],
)
def test_a_record_with_metadata_of_the_wrong_form_is_refused(tmp_path, change, why):
    meta = {
        "version": 1,
        "name": "gradient",
        "kind": "arrays",
        "cases": [{"label": "a", "error": None}],
    }
    path = _forge(tmp_path / "r.npz", {**meta, **change})
    with pytest.raises(RecordError, match=why):
        load_record(path, "gradient")
    with pytest.raises(ValueError, match="not a valid record"):
        records.write_record("gradient", {**meta, **change}, {}, tmp_path)


def test_a_record_is_read_once_within_its_size_cap(tmp_path):
    meta = {"version": 1, "name": "q", "kind": "value", "value": 2.0, "error": None}
    records.write_record("q", meta, {}, tmp_path)
    path = tmp_path / "q.npz"
    assert load_record(path, "q").meta == meta
    with pytest.raises(RecordError, match="larger than"):
        load_record(path, "q", max_bytes=path.stat().st_size - 1)
    (tmp_path / "link.npz").symlink_to(path)
    with pytest.raises(RecordError, match="cannot be read"):
        load_record(tmp_path / "link.npz", "q")
    forged = _forge(tmp_path / "f.npz", meta, case_01=np.zeros(2))
    with pytest.raises(RecordError, match="unexpected entry"):
        load_record(forged, "q")  # case_01 could shadow case_1


def test_replacing_a_shared_comparison_is_recorded_too(monkeypatch):
    monkeypatch.setattr(compare, "compare_arrays", lambda *a, **k: (True, ""))
    assert "course_utils.grading.compare.compare_arrays" in checks.tampering()
