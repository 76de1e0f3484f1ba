"""Helpers of the serve tests: real ``streamlstm serve`` processes on 127.0.0.1, and the data they are fed.

Every server listens on a free loopback port (``--port 0``; the port is read from the line it prints)
and is killed when its ``with`` block ends, so nothing outlives a test.
"""

from __future__ import annotations

import os
import queue
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

import streamlstm as sl

F = 4
START_SECONDS = 90  # importing torch on a busy 2-core machine takes seconds


class ServerProcess:
    """``python -m streamlstm serve --host 127.0.0.1 --port 0 ARGS`` as a context manager."""

    def __init__(self, args: list[str], tmp_path: Path) -> None:
        self.stderr_path = tmp_path / f"server-{time.monotonic_ns()}.err"
        self._stderr = open(self.stderr_path, "w")
        self.proc = subprocess.Popen([sys.executable, "-m", "streamlstm", "serve", "--host", "127.0.0.1",
                                      "--port", "0", *args], stdout=subprocess.PIPE, stderr=self._stderr,
                                     text=True, env={**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"})
        self.lines: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()
        self.first_line = self.next_line(START_SECONDS)
        if self.first_line is None or "listening on " not in self.first_line:
            self.kill()
            raise AssertionError(f"server did not start: {self.first_line!r}\n{self.stderr()}")
        self.uri = self.first_line.split("listening on ")[1].split()[0]

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.lines.put(line.rstrip("\n"))
        self.lines.put(None)

    def next_line(self, timeout: float) -> str | None:
        try:
            return self.lines.get(timeout=timeout)
        except queue.Empty:
            return None

    def rest_of_output(self, timeout: float = 30) -> str:
        """Every line printed after the first, until the process closed its output."""
        lines, deadline = [], time.monotonic() + timeout
        while (line := self.next_line(max(0.0, deadline - time.monotonic()))) is not None:
            lines.append(line)
        return "\n".join(lines)

    def stderr(self) -> str:
        self._stderr.flush()
        return self.stderr_path.read_text()

    def client(self, **options: Any) -> sl.flight.Client:
        return sl.flight.Client(self.uri, **options)

    def wait_healthy(self, **options: Any) -> None:
        with self.client(**options) as client:
            for _ in range(100):
                try:
                    if client.health()["status"] == "ok":
                        return
                except sl.errors.ServeError:
                    pass
                time.sleep(0.05)
        raise AssertionError(f"server at {self.uri} never became healthy")

    def signal(self, sig: int) -> None:
        self.proc.send_signal(sig)

    def wait(self, timeout: float = 30) -> int:
        return self.proc.wait(timeout)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(30)
        self._stderr.close()

    def __enter__(self) -> ServerProcess:
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.kill()


def local_runtime(model_file: Path, **options: Any) -> sl.StreamRuntime:
    """The reference: the same model in a runtime of this process."""
    return sl.StreamRuntime(sl.load_model(model_file), **options)


def make_batch(keys: np.ndarray, rng: np.random.Generator, time: np.ndarray | None = None) -> pa.RecordBatch:
    x = rng.standard_normal((len(keys), F)).astype(np.float32)
    columns = {"stream_id": pa.array(np.asarray(keys, np.int64)),
               "x": pa.FixedSizeListArray.from_arrays(pa.array(x.reshape(-1)), F)}
    if time is not None:
        columns["t"] = pa.array(np.asarray(time, np.int64))
    return pa.record_batch(columns)


def outputs(batch: pa.RecordBatch) -> np.ndarray:
    column = batch.column(batch.schema.get_field_index("output"))
    return column.flatten().to_numpy(zero_copy_only=False).reshape(len(column), -1)


def assert_same_outputs(got: pa.RecordBatch, expected: pa.RecordBatch) -> None:
    """Same keys in the same order and the same outputs (to float rounding: micro-batches may run
    another runtime mode or batch size than the reference)."""
    assert got.num_rows == expected.num_rows
    assert got.column(0).to_pylist() == expected.column(0).to_pylist()
    np.testing.assert_allclose(outputs(got), outputs(expected), rtol=1e-4, atol=1e-5)


def percentile_ms(samples: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(samples) * 1e3, q))


