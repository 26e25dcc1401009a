"""The sandbox's system-call filter and fresh session keyring (issue 22).

A short Python command runs in a real `Sandbox` as the sandbox user, calls
each denied system call through ctypes and prints the errno it got: the
keyring calls, ptrace, mount, bpf, perf_event_open, userfaultfd and new
namespaces answer EPERM, also through the i386 ABI. A key in the grader's
session keyring cannot be read from inside, a key one run tries to plant
is not there for the next run of the same sandbox user, and an honest kernel
(numpy, torch, a convolution, threads, fork, subprocess) still works.
Skipped where there is no sandbox as root (bubblewrap, a cgroup, libseccomp).
"""

import ctypes
import errno
import json
import os
import platform
import subprocess
import sys
import time

import pytest

from course_utils.grading import sandbox, seccomp

pytestmark = pytest.mark.skipif(
    not sandbox.detect().usable or os.geteuid() != 0 or bool(seccomp.missing()),
    reason="needs the sandbox as root (bubblewrap, a cgroup, libseccomp)",
)

SANDBOX_UID = 64391
KEY_SPEC_SESSION_KEYRING = -3
KEY_SPEC_USER_KEYRING = -4
KEYCTL_GET_KEYRING_ID = 0
KEYCTL_JOIN_SESSION_KEYRING = 1
KEYCTL_READ = 11
KEYCTL_SEARCH = 10
CLONE_NEWUSER = 0x10000000

# Runs inside: `call(name, *args)` is the raw system call by its number (given
# from outside, resolved by libseccomp), recorded as its errno name (or "ok").
CALLER = """
import ctypes, errno, json, os, sys
NR = json.loads(sys.argv[1])
libc = ctypes.CDLL(None, use_errno=True)
out = {}
def arg(a):
    return ctypes.c_char_p(a) if isinstance(a, bytes) else ctypes.c_long(a)
def call(label, name, *args):
    ctypes.set_errno(0)
    r = libc.syscall(ctypes.c_long(NR[name]), *[arg(a) for a in args])
    if r == 0 and name == "clone":  # a child made anyway: leave at once
        os._exit(0)
    out[label] = "ok" if r >= 0 else errno.errorcode[ctypes.get_errno()]
"""


def numbers() -> dict[str, int]:
    names = ["add_key", "keyctl", "request_key", "ptrace", "mount", "bpf"]
    names += ["perf_event_open", "userfaultfd", "unshare", "setns", "clone"]
    names += ["clone3", "process_vm_readv", "init_module", "kexec_load"]
    return {n: seccomp.syscall_number(n) for n in names}


def run_inside(tmp_path, body: str, *argv: str) -> dict:
    """The JSON a CALLER + body script prints from a sandbox (as SANDBOX_UID)."""
    log = tmp_path / f"box-{time.monotonic_ns()}.log"
    code = CALLER + body + "\nprint('RESULT', json.dumps(out))\n"
    box = sandbox.Sandbox(
        [sys.executable, "-c", code, json.dumps(numbers()), *argv],
        sandbox.SandboxView(),
        sandbox.SandboxLimits(),
        {"PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1"},
        {},
        log,
        f"sc{os.getpid()}-{time.monotonic_ns()}",
        uid=SANDBOX_UID,
    )
    try:
        deadline = time.monotonic() + 120
        while box.alive() and time.monotonic() < deadline:
            time.sleep(0.05)
        status, text = box.exit_code(), log.read_text()
    finally:
        box.close()
    lines = [ln for ln in text.splitlines() if ln.startswith("RESULT ")]
    assert status == 0 and lines, text
    return json.loads(lines[-1][len("RESULT ") :])


DENIED_CALLS = """
call("add_key", "add_key", b"user", b"planted", b"secret", 6, -4)
call("keyctl", "keyctl", 0, -3, 0)
call("request_key", "request_key", b"user", b"planted", 0, 0)
call("ptrace", "ptrace", 0, 0, 0, 0)  # PTRACE_TRACEME
call("mount", "mount", b"none", b"/tmp", b"tmpfs", 0, 0)
call("bpf", "bpf", 0, 0, 0)
call("perf_event_open", "perf_event_open", 0, 0, -1, -1, 0)
call("userfaultfd", "userfaultfd", 0)
call("unshare", "unshare", 0x10000000)  # CLONE_NEWUSER
call("setns", "setns", 0, 0)
call("clone_newuser", "clone", 0x10000000 | 17, 0, 0, 0, 0)
call("clone3", "clone3", 0, 0)
call("process_vm_readv", "process_vm_readv", 1, 0, 0, 0, 0, 0)
call("init_module", "init_module", 0, 0, b"")
call("kexec_load", "kexec_load", 0, 0, 0, 0)
"""


def test_the_denied_calls_answer_eperm_inside(tmp_path):
    got = run_inside(tmp_path, DENIED_CALLS)
    expected = {label: "EPERM" for label in got}
    expected["clone3"] = "ENOSYS"  # glibc then falls back to clone
    assert got == expected


# i386 keyctl(KEYCTL_GET_KEYRING_ID, KEY_SPEC_SESSION_KEYRING, 0) by int 0x80:
# push rbx; mov eax, 288; xor ebx, ebx; mov ecx, -3; xor edx, edx; int 0x80;
# movsxd rax, eax; pop rbx; ret
INT80_KEYCTL = "53b82001000031dbb9fdffffff31d2cd804863c05bc3"
INT80 = f"""
import mmap
m = mmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
m.write(bytes.fromhex("{INT80_KEYCTL}"))
f = ctypes.CFUNCTYPE(ctypes.c_long)(ctypes.addressof(ctypes.c_char.from_buffer(m)))
r = f()
out["int80_keyctl"] = "ok" if r >= 0 else errno.errorcode[-r]
"""


def _int80_works_here() -> bool:
    if platform.machine() != "x86_64":
        return False
    code = CALLER + INT80 + "\nprint(out['int80_keyctl'])"
    out = subprocess.run(
        [sys.executable, "-c", code, "{}"], capture_output=True, text=True, check=False
    )
    return out.stdout.strip() == "ok"


@pytest.mark.skipif(not _int80_works_here(), reason="no i386 ABI (int 0x80) here")
def test_the_i386_abi_is_no_way_round_the_filter(tmp_path):
    assert run_inside(tmp_path, INT80) == {"int80_keyctl": "EPERM"}


# ---------------------------------------------------------------- keyrings

libc = ctypes.CDLL(None, use_errno=True)


def keyctl(*args) -> int:
    """keyctl(2) in this process; -errno on failure."""
    conv = [
        ctypes.c_char_p(a) if isinstance(a, bytes) else ctypes.c_long(a)
        if isinstance(a, int) else a  # a buffer: passed as its address
        for a in args
    ]  # fmt: skip
    r = libc.syscall(ctypes.c_long(seccomp.syscall_number("keyctl")), *conv)
    return r if r >= 0 else -ctypes.get_errno()


def add_key(description: bytes, payload: bytes, keyring: int) -> int:
    nr = seccomp.syscall_number("add_key")
    r = libc.syscall(
        ctypes.c_long(nr),
        ctypes.c_char_p(b"user"),
        ctypes.c_char_p(description),
        ctypes.c_char_p(payload),
        ctypes.c_size_t(len(payload)),
        ctypes.c_long(keyring),
    )
    assert r > 0, os.strerror(ctypes.get_errno())
    return r


GRADERS_KEY = """
# the instructor's key (serial in argv) and the grader's session keyring
call("read_instructor_key", "keyctl", 11, int(sys.argv[2]), 0, 0)  # KEYCTL_READ
call("session_keyring", "keyctl", 0, -3, 0)  # KEYCTL_GET_KEYRING_ID
call("search_session", "keyctl", 10, -3, b"user", b"instructor-secret", 0)
"""


@pytest.fixture
def own_session_keyring():
    """This test process in a new session keyring of its own (an anonymous one
    after the test: the test's keys go with the named one)."""
    before = keyctl(KEYCTL_GET_KEYRING_ID, KEY_SPEC_SESSION_KEYRING, 0)
    if before == -errno.ENOSYS:
        pytest.skip("this kernel has no keyrings")
    name = f"course-test-{os.getpid()}".encode()
    assert keyctl(KEYCTL_JOIN_SESSION_KEYRING, name) > 0
    yield
    keyctl(KEYCTL_JOIN_SESSION_KEYRING, 0)


def test_a_key_of_the_graders_session_keyring_is_out_of_reach(
    tmp_path, own_session_keyring
):
    serial = add_key(b"instructor-secret", b"hunter2", KEY_SPEC_SESSION_KEYRING)
    buf = ctypes.create_string_buffer(64)
    assert keyctl(KEYCTL_READ, serial, buf, 64) == 7  # readable out here
    got = run_inside(tmp_path, GRADERS_KEY, str(serial))
    assert got == {
        "read_instructor_key": "EPERM",
        "session_keyring": "EPERM",
        "search_session": "EPERM",
    }


def test_without_the_filter_the_fresh_keyring_still_hides_the_graders_key(
    own_session_keyring,
):
    """Defence in depth: what `fresh_keyring_argv` starts has another, empty
    session keyring, even as root and without any filter."""
    serial = add_key(b"instructor-secret", b"hunter2", KEY_SPEC_SESSION_KEYRING)
    ours = keyctl(KEYCTL_GET_KEYRING_ID, KEY_SPEC_SESSION_KEYRING, 0)
    probe = CALLER + GRADERS_KEY + "\nprint('RESULT', json.dumps(out))"
    nr = json.dumps(numbers())
    out = subprocess.run(
        [*seccomp.fresh_keyring_argv(), sys.executable, "-c", probe, nr, str(serial)],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    got = json.loads(out.stdout.split("RESULT ", 1)[1])
    assert got["session_keyring"] == "ok"  # it has one: a new one
    assert got["search_session"] == "ENOKEY"  # without the instructor's key
    # started plainly, the same probe finds the key
    direct = [sys.executable, "-c", probe, nr, str(serial)]
    plain = subprocess.run(direct, capture_output=True, text=True, check=True)
    assert json.loads(plain.stdout.split("RESULT ", 1)[1])["search_session"] == "ok"
    assert ours > 0


PLANT = """
call("plant_user", "add_key", b"user", b"planted", b"secret", 6, -4)
call("plant_session", "add_key", b"user", b"planted", b"secret", 6, -3)
"""
FIND_PLANTED = """
call("request_planted", "request_key", b"user", b"planted", 0, 0)
call("search_user", "keyctl", 10, -4, b"user", b"planted", 0)
"""


def test_a_key_planted_by_one_run_is_not_there_for_the_next(tmp_path):
    assert run_inside(tmp_path, PLANT) == {
        "plant_user": "EPERM",
        "plant_session": "EPERM",
    }
    assert run_inside(tmp_path, FIND_PLANTED) == {
        "request_planted": "EPERM",
        "search_user": "EPERM",
    }
    # Unfiltered, as the same sandbox user: its user keyring holds no such key.
    probe = CALLER + FIND_PLANTED + "\nprint('RESULT', json.dumps(out))"
    drop = ["setpriv", f"--reuid={SANDBOX_UID}", f"--regid={SANDBOX_UID}"]
    out = subprocess.run(
        [*drop, "--clear-groups", sys.executable, "-c", probe, json.dumps(numbers())],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    got = json.loads(out.stdout.split("RESULT ", 1)[1])
    assert got["search_user"] == "ENOKEY", got


# ------------------------------------------------------ an honest kernel

HONEST = """
import subprocess, threading
import numpy as np
import torch
torch.set_num_threads(2)
conv = torch.nn.Conv2d(3, 4, 3, padding=1)
with torch.no_grad():
    conv.weight.fill_(1.0)
    conv.bias.zero_()
    y = conv(torch.ones(2, 3, 8, 8))
out["conv_centre"] = float(y[0, 0, 4, 4])  # 3 channels x 3 x 3 ones
out["numpy"] = float(np.arange(4).sum())
t = threading.Thread(target=lambda: out.__setitem__("thread", "ok"))
t.start(); t.join()
out["subprocess"] = subprocess.run(["true"]).returncode
pid = os.fork()
if pid == 0:
    os._exit(7)
out["fork"] = os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
"""


def test_an_honest_kernel_still_runs(tmp_path):
    got = run_inside(tmp_path, HONEST)
    assert got == {
        "conv_centre": 27.0,
        "numpy": 6.0,
        "thread": "ok",
        "subprocess": 0,
        "fork": 7,
    }


# --------------------------------------------------------- without libseccomp


def test_without_libseccomp_the_filter_refuses_with_a_reason(monkeypatch):
    monkeypatch.setattr(seccomp.ctypes.util, "find_library", lambda name: None)
    seccomp._library.cache_clear()
    seccomp.program.cache_clear()
    try:
        assert "libseccomp is not installed" in seccomp.missing()
        with pytest.raises(RuntimeError, match="libseccomp is not installed"):
            seccomp.filter_fd()
    finally:
        monkeypatch.undo()
        seccomp._library.cache_clear()
        seccomp.program.cache_clear()
    assert seccomp.missing() == ""
