"""Notebooks are stored clean: no outputs, no execution counts; numbered names."""

import re
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted(
    p for d in ("notebooks", "solutions", "exercises") for p in (ROOT / d).rglob("*.ipynb")
    if ".ipynb_checkpoints" not in p.parts
)
EXPECTED = ["00_setup_and_model", "01_gradient_saliency", "02_input_x_gradient",
            "03_integrated_gradients", "04_smoothgrad", "05_occlusion",
            "06_sanity_checks", "07_gradcam_guided_backprop",
            "08_shortcuts_and_faithfulness", "09_what_the_network_sees",
            "10_saliency_and_shap", "11_real_photos"]


def test_there_are_notebooks():
    assert any(p.parent.name == "notebooks" for p in NOTEBOOKS)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: str(p.relative_to(ROOT)))
def test_stored_without_outputs(path):
    nb = nbformat.read(path, as_version=4)
    for i, cell in enumerate(nb.cells):
        if cell.cell_type == "code":
            assert cell.get("outputs") == [], f"{path.name} cell {i} has outputs"
            assert cell.get("execution_count") is None, f"{path.name} cell {i} has a count"


def test_lecture_notebooks_are_numbered_in_order():
    names = sorted(p.stem for p in (ROOT / "notebooks").glob("*.ipynb"))
    assert all(re.fullmatch(r"\d\d_[a-z0-9_]+", n) for n in names), names
    assert names == EXPECTED
