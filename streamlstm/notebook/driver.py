"""The dashboard's engine: one asyncio task on the kernel's loop, compute in one worker thread.

Threads and what they may touch:

- Widget handlers run wherever the kernel delivers comm messages (under ipykernel 7 that can be
  another thread). They only call :meth:`Driver.post`, which hands the command to the loop with
  ``loop.call_soon_threadsafe``; nothing else happens in their thread.
- The event loop thread owns every piece of driver state and every widget update. Its main task
  (:meth:`Driver._main`) sleeps until a command arrives or the next batch is due, and starts at most
  one job (a step or a reset) at a time, so per-stream order is the feed order.
- The worker thread (one, per dashboard) runs whatever blocks: reading a file, ``runtime.feed``,
  ``runtime.reset``. The painter thread draws PNGs, so plotting never delays the feed.

Redraws are throttled: however fast batches arrive, the host's ``redraw`` runs at most
``1 / MIN_REDRAW_SECONDS`` times a second, and once more after the last change.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import time
import traceback
from collections import deque
from collections.abc import Callable
from typing import Any, Protocol

__all__ = ["Driver", "MIN_REDRAW_SECONDS"]

MIN_REDRAW_SECONDS = 0.1
_RATE_WINDOW_SECONDS = 3.0


class Host(Protocol):
    """What the driver drives (the dashboard)."""

    async def step_job(self) -> bool: ...           # one batch; False when the source is exhausted
    async def reset_job(self, which: str) -> None: ...
    async def redraw(self) -> None: ...
    def apply(self, command: str, value: Any) -> None: ...   # commands the driver does not know
    def state_changed(self) -> None: ...             # play/pause, error, stop: update controls now


class Driver:
    """Paces steps, serializes jobs, throttles redraws and keeps errors (see the module docstring).

    Args:
        host: the dashboard (see :class:`Host`).
        speed (float): batches per second while playing.
    """

    def __init__(self, host: Host, speed: float) -> None:
        self.host = host
        self.speed = float(speed)
        self.playing = False
        self.finished = False
        self.stopped = False
        self.error: BaseException | None = None       # the last error, kept for the status line
        self.error_text: str | None = None            # its traceback, until the next good batch
        self.rows = 0
        self.batches = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task | None = None
        self._wake: asyncio.Event | None = None
        self._job: asyncio.Task | None = None
        self._pending_steps = 0
        self._resets: deque[str] = deque()
        self._next_due = 0.0
        self._run: list[Any] | None = None   # [steps or None, done so far, future]
        self._dirty = False
        self._redraw_task: asyncio.Task | None = None
        self._last_redraw = float("-inf")
        self._recent: deque[tuple[float, int]] = deque()
        self.worker = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="streamlstm-dashboard-feed")
        self.painter = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="streamlstm-dashboard-draw")

    # -- the loop ------------------------------------------------------------------------------------
    def bind(self, loop: asyncio.AbstractEventLoop | None = None) -> bool:
        """Start the main task on ``loop`` (default: the running loop, if any); True when bound."""
        if loop is None:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                return False
        if self._loop is loop and self._task is not None and not self._task.done():
            return True
        if self._loop is not None and self._loop is not loop and self._loop.is_running():
            raise RuntimeError("this dashboard runs on another event loop; await it there")
        self._loop, self._wake = loop, asyncio.Event()
        self._job = self._redraw_task = None
        self._task = loop.create_task(self._main(), name="streamlstm-dashboard")
        self._task.add_done_callback(self._main_done)
        return True

    def post(self, command: str, value: Any = None) -> None:
        """Hand ``command`` to the loop; safe from any thread (widget handlers call only this)."""
        if self.stopped:
            return
        loop = self._loop
        if loop is None or loop.is_closed():
            if not self.bind():
                self.fail(RuntimeError("no running asyncio event loop: make the dashboard inside a Jupyter "
                                       "kernel, or drive it with `await dashboard.run(...)`"), notify=False)
                self.host.state_changed()
                return
            loop = self._loop
        try:
            loop.call_soon_threadsafe(self._apply, command, value)
        except RuntimeError:   # the loop closed in between
            self._loop = None

    def _apply(self, command: str, value: Any) -> None:
        if self.stopped:
            return
        try:
            self._command(command, value)
        except Exception as exc:  # noqa: BLE001 - a failing command is shown, not logged away by asyncio
            self.fail(exc)
        self._wake.set()

    def _command(self, command: str, value: Any) -> None:
        if command == "play":
            self._set_playing(bool(value))
        elif command == "speed":
            self.speed = max(float(value), 1e-3)
            self._next_due = min(self._next_due, self._loop.time() + 1.0 / self.speed)
        elif command == "step":
            self._pending_steps += 1
        elif command == "reset":
            self._resets.append(value)
        else:
            self.host.apply(command, value)

    def _set_playing(self, playing: bool) -> None:
        if playing and self.finished:
            playing = False
        if playing and not self.playing:
            self._next_due = self._loop.time()
        self.playing = playing
        if not playing and self._run is not None:
            self._end_run()
        self.host.state_changed()
        self.changed()

    async def _main(self) -> None:
        while not self.stopped:
            self._wake.clear()
            self._start_job()
            timeout = None
            if self._job is None and self.playing:
                timeout = max(0.0, self._next_due - self._loop.time())
            try:
                await asyncio.wait_for(self._wake.wait(), timeout)
            except asyncio.TimeoutError:
                pass

    def _main_done(self, task: asyncio.Task) -> None:
        if not task.cancelled() and task.exception() is not None:
            self.fail(task.exception())

    def _start_job(self) -> None:
        if self._job is not None or self.stopped:
            return
        if self._resets:
            job = self._reset_job(self._resets.popleft())
        elif self._pending_steps:
            self._pending_steps -= 1
            job = self._step_job()
        elif self.playing and self._loop.time() >= self._next_due:
            self._next_due = max(self._next_due + 1.0 / self.speed, self._loop.time())
            job = self._step_job()
        else:
            return
        self._job = self._loop.create_task(job)
        self._job.add_done_callback(self._job_done)

    def _job_done(self, task: asyncio.Task) -> None:
        self._job = None
        if self._wake is not None:
            self._wake.set()

    async def _step_job(self) -> None:
        try:
            more = await self.host.step_job()
        except Exception as exc:  # noqa: BLE001 - every error is shown in the dashboard and re-raised by run()
            self.fail(exc)
            return
        if not more:
            self.finished = True
            self._pending_steps = 0
            self._set_playing(False)
            return
        if self.error_text is not None:   # a good batch after an error: hide the traceback, keep the error
            self.error_text = None
            self.host.state_changed()
        if self._run is not None:
            self._run[1] += 1
            if self._run[0] is not None and self._run[1] >= self._run[0]:
                self._set_playing(False)
        self.changed()

    async def _reset_job(self, which: str) -> None:
        try:
            await self.host.reset_job(which)
        except Exception as exc:  # noqa: BLE001
            self.fail(exc)
            return
        self.changed()

    # -- bookkeeping ---------------------------------------------------------------------------------
    def count(self, rows: int) -> None:
        """Record a fed batch of ``rows`` rows (for the rows/s figure)."""
        now = time.monotonic()
        self.rows += rows
        self.batches += 1
        self._recent.append((now, rows))
        while self._recent and self._recent[0][0] < now - _RATE_WINDOW_SECONDS:
            self._recent.popleft()

    def rate(self) -> float:
        """Rows per second over the last few seconds of wall-clock time."""
        now = time.monotonic()
        while self._recent and self._recent[0][0] < now - _RATE_WINDOW_SECONDS:
            self._recent.popleft()
        if not self._recent:
            return 0.0
        span = max(now - self._recent[0][0], 1.0 / max(self.speed, 1e-3), 1e-3)
        return sum(rows for _, rows in self._recent) / span

    def fail(self, exc: BaseException, notify: bool = True) -> None:
        """Keep ``exc`` for the dashboard, pause, and fail a pending :meth:`run`."""
        self.error = exc
        self.error_text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__)).rstrip()
        self._pending_steps = 0
        if self._run is not None and not self._run[2].done():
            self._run[2].set_exception(exc)
            self._run = None
        if self._loop is not None and notify and not self.stopped:
            self._set_playing(False)

    def state(self) -> str:
        if self.stopped:
            return "stopped"
        if self.finished:
            return "source finished"
        return "playing" if self.playing else "paused"

    # -- redraws -------------------------------------------------------------------------------------
    def changed(self) -> None:
        """Ask for a redraw (loop thread); it happens within ``MIN_REDRAW_SECONDS``."""
        self._dirty = True
        if self._loop is not None and (self._redraw_task is None or self._redraw_task.done()) and not self.stopped:
            self._redraw_task = self._loop.create_task(self._redraw())

    async def _redraw(self) -> None:
        while self._dirty and not self.stopped:
            wait = self._last_redraw + MIN_REDRAW_SECONDS - self._loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
            self._dirty = False
            self._last_redraw = self._loop.time()
            try:
                await self.host.redraw()
            except Exception as exc:  # noqa: BLE001 - a failed drawing is shown, not retried in a loop
                self.fail(exc, notify=False)
                self.host.state_changed()

    async def flush(self) -> None:
        """Wait until the views show everything done so far."""
        while self._redraw_task is not None and not self._redraw_task.done():
            await asyncio.shield(self._redraw_task)

    async def in_worker(self, fn: Callable[..., Any], *args: Any) -> Any:
        return await self._loop.run_in_executor(self.worker, fn, *args)

    async def in_painter(self, fn: Callable[..., Any], *args: Any) -> Any:
        return await self._loop.run_in_executor(self.painter, fn, *args)

    # -- bounded runs and stopping -------------------------------------------------------------------
    async def run(self, steps: int | None) -> int:
        """Play ``steps`` batches (None: until the source ends or Pause) and return how many were fed."""
        if self.stopped:
            raise RuntimeError("this dashboard was stopped; make a new one")
        loop = asyncio.get_running_loop()
        self.bind(loop)
        if self._run is not None:
            raise RuntimeError("this dashboard is already inside run(); await that one")
        future: asyncio.Future = loop.create_future()
        self._run = [steps, 0, future]
        if (steps is not None and steps <= 0) or self.finished:
            self._end_run()
        else:
            self._set_playing(True)
            self._wake.set()
        try:
            return await future
        finally:
            await self.flush()

    def _end_run(self) -> None:
        run, self._run = self._run, None
        if run is not None and not run[2].done():
            run[2].set_result(run[1])

    def stop(self) -> None:
        """Cancel the task, let the worker finish its batch and exit, and grey out the controls."""
        loop = self._loop
        if loop is not None and loop.is_running() and not _on_loop(loop):
            loop.call_soon_threadsafe(self._stop_now)
        else:
            self._stop_now()

    def _stop_now(self) -> None:
        if self.stopped:
            return
        self.stopped, self.playing = True, False
        self._end_run()
        for task in (self._task, self._job, self._redraw_task):
            if task is not None and not task.done():
                task.cancel()
        self.worker.shutdown(wait=False, cancel_futures=True)
        self.painter.shutdown(wait=False, cancel_futures=True)
        self.host.state_changed()


def _on_loop(loop: asyncio.AbstractEventLoop) -> bool:
    try:
        return asyncio.get_running_loop() is loop
    except RuntimeError:
        return False

