"""One interface to a kernel process, whichever way it was started.

`execute.run` talks to every kernel through `Kernel`: start it, ask whether it
lives and how it ended, interrupt it (Jupyter's stop button), kill it with
everything it started, tell whether it ran out of memory, open the folder its
records are in, and clean up. There is one implementation per way of starting
a kernel:

* `ForkKernel`: forked from the warm `forkserver.ForkServer` (`course check`);
* `LaunchedKernel`: a child process started by jupyter_client's launcher
  (`course check` where there is no fork: Windows);
* `SandboxKernel`: inside a bubblewrap `sandbox.Sandbox` with a cgroup
  (`course grade`);
* `PlainKernel`: a plain process with rlimits (`--unsafe-no-sandbox`).

The last two take the grader's harness (`deliver`): files written into a fresh
/tmp/h-NONCE of the kernel just before the harness cells run.

Out-of-memory is decided from what the operating system says (the cgroup's
memory events, the kernel's exit signal), never from what the kernel prints.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from abc import ABC, abstractmethod
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from .forkserver import ForkServer, Identity, Limits
from .records import MODE_ENV, RECORD_DIR_ENV

if TYPE_CHECKING:
    from .sandbox import SandboxLimits, SandboxView

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW


class Kernel(Protocol):
    """A running IPython kernel, as `execute.run` sees it."""

    def start(self, folder: Path) -> Path:
        """Start it, its output to folder/kernel.log; returns its connection file."""

    def alive(self) -> bool:
        """Whether its process still runs."""

    def exit_code(self, wait: float = 0.0) -> int | None:
        """How it ended (negative: killed by that signal), waiting up to `wait`
        seconds; None while it runs."""

    def interrupt(self) -> None:
        """SIGINT, as Jupyter's stop button."""

    def kill(self) -> None:
        """Kill it and everything it started."""

    def out_of_memory(self) -> bool:
        """Whether a memory cap killed it or one of its processes."""

    def records_dir(self) -> int | None:
        """A descriptor of the folder its records are in, opened without following
        links (the caller closes it); None when there is none to read."""

    def close(self) -> None:
        """Kill it and remove what it left (scratch folders, cgroup)."""


class HarnessKernel(Kernel, Protocol):
    """A kernel that takes the grader's harness (`SandboxKernel`, `PlainKernel`)."""

    def deliver(self, files: dict[str, bytes]) -> str:
        """Write the harness's files into a fresh folder of the kernel, whose
        records/ becomes the only one read; returns the folder as it sees it."""


def _env(home: Path, tmpdir: str, mode: str, records: str) -> dict[str, str]:
    return {
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "LANG": "C.UTF-8",
        "HOME": str(home),
        "TMPDIR": tmpdir,
        "IPYTHONDIR": str(home / ".ipython"),
        "MPLCONFIGDIR": str(home / ".matplotlib"),
        "JUPYTER_RUNTIME_DIR": str(home / "runtime"),
        "OMP_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
        "OPENBLAS_NUM_THREADS": "1",
        "MALLOC_ARENA_MAX": "2",
        "PYTHONDONTWRITEBYTECODE": "1",
        MODE_ENV: mode,
        RECORD_DIR_ENV: records,
    }


def kernel_env(scratch: Path, mode: str, record_dir: Path) -> dict[str, str]:
    """The kernel's whole environment: nothing inherited from the grader."""
    return _env(scratch / "home", str(scratch / "tmp"), mode, str(record_dir))


def isolated_env(tmp: str, mode: str, pythonpath: str) -> dict[str, str]:
    """The sandboxed kernel's whole environment (paths as the kernel sees them)."""
    env = _env(Path(tmp) / "home", tmp, mode, f"{tmp}/records")
    return {**env, "PYTHONPATH": pythonpath}


def _connection(ip: str, key: str) -> dict:
    """A connection file's content: ZeroMQ ipc sockets named `ip`-1 … `ip`-5."""
    return {
        "transport": "ipc",
        "ip": ip,
        "shell_port": 1,
        "iopub_port": 2,
        "stdin_port": 3,
        "control_port": 4,
        "hb_port": 5,
        "key": key,
        "signature_scheme": "hmac-sha256",
        "kernel_name": "",
    }


def clean_user_files(
    uid: int, roots: tuple[str, ...] = ("/tmp", "/var/tmp", "/dev/shm")
) -> None:
    """Remove what a sandbox user left in the shared temp directories."""
    for root in roots:
        try:
            entries = list(os.scandir(root))
        except OSError:
            continue
        for entry in entries:
            try:
                if entry.stat(follow_symlinks=False).st_uid != uid:
                    continue
                if entry.is_dir(follow_symlinks=False):
                    shutil.rmtree(entry.path, ignore_errors=True)
                else:
                    os.unlink(entry.path)
            except OSError:
                continue


# ------------------------------------------------------------ fork server


class ForkKernel:
    """A kernel forked by the `ForkServer` (self-check on a student's machine),
    in a scratch folder of its own with its limits and user."""

    def __init__(
        self,
        server: ForkServer,
        mode: str,
        limits: Limits,
        identity: Identity,
        scratch_parent: Path | None = None,
    ):
        self.server, self.mode, self.limits = server, mode, limits
        self.identity, self.scratch_parent = identity, scratch_parent
        self.scratch: Path | None = None
        self.pid: int | None = None
        self._records_fd: int | None = None

    def start(self, folder: Path) -> Path:
        self.scratch = _make_scratch(self.scratch_parent, self.identity)
        records = self.scratch / "records"
        # Held from before the kernel runs: the student cannot swap it for a link.
        self._records_fd = os.open(records, _DIR_FLAGS)
        conn = self.scratch / "kernel.json"
        fd = os.open(conn, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            json.dump(_connection(str(self.scratch / "k"), secrets.token_hex(32)), fh)
        if self.identity.uid is not None:
            os.chown(conn, self.identity.uid, self.identity.gid)
        self.pid = self.server.spawn(
            connection_file=conn,
            cwd=self.scratch,
            env=kernel_env(self.scratch, self.mode, records),
            log=folder / "kernel.log",
            limits=self.limits,
            identity=self.identity,
        )
        return conn

    def alive(self) -> bool:
        return self.server.exit_code(self.pid) is None

    def exit_code(self, wait: float = 0.0) -> int | None:
        if wait:
            return self.server.wait(self.pid, wait)
        return self.server.exit_code(self.pid)

    def interrupt(self) -> None:
        self.server.interrupt(self.pid)

    def kill(self) -> None:
        self.server.kill(self.pid, self.identity)

    def out_of_memory(self) -> bool:
        return False  # RLIMIT_AS only: a refused allocation, never a kill

    def records_dir(self) -> int | None:
        return None if self._records_fd is None else os.dup(self._records_fd)

    def close(self) -> None:
        if self.pid is not None:
            self.kill()
        if self._records_fd is not None:
            os.close(self._records_fd)
            self._records_fd = None
        if self.scratch is not None:
            shutil.rmtree(self.scratch, ignore_errors=True)
        if self.identity.uid is not None:
            clean_user_files(self.identity.uid)


def _make_scratch(parent: Path | None, identity: Identity) -> Path:
    scratch = Path(tempfile.mkdtemp(prefix="cg-", dir=parent))
    for sub in ("home", "tmp", "records"):
        (scratch / sub).mkdir(mode=0o700)
    if identity.uid is not None:
        for path in (scratch, scratch / "home", scratch / "tmp", scratch / "records"):
            os.chown(path, identity.uid, identity.gid)
    return scratch


# --------------------------------------------------------- launched child


class _ChildProcess:
    """`alive` and `exit_code` of a kernel that is a `subprocess.Popen` (`proc`)."""

    proc: subprocess.Popen

    def alive(self) -> bool:
        return self.proc.poll() is None

    def exit_code(self, wait: float = 0.0) -> int | None:
        try:
            return self.proc.wait(wait) if wait else self.proc.poll()
        except subprocess.TimeoutExpired:
            return None


class LaunchedKernel(_ChildProcess):
    """A kernel started as a plain child process by jupyter_client's launcher
    (self-check where there is no fork: Windows). It keeps the student's
    environment, with HOME, TMPDIR (TEMP, TMP) and the Jupyter folders in a
    scratch folder, and talks TCP on loopback; it writes no records."""

    def __init__(self, mode: str):
        self.mode = mode
        self.proc = None
        self.scratch: Path | None = None

    def start(self, folder: Path) -> Path:
        from jupyter_client.connect import write_connection_file
        from jupyter_client.launcher import launch_kernel

        self.scratch = scratch = Path(tempfile.mkdtemp(prefix="cg-", dir=folder))
        for sub in ("home", "tmp", "records", "home/.ipython", "home/runtime"):
            (scratch / sub).mkdir(exist_ok=True)
        conn, _ = write_connection_file(
            str(scratch / "kernel.json"),
            ip="127.0.0.1",
            key=secrets.token_hex(32).encode(),
        )
        env = {**os.environ, **kernel_env(scratch, self.mode, scratch / "records")}
        env["PATH"] = os.environ.get("PATH", "")  # the student's own PATH (Windows too)
        env["TEMP"] = env["TMP"] = env["TMPDIR"]  # what Windows' tempfile reads
        env.pop("PYTHONSTARTUP", None)
        with open(folder / "kernel.log", "wb") as log:  # the child keeps its copy
            self.proc = launch_kernel(
                [sys.executable, "-m", "ipykernel_launcher", "-f", conn,
                 "--HistoryManager.enabled=False"],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                env=env,
                cwd=str(scratch / "tmp"),
            )  # fmt: skip
        return Path(conn)

    def interrupt(self) -> None:
        if not self.alive():
            return
        if os.name == "nt":
            from jupyter_client.win_interrupt import send_interrupt

            send_interrupt(self.proc.win32_interrupt_event)
        else:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGINT)

    def kill(self) -> None:
        """POSIX: its whole session; Windows: the kernel process alone (what it
        started itself may outlive it there)."""
        if os.name == "nt":
            with contextlib.suppress(OSError):
                self.proc.kill()
        else:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(10)

    def out_of_memory(self) -> bool:
        return False  # no memory cap: the student's own machine

    def records_dir(self) -> int | None:
        return None  # `course check` reads no records

    def close(self) -> None:
        if self.proc is not None:
            self.kill()
        if self.scratch is not None:
            shutil.rmtree(self.scratch, ignore_errors=True)


# ------------------------------------------------ grading: sandbox or plain

KERNEL_BOOT = """\
import os, sys
for d in ("{tmp}/home/.ipython", "{tmp}/home/runtime", "{tmp}/home/.matplotlib",
          "{tmp}/records"):
    os.makedirs(d, exist_ok=True)
conn = sys.argv[1]
# What the kernel and this notebook import, before the clock of its first cell
# runs (`boot_modules`): torch's import alone is most of a cold start.
import importlib
for name in {modules!r}:
    try:
        importlib.import_module(name)
    except Exception:  # absent from this sandbox, or not a module: the cell says
        pass
try:
    import torch
    torch.set_num_threads(1)
    if "course_utils.data" in sys.modules:
        from course_utils import data
        data.load_split("train"), data.load_split("test")
except Exception:
    pass
sys.argv = ["ipykernel", "-f", conn, "--HistoryManager.enabled=False"]
from ipykernel.kernelapp import launch_new_instance
launch_new_instance()
"""


class _GradingKernel(ABC):
    """What the two grading kernels share: the boot command, the connection
    over ipc sockets in the kernel's /tmp, and the harness folder.

    Paths "inside" are as a sandboxed kernel sees them (/tmp/…); `tmp` is where
    the kernel's /tmp really is for the kernel ("/tmp", or a private folder).
    """

    tmp = "/tmp"
    conn_inside = "/run/course/kernel.json"
    uid: int | None = None  # who owns the harness's records folder

    def __init__(self, mode: str, modules: list[str]):
        self.mode, self.modules = mode, modules
        self.records_inside = "/tmp/records"

    def start(self, folder: Path) -> Path:
        import course_utils

        key = secrets.token_hex(32)
        pythonpath = str(Path(course_utils.__file__).resolve().parents[1])
        boot = KERNEL_BOOT.format(tmp=self.tmp, modules=tuple(self.modules))
        self._launch(
            [sys.executable, "-c", boot, self.conn_inside],
            isolated_env(self.tmp, self.mode, pythonpath),
            json.dumps(_connection(f"{self.tmp}/k", key)).encode(),
            folder / "kernel.log",
        )
        host_conn = folder / "kernel.json"
        host_conn.write_text(json.dumps(_connection(self.host_path("/tmp/k"), key)))
        return host_conn

    @abstractmethod
    def _launch(self, command: list[str], env: dict, conn: bytes, log: Path) -> None:
        """Run `command` with `env`, the connection `conn` at `conn_inside`."""

    @abstractmethod
    def host_path(self, inside: str) -> str:
        """A path of the grader's reaching `inside` (for the ipc sockets)."""

    @abstractmethod
    def open_dir(self, inside: str) -> int:
        """A directory of the kernel's file system, opened without following links."""

    @abstractmethod
    def alive(self) -> bool:
        """Whether its process still runs."""

    def stop_others(self) -> None:
        """Stop what the student left running beside the kernel (where it can)."""

    def deliver(self, files: dict[str, bytes]) -> str:
        """Write `files` into a fresh /tmp/h-NONCE of the kernel, with a records/
        folder (the sandbox user's) that becomes the only one read; returns the
        folder as the kernel sees it."""
        self.stop_others()
        name = f"h-{secrets.token_hex(8)}"
        tmp_fd = self.open_dir("/tmp")
        try:
            os.mkdir(name, 0o755, dir_fd=tmp_fd)
            dir_fd = os.open(name, _DIR_FLAGS, dir_fd=tmp_fd)
            try:
                for fname, content in files.items():
                    fd = os.open(
                        fname,
                        os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW,
                        0o644,
                        dir_fd=dir_fd,
                    )
                    with os.fdopen(fd, "wb") as fh:
                        fh.write(content)
                os.mkdir("records", 0o700, dir_fd=dir_fd)
                if (uid := self.uid) is not None:
                    os.chown("records", uid, uid, dir_fd=dir_fd, follow_symlinks=False)
            finally:
                os.close(dir_fd)
        finally:
            os.close(tmp_fd)
        self.records_inside = f"/tmp/{name}/records"
        return f"{self.tmp}/{name}"

    def records_dir(self) -> int | None:
        """The records folder while the kernel lives (its /tmp dies with it)."""
        return self.open_dir(self.records_inside) if self.alive() else None


class SandboxKernel(_GradingKernel):
    """A kernel in a bubblewrap `sandbox.Sandbox` with a cgroup (`course grade`).

    Args:
        mode: COURSE_GRADING_MODE for the kernel.
        modules: what it imports before the first cell (`execute.boot_modules`).
        view: what it sees (`sandbox.SandboxView`); limits: `sandbox.SandboxLimits`.
        name: the cgroup's name; uid: the sandbox user (root only);
        cpuset: the CPUs it may use, None: any.
    """

    def __init__(
        self,
        mode: str,
        modules: list[str],
        view: SandboxView | None,
        limits: SandboxLimits,
        name: str,
        uid: int | None = None,
        cpuset: str | None = None,
    ):
        super().__init__(mode, modules)
        self.view, self.limits, self.name = view, limits, name
        self.uid, self.cpuset = uid, cpuset
        self.box = None
        self._killed = False

    def _launch(self, command, env, conn, log) -> None:
        from . import sandbox

        self.box = sandbox.Sandbox(
            command,
            self.view or sandbox.SandboxView(),
            self.limits,
            env,
            {self.conn_inside: conn},
            log,
            self.name,
            uid=self.uid,
            cpuset=self.cpuset,
        )

    def host_path(self, inside: str) -> str:
        return self.box.host_path(inside)

    def open_dir(self, inside: str) -> int:
        return self.box.open_dir(inside)

    def stop_others(self) -> None:
        self.box.kill_others()

    def alive(self) -> bool:
        return self.box.alive()

    def exit_code(self, wait: float = 0.0) -> int | None:
        deadline = time.monotonic() + wait
        while self.box.alive() and time.monotonic() < deadline:
            time.sleep(0.05)
        code = self.box.exit_code()
        # bubblewrap exits 128+N when its child died of signal N: report -N.
        return code if code is None or not 128 < code < 160 else -(code - 128)

    def interrupt(self) -> None:
        self.box.interrupt()

    def kill(self) -> None:
        self._killed = True
        self.box.kill()

    def out_of_memory(self) -> bool:
        """The cgroup's memory events, or a SIGKILL the grader did not send
        under the cgroup's cap (the out-of-memory killer's signal)."""
        if self.box is None or self.box.cgroup is None:
            return False
        killed = not self._killed and self.exit_code() == -signal.SIGKILL
        return self.box.oom_killed() or killed

    def close(self) -> None:
        if self.box is not None:
            self.box.close()


class PlainKernel(_ChildProcess, _GradingKernel):
    """--unsafe-no-sandbox: the kernel runs as a plain process of the grader's
    user, with rlimits and deadlines only; its "/tmp" is a private temp dir."""

    def __init__(self, mode: str, modules: list[str], limits: SandboxLimits):
        super().__init__(mode, modules)
        self.limits = limits
        self.dir: Path | None = None
        self.proc = None
        self._log = None

    def start(self, folder: Path) -> Path:
        self.dir = Path(tempfile.mkdtemp(prefix="cg-unsafe-"))
        self.tmp = str(self.dir)
        self.conn_inside = f"{self.tmp}/kernel.json"
        return super().start(folder)

    def _launch(self, command, env, conn, log) -> None:
        import resource

        (self.dir / "kernel.json").write_bytes(conn)
        limits = self.limits

        def limit():  # runs in the child before exec
            for which, value in (
                (resource.RLIMIT_AS, limits.address_space),
                (resource.RLIMIT_FSIZE, limits.file_bytes),
                (resource.RLIMIT_CORE, 0),
            ):
                resource.setrlimit(which, (value, value))

        self._log = open(log, "ab")  # noqa: SIM115 — closed in close()
        self.proc = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=self._log,
            env=env,
            cwd=self.dir,
            start_new_session=True,
            preexec_fn=limit,  # noqa: PLW1509 — only setrlimit, before exec
        )

    def host_path(self, inside: str) -> str:
        return str(self.dir / Path(inside).relative_to("/tmp"))

    def open_dir(self, inside: str) -> int:
        return os.open(self.host_path(inside), _DIR_FLAGS)

    def interrupt(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.proc.pid, signal.SIGINT)

    def kill(self) -> None:
        if self.proc.poll() is None:  # once reaped, its pid may be reused
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(10)

    def out_of_memory(self) -> bool:
        return False  # rlimits only: a refused allocation, never a kill

    def close(self) -> None:
        if self.proc is not None:
            self.kill()
        if self._log is not None:
            self._log.close()
        if self.dir is not None:
            shutil.rmtree(self.dir, ignore_errors=True)
