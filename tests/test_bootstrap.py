"""tools/bootstrap.py, the set-up script make and Windows share, run for real on a tiny
project: a real .venv, a lock with a real (local, offline) wheel and a marker pin, an
editable install, the content stamp, an interrupted install, a stale lock."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))
import bootstrap

# A PEP 517/660 build backend in the standard library only, so the tiny project installs
# with --no-build-isolation into a bare venv (no setuptools there on Python 3.12+).
BACKEND = '''
import base64, hashlib, zipfile
from pathlib import Path

def _meta():
    import tomllib
    p = tomllib.loads(Path("pyproject.toml").read_text())["project"]
    return p["name"], p["version"]

def wheel(wheel_directory, name, version, files):
    dist = f"{name}-{version}.dist-info"
    files = dict(files)
    files[f"{dist}/METADATA"] = (f"Metadata-Version: 2.1\\nName: {name}\\n"
                                 f"Version: {version}\\n")
    files[f"{dist}/WHEEL"] = ("Wheel-Version: 1.0\\nGenerator: tiny\\n"
                              "Root-Is-Purelib: true\\nTag: py3-none-any\\n")
    record = []
    for path, text in files.items():
        digest = hashlib.sha256(text.encode()).digest()
        digest = base64.urlsafe_b64encode(digest).rstrip(b"=")
        record.append(f"{path},sha256={digest.decode()},{len(text.encode())}")
    files[f"{dist}/RECORD"] = "\\n".join(record + [f"{dist}/RECORD,,"]) + "\\n"
    filename = f"{name}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(Path(wheel_directory) / filename, "w") as zf:
        for path, text in files.items():
            zf.writestr(path, text)
    return filename

def build_editable(wheel_directory, config_settings=None, metadata_directory=None):
    name, version = _meta()
    pth = {f"{name}.pth": str(Path.cwd()) + "\\n"}  # the source folder on sys.path
    return wheel(wheel_directory, name, version, pth)

def build_wheel(wheel_directory, config_settings=None, metadata_directory=None):
    name, version = _meta()
    src = Path(name) / "__init__.py"
    return wheel(wheel_directory, name, version, {str(src.as_posix()): src.read_text()})

def get_requires_for_build_editable(config_settings=None):
    return []

get_requires_for_build_wheel = get_requires_for_build_editable
'''

PYPROJECT = """\
[build-system]
requires = []
build-backend = "tinybackend"
backend-path = ["."]

[project]
name = "tinycourse"
version = "{version}"
requires-python = ">=3.11,<3.14"
dependencies = {deps}
"""


def _write_project(root: Path, version="0.1", deps='["tinydep"]') -> None:
    (root / "pyproject.toml").write_text(PYPROJECT.format(version=version, deps=deps))


def _lock(root: Path, wheel: Path) -> str:
    digest = bootstrap.dependency_hash(root / "pyproject.toml")
    return (f"# pyproject-sha256: {digest}\n"
            f"tinydep @ {wheel.as_uri()}\n"
            "    # via tinycourse\n"
            "colorama==0.4.6 ; sys_platform == 'no-such-platform'\n")


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    root = tmp_path_factory.mktemp("tinycourse")
    (root / "tools").mkdir()
    shutil.copy(ROOT / "tools" / "bootstrap.py", root / "tools" / "bootstrap.py")
    (root / "tinybackend.py").write_text(BACKEND)
    (root / "tinycourse").mkdir()
    (root / "tinycourse" / "__init__.py").write_text("VALUE = 42\n")
    _write_project(root)
    # the dependency the lock pins: a real wheel on local disk, made by the backend
    sys.path.insert(0, str(root))
    try:
        import tinybackend
        wheels = root / "wheels"
        wheels.mkdir()
        name = tinybackend.wheel(wheels, "tinydep", "1.0",
                                 {"tinydep/__init__.py": "ANSWER = 'dep'\n"})
    finally:
        sys.path.remove(str(root))
        sys.modules.pop("tinybackend", None)
    (root / "requirements.lock").write_text(_lock(root, wheels / name))
    return root


def boot(root: Path, *args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PIP_NO_INDEX="1", PIP_DISABLE_PIP_VERSION_CHECK="1",
               PIP_CONFIG_FILE=os.devnull)  # offline: nothing comes from an index
    script = root / "tools" / "bootstrap.py"
    return subprocess.run([sys.executable, str(script), *args], cwd=root, env=env,
                          capture_output=True, text=True, timeout=600, check=False)


def venv_run(root: Path, code: str) -> str:
    python = bootstrap.venv_python(root / ".venv")
    return subprocess.run([str(python), "-c", code], capture_output=True, text=True,
                          check=True, cwd=root / "wheels").stdout.strip()


def test_setup_creates_the_venv_installs_the_lock_and_the_package(project):
    done = boot(project, "setup")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "-m venv" in done.stdout and "environment ready" in done.stdout
    python = bootstrap.venv_python(project / ".venv")
    assert python.parent.name == ("Scripts" if os.name == "nt" else "bin")
    out = venv_run(project, "import tinycourse, tinydep, sys; "
                   "print(tinycourse.VALUE, tinydep.ANSWER, tinycourse.__file__, "
                   "sys.prefix)")
    value, answer, path, prefix = out.split()
    assert (value, answer) == ("42", "dep")
    assert Path(path) == project / "tinycourse" / "__init__.py"  # editable: the source
    assert Path(prefix) == project / ".venv"
    stamp = (project / ".venv" / ".installed").read_text()
    code = ("import sys; sys.path.insert(0, 'tools'); import bootstrap; "
            "print(bootstrap.stamp_text(), end='')")
    assert stamp == subprocess.run([sys.executable, "-c", code], cwd=project,
                                   capture_output=True, text=True, check=True).stdout


def test_second_setup_is_a_no_op_judged_by_content_not_mtime(project):
    for path in ("requirements.lock", "pyproject.toml"):
        os.utime(project / path)  # newer than the stamp, same content
    done = boot(project, "setup")
    assert done.returncode == 0 and "up to date" in done.stdout
    assert "+ " not in done.stdout  # nothing ran


def test_interrupted_install_is_not_stamped_and_is_redone(project):
    lock = project / "requirements.lock"
    good = lock.read_text()
    lock.write_text(good.replace("tinydep-1.0", "tinydep-missing-1.0"))
    broken = boot(project, "setup")
    assert broken.returncode != 0
    assert not (project / ".venv" / ".installed").exists()  # no stamp after a failure
    lock.write_text(good)
    redone = boot(project, "setup")
    assert redone.returncode == 0, redone.stdout + redone.stderr
    assert "pip install" in redone.stdout and "environment ready" in redone.stdout
    assert (project / ".venv" / ".installed").exists()
    assert venv_run(project, "import tinydep; print(tinydep.ANSWER)") == "dep"


def test_a_lock_that_does_not_match_pyproject_says_run_make_lock(project):
    pyproject = project / "pyproject.toml"
    _write_project(project, version="0.2")  # not a dependency: the lock still matches
    assert boot(project, "check-lock").returncode == 0
    _write_project(project, deps='["tinydep", "numpy"]')
    try:
        done = boot(project, "setup")
        assert done.returncode == 1
        assert "does not match pyproject.toml" in done.stderr
        assert "run `make lock`" in done.stderr
        assert boot(project, "check-lock").returncode == 1
    finally:
        _write_project(project)
    assert pyproject.read_text().count("tinydep") == 1


def test_a_venv_from_another_python_is_rebuilt(project):
    cfg = project / ".venv" / "pyvenv.cfg"
    good = cfg.read_text()
    ours = f"version = {sys.version_info[0]}.{sys.version_info[1]}"
    cfg.write_text(good.replace(ours, "version = 3.1"))
    try:
        done = boot(project, "--dry-run", "setup")
        assert done.returncode == 0, done.stdout + done.stderr
        assert "rebuilding" in done.stdout and "would run:" in done.stdout
        assert "-m venv" in done.stdout
    finally:
        cfg.write_text(good)


def test_lab_and_test_commands_dry_run(project):
    lab = boot(project, "--dry-run", "lab")
    assert lab.returncode == 0, lab.stdout + lab.stderr
    assert "-m jupyterlab --notebook-dir=. --LabApp.default_url=/lab/tree/notebooks" \
        in lab.stdout
    if os.name != "nt":  # a named shell: no login shell resetting PATH
        assert "--ServerApp.terminado_settings=shell_command=" in lab.stdout
    test = boot(project, "--dry-run", "test")
    assert "-m pytest -q tests" in test.stdout
    assert "--nbval-lax notebooks solutions" in test.stdout


def test_servers_get_the_venv_on_path(monkeypatch):
    monkeypatch.setenv("PATH", "/usr/bin")
    env = bootstrap.venv_env(OMP_NUM_THREADS="1")
    first = env["PATH"].split(os.pathsep)[0]
    assert first == str(bootstrap.venv_bin(bootstrap.VENV))
    assert env["OMP_NUM_THREADS"] == "1"


def test_no_supported_python_gives_one_line_naming_the_versions(monkeypatch, capsys):
    monkeypatch.setattr(bootstrap, "SUPPORTED", ((3, 99),))
    monkeypatch.setenv("COURSE_BOOTSTRAP_REEXEC", "1")
    assert bootstrap.main(["setup"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "3.11, 3.12 or 3.13" in err and "python.org" in err


def test_make_without_a_supported_python_says_which_to_install(tmp_path):
    make = shutil.which("make")
    if make is None:
        pytest.skip("no make on this machine")
    # PATH with no python3.11/3.12/3.13 on it (recipes run /bin/sh's builtins only)
    env = {"PATH": str(tmp_path), "HOME": str(tmp_path)}
    done = subprocess.run([make, "-s", "-C", str(ROOT), "setup"], capture_output=True,
                          text=True, env=env, timeout=60, check=False)
    assert done.returncode != 0
    said = [line for line in done.stderr.splitlines() if "3.11" in line]
    assert len(said) == 1 and "3.11, 3.12 or 3.13" in said[0] and "PYTHON=" in said[0]


def test_windows_paths(monkeypatch):
    venv = Path("/course/.venv")
    monkeypatch.setattr(bootstrap.os, "name", "nt")
    assert bootstrap.venv_bin(venv) == venv / "Scripts"
    assert bootstrap.venv_python(venv) == venv / "Scripts" / "python.exe"


def test_make_targets_and_windows_run_the_same_script():
    make = (ROOT / "Makefile").read_text()
    for target in ("setup", "lab", "test", "lock"):
        recipe = make.split(f"\n{target}:", 1)[1].split("\n\n", 1)[0]
        assert f"$(BOOTSTRAP) {target}" in recipe, target
    assert "BOOTSTRAP = $(if $(strip $(PYTHON)),$(PYTHON) tools/bootstrap.py" in make
    readme = (ROOT / "README.md").read_text()
    for command in ("lab", "test"):
        assert f"py tools\\bootstrap.py {command}" in readme
