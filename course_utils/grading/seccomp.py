"""The sandbox's system-call filter: a seccomp program bubblewrap loads (`--seccomp`).

A sandboxed kernel runs as an unprivileged user without capabilities, so most
administrative calls already fail; the filter removes what such a user can
still reach, modelled on the default profile of Docker and Podman (moby's
``profiles/seccomp/default.json``), which denies every call below to a
container without capabilities:

* **keyrings** (`add_key`, `keyctl`, `request_key`): kernel keyrings are not
  namespaced. A key one submission adds to its user keyring outlives its
  sandbox and is read by the next submission run as the same sandbox user,
  and a sandbox inherits the session keyring of whoever started the grader
  (an instructor's keys). Docker denies the three for the same reason;
* **other processes' memory** (`ptrace`, `process_vm_readv`/`writev`, `kcmp`);
* **kernel attack surface** a student has no use for: `bpf`,
  `perf_event_open`, `userfaultfd` (pauses the kernel mid-copy, an exploit
  aid), `io_uring_*` (moby dropped it in 2023), `move_pages`,
  `lookup_dcookie`;
* **new namespaces** (`unshare`, `setns`, `clone` with a `CLONE_NEW*` flag):
  an unprivileged user namespace is the usual first step of a kernel exploit.
  `clone3` passes its flags in memory a filter cannot read, so it returns
  ENOSYS, as in Docker: glibc then falls back to `clone` (threads, fork and
  posix_spawn keep working);
* **mounts, modules, the machine** (`mount`, the new mount API, `pivot_root`,
  `chroot`, `*_module`, `kexec_*`, `reboot`, `swapon`, `iopl`, `syslog`, the
  clock setters, `open_by_handle_at` …; see `DENIED`).

Each denied call returns EPERM (`clone3`: ENOSYS), the answer it gives an
unprivileged user, so the code that asks sees an ordinary error. Departures
from Docker: `personality` is allowed with any argument, and the NUMA calls
(`mbind`, `get_mempolicy`, `set_mempolicy`) are allowed (libraries probe them).

The rules cover the native ABI and the 32-bit ones the same CPU runs (on
x86_64: i386 through ``int 0x80``, and x32), so a foreign ABI is no way
round them; a call from any other ABI kills the process.

The filter is built with libseccomp (``libseccomp.so.2``, package
``libseccomp2`` on Debian and Ubuntu) through ctypes. Where it is missing,
`missing()` says so and `sandbox.detect()` reports the sandbox unusable:
`course grade` refuses rather than run without the filter (unless
``--unsafe-no-sandbox``, which runs no sandbox at all).

`fresh_keyring_argv` is defence in depth beside the filter: the sandbox's
process tree starts in a new, empty session keyring, not the grader's.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
import platform
import sys
from functools import cache

KEYRINGS = ("add_key", "keyctl", "request_key")
OTHER_PROCESSES = ("ptrace", "process_vm_readv", "process_vm_writev", "kcmp")
KERNEL_SURFACE = (
    "bpf",
    "perf_event_open",
    "userfaultfd",
    "io_uring_setup",
    "io_uring_enter",
    "io_uring_register",
    "move_pages",
    "lookup_dcookie",
)
NAMESPACES = ("unshare", "setns")
MOUNTS = (
    "mount",
    "umount",
    "umount2",
    "pivot_root",
    "chroot",
    "fsopen",
    "fsconfig",
    "fsmount",
    "fspick",
    "move_mount",
    "open_tree",
    "mount_setattr",
    "open_by_handle_at",
    "name_to_handle_at",
    "quotactl",
    "quotactl_fd",
    "swapon",
    "swapoff",
    "acct",
)
MACHINE = (
    "init_module",
    "finit_module",
    "delete_module",
    "create_module",
    "get_kernel_syms",
    "query_module",
    "kexec_load",
    "kexec_file_load",
    "reboot",
    "iopl",
    "ioperm",
    "syslog",
    "settimeofday",
    "clock_settime",
    "stime",
    "uselib",
    "ustat",
    "sysfs",
    "_sysctl",
    "nfsservctl",
    "vm86",
    "vm86old",
    "vhangup",
)
# Every call denied with EPERM; clone (namespace flags) and clone3 are below.
DENIED = KEYRINGS + OTHER_PROCESSES + KERNEL_SURFACE + NAMESPACES + MOUNTS + MACHINE
# clone's flags that make a namespace (CLONE_NEWNS … CLONE_NEWNET; Docker's mask).
CLONE_NAMESPACE_FLAGS = {
    "CLONE_NEWNS": 0x00020000,
    "CLONE_NEWCGROUP": 0x02000000,
    "CLONE_NEWUTS": 0x04000000,
    "CLONE_NEWIPC": 0x08000000,
    "CLONE_NEWUSER": 0x10000000,
    "CLONE_NEWPID": 0x20000000,
    "CLONE_NEWNET": 0x40000000,
}
# The other ABIs each native one runs (as Docker's archMap); libseccomp names.
SECONDARY_ARCHES = {"x86_64": ("x86", "x32"), "aarch64": ("arm",)}

# libseccomp's constants (seccomp.h)
SCMP_ACT_ALLOW = 0x7FFF0000
SCMP_ACT_KILL_THREAD = 0x00000000
SCMP_ACT_KILL_PROCESS = 0x80000000
SCMP_FLTATR_ACT_BADARCH = 2
SCMP_CMP_MASKED_EQ = 7
NR_SCMP_ERROR = -1
KEYCTL_JOIN_SESSION_KEYRING = 1


def scmp_act_errno(code: int) -> int:
    """SCMP_ACT_ERRNO(code): the call returns -1 with errno `code`."""
    return 0x00050000 | (code & 0xFFFF)


class ArgCmp(ctypes.Structure):
    """struct scmp_arg_cmp: argument `arg` compared by `op` with datum_a/b."""

    _fields_ = [
        ("arg", ctypes.c_uint),
        ("op", ctypes.c_int),
        ("datum_a", ctypes.c_uint64),
        ("datum_b", ctypes.c_uint64),
    ]


@cache
def _library() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("seccomp") if os.name == "posix" else None
    if name is None:
        return None
    try:
        lib = ctypes.CDLL(name, use_errno=True)
    except OSError:
        return None
    ctx = ctypes.c_void_p
    lib.seccomp_init.argtypes, lib.seccomp_init.restype = [ctypes.c_uint32], ctx
    lib.seccomp_release.argtypes, lib.seccomp_release.restype = [ctx], None
    lib.seccomp_arch_resolve_name.argtypes = [ctypes.c_char_p]
    lib.seccomp_arch_resolve_name.restype = ctypes.c_uint32
    lib.seccomp_arch_add.argtypes = [ctx, ctypes.c_uint32]
    lib.seccomp_attr_set.argtypes = [ctx, ctypes.c_int, ctypes.c_uint32]
    lib.seccomp_syscall_resolve_name.argtypes = [ctypes.c_char_p]
    lib.seccomp_rule_add_array.argtypes = [
        ctx,
        ctypes.c_uint32,
        ctypes.c_int,
        ctypes.c_uint,
        ctypes.POINTER(ArgCmp),
    ]
    lib.seccomp_export_bpf.argtypes = [ctx, ctypes.c_int]
    lib.seccomp_api_get.argtypes, lib.seccomp_api_get.restype = [], ctypes.c_uint
    return lib


def missing() -> str:
    """Why no filter can be built here ('' when it can)."""
    if not sys.platform.startswith("linux"):
        return f"{sys.platform} has no seccomp"
    if _library() is None:
        return (
            "libseccomp is not installed (apt-get install libseccomp2): the "
            "sandbox's system-call filter cannot be built"
        )
    try:
        program()
    except RuntimeError as exc:
        return f"the sandbox's system-call filter cannot be built: {exc}"
    return ""


def syscall_number(name: str) -> int:
    """The native number of a system call (negative where this ABI lacks it).

    Raises:
        RuntimeError: libseccomp is missing, or does not know the name.
    """
    lib = _library()
    if lib is None:
        raise RuntimeError(missing())
    number = lib.seccomp_syscall_resolve_name(name.encode())
    if number == NR_SCMP_ERROR:
        raise RuntimeError(f"libseccomp does not know the system call {name!r}")
    return number


def _check(rc: int, what: str) -> None:
    if rc < 0:
        raise RuntimeError(f"libseccomp: {what} failed: {os.strerror(-rc)}")


def _deny(lib, ctx, name: str, action: int, conditions=(), required=True) -> None:
    """One rule: `name` (when each condition holds) gets `action`. A call this
    libseccomp does not know (newer than it) is an error when `required`."""
    number = lib.seccomp_syscall_resolve_name(name.encode())
    if number == NR_SCMP_ERROR:
        if required:
            raise RuntimeError(f"libseccomp is too old: it does not know {name}")
        return
    array = (ArgCmp * max(1, len(conditions)))(*conditions)
    rc = lib.seccomp_rule_add_array(ctx, action, number, len(conditions), array)
    _check(rc, f"a rule for {name}")


def _add_rules(lib, ctx) -> None:
    eperm = scmp_act_errno(errno.EPERM)
    for name in DENIED:
        # MOUNTS and MACHINE need capabilities a sandbox cannot get (a user
        # namespace is denied): where libseccomp predates one, it is left out.
        _deny(lib, ctx, name, eperm, required=name not in MOUNTS + MACHINE)
    for flag in CLONE_NAMESPACE_FLAGS.values():  # rules of one call are OR-ed
        # clone's first argument is its flags on every ABI of SECONDARY_ARCHES
        _deny(lib, ctx, "clone", eperm, [ArgCmp(0, SCMP_CMP_MASKED_EQ, flag, flag)])
    _deny(lib, ctx, "clone3", scmp_act_errno(errno.ENOSYS))


@cache
def program() -> bytes:
    """The filter as a BPF program (struct sock_filter[]), as bubblewrap reads it.

    Raises:
        RuntimeError: libseccomp is missing or refuses a rule.
    """
    lib = _library()
    if lib is None:
        raise RuntimeError(missing())
    ctx = lib.seccomp_init(SCMP_ACT_ALLOW)
    if not ctx:
        raise RuntimeError("libseccomp: seccomp_init failed")
    fd = os.memfd_create("course-seccomp-build", os.MFD_CLOEXEC)
    try:
        # KILL_PROCESS needs API level 3 (libseccomp 2.4, Linux 4.14)
        api = lib.seccomp_api_get()
        kill = SCMP_ACT_KILL_PROCESS if api >= 3 else SCMP_ACT_KILL_THREAD
        _check(lib.seccomp_attr_set(ctx, SCMP_FLTATR_ACT_BADARCH, kill), "badarch")
        for arch in SECONDARY_ARCHES.get(platform.machine(), ()):
            token = lib.seccomp_arch_resolve_name(arch.encode())
            if token:
                _check(lib.seccomp_arch_add(ctx, token), f"adding the {arch} ABI")
        _add_rules(lib, ctx)
        _check(lib.seccomp_export_bpf(ctx, fd), "exporting the filter")
        size = os.lseek(fd, 0, os.SEEK_END)
        return os.pread(fd, size, 0)
    finally:
        os.close(fd)
        lib.seccomp_release(ctx)


def filter_fd() -> int:
    """A new descriptor holding `program()` from offset 0, for ``--seccomp FD``.

    Not inheritable: pass it with Popen's pass_fds, then close it.
    """
    data = program()
    fd = os.memfd_create("course-seccomp", os.MFD_CLOEXEC)
    try:
        os.write(fd, data)
        os.lseek(fd, 0, os.SEEK_SET)
    except OSError:
        os.close(fd)
        raise
    return fd


# Run as `python -I -S -c JOIN_SCRIPT NR argv…`: a new anonymous session keyring,
# then exec argv. ENOSYS (a kernel without keyrings) leaves nothing to inherit.
JOIN_SCRIPT = """\
import ctypes, errno, os, sys
libc = ctypes.CDLL(None, use_errno=True)
if libc.syscall(ctypes.c_long(int(sys.argv[1])), ctypes.c_long(1), None) < 0:
    code = ctypes.get_errno()
    if code != errno.ENOSYS:
        sys.exit("sandbox: no fresh session keyring: " + os.strerror(code))
os.execv(sys.argv[2], sys.argv[2:])
"""


def fresh_keyring_argv() -> list[str]:
    """An argv prefix that runs the rest in a new, empty session keyring.

    KEYCTL_JOIN_SESSION_KEYRING with no name, in a short Python run before
    bubblewrap: what follows (bubblewrap, the kernel, all it starts) no longer
    holds the keyring of whoever started the grader, so an instructor's
    session keys are out of its reach even where the filter were absent. The
    process id stays the same (exec), open descriptors pass through.
    """
    number = syscall_number("keyctl")
    return [sys.executable, "-I", "-S", "-c", JOIN_SCRIPT, str(number)]
