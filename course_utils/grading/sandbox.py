"""An operating-system sandbox per submission: bubblewrap namespaces and a cgroup.

Every kernel that runs a student's notebook is started by `Sandbox.start` as

    sh -c 'echo $$ > CGROUP/cgroup.procs; exec bwrap … setpriv … python -m ipykernel'

so that, before the student's first instruction:

* the whole process tree is in its own cgroup (`Cgroup`: v2 when the unified
  hierarchy has the controllers, else v1): a memory cap for all its processes
  together (swap included), a number of processes, and one CPU at most, so
  60 spinning background processes cost a classmate nothing;
* it has its own mount, pid, network, IPC and UTS namespaces (bubblewrap):
  no network at all, no process of the host visible, and when the kernel's
  init dies (`--die-with-parent`, the grader's kill) everything in it dies;
* its file system is a fresh root holding only, read-only: /usr (and /lib,
  /bin …), Python, the virtual environment and a *filtered copy* of the course
  package without the modules that compute the set's answers (`SandboxView`);
  the only writable place is a private, size-capped tmpfs at /tmp. Solutions,
  the gradebook, other students' folders and the instructor's files are not
  mounted at all;
* as root the kernel runs as an unprivileged sandbox user with no
  capabilities and `no_new_privs` (setpriv inside the namespaces); without
  root, bubblewrap uses a user namespace (the kernel cannot be more than the
  grader's own user, and still sees nothing of the host).

The grader reaches the kernel only through what the kernel creates under /tmp
(ZeroMQ ipc sockets, the records the grading harness writes), which it opens
through ``/proc/PID/root`` as a held directory descriptor, never following a
link the student could plant.

`detect()` says which isolation this machine offers; `course grade` refuses to
run without one unless told ``--unsafe-no-sandbox``.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from . import seccomp

GiB = 2**30
MiB = 2**20
# First uid of the sandbox users (one per worker) when the grader runs as root.
DEFAULT_SANDBOX_UID = 61000
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


# ------------------------------------------------------------- capabilities


@dataclass(frozen=True)
class Isolation:
    """What this machine offers: bubblewrap (as root or via user namespaces)
    and a cgroup version; `reason` says what is missing when unusable."""

    bwrap: str | None
    root: bool
    cgroup: int | None
    reason: str = ""

    @property
    def usable(self) -> bool:
        return self.bwrap is not None and not self.reason

    def describe(self) -> str:
        if not self.usable:
            return f"no sandbox: {self.reason}"
        who = "a sandbox user (root)" if self.root else "a user namespace"
        cg = f"cgroup v{self.cgroup}" if self.cgroup else "no cgroup (rlimits only)"
        return f"bubblewrap namespaces, {who}, {cg}"


def install_bwrap() -> str | None:
    """apt-get install bubblewrap when missing and root (Debian/Ubuntu); its path.

    An explicit step (`make grade`, `make test`, `course grade --install-bubblewrap`);
    `detect` only looks."""
    found = shutil.which("bwrap")
    if found or os.name != "posix" or os.geteuid() != 0 or not shutil.which("apt-get"):
        return found
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for cmd in (["apt-get", "install", "-y", "bubblewrap"], ["apt-get", "update"]):
        subprocess.run(cmd, env=env, capture_output=True, check=False, timeout=600)
        if shutil.which("bwrap"):
            break
    if not shutil.which("bwrap"):
        subprocess.run(
            ["apt-get", "install", "-y", "bubblewrap"],
            env=env,
            capture_output=True,
            check=False,
            timeout=600,
        )
    return shutil.which("bwrap")


_DETECTED: Isolation | None = None


def detect() -> Isolation:
    """Probe bubblewrap once (a real sandbox that runs `true`); installs nothing."""
    global _DETECTED
    if _DETECTED is not None:
        return _DETECTED
    if not sys.platform.startswith("linux"):
        _DETECTED = Isolation(None, False, None, f"{sys.platform} has no namespaces")
        return _DETECTED
    bwrap = shutil.which("bwrap")
    root = os.geteuid() == 0
    if bwrap is None:
        _DETECTED = Isolation(
            None, root, None, "bubblewrap is not installed (apt-get install bubblewrap)"
        )
        return _DETECTED
    probe = [bwrap, *_namespace_flags(root), "--ro-bind", "/", "/", "true"]
    try:
        ok = (
            subprocess.run(
                probe, capture_output=True, timeout=30, check=False
            ).returncode
            == 0
        )
    except (OSError, subprocess.TimeoutExpired):
        ok = False
    reason = "" if ok else "bubblewrap cannot create namespaces here"
    if ok and root and not shutil.which("setpriv"):
        reason = "setpriv (util-linux) is missing"
    reason = reason or seccomp.missing()  # no filter: no sandbox
    _DETECTED = Isolation(bwrap, root, _probe_cgroup() if root else None, reason)
    return _DETECTED


def _probe_cgroup() -> int | None:
    """The cgroup version, after making (and removing) a group with its limits."""
    version = cgroup_version()
    if version is None:
        return None
    try:
        Cgroup(f"probe-{os.getpid()}", 64 * MiB, 16, 0.5).remove()
    except OSError:
        return None
    return version


def _namespace_flags(root: bool) -> list[str]:
    if root:  # privileged bubblewrap: no user namespace; setpriv drops to the user
        return [
            "--unshare-ipc",
            "--unshare-pid",
            "--unshare-net",
            "--unshare-uts",
            "--unshare-cgroup-try",
        ]
    return ["--unshare-all"]


# ------------------------------------------------------------ what is mounted


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
        args: list[str] = []
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
        args += ["--perms", "01777", "--size", str(self.tmpfs_bytes), "--tmpfs", "/tmp"]
        return args


def _dirs_to(path: Path) -> list[str]:
    """--dir for every parent of `path`, mode 0755 (bubblewrap's default is 0700
    for what it creates as root, which the sandbox user could not traverse)."""
    args: list[str] = []
    for parent in reversed(path.parents):
        if str(parent) in ("/", "/usr") or str(parent).startswith("/usr/"):
            continue
        args += ["--perms", "0755", "--dir", str(parent)]
    return args


# --------------------------------------------------------------- a sandbox


@dataclass(frozen=True)
class SandboxLimits:
    """Limits of one submission's whole process tree.

    Args:
        memory_bytes: cgroup memory cap (all processes together, no swap).
        address_space_bytes: RLIMIT_AS of each process (None: memory_bytes),
            so one process that reserves too much gets a MemoryError it can
            recover from. It is separate from the cap because torch alone
            reserves about 3.5 GiB of address space while using 0.7 GiB.
        pids: cgroup pids.max (processes and threads).
        cpus: cgroup CPU quota in cores.
        tmpfs_bytes: size of the only writable place, /tmp.
        file_bytes: RLIMIT_FSIZE.
    """

    memory_bytes: int = 6 * GiB
    address_space_bytes: int | None = None
    pids: int = 128
    cpus: float = 1.0
    tmpfs_bytes: int = 256 * MiB
    file_bytes: int = 64 * MiB

    @property
    def address_space(self) -> int:
        """RLIMIT_AS of each process: `address_space_bytes`, else `memory_bytes`."""
        return self.address_space_bytes or self.memory_bytes


class Sandbox:
    """One running sandboxed command (a kernel); see the module docstring.

    Args:
        command: argv run inside (found on the sandbox's PATH).
        view: what it sees.
        limits: its limits.
        env: its whole environment.
        files: path inside (under /run/course) → bytes, given read-only.
        uid: the sandbox user when root.
        isolation: `detect()`'s answer (None: detect).
        log: the host file that gets stdout and stderr.
        name: the cgroup's name.
        cpuset: the CPUs it may run on (see `Cgroup`), None: any.
    """

    def __init__(
        self,
        command: list[str],
        view: SandboxView,
        limits: SandboxLimits,
        env: dict[str, str],
        files: dict[str, bytes],
        log: Path,
        name: str,
        uid: int | None = None,
        isolation: Isolation | None = None,
        cpuset: str | None = None,
    ):
        self.isolation = isolation or detect()
        if not self.isolation.usable:
            raise RuntimeError(self.isolation.describe())
        self.started = time.monotonic()
        self.cgroup = None
        if self.isolation.cgroup:
            self.cgroup = Cgroup(
                name, limits.memory_bytes, limits.pids, limits.cpus, cpuset
            )
        data_fds: list[int] = [seccomp.filter_fd()]  # system calls: seccomp.py
        args = [self.isolation.bwrap, *_namespace_flags(self.isolation.root)]
        args += ["--die-with-parent", "--new-session", "--seccomp", str(data_fds[0])]
        args += view.mounts()
        args += ["--perms", "0755", "--dir", "/run", "--dir", "/run/course"]
        for inside, content in files.items():
            read_fd, write_fd = os.pipe()
            os.write(write_fd, content)  # small files: fits the pipe buffer
            os.close(write_fd)
            data_fds.append(read_fd)
            args += ["--perms", "0444", "--ro-bind-data", str(read_fd), inside]
        info_r, info_w = os.pipe()
        args += ["--info-fd", str(info_w), "--chdir", "/tmp"]
        args += ["--clearenv"]
        for key, value in env.items():
            args += ["--setenv", key, value]
        inner = list(command)
        if self.isolation.root:
            if uid is None:
                raise ValueError("uid is required when the grader runs as root")
            inner = [
                "setpriv",
                f"--reuid={uid}",
                f"--regid={uid}",
                "--clear-groups",
                "--no-new-privs",
                "--inh-caps=-all",
                "--bounding-set=-all",
                "--",
                *inner,
            ]
        fsize = limits.file_bytes
        memory = f"ulimit -v {limits.address_space // 1024}; "
        join = "".join(
            f'echo $$ > "{p}" || exit 97; '
            for p in (self.cgroup.procs_files if self.cgroup else [])
        )
        script = f'{join}ulimit -c 0; ulimit -f {fsize // 512}; {memory}exec "$@"'
        self._log = open(log, "ab")  # noqa: SIM115 — closed in close()
        try:
            self.proc = subprocess.Popen(
                ["/bin/sh", "-c", script, "sandbox"]
                + [*seccomp.fresh_keyring_argv(), *args, *inner],
                stdin=subprocess.DEVNULL,
                stdout=self._log,
                stderr=self._log,
                pass_fds=[*data_fds, info_w],
                close_fds=True,
                start_new_session=True,
            )
        finally:
            for fd in (*data_fds, info_w):
                os.close(fd)
        self.child_pid = None
        self._root_fd: int | None = None
        raw = b""
        with os.fdopen(info_r, "rb") as fh:
            raw = fh.read()  # bubblewrap closes it once the namespaces exist
        try:
            self.child_pid = int(json.loads(raw or b"{}")["child-pid"])
        except (ValueError, KeyError):
            self.close()
            raise RuntimeError(
                f"bubblewrap did not start (exit {self.proc.poll()}); see {log}"
            ) from None
        self.startup_seconds = time.monotonic() - self.started

    # The kernel process: bubblewrap's init (pid 1 inside) has one child.
    def kernel_pid(self) -> int | None:
        if self.child_pid is None or self.proc.poll() is not None:
            return None
        path = Path(f"/proc/{self.child_pid}/task/{self.child_pid}/children")
        kids = _read(path).split()
        return int(kids[0]) if kids else None

    def root_fd(self) -> int:
        """A held descriptor of the sandbox's / (through /proc/PID/root)."""
        if self._root_fd is None:
            self._root_fd = os.open(
                f"/proc/{self.child_pid}/root", os.O_RDONLY | os.O_DIRECTORY
            )
        return self._root_fd

    def host_path(self, inside: str) -> str:
        """A host path reaching `inside` (for ZeroMQ's ipc sockets under /tmp)."""
        return f"/proc/{self.child_pid}/root{inside}"

    def alive(self) -> bool:
        return self.proc.poll() is None

    def exit_code(self) -> int | None:
        return self.proc.poll()

    def interrupt(self) -> None:
        """SIGINT to the kernel (what Jupyter's stop button sends)."""
        pid = self.kernel_pid()
        if pid is not None:
            try:
                os.kill(pid, signal.SIGINT)
            except (ProcessLookupError, PermissionError):
                pass

    def oom_killed(self) -> bool:
        return bool(self.cgroup and self.cgroup.oom_killed())

    def kill_others(self) -> int:
        """SIGKILL every process of the sandbox but the kernel (and bubblewrap):
        what the student left running in the background has no part in the
        grader's harness. Returns how many were killed."""
        if self.cgroup is None or self.proc.poll() is not None:
            return 0
        keep = {self.proc.pid, self.child_pid, self.kernel_pid()}
        killed = 0
        for _ in range(5):
            others = [p for p in self.cgroup.pids() if p not in keep]
            if not others:
                break
            for pid in others:
                try:
                    os.kill(pid, signal.SIGKILL)
                    killed += 1
                except (ProcessLookupError, PermissionError):
                    pass
            time.sleep(0.05)
        return killed

    def kill(self) -> None:
        """Kill everything: the cgroup's processes, bubblewrap, its namespace."""
        if self.cgroup is not None:
            self.cgroup.kill()
        if self.proc.poll() is None:  # once reaped, its pid may be someone else's
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            pass

    def close(self) -> None:
        self.kill()
        if self._root_fd is not None:
            os.close(self._root_fd)
            self._root_fd = None
        if self.cgroup is not None:
            self.cgroup.remove()
        self._log.close()
