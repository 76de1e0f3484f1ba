"""One rule for every file streamlstm writes: its directory must exist (refused with an error naming the
user's path, nothing created); files get the process umask's mode, atomic ones too."""

from __future__ import annotations

import os
import stat

import numpy as np
import pytest
from replay_data import make_model, make_table, save_model, write_ipc_file

import streamlstm as sl
from streamlstm.errors import SourceError


def _runtime() -> sl.StreamRuntime:
    return sl.StreamRuntime(make_model(), key="stream_id", features="x")


WRITERS = {
    "save_model": lambda path: sl.save_model(make_model(), path),
    "save_runtime": lambda path: sl.save_runtime(_runtime(), path),
    "save_keras": lambda path: sl.save_keras(sl.LSTM(3, input_shape=(None, 2)), path),
    "replay_to_file": lambda path: sl.replay_to_file(path.parents[2] / "in.arrow", path.parents[2] / "m.slm", path,
                                                     key="stream_id", features="x", progress=False),
    "replay_to_file with checkpoint": lambda path: sl.replay_to_file(
        path.parents[2] / "in.arrow", path.parents[2] / "m.slm", path, key="stream_id", features="x",
        checkpoint=path.parents[2] / "ck", progress=False),
}


@pytest.fixture
def inputs(tmp_path):
    write_ipc_file(make_table(streams=3, steps=4), tmp_path / "in.arrow")
    save_model(tmp_path / "m.slm")
    return tmp_path


@pytest.mark.parametrize("writer", list(WRITERS))
def test_a_missing_directory_is_refused_naming_the_users_path(inputs, writer) -> None:
    target = inputs / "missing" / "deeper" / "out.arrow"
    with pytest.raises(SourceError, match=rf"cannot write .*{target}: its directory {target.parent} does not exist"):
        WRITERS[writer](target)
    assert not (inputs / "missing").exists()


@pytest.mark.parametrize("umask", [0o022, 0o002])
def test_written_files_follow_the_umask(inputs, umask) -> None:
    previous = os.umask(umask)
    try:
        sl.save_model(make_model(), inputs / "a.slm")
        sl.save_runtime(_runtime(), inputs / "a.state")
        sl.replay_to_file(inputs / "in.arrow", inputs / "m.slm", inputs / "out.arrow", key="stream_id",
                          features="x", checkpoint=inputs / "ck", checkpoint_every=1, progress=False)
        sl.replay_to_file(inputs / "in.arrow", inputs / "m.slm", inputs / "out2.arrow", key="stream_id",
                          features="x", checkpoint=inputs / "ck2", checkpoint_every=1000, progress=False)
    finally:
        os.umask(previous)
    expected = 0o666 & ~umask
    written = [inputs / "a.slm", inputs / "a.state", inputs / "out.arrow", inputs / "out2.arrow"]
    written += [path for path in (inputs / "ck").rglob("*") if path.is_file()]
    for path in written:
        assert stat.S_IMODE(path.stat().st_mode) == expected, path
    assert not [path.name for path in inputs.iterdir() if path.name.endswith(".tmp")]


def test_load_model_decides_by_content_and_save_model_refuses_a_keras_name(tmp_path) -> None:
    model = make_model()
    with pytest.raises(sl.errors.ConfigError, match=r"'m.keras' would mislead: name it .slm, or call "
                                                    r"streamlstm.save_keras"):
        sl.save_model(model, tmp_path / "m.keras")
    assert not (tmp_path / "m.keras").exists()
    sl.save_model(model, tmp_path / "m.slm")
    (tmp_path / "m.slm").rename(tmp_path / "renamed.h5")        # a streamlstm file under a Keras name
    loaded = sl.load_model(tmp_path / "renamed.h5")
    assert all(np.array_equal(a, b) for a, b in zip(loaded[0].get_weights(), model[0].get_weights()))
    sl.save_keras(sl.LSTM(3, input_shape=(None, 2)), tmp_path / "k.keras")
    (tmp_path / "k.keras").rename(tmp_path / "k.slm")           # a Keras file under another name
    assert type(sl.load_model(tmp_path / "k.slm")).__name__ == "KerasModel"
