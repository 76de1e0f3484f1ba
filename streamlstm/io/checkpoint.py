"""Replay checkpoints: the runtime state, the input position and the output rows, committed atomically.

A checkpoint directory holds:

======================== ===========================================================================
``checkpoint.json``      the commit record (below); replacing it (temp + fsync + rename) is the one
                         atomic step that moves a checkpoint forward
``runtime-NNNNNN.state`` the :func:`streamlstm.save_runtime` file the record names
``output/part-*.arrows`` Parquet output only: the output rows of each checkpoint interval (see
                         :mod:`streamlstm.io.sinks`; Arrow output is synced in place instead)
======================== ===========================================================================

``checkpoint.json`` holds ``format_version``, ``input_rows`` (rows of the input consumed),
``output_rows`` and ``parts`` (rows and parts of output durably written), ``output_bytes`` and
``output_crc`` (Arrow output: the length and CRC-32 of the durable prefix of ``OUTPUT.partial``),
``batches``, ``runtime`` (the state file's name), ``done`` (every input row was processed) and ``run``:
the options that decide the output (input fingerprint, model digest, columns, batch rows, ...). A
resumed run must present the same ``run``; anything written after the record (a newer state file,
unsealed or newer parts) is deleted and recomputed, which is what makes a resumed output exactly equal
to an uninterrupted one.

Every file of a checkpoint is checked before it is used (see :mod:`streamlstm.io.checksum`): the
record ends with a checksum trailer and its fields are checked one by one (counts are non-negative
integers, ``runtime`` is a plain ``runtime-NNNNNN.state`` name inside the directory), the state file
and the parts carry their own trailers, and the partial Arrow output's prefix must match
``output_crc``. Damage is one :class:`~streamlstm.errors.FileError`. Records of format_version 1
(no trailer, no ``output_bytes``/``output_crc``) still load.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from streamlstm.errors import CheckpointError, FileError
from streamlstm.io.checksum import decoding, seal, unseal
from streamlstm.io.runtime_file import save_runtime
from streamlstm.io.sinks import PartSink, fsync_dir

__all__ = ["Checkpoint", "CheckpointRecord", "FORMAT_VERSION"]

FORMAT_VERSION = 2
_RECORD = "checkpoint.json"
# The state files, and the temp files save_runtime leaves when killed mid-write.
_STATE = re.compile(r"\.?runtime-(\d{6})\.state(\..*\.tmp)?$")
_STATE_NAME = re.compile(r"runtime-\d{6}\.state")
_COUNTS = ("input_rows", "output_rows", "parts", "batches", "output_bytes")


@dataclass
class CheckpointRecord:
    """What ``checkpoint.json`` holds (see the module docstring)."""

    input_rows: int = 0
    output_rows: int = 0
    parts: int = 0
    batches: int = 0
    runtime: str | None = None
    done: bool = False
    run: dict[str, Any] = field(default_factory=dict)
    format_version: int = FORMAT_VERSION
    output_bytes: int = 0
    output_crc: int = 0

    @classmethod
    def from_json(cls, fields: Any, version: int | None) -> CheckpointRecord:
        """A record from its parsed JSON, every field checked (ValueError naming the first bad one)."""
        if not isinstance(fields, dict):
            raise ValueError(f"the record must be a JSON object, got {type(fields).__name__}")
        known = {name for name in cls.__dataclass_fields__}
        if set(fields) - known:
            raise ValueError(f"unknown field(s) {sorted(set(fields) - known)}")
        record = cls(**fields)
        if record.format_version != version:
            raise ValueError(f"format_version {record.format_version!r} does not fit the file (expected {version})")
        for name in _COUNTS:
            value = getattr(record, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"{name} must be a non-negative integer, got {value!r}")
        if isinstance(record.output_crc, bool) or not isinstance(record.output_crc, int) \
                or not 0 <= record.output_crc < 2 ** 32:
            raise ValueError(f"output_crc must be a CRC-32, got {record.output_crc!r}")
        if not isinstance(record.done, bool) or not isinstance(record.run, dict):
            raise ValueError(f"done must be true/false and run an object, got {record.done!r} and "
                             f"{type(record.run).__name__}")
        if record.runtime is not None and not (isinstance(record.runtime, str)
                                               and _STATE_NAME.fullmatch(record.runtime)):
            raise ValueError(f"runtime must name a state file runtime-NNNNNN.state inside the checkpoint "
                             f"directory, got {record.runtime!r}")
        return record


def _fsync(path: Path) -> None:
    with open(path, "rb+") as handle:
        os.fsync(handle.fileno())


class Checkpoint:
    """The checkpoint directory of one replay run.

    Args:
        directory: the checkpoint directory (created if missing).
        run: the options that decide the output; a resumed run must match them.
        resume: continue from an existing checkpoint instead of refusing it.
    """

    def __init__(self, directory: str | os.PathLike, run: dict[str, Any], *, resume: bool) -> None:
        self.directory = Path(directory)
        self.run = json.loads(json.dumps(run))  # the form it takes after a round trip
        self.resume = resume
        self.parts = PartSink(self.directory / "output")
        self._created = not self.directory.exists()
        self._committed = False

    @property
    def record_path(self) -> Path:
        return self.directory / _RECORD

    def open(self) -> CheckpointRecord | None:
        """The record to resume from (None: start from the first row), after clearing what it does not name.

        Raises:
            CheckpointError: a checkpoint exists but ``resume`` is false, or it is unreadable, or it was
                written by a run with other options.
        """
        if self.directory.exists() and not self.directory.is_dir():
            raise CheckpointError(f"checkpoint directory {self.directory} is a file")
        # An existing record, even one refused below, is never cleaned away by abandon().
        self._committed = self.record_path.exists()
        if self._committed and not self.resume:
            try:
                done = f"{self._read().input_rows:,} input rows done"
            except FileError:
                done = "its record is damaged"
            raise CheckpointError(
                f"{self.directory} holds the checkpoint of an unfinished replay ({done}); add --resume "
                f"(resume=True) to continue it, or delete {self.directory} to start over")
        record = self._read() if self._committed else None
        if record is not None:
            self._check_run(record)
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise CheckpointError(f"cannot create checkpoint directory {self.directory}: "
                                  f"{exc.strerror or exc}") from exc
        self._discard_states(keep=record.runtime if record else None)
        return record

    def _read(self) -> CheckpointRecord:
        name = f"checkpoint record {self.record_path}"
        try:
            data = self.record_path.read_bytes()
        except OSError as exc:
            raise FileError(f"cannot read {name}: {exc.strerror or exc}; delete {self.directory} to start "
                            f"over") from exc
        content = unseal(data, name)
        # A record without a trailer is one of format_version 1; any other is damaged.
        with decoding(name, "a record", f"; delete {self.directory} to start over"):
            record = CheckpointRecord.from_json(json.loads(bytes(data if content is None else content)),
                                                1 if content is None else FORMAT_VERSION)
        if record.runtime is not None and not (self.directory / record.runtime).is_file():
            raise FileError(f"checkpoint in {self.directory} is damaged: {record.runtime} is missing; "
                            f"delete {self.directory} to start over")
        return record

    def _check_run(self, record: CheckpointRecord) -> None:
        for name in sorted(set(record.run) | set(self.run)):
            then, now = record.run.get(name), self.run.get(name)
            if name == "input_files" and record.format_version == 1 and isinstance(now, list):
                now = [entry[:2] for entry in now]   # version 1 recorded (path, size) only
            if then != now:
                raise CheckpointError(f"the checkpoint in {self.directory} was written by a different run "
                                      f"({name}: {then!r} then, {now!r} now); rerun with the same options, "
                                      f"or delete {self.directory} to start over")

    def _discard_states(self, keep: str | None) -> None:
        for path in self.directory.iterdir():
            if _STATE.match(path.name) and path.name != keep:
                path.unlink()

    def state_path(self, record: CheckpointRecord) -> Path:
        return self.directory / record.runtime

    def commit(self, runtime: Any, record: CheckpointRecord) -> CheckpointRecord:
        """Save ``runtime``, then atomically replace the record; returns the new one. The output rows the
        record counts must already be durable (the sink's ``sync``)."""
        sequence = record.batches
        state = f"runtime-{sequence:06d}.state"
        save_runtime(runtime, self.directory / state)
        _fsync(self.directory / state)
        previous, record.runtime = record.runtime, state
        record.run, record.format_version = self.run, FORMAT_VERSION
        tmp = self.record_path.with_name(_RECORD + ".tmp")
        with open(tmp, "wb") as handle:
            handle.write(seal(json.dumps(asdict(record), indent=1).encode()))
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, self.record_path)
        fsync_dir(self.directory)
        self._committed = True
        if previous is not None and previous != state:
            (self.directory / previous).unlink(missing_ok=True)
        return record

    def clear(self) -> None:
        """Remove the checkpoint after a successful run (the record first: then it no longer exists)."""
        self.record_path.unlink(missing_ok=True)
        fsync_dir(self.directory)
        self._remove_files(remove_directory=True)

    @property
    def committed(self) -> bool:
        """Whether a checkpoint (this run's or an earlier one) exists to resume from."""
        return self._committed

    def abandon(self) -> None:
        """After an error: keep a committed checkpoint to resume from, else leave nothing behind."""
        if not self._committed:
            self._remove_files(remove_directory=self._created)

    def _remove_files(self, remove_directory: bool) -> None:
        if not self.directory.is_dir():
            return
        self._discard_states(keep=None)
        self.parts.remove_all()
        for path in (self.parts.directory, self.directory) if remove_directory else (self.parts.directory,):
            try:
                path.rmdir()
            except OSError:  # not empty (files we did not write) or already gone
                pass
