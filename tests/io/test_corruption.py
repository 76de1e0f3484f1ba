"""Damaged files never crash a load and never load other content: randomized single-bit flips and
truncations of every kind of file streamlstm writes, each loaded in a forked child process.

Kinds: model file, runtime file, checkpoint record, checkpoint state file, partial Arrow output and
sealed Parquet-run output part. For each: 300 single-bit flips and 50 truncations (seeded). Every
damaged copy must raise :class:`streamlstm.errors.FileError` naming the file, except damage past the
part of a file that a load reads (the partial output after its checkpointed prefix), which must load
exactly the undamaged content. Files of the formats before checksums must still never crash.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from forked import run_forked
from replay_data import make_model, make_table, save_model, write_ipc_file

import streamlstm as sl
from streamlstm.errors import FileError, StreamError
from streamlstm.io.checkpoint import FORMAT_VERSION, Checkpoint, CheckpointRecord
from streamlstm.io.checksum import unseal
from streamlstm.io.sinks import PartSink, ResumableArrowSink

FLIPS, TRUNCATIONS = 300, 50
SEED = 20261201
OPTIONS = {"key": "stream_id", "features": "x", "time": "time", "reset": "reset", "batch_rows": 50}
V1 = Path(__file__).parent.parent / "fixtures" / "runtime_v1" / "runtime.arrow"


@dataclasses.dataclass
class Kind:
    """A file to damage: where it lies, how to load a copy of it (returning comparable content), what an
    undamaged load returns, and the first byte past what a load reads (damage there is harmless)."""

    source: Path
    load: Callable[[Path], object]
    expected: object = None
    read_until: int | None = None

    def __post_init__(self) -> None:
        self.data = self.source.read_bytes()
        self.expected = self.load(self.source) if self.expected is None else self.expected


def runtime_content(runtime: sl.StreamRuntime) -> object:
    streams = runtime.export_streams().drop_columns(["idle_seconds"])   # seconds move with the clock
    weights = {name: value.numpy().tobytes() for name, value in runtime.model.state_dict().items()}
    return streams.to_pydict(), runtime.stats()["rows"], runtime.config(), weights


def model_content(model) -> object:
    return {name: (str(value.dtype), value.numpy().tobytes()) for name, value in model.state_dict().items()}


def read_ipc_stream(path: Path, offset: int = 0) -> pa.Table:
    with open(path, "rb") as handle:
        handle.seek(offset)
        return pa.ipc.open_stream(handle).read_all()


@pytest.fixture(scope="module")
def kinds(tmp_path_factory) -> dict[str, Kind]:
    root = tmp_path_factory.mktemp("corruption")
    table = make_table(streams=6, steps=30)
    x = table.column("x").combine_chunks().flatten().to_numpy().copy()
    x[170 * 3] = np.nan   # a bad row in the fourth batch: the run stops after three checkpoints
    table = table.set_column(2, "x", pa.FixedSizeListArray.from_arrays(pa.array(x), 3))
    source, model = write_ipc_file(table, root / "in.arrow"), save_model(root / "model.slm", units=4)
    records = {}
    for fmt in ("arrow", "parquet"):
        with pytest.raises(StreamError, match="non-finite"):
            sl.replay_to_file(source, model, root / f"out.{fmt}", checkpoint=root / f"ck-{fmt}", checkpoint_every=1,
                              **OPTIONS)
        records[fmt] = json_record(root / f"ck-{fmt}")
    runtime = sl.StreamRuntime(make_model(units=4), key="stream_id", features="x", time="time")
    runtime.feed(table.slice(0, 120).select(["stream_id", "x", "time"]))
    sl.save_runtime(runtime, root / "runtime.arrow")
    arrow_ck, parquet_ck = root / "ck-arrow", root / "ck-parquet"
    record = records["arrow"]
    return {
        "model": Kind(model, lambda p: model_content(sl.load_model(p))),
        "runtime": Kind(root / "runtime.arrow", lambda p: runtime_content(sl.load_runtime(p))),
        "checkpoint state": Kind(arrow_ck / record.runtime, lambda p: runtime_content(sl.load_runtime(p))),
        "checkpoint record": Kind(arrow_ck / "checkpoint.json", lambda p: load_record(p, arrow_ck, record.run)),
        "partial output": Kind(root / "out.arrow.partial", lambda p: load_partial(p, record),
                               read_until=record.output_bytes),
        "sealed part": Kind(parquet_ck / "output" / "part-000001.arrows",
                            lambda p: load_parts(p, parquet_ck, records["parquet"])),
    }


def json_record(directory: Path) -> CheckpointRecord:
    path = directory / "checkpoint.json"
    return CheckpointRecord.from_json(json.loads(bytes(unseal(path.read_bytes(), path))), FORMAT_VERSION)


def load_record(path: Path, original: Path, run: dict) -> object:
    """``path`` is a damaged copy of ``original``'s record: a copy of the directory around it, then open."""
    directory = path.parent
    for other in original.iterdir():
        if other.is_file() and other.name != "checkpoint.json" and not (directory / other.name).exists():
            shutil.copy(other, directory / other.name)
    return dataclasses.asdict(Checkpoint(directory, run, resume=True).open())


def load_partial(path: Path, record) -> object:
    sink = ResumableArrowSink(path.with_name(path.name.removesuffix(".partial")))
    sink.resume(dataclasses.replace(record))
    sink.abort(keep=True)
    return read_ipc_stream(path, offset=8).to_pydict()


def load_parts(path: Path, checkpoint: Path, record) -> object:
    """``path`` is a damaged copy of one part: beside copies of the other sealed parts, resume and finish."""
    for other in (checkpoint / "output").iterdir():
        if not (path.parent / other.name).exists():
            shutil.copy(other, path.parent / other.name)
    sink = PartSink(path.parent)
    sink.resume(dataclasses.replace(record))
    out = sink.finish(path.parent / "joined.arrow", "arrow")
    return pa.ipc.open_file(str(out)).read_all().to_pydict()


def check(kind: Kind, case: Path, damaged: bytes, harmless: bool) -> Callable[[], str]:
    """A check for a child process: write the damaged copy, load it, say what happened."""

    def run() -> str:
        case.parent.mkdir(parents=True, exist_ok=True)
        case.write_bytes(damaged)
        try:
            got = kind.load(case)
        except FileError as exc:
            return "named" if case.name in str(exc) else f"unnamed FileError: {exc}"
        except Exception as exc:  # noqa: BLE001 - any other error is what the test reports
            return f"other {type(exc).__name__}: {exc}"
        if got == kind.expected:
            return "harmless" if harmless else "undetected: loaded the same content"
        return "SILENTLY DIFFERENT"

    return run


def damaged_copies(kind: Kind, rng: np.random.Generator) -> list[tuple[str, bytes, bool]]:
    data, until = kind.data, kind.read_until if kind.read_until is not None else len(kind.data)
    copies = []
    for bit in rng.choice(len(data) * 8, FLIPS, replace=False):
        flipped = bytearray(data)
        flipped[bit // 8] ^= 1 << (bit % 8)
        copies.append((f"flip bit {bit}", bytes(flipped), bit // 8 >= until))
    for length in rng.choice(len(data), TRUNCATIONS, replace=False):
        copies.append((f"truncate to {length}", data[:length], length >= until))
    return copies


@pytest.mark.parametrize("name", ["model", "runtime", "checkpoint state", "checkpoint record", "partial output",
                                  "sealed part"])
def test_every_damaged_copy_is_refused_with_one_error_and_never_crashes(kinds, name, tmp_path):
    kind = kinds[name]
    rng = np.random.default_rng([SEED, len(name)])
    copies = damaged_copies(kind, rng)
    checks = [check(kind, tmp_path / str(i) / kind.source.name, damaged, harmless)
              for i, (_, damaged, harmless) in enumerate(copies)]
    results = run_forked(checks)
    bad = [f"{what}: {result}" for (what, _, _), result in zip(copies, results) if result not in ("named", "harmless")]
    assert not bad, f"{len(bad)} of {len(copies)} damaged copies of the {name} file: " + "; ".join(bad[:5])
    assert results.count("named") >= FLIPS // 2   # the damage mostly lands where it matters


def test_files_from_before_checksums_never_crash(tmp_path):
    """A runtime file of format_version 1 (no checksum) with flipped bits: a clear error or a load, no crash."""
    data = V1.read_bytes()
    rng = np.random.default_rng(SEED)
    kind, checks = Kind(V1, lambda p: sl.load_runtime(p).stats()["rows"]), []
    for i, bit in enumerate(rng.choice(len(data) * 8, 100, replace=False)):
        flipped = bytearray(data)
        flipped[bit // 8] ^= 1 << (bit % 8)
        checks.append(check(kind, tmp_path / str(i) / "runtime.arrow", bytes(flipped), True))
    results = run_forked(checks)
    bad = [result for result in results if result.startswith(("crash", "hang", "other", "unnamed"))]
    assert not bad, f"{len(bad)} of {len(results)} damaged version 1 files: " + "; ".join(bad[:5])
