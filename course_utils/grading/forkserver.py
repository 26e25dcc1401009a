"""Forked kernels with limits for `course check` on a student's own machine.

Grading does not use this module: it runs every submission in an OS sandbox
(`sandbox`). What follows keeps a self-check fast and bounded.

`ForkServer` starts one warm helper process (this module run as a script) that
has imported IPython, torch, numpy and course_utils once; every kernel is a
`fork` of it, so a kernel is ready in a fraction of a second instead of paying
torch's import on every submission. Before the forked child turns into an
IPython kernel it

* starts its own session (process group), so the grader can signal or kill
  everything it started at once;
* points stdin at /dev/null, stdout/stderr at a log file, and closes every
  other inherited file descriptor (the helper's pipe to the grader included);
* sets resource limits (`Limits`): address space (RLIMIT_AS, a memory cap),
  CPU seconds, file size, open files, no core dumps and — when it runs as its
  own user — number of processes;
* when the grader runs as root, drops to an unprivileged user and group that
  own nothing but the kernel's scratch directory (`Identity`): setgroups([]),
  setgid, setuid, and checks that it cannot get root back;
* dies with the helper (PR_SET_PDEATHSIG), and the helper with the grader;
* replaces its environment (HOME, TMPDIR and friends inside the scratch
  directory; no variables of the grader's);
* then runs `ipykernel` on the connection file the grader wrote.

The grader stops a kernel with SIGKILL to its process group and, with a
sandbox user, to every process of that user (`kill(-1)` from a helper that has
become that user), so nothing it forked survives.

The forkserver protocol is JSON lines on the helper's stdin/stdout:
``{"op": "spawn", "id": …}`` → ``{"op": "spawned", "id": …, "pid": …}``,
``{"op": "killuid", "uid": …}``, and the helper reports ``{"op": "exit",
"pid": …, "code": …}`` (negative: killed by that signal) for every child.
"""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Self

# Imported once by the fork server, so that every kernel starts warm.
WARM_MODULES = (
    "IPython",
    "ipykernel.ipkernel",
    "ipykernel.kernelapp",
    "numpy",
    "scipy.stats",
    "course_utils.models",
    "course_utils.data",
    "course_utils.saliency",
    "course_utils.grading.checks",
)
GiB = 2**30
MiB = 2**20
PR_SET_PDEATHSIG = 1


@dataclass(frozen=True)
class Limits:
    """Resource limits of one kernel.

    Args:
        memory_bytes: RLIMIT_AS, the kernel's address space. torch alone maps
            about 3.5 GiB of virtual memory (its CPU and CUDA libraries) while
            using under 1 GiB; 6 GiB leaves the course's work ample room and
            turns a memory bomb into a MemoryError (measured: see
            bench/bench_grading.py).
        cpu_seconds: RLIMIT_CPU over the kernel's life (SIGKILL when exceeded).
        file_bytes: RLIMIT_FSIZE, the largest file it may write.
        open_files: RLIMIT_NOFILE.
        processes: RLIMIT_NPROC (threads count too); set only when the kernel
            runs as its own user, since the limit is per user.
    """

    memory_bytes: int = 6 * GiB
    cpu_seconds: int = 900
    file_bytes: int = 64 * MiB
    open_files: int = 512
    processes: int = 256


@dataclass(frozen=True)
class Identity:
    """The user and group a kernel runs as; None keeps the grader's own."""

    uid: int | None = None
    gid: int | None = None


def can_switch_user() -> bool:
    """Whether this process may run kernels as another user (it is root)."""
    return hasattr(os, "geteuid") and os.geteuid() == 0


# ---------------------------------------------------------------- the helper


def _prctl_pdeathsig() -> None:
    """Get SIGKILL when the parent dies (Linux); a no-op elsewhere."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):
        pass


def _set_limits(limits: dict, own_user: bool) -> None:
    import resource

    def cap(which, value):
        _soft, hard = resource.getrlimit(which)
        if hard != resource.RLIM_INFINITY:
            value = min(value, hard)
        resource.setrlimit(which, (value, value))

    cap(resource.RLIMIT_AS, limits["memory_bytes"])
    cap(resource.RLIMIT_CPU, limits["cpu_seconds"])
    cap(resource.RLIMIT_FSIZE, limits["file_bytes"])
    cap(resource.RLIMIT_NOFILE, limits["open_files"])
    cap(resource.RLIMIT_CORE, 0)
    if own_user:
        cap(resource.RLIMIT_NPROC, limits["processes"])


def _become_kernel(req: dict) -> None:
    """In the forked child: isolate, limit, drop privileges, run ipykernel."""
    code = 1
    try:
        os.setsid()
        signal.set_wakeup_fd(-1)
        for sig in (signal.SIGCHLD, signal.SIGINT, signal.SIGTERM, signal.SIGPIPE):
            signal.signal(sig, signal.SIG_DFL)
        log_fd = os.open(
            req["log"], os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW, 0o600
        )
        null_fd = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null_fd, 0)
        os.dup2(log_fd, 1)
        os.dup2(log_fd, 2)
        os.closerange(3, 65536)
        uid, gid = req.get("uid"), req.get("gid")
        path_fds = _open_path_dirs() if uid is not None else {}
        _set_limits(req["limits"], own_user=uid is not None)
        if uid is not None:
            os.setgroups([])
            os.setgid(gid)
            os.setuid(uid)
            try:
                os.setuid(0)
            except PermissionError:
                pass
            else:
                raise RuntimeError("dropping privileges failed: could regain root")
            _bridge_import_path(path_fds)
        _prctl_pdeathsig()  # after setuid, which clears it
        os.umask(0o077)
        os.chdir(req["cwd"])
        os.environ.clear()
        os.environ.update(req["env"])
        # The process becomes the kernel: these streams live as long as it does.
        sys.stdin = open(0, closefd=False)  # noqa: SIM115
        sys.stdout = open(1, "w", buffering=1, closefd=False)  # noqa: SIM115
        sys.stderr = open(2, "w", buffering=1, closefd=False)  # noqa: SIM115
        sys.argv = ["ipykernel_launcher", "-f", req["connection_file"]]
        from ipykernel.kernelapp import IPKernelApp

        IPKernelApp.launch_instance(
            argv=[
                "-f",
                req["connection_file"],
                "--HistoryManager.enabled=False",
            ]
        )
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    except BaseException:  # noqa: BLE001 — report anything, then _exit below
        import traceback

        traceback.print_exc()
    finally:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(code)


def _open_path_dirs() -> dict[str, int]:
    """Directory fds for the import path, opened while still privileged."""
    fds = {}
    for entry in sys.path:
        if entry and os.path.isdir(entry) and entry not in fds:
            try:
                fds[entry] = os.open(entry, os.O_RDONLY | os.O_DIRECTORY)
            except OSError:
                continue
    return fds


def _bridge_import_path(fds: dict[str, int]) -> None:
    """Reach import dirs the sandbox user cannot traverse to through held fds.

    A Python installed under a private home (pyenv in /root, mode 0700) is
    unreadable once the kernel runs as another user, although its files are
    world-readable. The fds opened before dropping privileges stay usable:
    such entries of sys.path and of loaded packages' __path__ are rewritten
    to /proc/self/fd/N/…, which reaches those directories (and only what is
    below them and readable) without traversing the private parent.
    """
    bridge = {}
    for path, fd in fds.items():
        if os.access(path, os.R_OK | os.X_OK):
            os.close(fd)
        else:
            bridge[path] = f"/proc/self/fd/{fd}"
    if not bridge:
        return
    roots = sorted(bridge, key=len, reverse=True)

    def rewrite(entry):
        if not isinstance(entry, str):
            return entry
        for root in roots:
            if entry == root or entry.startswith(root + os.sep):
                return bridge[root] + entry[len(root) :]
        return entry

    sys.path[:] = [rewrite(e) for e in sys.path]
    for module in list(sys.modules.values()):
        paths = getattr(module, "__path__", None)
        if isinstance(paths, list):
            paths[:] = [rewrite(e) for e in paths]
    sys.path_importer_cache.clear()
    import importlib

    importlib.invalidate_caches()


def _kill_user(uid: int) -> None:
    """In a forked child: become `uid` and SIGKILL every process of that user."""
    try:
        os.setgroups([])
        os.setgid(uid)
        os.setuid(uid)
        os.kill(-1, signal.SIGKILL)  # kills this helper too
    finally:
        os._exit(0)


def _serve() -> None:
    """The helper's main loop (runs as `python -m course_utils.grading.forkserver`)."""
    _prctl_pdeathsig()
    out = os.fdopen(os.dup(1), "w", buffering=1)
    # Nothing the imports print may reach the protocol pipe.
    os.dup2(2, 1)
    import importlib

    import torch

    torch.set_num_threads(1)
    for name in WARM_MODULES:
        importlib.import_module(name)
    from course_utils import data

    for split in ("train", "test"):
        data.load_split(split)
    read_fd, write_fd = os.pipe()
    os.set_blocking(write_fd, False)
    signal.set_wakeup_fd(write_fd)
    signal.signal(signal.SIGCHLD, lambda *_: None)

    def send(msg: dict) -> None:
        out.write(json.dumps(msg) + "\n")
        out.flush()

    def reap() -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            send({"op": "exit", "pid": pid, "code": os.waitstatus_to_exitcode(status)})

    send({"op": "ready", "pid": os.getpid()})
    buffer = b""
    while True:
        try:
            ready, _, _ = select.select([0, read_fd], [], [])
        except InterruptedError:
            continue
        if read_fd in ready:
            os.read(read_fd, 4096)
            reap()
        if 0 not in ready:
            continue
        chunk = os.read(0, 65536)
        if not chunk:
            return  # the grader closed the pipe
        buffer += chunk
        while b"\n" in buffer:
            line, buffer = buffer.split(b"\n", 1)
            req = json.loads(line)
            if req["op"] == "spawn":
                sys.stdout.flush()
                sys.stderr.flush()
                pid = os.fork()
                if pid == 0:
                    _become_kernel(req)
                send({"op": "spawned", "id": req["id"], "pid": pid})
            elif req["op"] == "killuid":
                if os.fork() == 0:
                    _kill_user(int(req["uid"]))
            elif req["op"] == "quit":
                return
        reap()


# ------------------------------------------------------- the grader's side


def server_env(work: Path) -> dict[str, str]:
    """The fork server's environment: threads pinned, nothing else inherited."""
    return {
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "LANG": "C.UTF-8",
        "HOME": str(work),
        "OMP_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
        "OPENBLAS_NUM_THREADS": "1",
        "MALLOC_ARENA_MAX": "2",
        "PYTHONDONTWRITEBYTECODE": "1",
        "PYTHONHASHSEED": "0",
        "MPLCONFIGDIR": str(work / "mpl"),
    }


class ForkServer:
    """The grader's handle on the warm helper that forks sandboxed kernels.

    Args:
        env: the helper's environment (kernels get their own, see `spawn`).
        log_path: where the helper's stderr goes.
        startup_timeout: seconds to wait for its imports.
    """

    def __init__(
        self, env: dict[str, str], log_path: Path, startup_timeout: float = 180.0
    ):
        self._log = open(log_path, "ab")  # noqa: SIM115 — closed in close()
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "course_utils.grading.forkserver"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._log,
            env=env,
            close_fds=True,
        )
        self._lock = threading.Lock()
        self._cond = threading.Condition()
        self._spawned: dict[int, int | str] = {}
        self._exits: dict[int, int] = {}
        self._next_id = 0
        self._ready = threading.Event()
        self._closed = False
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        if not self._ready.wait(startup_timeout) or self._proc.poll() is not None:
            self.close()
            raise RuntimeError(
                f"the kernel fork server did not start within {startup_timeout:.0f} s; "
                f"see {log_path}"
            )

    def _read(self) -> None:
        for raw in self._proc.stdout:
            try:
                msg = json.loads(raw)
            except ValueError:
                continue
            with self._cond:
                if msg["op"] == "ready":
                    self._ready.set()
                elif msg["op"] == "spawned":
                    self._spawned[msg["id"]] = msg["pid"]
                elif msg["op"] == "exit":
                    self._exits[msg["pid"]] = msg["code"]
                self._cond.notify_all()
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def _send(self, msg: dict) -> None:
        with self._lock:
            if self._proc.poll() is not None:
                raise RuntimeError("the kernel fork server has exited")
            self._proc.stdin.write((json.dumps(msg) + "\n").encode())
            self._proc.stdin.flush()

    def spawn(
        self,
        *,
        connection_file: Path,
        cwd: Path,
        env: dict[str, str],
        log: Path,
        limits: Limits,
        identity: Identity,
        timeout: float = 30.0,
    ) -> int:
        """Fork a kernel; returns its pid (also its process group id)."""
        with self._cond:
            self._next_id += 1
            req_id = self._next_id
        self._send(
            {
                "op": "spawn",
                "id": req_id,
                "connection_file": str(connection_file),
                "cwd": str(cwd),
                "env": env,
                "log": str(log),
                "limits": asdict(limits),
                "uid": identity.uid,
                "gid": identity.gid,
            }
        )
        deadline = time.monotonic() + timeout
        with self._cond:
            while req_id not in self._spawned:
                left = deadline - time.monotonic()
                if left <= 0 or self._closed:
                    raise RuntimeError("the kernel fork server did not fork a kernel")
                self._cond.wait(left)
            return int(self._spawned.pop(req_id))

    def exit_code(self, pid: int) -> int | None:
        """The kernel's exit code (negative: signal), or None while it runs."""
        with self._cond:
            return self._exits.get(pid)

    def wait(self, pid: int, timeout: float) -> int | None:
        """Wait up to `timeout` seconds for the kernel to exit; its code or None."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while pid not in self._exits:
                left = deadline - time.monotonic()
                if left <= 0 or self._closed:
                    return None
                self._cond.wait(left)
            return self._exits[pid]

    def interrupt(self, pid: int) -> None:
        """SIGINT to the kernel's process group (what Jupyter's interrupt sends)."""
        try:
            os.killpg(pid, signal.SIGINT)
        except ProcessLookupError:
            pass

    def kill(self, pid: int, identity: Identity) -> None:
        """SIGKILL the kernel's process group and every process of its user."""
        try:
            os.killpg(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        if identity.uid is not None:
            self.kill_user(identity.uid)
        self.wait(pid, 10.0)

    def kill_user(self, uid: int) -> None:
        """SIGKILL every process owned by `uid` (never 0 or the grader's own)."""
        if uid in (0, os.getuid()):
            raise ValueError(f"uid must be a sandbox user, not {uid}")
        self._send({"op": "killuid", "uid": uid})
        time.sleep(0.05)

    def close(self) -> None:
        """Stop the helper (its kernels die with it)."""
        if self._proc.poll() is None:
            try:
                self._send({"op": "quit"})
                self._proc.wait(5)
            except (RuntimeError, OSError, subprocess.TimeoutExpired):
                self._proc.kill()
                self._proc.wait()
        self._log.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


if __name__ == "__main__":
    _serve()
