"""Live rows without Flight: ``producer | streamlstm replay - --model m --out o.arrow`` through a real pipe."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pyarrow as pa
from serve_helpers import F, assert_same_outputs, local_runtime

# Writes 12 batches of an Arrow IPC stream to stdout, one every 20 ms, as a live producer would.
PRODUCER = f"""
import sys, time
import numpy as np, pyarrow as pa
rng = np.random.default_rng(7)
schema = pa.schema([("stream_id", pa.int64()), ("x", pa.list_(pa.float32(), {F}))])
with pa.ipc.new_stream(pa.PythonFile(sys.stdout.buffer, mode="w"), schema) as writer:
    for _ in range(12):
        x = rng.standard_normal((50, {F})).astype(np.float32)
        writer.write_batch(pa.record_batch([pa.array(rng.integers(0, 9, 50)),
                                            pa.FixedSizeListArray.from_arrays(pa.array(x.reshape(-1)), {F})],
                                           schema=schema))
        sys.stdout.buffer.flush()
        time.sleep(0.02)
"""


def test_producer_piped_into_replay_from_stdin(model_file, tmp_path):
    out = tmp_path / "o.arrow"
    producer = subprocess.Popen([sys.executable, "-c", PRODUCER], stdout=subprocess.PIPE)
    replay = subprocess.run([sys.executable, "-m", "streamlstm", "replay", "-", "--model", str(model_file),
                             "--out", str(out), "--batch-rows", "64"], stdin=producer.stdout, capture_output=True,
                            text=True, timeout=120)
    producer.stdout.close()
    assert producer.wait(60) == 0
    assert replay.returncode == 0, replay.stderr
    assert "replayed 600 rows of 9 streams" in replay.stdout
    with pa.memory_map(str(out)) as source:
        got = pa.ipc.open_file(source).read_all()
    # the producer's rows, regenerated, fed to a local runtime
    rng = np.random.default_rng(7)
    keys, xs = [], []
    for _ in range(12):
        xs.append(rng.standard_normal((50, F)).astype(np.float32))
        keys.append(rng.integers(0, 9, 50))
    x = np.concatenate(xs)
    batch = pa.record_batch({"stream_id": pa.array(np.concatenate(keys)),
                             "x": pa.FixedSizeListArray.from_arrays(pa.array(x.reshape(-1)), F)})
    assert_same_outputs(got.combine_chunks().to_batches()[0], local_runtime(model_file).feed(batch))
