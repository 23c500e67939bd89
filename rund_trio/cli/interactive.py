"""The client's side of a job's stdin and terminal: reading its own stdin,
raw mode, window sizes, and following a job while feeding it.

Runs on asyncio through anyio, like the rest of the client."""

from __future__ import annotations

import contextlib
import fcntl
import os
import signal
import termios
import tty
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import TYPE_CHECKING

import anyio

from rund_trio.cli.local_stdin import STDIN_FD, stdin_kind, window_size
from rund_trio.errors import ConfigError, RpcError, sole_exception

if TYPE_CHECKING:
    from rund_trio.client.api import RundClient

STDIN_CHUNK = 1024 * 1024
"""Bytes read from the client's stdin at a time (one Input message at most):
few large messages cost the client and the daemon far less than many small."""
STDIN_PIPE_SIZE = 1024 * 1024
"""A pipe on stdin is enlarged to this (best effort), so one read takes more."""


async def stdin_chunks(fd: int = STDIN_FD) -> AsyncIterator[bytes]:
    """The client's stdin until end of file, in chunks of at most
    ``STDIN_CHUNK`` bytes, each as soon as it is there. A pipe or terminal
    is waited on through the event loop (it is never made non-blocking: the
    open file may be shared with the shell); a file is read directly."""
    kind = stdin_kind(fd)
    pollable = kind in ("tty", "pipe")
    if kind == "pipe":
        with contextlib.suppress(OSError):  # not a FIFO, or over pipe-max-size
            fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, STDIN_PIPE_SIZE)
    while True:
        if pollable:
            await anyio.wait_readable(fd)
        else:
            await anyio.lowlevel.checkpoint()
        try:
            data = os.read(fd, STDIN_CHUNK)
        except BlockingIOError:
            continue
        if not data:
            return
        yield data


@contextlib.contextmanager
def raw_terminal(fd: int = STDIN_FD) -> Iterator[None]:
    """The terminal on ``fd`` in raw mode for the block (every key, Ctrl-C
    and Ctrl-D included, reaches the job as a byte; no local echo); restored
    when the block ends, however it ends (an exception, a cancellation after a
    signal), as soon as the output written so far has been sent."""
    saved = termios.tcgetattr(fd)
    tty.setraw(fd)
    try:
        yield
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)


def check_terminal_input(interactive: bool, tty_requested: bool) -> None:
    """``-it`` needs a terminal on stdin, as with docker: raw mode and window
    sizes come from it."""
    if interactive and tty_requested and stdin_kind() != "tty":
        raise ConfigError(
            "-t with -i needs a terminal on stdin (yours is a pipe or file): "
            "use -i alone to send a pipe or file"
        )


DEFAULT_DETACH_KEYS = "ctrl-p,ctrl-q"
"""Docker's: Ctrl-P then Ctrl-Q."""
_CONTROL_KEYS = "@abcdefghijklmnopqrstuvwxyz[\\]^_"
"""``ctrl-<key>`` for these is byte 0 to 31, in this order."""


def parse_detach_keys(text: str) -> bytes:
    """Docker's ``--detach-keys`` format: keys separated by commas, each a
    single character or ``ctrl-<key>`` with ``<key>`` one of a-z, @, [, \\, ],
    ^, _ (any case). The bytes they type; ``ValueError`` saying what is wrong."""
    keys = b""
    for key in text.split(","):
        if key.lower().startswith("ctrl-") and len(key) == 6:
            index = _CONTROL_KEYS.find(key[5].lower())
            if index < 0:
                raise ValueError(
                    f"{key!r}: ctrl- takes one of a-z, @, [, \\, ], ^, _ (e.g. ctrl-p)"
                )
            keys += bytes([index])
        elif len(key) == 1 and key.isascii():
            keys += key.encode()
        else:
            raise ValueError(
                f"{key!r} is not a key: write one character or ctrl-<key>, "
                f"separated by commas (e.g. {DEFAULT_DETACH_KEYS})"
            )
    return keys


class DetachKeys:
    """Finds a detach sequence in what is typed, across chunks: the bytes
    before it go to the job, the sequence itself never does. A prefix of it
    at the end of a chunk is held back until the next chunk says whether the
    sequence goes on (then nothing is sent) or not (then it is sent, as
    docker does)."""

    def __init__(self, keys: bytes) -> None:
        assert keys
        self._keys = keys
        self._held = b""
        self.detached = False

    def filter(self, data: bytes) -> bytes:
        """What of ``held + data`` goes to the job now; sets ``detached``
        when the sequence was typed (nothing after it is sent)."""
        data = self._held + data
        self._held = b""
        start = data.find(self._keys[0])
        while start >= 0:
            window = data[start : start + len(self._keys)]
            if window == self._keys:
                self.detached = True
                return data[:start]
            if len(window) < len(self._keys) and self._keys.startswith(window):
                self._held = window
                return data[:start]
            start = data.find(self._keys[0], start + 1)
        return data


async def _until_detached(chunks: AsyncIterator[bytes], keys: DetachKeys) -> AsyncIterator[bytes]:
    """``chunks`` as ``keys`` lets them through, ending at the detach sequence."""
    async for chunk in chunks:
        data = keys.filter(chunk)
        if data:
            yield data
        if keys.detached:
            return


async def _feed(client: RundClient, job_id: str, keys: DetachKeys | None = None) -> None:
    """The client's stdin to the job until end of file, or with ``keys``
    until the detach sequence was typed (whatever was typed before it is
    written when this returns). An Input refused because the job ended is no
    error: the job's own end is reported."""
    chunks = stdin_chunks() if keys is None else _until_detached(stdin_chunks(), keys)
    try:
        await client.input(job_id, chunks)
    except RpcError as error:
        if error.code != "FAILED_PRECONDITION":
            raise


async def _forward_resizes(client: RundClient, job_id: str) -> None:
    """The client terminal's new size to the job at every SIGWINCH."""
    with anyio.open_signal_receiver(signal.SIGWINCH) as resizes:
        async for _ in resizes:
            size = window_size()
            if size is not None:
                with contextlib.suppress(RpcError):  # the job just ended
                    await client.resize(job_id, *size)


async def interact(
    client: RundClient,
    job_id: str,
    copy_log: Callable[[], Awaitable[None]],
    *,
    feed: bool,
    terminal: bool,
    detach_keys: bytes = b"",
) -> bool:
    """Run ``copy_log`` (the job's output to the client's) until the job
    ended, meanwhile feeding the client's stdin to the job when ``feed`` (in
    raw mode with ``terminal`` and a terminal on the client's stdin), and with
    ``terminal`` forwarding every window size change of the client's
    terminal. Whatever is still being fed when the output ends is abandoned
    (the job ended); the client's terminal is restored on every way out.

    In raw mode, typing ``detach_keys`` (if any) detaches instead: what was
    typed before them is written to the job, the Input ends (a terminal stays
    open for the next one), following stops, and this returns True; the job
    runs on. Otherwise it returns False once the job's output ended."""
    raw = terminal and feed and stdin_kind() == "tty"
    keys = DetachKeys(detach_keys) if raw and detach_keys else None
    with raw_terminal() if raw else contextlib.nullcontext():
        try:
            async with anyio.create_task_group() as tasks:
                if feed:

                    async def feed_then_detach() -> None:
                        await _feed(client, job_id, keys)
                        if keys is not None and keys.detached:
                            tasks.cancel_scope.cancel()

                    tasks.start_soon(feed_then_detach)
                if terminal and window_size() is not None:
                    tasks.start_soon(_forward_resizes, client, job_id)
                await copy_log()
                tasks.cancel_scope.cancel()
        except BaseExceptionGroup as group:
            raise sole_exception(group) from None
    return keys is not None and keys.detached
