"""One submission's cgroup (v2, or v1 where the unified hierarchy lacks the
controllers): a memory cap for its whole process tree, a number of processes,
a CPU quota and, where the workers fit, CPUs of its own.

`sandbox.Sandbox` makes one per kernel and joins it before bubblewrap starts;
`probe_cgroup` says whether this machine can make one at all.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from pathlib import Path

from .mounts import MiB

CGROUP_ROOT = Path("/sys/fs/cgroup")
V1_CONTROLLERS = ("memory", "pids", "cpu")


# ------------------------------------------------------------------ cgroups


class Cgroup:
    """One submission's cgroup (v2 or v1), holding its whole process tree.

    Args:
        name: unique name below the grader's parent group.
        memory_bytes: memory of all processes together (swap disallowed).
        pids: the most processes and threads at once.
        cpus: CPU time as a number of cores (CFS quota).
        cpuset: the CPUs its processes may run on ("1", "2,3"), or None: any.
            A grader pins each worker to its own CPUs, so a submission that
            keeps its quota busy (spinners) does not preempt its neighbours.
            Left out quietly where the cpuset controller is not available.
    """

    def __init__(
        self,
        name: str,
        memory_bytes: int,
        pids: int,
        cpus: float,
        cpuset: str | None = None,
    ):
        self.version = cgroup_version()
        if self.version is None:
            raise RuntimeError("no writable cgroup hierarchy with memory and pids")
        self.dirs: list[Path] = []
        parent = f"course-grade-{os.getpid()}"
        if self.version == 2:
            base = _v2_base()
            top = base / parent
            top.mkdir(exist_ok=True)
            _write(top / "cgroup.subtree_control", "+memory +pids +cpu", quiet=True)
            if cpuset:
                _write(top / "cgroup.subtree_control", "+cpuset", quiet=True)
            path = top / name
            path.mkdir()
            self.dirs = [path]
            _write(path / "memory.max", str(memory_bytes))
            _write(path / "memory.swap.max", "0", quiet=True)
            _write(path / "pids.max", str(pids))
            _write(path / "cpu.max", f"{int(cpus * 100_000)} 100000", quiet=True)
            if cpuset:
                _write(path / "cpuset.cpus", cpuset, quiet=True)
        else:
            for ctrl in V1_CONTROLLERS:
                top = _v1_base(ctrl) / parent
                top.mkdir(exist_ok=True)
                path = top / name
                path.mkdir()
                self.dirs.append(path)
            mem, pid_dir, cpu = self.dirs
            _write(mem / "memory.limit_in_bytes", str(memory_bytes))
            _write(mem / "memory.memsw.limit_in_bytes", str(memory_bytes), quiet=True)
            _write(mem / "memory.swappiness", "0", quiet=True)
            _write(pid_dir / "pids.max", str(pids))
            _write(cpu / "cpu.cfs_period_us", "100000", quiet=True)
            _write(cpu / "cpu.cfs_quota_us", str(int(cpus * 100_000)), quiet=True)
            if cpuset:  # a fourth group, where the controller is there
                _v1_cpuset(parent, name, cpuset, self.dirs)

    @property
    def procs_files(self) -> list[Path]:
        return [d / "cgroup.procs" for d in self.dirs]

    def pids(self) -> list[int]:
        out: set[int] = set()
        for path in self.procs_files:
            try:
                out.update(int(p) for p in path.read_text().split())
            except OSError:
                continue
        return sorted(out)

    def oom_killed(self) -> bool:
        """Whether the memory cap made the kernel kill a process of the group."""
        if self.version == 2:
            events = _read(self.dirs[0] / "memory.events")
            for line in events.splitlines():
                key, _, value = line.partition(" ")
                if key in ("oom_kill", "max") and value.strip() not in ("", "0"):
                    return True
            return False
        mem = self.dirs[0]
        for line in _read(mem / "memory.oom_control").splitlines():
            key, _, value = line.partition(" ")
            if key == "oom_kill" and value.strip() not in ("", "0"):
                return True
        return _read(mem / "memory.failcnt").strip() not in ("", "0")

    def kill(self, timeout: float = 10.0) -> None:
        """SIGKILL every process of the group until it is empty."""
        if self.version == 2:
            _write(self.dirs[0] / "cgroup.kill", "1", quiet=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            pids = self.pids()
            if not pids:
                return
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass
            time.sleep(0.02)

    def remove(self) -> None:
        """Kill what is left and remove the group (and the parent when empty)."""
        self.kill()
        for path in self.dirs:
            for _ in range(50):
                try:
                    path.rmdir()
                    break
                except FileNotFoundError:
                    break
                except OSError:
                    time.sleep(0.02)
            try:
                path.parent.rmdir()
            except OSError:
                pass


def _v1_cpuset(parent: str, name: str, cpus: str, dirs: list[Path]) -> bool:
    """A v1 cpuset group PARENT/NAME on `cpus` (appended to dirs); False where
    the controller is missing or refuses. v1 groups start with no CPUs and no
    memory nodes: the parent copies its own, the child narrows the CPUs."""
    mount = CGROUP_ROOT / "cpuset"
    base = _v1_base("cpuset") if mount.is_dir() else None
    if base is None or not os.access(base, os.W_OK):
        return False
    top = base / parent
    path = top / name
    try:
        top.mkdir(exist_ok=True)
        for key in ("cpuset.cpus", "cpuset.mems"):
            if not _read(top / key).strip():
                _write(top / key, _read(base / key).strip() or "0")
        path.mkdir()
        try:
            _write(path / "cpuset.mems", _read(top / "cpuset.mems").strip())
            _write(path / "cpuset.cpus", cpus)
        except OSError:
            path.rmdir()
            raise
    except OSError:
        with contextlib.suppress(OSError):
            top.rmdir()  # only when empty: other submissions' groups stay
        return False
    dirs.append(path)
    return True


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except OSError:
        return ""


def _write(path: Path, value: str, quiet: bool = False) -> None:
    try:
        path.write_text(value)
    except OSError:
        if not quiet:
            raise


def _own_cgroup(controller: str | None) -> str:
    """This process's path in a hierarchy (v1 controller, or None for v2)."""
    for line in _read(Path("/proc/self/cgroup")).splitlines():
        _id, ctrls, path = line.split(":", 2)
        names = ctrls.split(",") if ctrls else []
        if (controller is None and ctrls == "") or controller in names:
            return path.lstrip("/")
    return ""


def _v2_base() -> Path:
    base = CGROUP_ROOT / _own_cgroup(None)
    # A process may not live in an inner node with controllers: use the parent
    # of our own group (creating siblings) when ours already holds processes.
    return base if base.is_dir() else CGROUP_ROOT


def _v1_base(controller: str) -> Path:
    mount = CGROUP_ROOT / controller
    own = mount / _own_cgroup(controller)
    return own if own.is_dir() else mount


def cgroup_version() -> int | None:
    """2 or 1 when this process can make cgroups with memory and pids, else None."""
    if os.name != "posix" or not CGROUP_ROOT.is_dir():
        return None
    controllers = _read(CGROUP_ROOT / "cgroup.controllers").split()
    if {"memory", "pids"} <= set(controllers) and os.access(_v2_base(), os.W_OK):
        return 2
    if all(
        (CGROUP_ROOT / c).is_dir() and os.access(_v1_base(c), os.W_OK)
        for c in V1_CONTROLLERS
    ):
        return 1
    return None


def probe_cgroup() -> int | None:
    """The cgroup version, after making (and removing) a group with its limits."""
    version = cgroup_version()
    if version is None:
        return None
    try:
        Cgroup(f"probe-{os.getpid()}", 64 * MiB, 16, 0.5).remove()
    except OSError:
        return None
    return version
