"""The set-up files agree: environment.yml pins what requirements.lock pins."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _pins(text: str) -> dict[str, str]:
    return {m[1].lower(): m[2] for m in re.finditer(r"([A-Za-z0-9_.-]+)==([^\s#]+)", text)}


def test_environment_yml_matches_lock():
    lock = _pins((ROOT / "requirements.lock").read_text())
    env = _pins((ROOT / "environment.yml").read_text())
    assert env, "environment.yml pins nothing"
    mismatched = {k: (v, lock.get(k)) for k, v in env.items() if lock.get(k) != v}
    assert not mismatched, f"environment.yml vs requirements.lock: {mismatched}"


def test_lock_pins_torch_as_required():
    lock = _pins((ROOT / "requirements.lock").read_text())
    assert lock["torch"] == "2.14.1" and lock["torchvision"] == "0.29.1"


def test_ci_runs_the_readme_test_command():
    ci = (ROOT / ".ci" / "run").read_text()
    readme = (ROOT / "README.md").read_text()
    assert "make test" in ci and "make test" in readme and "make lab" in readme
