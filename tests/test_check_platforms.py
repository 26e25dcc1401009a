"""tools/check_platforms.py, offline: which pins apply to which target (markers
evaluated per target, not for this machine) and which wheel files fit it."""

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))
import check_platforms as cp

LOCK = """\
# header comment
torch==2.14.1
    # via course-utils (pyproject.toml)
nvidia-cublas==13.1.1.3 ; sys_platform == 'linux'
nvidia-cufile==1.15.1.6 ; (platform_machine == 'aarch64' or \
platform_machine == 'x86_64') and sys_platform == 'linux'
colorama==0.4.6 ; sys_platform == 'win32'
pywinpty==3.1.2 ; os_name == 'nt'
appnope==1.0.0 ; sys_platform == 'darwin'
overrides==7.7.0 ; python_full_version < '3.12'
soupsieve==2.10 ; python_full_version < '3.11.5'
soupsieve==4.1.2 ; python_full_version >= '3.11.5'
"""
P = {p.name: p for p in cp.PLATFORMS}


def names(platform, python):
    return {full: sorted(f"{r.name}=={cp.pin_version(r)}" for r, _ in pairs)
            for full, pairs in cp.applicable(cp.read_lock(LOCK), P[platform],
                                             python).items()}


def test_markers_are_evaluated_for_the_target_not_this_machine():
    mac = names("macOS arm64", (3, 12))["3.12.0"]
    assert mac == ["appnope==1.0.0", "soupsieve==4.1.2", "torch==2.14.1"]
    win = names("Windows amd64", (3, 13))["3.13.0"]
    assert win == ["colorama==0.4.6", "pywinpty==3.1.2", "soupsieve==4.1.2",
                   "torch==2.14.1"]
    for arch in ("Linux x86_64", "Linux aarch64"):
        linux = names(arch, (3, 12))["3.12.0"]
        assert "nvidia-cublas==13.1.1.3" in linux and "nvidia-cufile==1.15.1.6" in linux
        assert "colorama==0.4.6" not in linux and "appnope==1.0.0" not in linux


def test_a_minor_version_is_checked_at_its_first_and_a_late_patch():
    py311 = names("Linux x86_64", (3, 11))
    assert set(py311) == {"3.11.0", f"3.11.{cp.LATE_PATCH}"}
    first = py311["3.11.0"]
    assert "soupsieve==2.10" in first and "soupsieve==4.1.2" not in first
    late = py311[f"3.11.{cp.LATE_PATCH}"]
    assert "soupsieve==4.1.2" in late and "soupsieve==2.10" not in late
    assert "overrides==7.7.0" in late
    py312 = names("Linux x86_64", (3, 12)).values()
    assert all("overrides==7.7.0" not in v for v in py312)


def test_read_lock_refuses_a_line_that_is_not_an_exact_pin():
    with pytest.raises(ValueError, match="exact pin"):
        cp.read_lock("numpy>=2\n")


@pytest.mark.parametrize("filename, platform, python, fits", [
    ("torch-2.14.1-cp312-cp312-macosx_14_0_arm64.whl", "macOS arm64", (3, 12), True),
    ("torch-2.14.1-cp312-cp312-macosx_14_0_arm64.whl", "macOS arm64", (3, 13), False),
    ("torch-2.14.1-cp312-cp312-macosx_14_0_arm64.whl", "Windows amd64", (3, 12), False),
    ("numpy-2.4.6-cp311-cp311-macosx_11_0_arm64.whl", "macOS arm64", (3, 11), True),
    ("x-1.0-cp39-abi3-win_amd64.whl", "Windows amd64", (3, 13), True),
    ("x-1.0-cp311-cp311-manylinux2014_x86_64.manylinux_2_17_x86_64.whl",
     "Linux x86_64", (3, 11), True),
    ("x-1.0-cp311-cp311-manylinux_2_34_x86_64.whl", "Linux x86_64", (3, 11), False),
    ("x-1.0-cp311-cp311-manylinux_2_28_x86_64.whl", "Linux aarch64", (3, 11), False),
    ("x-1.0-py3-none-any.whl", "Linux aarch64", (3, 13), True),
    ("x-1.0-cp311-cp311-musllinux_1_2_x86_64.whl", "Linux x86_64", (3, 11), False),
])
def test_wheel_tags_against_a_target(filename, platform, python, fits):
    tags = cp.supported_tags(P[platform], python)
    full = f"{python[0]}.{python[1]}.0"
    assert cp.wheel_fits(filename, None, tags, full) is fits


def test_requires_python_is_checked_at_the_patch_release():
    tags = cp.supported_tags(P["Linux x86_64"], (3, 11))
    wheel = "soupsieve-4.1.2-py3-none-any.whl"
    assert not cp.wheel_fits(wheel, ">=3.11.5", tags, "3.11.0")
    assert cp.wheel_fits(wheel, ">=3.11.5", tags, "3.11.20")


def test_sdist_only_means_pure_python_when_no_compiled_wheel_exists():
    sdist = {"filename": "x-1.0.tar.gz", "requires-python": ">=3.8"}
    assert cp.is_pure_sdist_only([sdist], "3.12.0")
    pure = {"filename": "x-1.0-py3-none-any.whl"}
    assert cp.is_pure_sdist_only([sdist, pure], "3.12.0")
    compiled = {"filename": "x-1.0-cp312-cp312-win_amd64.whl"}
    assert not cp.is_pure_sdist_only([sdist, compiled], "3.12.0")
    assert not cp.is_pure_sdist_only([{**sdist, "requires-python": ">=3.13"}], "3.12.0")


def test_table_counts_gaps():
    table = {(p.name, py): (3, [], []) for p in cp.PLATFORMS for py in cp.PYTHONS}
    table[("Windows amd64", (3, 13))] = (3, ["nvidia-cufile==1.15.1.6"], [])
    text = cp.format_table(table)
    assert text.count("ok (3 pins)") == 11 and "MISSING 1 (3 pins)" in text
