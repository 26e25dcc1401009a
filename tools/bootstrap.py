"""Set up the course environment and run it: one implementation for every OS.

    python tools/bootstrap.py setup         make .venv, install the lock and the package
    python tools/bootstrap.py lab [ARGS]    setup, then JupyterLab on notebooks/
    python tools/bootstrap.py test [ARGS]   setup, then pytest tests/ and nbval over the
                                            notebooks (with ARGS: pytest ARGS instead)
    python tools/bootstrap.py lock          re-solve requirements.lock (pyproject.toml)
    python tools/bootstrap.py check-lock    does requirements.lock match pyproject.toml?
    --dry-run (before the command) prints what would run and changes nothing

The Makefile calls this script (`make setup/lab/test/lock`); on Windows, where there is
no make, run it directly: `py tools\\bootstrap.py lab`. Standard library only, so it
runs before anything is installed.

Set-up is stamped on content, not on file times: `.venv/.installed` holds a hash of
requirements.lock, pyproject.toml and the Python version, and is written only after
every step succeeded. It is removed before a re-install starts, so an interrupted
install is redone on the next run. A `.venv` without a working pip (an interrupted
`venv`) or made by another Python version is rebuilt.

requirements.lock carries `# pyproject-sha256: ...`, a hash of pyproject.toml's
requires-python and dependency lists taken when the lock was generated; when they
differ, set-up stops and says to run `make lock`.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
VENV = ROOT / ".venv"
LOCK = ROOT / "requirements.lock"
PYPROJECT = ROOT / "pyproject.toml"
SUPPORTED = ((3, 11), (3, 12), (3, 13))
NEED_PYTHON = (
    "The course needs Python 3.11, 3.12 or 3.13: install one (python.org, or your "
    "package manager: brew install python@3.12, sudo apt install python3.12-venv, "
    "winget install Python.Python.3.12), or name it: make PYTHON=/path/to/python3.12"
)
UV = "uv==0.13.9"  # the lock's resolver, pinned so that `make lock` is reproducible
LOCK_COMMAND = [
    "uv", "pip", "compile", "--universal", "--all-extras", "pyproject.toml",
    "-o", "requirements.lock", "--custom-compile-command", "make lock", "--quiet",
]
HASH_LINE = re.compile(r"^# pyproject-sha256: ([0-9a-f]{64})\s*$", re.MULTILINE)
DRY_RUN = False


def venv_bin(venv: Path = VENV) -> Path:
    """`.venv\\Scripts` on Windows, `.venv/bin` elsewhere."""
    return venv / ("Scripts" if os.name == "nt" else "bin")


def venv_python(venv: Path = VENV) -> Path:
    return venv_bin(venv) / ("python.exe" if os.name == "nt" else "python")


def say(msg: str) -> None:
    print(f"bootstrap: {msg}", flush=True)


def run(cmd: list, **kwargs) -> None:
    """Run a command (print it under --dry-run); on failure exit with its status."""
    shown = " ".join(shlex.quote(str(c)) for c in cmd)
    if DRY_RUN:
        print(f"would run: {shown}", flush=True)
        return
    print(f"+ {shown}", flush=True)
    proc = subprocess.Popen([str(c) for c in cmd], cwd=ROOT, **kwargs)
    while True:
        try:
            code = proc.wait()
            break
        except KeyboardInterrupt:  # Ctrl-C reaches the child too (JupyterLab asks
            continue  # before it shuts down); wait for it rather than killing it
    if code:
        raise SystemExit(code)


def dependency_hash(pyproject: Path = PYPROJECT) -> str:
    """sha256 of pyproject's requires-python and dependency lists (what locks solve)."""
    import tomllib

    project = tomllib.loads(pyproject.read_text(encoding="utf-8"))["project"]
    spec = {key: project.get(key) for key in
            ("requires-python", "dependencies", "optional-dependencies")}
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()


def lock_problem(lock: Path = LOCK, pyproject: Path = PYPROJECT) -> str | None:
    """Why requirements.lock cannot be installed as it is, or None when it matches."""
    if not lock.is_file():
        return (f"{lock.name} is missing: run `make lock` "
                "(or `python tools/bootstrap.py lock`)")
    found = HASH_LINE.search(lock.read_text(encoding="utf-8"))
    if found is None or found[1] != dependency_hash(pyproject):
        return (f"{lock.name} does not match {pyproject.name} (its dependencies or "
                "requires-python changed): run `make lock` (or `python "
                "tools/bootstrap.py lock`) and commit both files")
    return None


def stamp_text() -> str:
    """What `.venv/.installed` holds once the environment matches the lock."""
    digest = hashlib.sha256()
    for path in (LOCK, PYPROJECT):
        digest.update(path.read_bytes())
    digest.update(sys.version.encode())
    return f"{digest.hexdigest()}  Python {sys.version.split()[0]}\n"


def venv_works(venv: Path, probe_pip: bool = True) -> bool:
    """A venv made by this Python version whose pip runs (not a half-made one); without
    probe_pip only its python and version are checked (the stamp vouches for the
    rest)."""
    python, cfg = venv_python(venv), venv / "pyvenv.cfg"
    if not python.exists() or not cfg.is_file():
        return False
    found = re.search(r"^version(?:_info)?\s*=\s*(\d+)\.(\d+)", cfg.read_text(),
                      re.MULTILINE)
    if found is None or (int(found[1]), int(found[2])) != sys.version_info[:2]:
        return False
    if not probe_pip:
        return True
    probe = subprocess.run([str(python), "-m", "pip", "--version"],
                           capture_output=True, cwd=ROOT, check=False)
    return probe.returncode == 0


def setup() -> None:
    """Create .venv and install the lock and the package unless the stamp matches."""
    problem = lock_problem()
    if problem:
        raise SystemExit(f"bootstrap: {problem}")
    stamp, want = VENV / ".installed", stamp_text()
    if (stamp.is_file() and stamp.read_text() == want
            and venv_works(VENV, probe_pip=False)):
        say(f"environment up to date in {VENV.name} ({' '.join(want.split()[-2:])})")
        return
    if DRY_RUN:
        say(f"{VENV.name} needs installing (stamp missing or out of date)")
    else:
        stamp.unlink(missing_ok=True)  # from here on an interruption leaves no stamp
    if not venv_works(VENV):
        if VENV.exists():
            say(f"{VENV.name} is incomplete or from another Python: rebuilding it")
            if not DRY_RUN:
                shutil.rmtree(VENV)
        run([sys.executable, "-m", "venv", VENV])
    python = venv_python(VENV)
    env = dict(os.environ, PIP_DISABLE_PIP_VERSION_CHECK="1")
    run([python, "-m", "pip", "install", "-q", "-r", LOCK], env=env)
    run([python, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
         "-e", ROOT], env=env)
    if not DRY_RUN:
        tmp = stamp.with_suffix(".tmp")
        tmp.write_text(want)
        os.replace(tmp, stamp)
        say(f"environment ready in {VENV.name}")


def venv_env(**extra: str) -> dict:
    """The environment of a process started from .venv: its bin folder first on PATH, so
    `course check ...` works in JupyterLab's terminal as it does in a shell."""
    env = dict(os.environ, **extra)
    env["PATH"] = str(venv_bin(VENV)) + os.pathsep + env.get("PATH", "")
    env["VIRTUAL_ENV"] = str(VENV)
    return env


def lab(args: list[str]) -> int:
    setup()
    cmd = [venv_python(VENV), "-m", "jupyterlab", "--notebook-dir=.",
           # JupyterLab's own default_url wins over --ServerApp.default_url.
           "--LabApp.default_url=/lab/tree/notebooks"]
    if os.name != "nt":
        # The terminal's shell, named, so that the server does not start a login shell
        # when its stdout is not a tty: /etc/profile would reset PATH and `course` would
        # be "command not found" (Windows' PowerShell keeps the server's PATH).
        shell = os.environ.get("SHELL") or shutil.which("sh") or "/bin/sh"
        cmd.append(f"--ServerApp.terminado_settings=shell_command={shlex.quote(shell)}")
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        cmd.append("--allow-root")  # containers and CI machines run as root
    run(cmd + args, env=venv_env())
    return 0


def test(args: list[str]) -> int:
    setup()
    # One torch thread per process: the suite runs kernels, graders and a browser side
    # by side; two spinning OpenMP threads per process on a 2-core machine made
    # training 3.5x slower than one thread (13.3 s vs 3.7 s an epoch).
    env = venv_env(OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS") or "1",
                   PYTHONHASHSEED="0")
    pytest = [venv_python(VENV), "-m", "pytest", "-q"]
    if args:
        run(pytest + args, env=env)
        return 0
    run(pytest + ["tests"], env=env)
    run(pytest + ["-p", "no:cacheprovider", "--durations=20", "--nbval-lax",
                  "notebooks", "solutions"], env=env)
    return 0


def lock() -> int:
    """Re-solve requirements.lock for every platform with uv, keeping the pins it has
    where pyproject still allows them, and write the header that `setup` checks."""
    tools = ROOT / "build" / "lock-tools"
    uv = venv_bin(tools) / ("uv.exe" if os.name == "nt" else "uv")
    if not uv.exists():
        run([sys.executable, "-m", "venv", tools])
        run([venv_python(tools), "-m", "pip", "install", "-q", UV])
    run([uv, *LOCK_COMMAND[1:]])
    if DRY_RUN:
        return 0
    body = LOCK.read_text(encoding="utf-8")
    body = body.split("# This file was autogenerated", 1)[-1]
    header = (
        "# Exact pins for the course environment on macOS, Windows and Linux, Python "
        "3.11-3.13.\n"
        "# Environment markers (`; sys_platform == 'linux'`) pick each platform's "
        "packages;\n"
        "# `pip install -r requirements.lock` evaluates them (make setup does that).\n"
        "# Regenerate with `make lock` (python tools/bootstrap.py lock), which runs\n"
        f"#   {shlex.join(LOCK_COMMAND)}   ({UV})\n"
        "# and records the hash of pyproject.toml's requires-python and dependency "
        "lists;\n"
        "# make setup/test refuse a lock whose hash no longer matches pyproject.toml.\n"
        f"# pyproject-sha256: {dependency_hash()}\n"
        "#\n# This file was autogenerated"
    )
    LOCK.write_text(header + body, encoding="utf-8")
    say(f"wrote {LOCK.name}; check it with `make check-platforms`")
    return 0


def find_python() -> list[str] | None:
    """The first of Python 3.11/3.12/3.13 on this machine (py launcher on Windows)."""
    for major, minor in SUPPORTED:
        candidates = ([["py", f"-{major}.{minor}"]] if os.name == "nt" else []) + [
            [f"python{major}.{minor}"]]
        for cand in candidates:
            if shutil.which(cand[0]) is None:
                continue
            code = f"import sys, venv; print(sys.version_info[:2] in {SUPPORTED!r})"
            probe = subprocess.run([*cand, "-c", code], capture_output=True, text=True,
                                   check=False)
            if probe.returncode == 0 and probe.stdout.strip() == "True":
                return cand
    return None


def main(argv: list[str]) -> int:
    global DRY_RUN
    if "--dry-run" in argv:
        DRY_RUN = True
        argv = [a for a in argv if a != "--dry-run"]
    if not argv or argv[0] not in ("setup", "lab", "test", "lock", "check-lock"):
        print(__doc__, file=sys.stderr)
        return 2
    if sys.version_info[:2] not in SUPPORTED:
        # e.g. `py tools\bootstrap.py` picked a 3.14: re-run under an accepted one.
        found = None if os.environ.get("COURSE_BOOTSTRAP_REEXEC") else find_python()
        if found is None:
            print(f"{NEED_PYTHON} (this is Python {sys.version.split()[0]})",
                  file=sys.stderr)
            return 2
        say(f"Python {sys.version.split()[0]} is not supported: using "
            f"{' '.join(found)}")
        env = dict(os.environ, COURSE_BOOTSTRAP_REEXEC="1")
        return subprocess.call(found + [__file__, *sys.argv[1:]], env=env)
    command, rest = argv[0], argv[1:]
    if command == "check-lock":
        problem = lock_problem()
        print(f"bootstrap: {problem or 'requirements.lock matches pyproject.toml'}")
        return 1 if problem else 0
    if command == "setup":
        setup()
        return 0
    if command == "lock":
        return lock()
    return {"lab": lab, "test": test}[command](rest)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
