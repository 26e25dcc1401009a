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
* its file system is a fresh root holding only, read-only, the system, Python
  and a filtered copy of the course package (`mounts.SandboxView`); the only
  writable place is a private tmpfs at /tmp. Solutions, the gradebook, other
  students' folders and the instructor's files are not mounted at all;
* as root the kernel runs as an unprivileged sandbox user with no
  capabilities and `no_new_privs` (setpriv inside the namespaces); without
  root, bubblewrap uses a user namespace (the kernel cannot be more than the
  grader's own user, and still sees nothing of the host);
* a seccomp filter (`seccomp.py`, built with libseccomp) denies the system
  calls a container runtime's default profile denies: keyrings, ptrace,
  mount, bpf, perf_event_open, userfaultfd, new namespaces …; and the tree
  starts in a fresh, empty session keyring.

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
from dataclasses import dataclass
from pathlib import Path

from . import seccomp
from .cgroups import (  # noqa: F401 — CGROUP_ROOT, _read, cgroup_version: re-exported
    CGROUP_ROOT,
    Cgroup,
    _read,
    cgroup_version,
    probe_cgroup,
)
from .mounts import MiB, SandboxView, filtered_package  # noqa: F401 — re-exported

GiB = 2**30
# First uid of the sandbox users (one per worker) when the grader runs as root.
DEFAULT_SANDBOX_UID = 61000


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
        done = subprocess.run(probe, capture_output=True, timeout=30, check=False)
        ok = done.returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        ok = False
    reason = "" if ok else "bubblewrap cannot create namespaces here"
    if ok and root and not shutil.which("setpriv"):
        reason = "setpriv (util-linux) is missing"
    reason = reason or seccomp.missing()  # no filter: no sandbox
    _DETECTED = Isolation(bwrap, root, probe_cgroup() if root else None, reason)
    return _DETECTED


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


def bwrap_argv(
    isolation: Isolation,
    view: SandboxView,
    data_fds: dict[str, int],
    info_fd: int,
    env: dict[str, str],
    seccomp_fd: int,
) -> list[str]:
    """bubblewrap's arguments: namespaces, the system-call filter read from
    `seccomp_fd` (`seccomp.py`), mounts (`view`), the read-only files given as
    pipes (path inside → fd), `info_fd` for its child's pid, /tmp as the
    working directory and `env` as the whole environment."""
    args = [isolation.bwrap, *_namespace_flags(isolation.root)]
    args += ["--die-with-parent", "--new-session", "--seccomp", str(seccomp_fd)]
    args += view.mounts()
    args += ["--perms", "0755", "--dir", "/run", "--dir", "/run/course"]
    for inside, fd in data_fds.items():
        args += ["--perms", "0444", "--ro-bind-data", str(fd), inside]
    args += ["--info-fd", str(info_fd), "--chdir", "/tmp"]
    args += ["--clearenv"]
    for key, value in env.items():
        args += ["--setenv", key, value]
    return args


def _as_user(command: list[str], uid: int) -> list[str]:
    """`command` run as the sandbox user, with no capabilities and no_new_privs."""
    return ["setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups",
            "--no-new-privs", "--inh-caps=-all", "--bounding-set=-all", "--",
            *command]  # fmt: skip


def _limits_script(limits: SandboxLimits, procs_files: list[Path]) -> str:
    """The shell that joins the cgroup and sets the rlimits, then execs "$@"."""
    join = "".join(f'echo $$ > "{p}" || exit 97; ' for p in procs_files)
    fsize, memory = limits.file_bytes // 512, limits.address_space // 1024
    return f'{join}ulimit -c 0; ulimit -f {fsize}; ulimit -v {memory}; exec "$@"'


def _pipe_with(content: bytes) -> int:
    """The read end of a pipe holding `content` (small: fits the pipe buffer)."""
    read_fd, write_fd = os.pipe()
    os.write(write_fd, content)
    os.close(write_fd)
    return read_fd


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
        if self.isolation.root and uid is None:
            raise ValueError("uid is required when the grader runs as root")
        self.started = time.monotonic()
        caps = (limits.memory_bytes, limits.pids, limits.cpus, cpuset)
        self.cgroup = Cgroup(name, *caps) if self.isolation.cgroup else None
        data_fds = {inside: _pipe_with(content) for inside, content in files.items()}
        info_r, info_w = os.pipe()
        filter_fd = seccomp.filter_fd()
        args = bwrap_argv(self.isolation, view, data_fds, info_w, env, filter_fd)
        inner = _as_user(command, uid) if self.isolation.root else list(command)
        join = self.cgroup.procs_files if self.cgroup else []
        self._log = open(log, "ab")  # noqa: SIM115 — closed in close()
        try:
            self.proc = subprocess.Popen(
                ["/bin/sh", "-c", _limits_script(limits, join), "sandbox"]
                + [*seccomp.fresh_keyring_argv(), *args, *inner],
                stdin=subprocess.DEVNULL,
                stdout=self._log,
                stderr=self._log,
                pass_fds=[*data_fds.values(), info_w, filter_fd],
                close_fds=True,
                start_new_session=True,
            )
        finally:
            for fd in (*data_fds.values(), info_w, filter_fd):
                os.close(fd)
        self.child_pid = None
        self._root_fd: int | None = None
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

    def open_dir(self, inside: str) -> int:
        """A directory of the sandbox's file system, opened from the held root
        one part at a time, following no link."""
        root = self.root_fd()
        fd = root
        for part in Path(inside).relative_to("/").parts:
            new = os.open(part, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=fd)
            if fd != root:
                os.close(fd)
            fd = new
        return fd if fd != root else os.dup(fd)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def exit_code(self) -> int | None:
        return self.proc.poll()

    def interrupt(self) -> None:
        """SIGINT to the kernel (what Jupyter's stop button sends)."""
        pid = self.kernel_pid()
        if pid is not None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGINT)

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
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signal.SIGKILL)
                    killed += 1
            time.sleep(0.05)
        return killed

    def kill(self) -> None:
        """Kill everything: the cgroup's processes, bubblewrap, its namespace."""
        if self.cgroup is not None:
            self.cgroup.kill()
        if self.proc.poll() is None:  # once reaped, its pid may be someone else's
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(10)

    def close(self) -> None:
        self.kill()
        if self._root_fd is not None:
            os.close(self._root_fd)
            self._root_fd = None
        if self.cgroup is not None:
            self.cgroup.remove()
        self._log.close()
