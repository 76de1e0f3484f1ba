"""Run many small checks in forked child processes, so that a crash (SIGSEGV, abort) is seen, not suffered.

One child runs the checks one after the other and reports each result on a pipe as it finishes; when
a child dies, the check it was running is recorded as a crash and a new child continues with the next.
Forking after the imports keeps each child cheap.
"""

from __future__ import annotations

import os
import select
import signal
import time
from collections.abc import Callable, Sequence

__all__ = ["run_forked"]


def _child(checks: Sequence[Callable[[], str]], start: int, write_fd: int) -> None:
    try:
        import torch

        torch.set_num_threads(1)   # no thread pool inherited half-alive across the fork
        with os.fdopen(write_fd, "w", buffering=1) as pipe:
            for index in range(start, len(checks)):
                result = checks[index]()
                pipe.write(f"{index}\t{' '.join(result.splitlines())}\n")
    finally:
        os._exit(0)


def _collect(read_fd: int, pid: int, results: list[str | None], deadline: float) -> bool:
    """Read results until the child closes the pipe; False (child killed) when ``deadline`` passes."""
    buffer = b""
    while True:
        ready, _, _ = select.select([read_fd], [], [], max(0.0, deadline - time.monotonic()))
        if not ready:
            os.kill(pid, signal.SIGKILL)
            return False
        chunk = os.read(read_fd, 65536)
        if not chunk:
            return True
        buffer += chunk
        *lines, buffer = buffer.split(b"\n")
        for line in lines:
            index, result = line.decode().split("\t", 1)
            results[int(index)] = result


def run_forked(checks: Sequence[Callable[[], str]], timeout: float = 120.0) -> list[str]:
    """The result of every check (the string it returned), or ``"crash: ..."`` / ``"hang"``."""
    results: list[str | None] = [None] * len(checks)
    deadline = time.monotonic() + timeout
    start = 0
    while start < len(checks):
        read_fd, write_fd = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.close(read_fd)
            _child(checks, start, write_fd)
        os.close(write_fd)
        try:
            finished = _collect(read_fd, pid, results, deadline)
        finally:
            os.close(read_fd)
        _, status = os.waitpid(pid, 0)
        reported = [i for i in range(start, len(checks)) if results[i] is not None]
        failed = (reported[-1] if reported else start - 1) + 1
        if failed < len(checks):
            if not finished:
                results[failed] = "hang"
                return [r if r is not None else "not run (after a hang)" for r in results]
            results[failed] = f"crash: {_describe(status)}"
        start = failed + 1
    return [r if r is not None else "not run" for r in results]


def _describe(status: int) -> str:
    if os.WIFSIGNALED(status):
        return f"killed by {signal.Signals(os.WTERMSIG(status)).name}"
    return f"exited with {os.WEXITSTATUS(status)} before reporting"
