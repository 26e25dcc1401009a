"""The set-up files agree on every platform: environment.yml pins what requirements.lock
pins, the lock was solved from this pyproject.toml, and the Python versions match."""

import re
import sys
import tomllib
from pathlib import Path

import pytest
from packaging.specifiers import SpecifierSet

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))
import bootstrap
import check_platforms as cp

LOCK = cp.read_lock((ROOT / "requirements.lock").read_text())


def _env_pins() -> dict[str, str]:
    text = (ROOT / "environment.yml").read_text()
    return {m[1].lower(): m[2]
            for m in re.finditer(r"- ([A-Za-z0-9_.-]+)==([^\s#]+)", text)}


@pytest.mark.parametrize("python", cp.PYTHONS, ids=lambda p: f"py{p[0]}.{p[1]}")
@pytest.mark.parametrize("platform", cp.PLATFORMS, ids=lambda p: p.name)
def test_environment_yml_matches_lock_on_every_platform(platform, python):
    env = _env_pins()
    assert len(env) >= 10, "environment.yml pins almost nothing"
    for full, pairs in cp.applicable(LOCK, platform, python).items():
        lock = {r.name.lower(): cp.pin_version(r) for r, _ in pairs}
        mismatched = {k: (v, lock.get(k)) for k, v in env.items() if lock.get(k) != v}
        assert not mismatched, (
            f"environment.yml vs requirements.lock on {platform.name}, Python {full}: "
            f"{mismatched}")


def test_lock_pins_torch_as_required_and_cuda_only_on_linux():
    for platform in cp.PLATFORMS:
        for python in cp.PYTHONS:
            for pairs in cp.applicable(LOCK, platform, python).values():
                pins = {r.name.lower(): cp.pin_version(r) for r, _ in pairs}
                assert pins["torch"] == "2.14.1" and pins["torchvision"] == "0.29.1"
                cuda = sorted(n for n in pins if n.startswith(("nvidia-", "cuda-"))
                              or n == "triton")
                if platform.markers["sys_platform"] == "linux":
                    assert "nvidia-cublas" in cuda and "triton" in cuda
                else:
                    assert not cuda, f"{platform.name} would get {cuda}"


def test_lock_was_solved_from_this_pyproject():
    assert bootstrap.lock_problem() is None, bootstrap.lock_problem()


def test_python_versions_agree():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    accepted = SpecifierSet(project["requires-python"])
    for major, minor in bootstrap.SUPPORTED:
        assert f"{major}.{minor}.0" in accepted
    assert f"3.{bootstrap.SUPPORTED[-1][1] + 1}.0" not in accepted
    assert f"3.{bootstrap.SUPPORTED[0][1] - 1}.0" not in accepted
    assert tuple(bootstrap.SUPPORTED) == tuple(cp.PYTHONS)
    env = (ROOT / "environment.yml").read_text()
    assert project["requires-python"] == ">=3.11,<3.14"
    assert "- python>=3.11,<3.14" in env


def test_ci_runs_the_readme_test_command():
    ci = (ROOT / ".ci" / "run").read_text()
    readme = (ROOT / "README.md").read_text()
    assert "make test" in ci and "make test" in readme and "make lab" in readme
    assert r"py tools\bootstrap.py lab" in readme
