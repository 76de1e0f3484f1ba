"""save / load of a StreamTrainer: model, optimizer state, carries and counters; a training process
killed with SIGKILL continues exactly from its last checkpoint."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
import torch
from train_helpers import make_model, optimizer_state, same_optimizer_state, train_batch, weights

import streamlstm as sl
from streamlstm.errors import ConfigError, FileError, StateError

F, U, STREAMS = 3, 6, 5
HERE = Path(__file__).resolve().parent


def window(b: int) -> pa.RecordBatch:
    """Batch ``b`` of a deterministic run: 3 rows of each stream, interleaved, a reset now and then."""
    rng = np.random.default_rng(b)
    keys = np.tile(np.arange(STREAMS), 3)
    x = rng.uniform(-1, 1, (len(keys), F))
    y = rng.uniform(-1, 1, (len(keys), 1))
    reset = (keys == b % 7) & (np.arange(len(keys)) < STREAMS)
    return train_batch(keys, x, y, real=rng.uniform(size=len(keys)) > 0.2, reset=reset)


def new_trainer() -> sl.StreamTrainer:
    model = make_model(F, U, seed=3)
    return sl.StreamTrainer(model, torch.optim.Adam(model.parameters(), lr=0.01), "huber", key="id", features="x",
                            target="y", mask="real", reset="reset")


def reopen(path: Path) -> sl.StreamTrainer:
    return sl.StreamTrainer.load(path, lambda p: torch.optim.Adam(p, lr=0.01))


def assert_identical(a: sl.StreamTrainer, b: sl.StreamTrainer) -> None:
    wa, wb = weights(a.model), weights(b.model)
    assert wa.keys() == wb.keys() and all(np.array_equal(wa[k], wb[k]) for k in wa)
    assert same_optimizer_state(optimizer_state(a.optimizer), optimizer_state(b.optimizer))
    assert a.runtime.keys() == b.runtime.keys()
    for key in a.runtime.keys():
        for (ha, ca), (hb, cb) in zip(a.runtime.state(key), b.runtime.state(key)):
            assert np.array_equal(ha, hb) and np.array_equal(ca, cb)
    assert a.stats() == b.stats()


def test_save_then_load_continues_exactly(tmp_path: Path) -> None:
    trainer = new_trainer()
    for b in range(3):
        trainer.learn(window(b))
    trainer.save(tmp_path / "t.slt")
    loaded = reopen(tmp_path / "t.slt")
    assert_identical(trainer, loaded)
    for b in range(3, 6):
        mine, theirs = trainer.learn(window(b)), loaded.learn(window(b))
        assert mine.equals(theirs)
    assert_identical(trainer, loaded)
    served = loaded.runtime.feed(window(6).select(["id", "x", "real", "reset"]))   # predictions from the same carries
    assert served.equals(trainer.runtime.feed(window(6).select(["id", "x", "real", "reset"])))


def test_a_trainer_file_is_a_runtime_file(tmp_path: Path) -> None:
    trainer = new_trainer()
    trainer.learn(window(0))
    trainer.save(tmp_path / "t.slt")
    runtime = sl.load_runtime(tmp_path / "t.slt")
    assert sorted(runtime.keys()) == list(range(STREAMS))
    sl.save_runtime(runtime, tmp_path / "r.slr")
    with pytest.raises(FileError, match="is not a trainer file"):
        reopen(tmp_path / "r.slr")


def test_load_refuses_another_optimizer(tmp_path: Path) -> None:
    trainer = new_trainer()
    trainer.learn(window(0))
    trainer.save(tmp_path / "t.slt")
    with pytest.raises(StateError, match="state of a Adam optimizer, `optimizer` made a SGD"):
        sl.StreamTrainer.load(tmp_path / "t.slt", lambda p: torch.optim.SGD(p, lr=0.1))
    with pytest.raises(ConfigError, match="`optimizer` must be a callable"):
        sl.StreamTrainer.load(tmp_path / "t.slt", trainer.optimizer)


_CHILD = """
import sys, torch
sys.path.insert(0, {here!r})
torch.set_num_threads(1)
from test_train_persistence import new_trainer, window
trainer = new_trainer()
b = 0
while True:   # trains and checkpoints until killed
    trainer.learn(window(b))
    trainer.save({path!r})
    print("saved", b, flush=True)
    b += 1
"""


@pytest.mark.slow
def test_kill_9_then_load_continues_exactly(tmp_path: Path) -> None:
    path = tmp_path / "t.slt"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(HERE.parents[1]), os.environ.get("PYTHONPATH", "")]))
    child = subprocess.Popen([sys.executable, "-c", _CHILD.format(here=str(HERE), path=str(path))],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        deadline = time.monotonic() + 120
        for line in child.stdout:
            if line.strip() == "saved 2" or time.monotonic() > deadline:
                break
        os.kill(child.pid, signal.SIGKILL)   # while it trains on and saves the next windows
    finally:
        child.kill()
        child.wait(timeout=60)
    assert child.returncode == -signal.SIGKILL, child.stderr.read()
    resumed = reopen(path)
    done = resumed.stats()["batches"]
    assert done >= 3
    reference = new_trainer()
    for b in range(done + 3):
        reference.learn(window(b))
    for b in range(done, done + 3):
        resumed.learn(window(b))
    assert_identical(reference, resumed)
