"""The import graph issue 18 asks for: no cli <-> grading circle, a light core."""

import subprocess
import sys

import pytest

from course_utils import cli


def _modules_after(statement: str) -> set[str]:
    code = f"import sys; {statement}; print('\\n'.join(sys.modules))"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    return set(out.stdout.split())


def test_grading_does_not_import_the_cli():
    assert "course_utils.cli" not in _modules_after("import course_utils.grading")


@pytest.mark.parametrize(
    "module", ["course_utils.saliency.core", "course_utils.models"]
)
def test_shared_layer_and_models_stay_light(module):
    loaded = _modules_after(f"import {module}")
    for heavy in ("captum", "altair", "ipywidgets", "pandas", "course_utils.sanity"):
        assert heavy not in loaded, f"{module} pulls in {heavy}"


@pytest.mark.parametrize("module", ["course_utils.models", "course_utils.shortcut"])
def test_models_load_without_the_saliency_methods(module):
    """The grading sandbox leaves course_utils.saliency out; the models a case
    passes to a student's function must still load there (eval mode comes from
    course_utils.modes)."""
    loaded = _modules_after(f"import {module}")
    assert "course_utils.saliency" not in loaded


def test_cli_offers_grading_subcommands(capsys):
    with pytest.raises(SystemExit) as exit_:
        cli.main(["--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    for name in ("train", "info", "release", "check", "collect", "grade", "export",
                 "report", "feedback"):
        assert name in out


def test_shared_layer_is_public():
    """The shared pieces live in public modules; the old private alias is gone."""
    import importlib.util

    from course_utils.saliency import baselines, core, validate

    assert importlib.util.find_spec("course_utils.saliency._common") is None
    assert callable(core.eval_mode) and callable(validate.target_tensor)
    assert callable(baselines.resolve_baseline)