"""The read-only file system a sandboxed kernel sees: bubblewrap's mount arguments.

Only /usr (and /lib, /bin …), Python, the virtual environment and a filtered
copy of the course package (without the modules that compute the set's
answers) are mounted, read-only; /proc, /dev and a private, size-capped tmpfs
at /tmp complete it.
"""

from __future__ import annotations

import os
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path

MiB = 2**20


def _module_paths(package_dir: Path, modules: list[str]) -> list[Path]:
    out = []
    for name in modules:
        parts = name.split(".")
        if parts[0] != package_dir.name:
            continue
        rel = Path(*parts[1:])
        for candidate in (package_dir / rel, package_dir / rel.with_suffix(".py")):
            if candidate.exists():
                out.append(candidate)
    return out


def filtered_package(package_dir: Path, dest: Path, absent: list[str]) -> Path:
    """Copy a package without the `absent` modules (and caches); returns the copy."""
    drop = {p.resolve() for p in _module_paths(package_dir, absent)}

    def ignore(folder, names):
        here = Path(folder).resolve()
        return [
            n
            for n in names
            if n == "__pycache__" or n.endswith(".pyc") or (here / n) in drop
        ]

    target = dest / package_dir.name
    if target.exists():
        shutil.rmtree(target)
    shutil.copytree(package_dir, target, ignore=ignore, symlinks=False)
    for path in [target, *target.rglob("*")]:
        os.chmod(path, 0o755 if path.is_dir() else 0o644)
    os.chmod(dest, 0o755)
    return target


def _site_dirs() -> list[Path]:
    import site

    dirs = [Path(p) for p in site.getsitepackages() if Path(p).is_dir()]
    return [d for d in dirs if d.is_relative_to(Path(sys.prefix))] or dirs


@dataclass
class SandboxView:
    """The read-only file system a kernel sees.

    Args:
        package: the filtered course package to mount in place of the real one.
        absent_modules: modules to hide (course modules are left out of the
            copy; others, e.g. "captum", are covered with an empty directory).
        tmpfs_bytes: size of the private writable /tmp.
    """

    package: Path | None = None
    absent_modules: list[str] = field(default_factory=list)
    tmpfs_bytes: int = 256 * MiB

    def mounts(self) -> list[str]:
        """bubblewrap's mount arguments, applied in order: the private /tmp
        first, so that what is bound under /tmp (a course root, a venv) stays
        visible above it."""
        args = ["--perms", "01777", "--size", str(self.tmpfs_bytes), "--tmpfs", "/tmp"]
        for top in ("/usr",):
            args += ["--ro-bind", top, top]
        for name in ("lib", "lib64", "lib32", "bin", "sbin"):
            host = Path("/") / name
            if host.is_symlink():
                args += ["--symlink", os.readlink(host), str(host)]
            elif host.is_dir():
                args += ["--ro-bind", str(host), str(host)]
        for etc in ("ld.so.cache", "ld.so.conf", "ld.so.conf.d", "fonts", "localtime"):
            if (Path("/etc") / etc).exists():
                args += ["--ro-bind", f"/etc/{etc}", f"/etc/{etc}"]
        trees = {Path(sys.base_prefix).resolve(), Path(sys.prefix).resolve()}
        trees |= {Path(sys.executable).resolve().parent.parent}
        for tree in sorted(trees):
            if not str(tree).startswith("/usr"):
                args += _dirs_to(tree) + ["--ro-bind", str(tree), str(tree)]
        if Path(sys.prefix) != Path(sys.prefix).resolve():
            args += _dirs_to(Path(sys.prefix))
            args += ["--symlink", str(Path(sys.prefix).resolve()), sys.prefix]
        if self.package is not None:
            import course_utils

            real = Path(course_utils.__file__).resolve().parent
            args += _dirs_to(real) + ["--ro-bind", str(self.package), str(real)]
        for name in self.absent_modules:
            top = name.split(".")[0]
            if top == "course_utils":
                continue
            for site_dir in _site_dirs():
                for hidden in (site_dir / top, site_dir / f"{top}.py"):
                    if hidden.exists():
                        args += ["--perms", "0000", "--tmpfs", str(hidden)]
                for info in site_dir.glob(f"{top}-*.dist-info"):
                    args += ["--perms", "0000", "--tmpfs", str(info)]
        args += ["--proc", "/proc", "--dev", "/dev"]
        return args


def _dirs_to(path: Path) -> list[str]:
    """--dir for every parent of `path`, mode 0755 (bubblewrap's default is 0700
    for what it creates as root, which the sandbox user could not traverse)."""
    args: list[str] = []
    for parent in reversed(path.parents):
        if str(parent) in ("/", "/usr", "/tmp") or str(parent).startswith("/usr/"):
            continue
        args += ["--perms", "0755", "--dir", str(parent)]
    return args
