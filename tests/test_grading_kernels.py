"""The kernel interface (`grading.kernels`) and the one run sequence over it.

Out of memory is told by the operating system: the cgroup's memory events, or
a SIGKILL the grader did not send under a memory cap. A fake sandbox shows
each case; a real sandbox shows an out-of-memory kill end to end. A plain
kernel (no sandbox) runs a notebook with a harness through `execute.run`.
"""

import asyncio
import os
import signal
import sys

import nbformat
import pytest

from course_utils.grading import execute, kernels, sandbox
from course_utils.grading.execute import CellStatus, Harness, RunSettings, RunStatus

PROTOCOL = ("start", "alive", "exit_code", "interrupt", "kill", "out_of_memory",
            "records_dir", "close")  # fmt: skip


@pytest.mark.parametrize(
    "cls",
    [
        kernels.ForkKernel,
        kernels.LaunchedKernel,
        kernels.SandboxKernel,
        kernels.PlainKernel,
    ],
)
def test_every_way_of_starting_a_kernel_has_the_whole_interface(cls):
    for name in PROTOCOL:
        assert callable(getattr(cls, name)), (cls.__name__, name)


class FakeBox:
    """What SandboxKernel reads of a `sandbox.Sandbox`: a cgroup, its memory
    events and bubblewrap's exit code (128 + N: its child died of signal N)."""

    def __init__(self, code, oom=False, cgroup=True):
        self.code, self.oom = code, oom
        self.cgroup = object() if cgroup else None
        self.killed = False

    def alive(self):
        return self.code is None

    def exit_code(self):
        return self.code

    def oom_killed(self):
        return self.oom

    def kill(self):
        self.killed = True


def _kernel(box):
    kernel = kernels.SandboxKernel("record", [], None, None, "t")
    kernel.box = box
    return kernel


def test_out_of_memory_is_the_cgroups_memory_events():
    assert _kernel(FakeBox(None, oom=True)).out_of_memory()
    assert not _kernel(FakeBox(None)).out_of_memory()


def test_a_sigkill_the_grader_did_not_send_under_a_cap_is_out_of_memory():
    assert _kernel(FakeBox(128 + signal.SIGKILL)).out_of_memory()
    assert _kernel(FakeBox(128 + signal.SIGKILL)).exit_code() == -signal.SIGKILL
    # other endings are not
    assert not _kernel(FakeBox(1)).out_of_memory()
    assert not _kernel(FakeBox(128 + signal.SIGSEGV)).out_of_memory()
    # no cap: nothing to run out of
    assert not _kernel(FakeBox(128 + signal.SIGKILL, cgroup=False)).out_of_memory()
    # the grader's own kill (a deadline) is not
    kernel = _kernel(FakeBox(None))
    kernel.kill()
    kernel.box.code = 128 + signal.SIGKILL
    assert kernel.box.killed and not kernel.out_of_memory()


def test_message_text_does_not_decide_memory():
    assert execute.is_memory_error("MemoryError", "")
    for ename, evalue in [
        ("RuntimeError", "DefaultCPUAllocator: can't allocate memory"),
        ("ValueError", "out of memory"),
        ("RuntimeError", "std::bad_alloc"),
        ("OSError", "[Errno 12] Cannot allocate memory"),
    ]:
        assert not execute.is_memory_error(ename, evalue), evalue


def test_statuses_are_enums_that_compare_as_text():
    assert RunStatus.TIMED_OUT == "timed out" and f"{RunStatus.CRASHED}" == "crashed"
    assert CellStatus.NOT_RUN in ("ok", "not run")
    assert {s.value for s in CellStatus} == {"ok", "error", "timed out", "not run"}


def _notebook(*sources):
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(s) for s in sources]
    return nb


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="POSIX rlimits")
def test_a_plain_kernel_runs_cells_then_the_harness_and_reads_its_records(tmp_path):
    nb = _notebook(
        "x = 21",
        "raise ValueError('out of memory')",  # text that once meant memory
        "x = 0",  # a test cell: skipped
        "import os, numpy as np\n"
        "np.savez(os.environ['COURSE_GRADING_RECORD_DIR'] + '/planted.npz', a=1)",
    )
    harness = Harness(
        files={"answer.txt": b"2"},
        cells=[
            ("record", ("import numpy as np\n"
             "k = int(open('{HARNESS_DIR}/answer.txt').read())\n"
             "np.savez('{HARNESS_DIR}/records/q1.npz', value=x * k)")),
        ],
    )  # fmt: skip
    settings = RunSettings(cell_timeout=60, startup_timeout=120)
    kernel = kernels.PlainKernel("record", [], settings.sandbox)
    result = asyncio.run(
        execute.run(nb, kernel, settings, tmp_path, skip={2}, harness=harness)
    )
    assert result.status is RunStatus.COMPLETED, (result.detail, result.log_tail)
    statuses = [c.status for c in result.cells]
    assert statuses == [
        CellStatus.OK,
        CellStatus.ERROR,
        CellStatus.NOT_RUN,
        CellStatus.OK,
    ]
    assert not result.memory_error  # an error's text says nothing of memory
    assert set(result.records) == {"q1"}  # the harness's folder only
    import numpy as np

    assert int(np.load(result.records["q1"])["value"]) == 42
    assert not result.record_problems
    assert not kernel.dir.exists()  # its private /tmp is removed


needs_sandbox = pytest.mark.skipif(
    not sandbox.detect().usable or not sandbox.detect().cgroup or os.geteuid() != 0,
    reason="needs the sandbox as root with a cgroup",
)


@needs_sandbox
def test_a_kernel_killed_at_its_memory_cap_is_out_of_memory(tmp_path):
    """Memory that is written, not only reserved: the cgroup's cap is reached
    and the out-of-memory killer takes the kernel."""
    nb = _notebook("x = 1", "hog = bytearray(b'\\1') * (4 * 2**30)", "y = 2")
    limits = sandbox.SandboxLimits(
        memory_bytes=int(1.5 * sandbox.GiB), address_space_bytes=8 * sandbox.GiB
    )
    settings = RunSettings(cell_timeout=60, startup_timeout=120, sandbox=limits)
    result = asyncio.run(
        execute.run_isolated(
            nb, settings, tmp_path, uid=64392, name=f"oom{os.getpid()}"
        )
    )
    assert result.status is RunStatus.CRASHED, result.detail
    assert "SIGKILL" in result.detail, result.detail
    assert result.memory_error
    assert result.cells[0].status is CellStatus.OK
    assert result.cells[2].status is CellStatus.NOT_RUN


def test_bwrap_arguments_give_files_read_only_and_nothing_of_the_graders_env():
    isolation = sandbox.Isolation("/usr/bin/bwrap", True, 2)
    argv = sandbox.bwrap_argv(
        isolation, sandbox.SandboxView(), {"/run/course/k.json": 7}, 9, {"A": "1"}, 11
    )
    assert argv[0] == "/usr/bin/bwrap" and "--unshare-net" in argv
    k = argv.index("--ro-bind-data")
    assert argv[k - 2 : k + 3] == [
        "--perms",
        "0444",
        "--ro-bind-data",
        "7",
        "/run/course/k.json",
    ]
    assert argv[argv.index("--info-fd") + 1] == "9"
    assert argv[argv.index("--seccomp") + 1] == "11"  # the system-call filter
    tail = argv[argv.index("--clearenv") :]
    assert tail == ["--clearenv", "--setenv", "A", "1"]  # the whole environment
    # the private /tmp first: what is bound under /tmp is mounted above it
    tmpfs = argv.index("--tmpfs")
    assert argv[tmpfs + 1] == "/tmp" and tmpfs < argv.index("--ro-bind")
