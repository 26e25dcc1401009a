"""The grader's ZeroMQ connection to a kernel, pinned to the socket files it bound.

A sandboxed kernel binds its ipc sockets in its own /tmp, which the student
can change. Before any student code runs, `pin` opens each socket file
relative to a directory descriptor the grader holds, without following links,
and checks that it is a socket; the grader then connects to
``ipc:///proc/self/fd/N``, so every connect, and every reconnect, reaches that
same inode whatever the path holds later. The grader's sockets refuse messages
over `MAX_MESSAGE_BYTES` (``MAXMSGSIZE``): an oversized message closes its
connection instead of filling the grader's memory. `Watch` tells which channel
was closed and why, and the run stops there.

Reconnection stays on, deliberately: with ``RECONNECT_IVL = -1`` libzmq
terminates a connection's pipe at once when the peer drops it, and a reader in
the middle of a multipart message then aborts the whole process
(``Assertion failed: !_more (src/fq.cpp:80)``) — a kernel could crash the
grader, and every classmate's run with it, by flooding or closing a channel.
With reconnection on, libzmq rolls back the half-received message and keeps
the pipe; a reconnect can only reach the pinned inode.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import stat
import time
from dataclasses import dataclass, field

import zmq
from jupyter_client.asynchronous import AsyncKernelClient
from jupyter_client.connect import channel_socket_types
from zmq.utils.monitor import parse_monitor_message

MiB = 2**20
MAX_MESSAGE_BYTES = 16 * MiB
CHANNELS = ("shell", "iopub", "stdin", "control")  # no heartbeat: see `Client`


def harden(sock: zmq.Socket) -> None:
    """Cap the messages `sock` accepts (see the module's note on reconnection)."""
    sock.setsockopt(zmq.MAXMSGSIZE, MAX_MESSAGE_BYTES)


@dataclass
class Pinned:
    """The kernel's socket files, held open (O_PATH) by channel, and the
    directory they are in (held too: its file system's space can be read
    after the kernel is gone)."""

    dir_fd: int
    fds: dict[str, int] = field(default_factory=dict)

    def url(self, channel: str) -> str:
        return f"ipc:///proc/self/fd/{self.fds[channel]}"

    def listening(self, channel: str) -> bool:
        """Whether the kernel still listens on that channel's socket."""
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        probe.setblocking(False)
        try:
            probe.connect(f"/proc/self/fd/{self.fds[channel]}")
        except BlockingIOError:
            return True  # its backlog is full: it listens
        except OSError:
            return False
        finally:
            probe.close()
        return True

    def close(self) -> None:
        for fd in (*self.fds.values(), self.dir_fd):
            with contextlib.suppress(OSError):
                os.close(fd)
        self.fds.clear()


def _open_socket(dir_fd: int, name: str) -> int | None:
    """The socket file `name` in dir_fd, opened as a path (no link followed);
    None while it is not there. Raises OSError when it is not a socket."""
    try:
        fd = os.open(name, os.O_PATH | os.O_NOFOLLOW, dir_fd=dir_fd)
    except FileNotFoundError:
        return None
    if not stat.S_ISSOCK(os.fstat(fd).st_mode):
        os.close(fd)
        raise OSError(f"the kernel's {name} is not a socket")
    return fd


def _bound(host_dir: str, names) -> bool:
    """Whether every name in host_dir is a socket (looked at, never opened)."""
    try:
        return all(
            stat.S_ISSOCK(os.lstat(os.path.join(host_dir, n)).st_mode) for n in names
        )
    except OSError:
        return False


async def pin(
    open_dir, host_dir: str, names: dict[str, str], alive, timeout: float
) -> Pinned:
    """Wait (up to `timeout` s, while `alive()`) until the kernel has bound
    the socket files `names` (channel → file name), as `host_dir` shows them;
    then hold them, opened relative to `open_dir()` (a directory descriptor,
    which the result keeps) without following links. Raises TimeoutError, or
    OSError (not a socket)."""
    deadline = time.monotonic() + timeout
    while not _bound(host_dir, names.values()):
        if not alive() or time.monotonic() > deadline:
            raise TimeoutError("the kernel did not open its sockets")
        await asyncio.sleep(0.02)
    await asyncio.sleep(0.05)  # libzmq binds, then listens: let it listen
    pinned = Pinned(open_dir())
    try:
        for channel, name in names.items():
            fd = _open_socket(pinned.dir_fd, name)
            if fd is None:
                raise OSError(f"the kernel's {name} is gone")
            pinned.fds[channel] = fd
    except BaseException:
        pinned.close()
        raise
    return pinned


class Watch:
    """The channels whose connection closed (monitor events of each socket)."""

    def __init__(self):
        self._monitors: dict[str, zmq.Socket] = {}
        self._watched: list[zmq.Socket] = []
        self.closed: list[str] = []

    def add(self, channel: str, sock: zmq.Socket) -> None:
        addr = f"inproc://grader-monitor-{id(self)}-{channel}"
        sock.monitor(addr, zmq.EVENT_DISCONNECTED)
        sync = zmq.Context.shadow(sock.context.underlying)
        pair = sync.socket(zmq.PAIR)
        pair.linger = 0
        pair.connect(addr)
        self._monitors[channel] = pair
        self._watched.append(sock)

    def poll(self) -> list[str]:
        """The channels closed so far (in the order they closed)."""
        for channel, pair in self._monitors.items():
            while pair.poll(0):
                event = parse_monitor_message(pair.recv_multipart())
                if event["event"] == zmq.EVENT_DISCONNECTED and (
                    channel not in self.closed
                ):
                    self.closed.append(channel)
        return self.closed

    def close(self) -> None:
        for sock in self._watched:
            with contextlib.suppress(zmq.ZMQError):
                sock.disable_monitor()
        self._watched.clear()
        for pair in self._monitors.values():
            pair.close(0)
        self._monitors.clear()


def why_closed(channel: str, pinned: Pinned | None) -> str:
    """The detail of a run stopped because `channel`'s connection closed."""
    if pinned is not None and channel in pinned.fds and pinned.listening(channel):
        return (
            f"the kernel sent a message over the grader's limit of "
            f"{MAX_MESSAGE_BYTES // MiB} MiB on its {channel} channel "
            "(its output exceeded the limit); the connection was closed"
        )
    return f"the kernel closed its {channel} channel; the run was stopped"


class Client(AsyncKernelClient):
    """A kernel client that asks the `Kernel` whether its process lives, and
    whose sockets are hardened (`harden`), connected to the `pinned` sockets
    when there are, and watched. It has no heartbeat channel: whether the
    kernel lives is asked of its process."""

    alive_check = None
    pinned: Pinned | None = None
    watch: Watch | None = None

    async def _async_is_alive(self) -> bool:
        return bool(self.alive_check and self.alive_check())

    is_alive = _async_is_alive

    def start_channels(self, *args, **kw) -> None:
        kw["hb"] = False
        super().start_channels(*args, **kw)

    def stop_channels(self) -> None:
        if self.watch is not None:
            self.watch.close()
        super().stop_channels()
        if self.pinned is not None:
            self.pinned.close()

    def _create_connected_socket(
        self, channel: str, identity: bytes | None = None
    ) -> zmq.Socket:
        sock = self.context.socket(channel_socket_types[channel])
        sock.linger = 1000
        if identity:
            sock.identity = identity
        harden(sock)
        if self.watch is not None:
            self.watch.add(channel, sock)
        if self.pinned is not None:
            sock.connect(self.pinned.url(channel))
        else:
            sock.connect(self._make_url(channel))
        return sock


def socket_names(kc: AsyncKernelClient) -> dict[str, str]:
    """channel → the file name of its ipc socket (jupyter_client's ip-port)."""
    base = os.path.basename(kc.ip)
    return {ch: f"{base}-{getattr(kc, f'{ch}_port')}" for ch in CHANNELS}
