"""``streamlstm serve`` edges a first run meets: a port already in use is one line and exit 2; --resume
with no checkpoint yet says that it starts fresh (and stats count it)."""

from __future__ import annotations

import socket
import subprocess
import sys

import pytest
from serve_helpers import ServerProcess, local_runtime

import streamlstm as sl
from streamlstm.errors import ConfigError


@pytest.fixture
def used_port():
    """A loopback port something listens on for the whole test."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        yield listener.getsockname()[1]


def test_serve_on_a_port_in_use_prints_one_line_and_exits_2(model_file, used_port):
    result = subprocess.run([sys.executable, "-m", "streamlstm", "serve", "--model", str(model_file),
                             "--port", str(used_port)], capture_output=True, text=True, timeout=300)
    assert result.returncode == 2, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    assert lines[0].startswith(f"streamlstm serve: error: cannot listen on grpc://127.0.0.1:{used_port}: ")
    assert "in use" in lines[0]


def test_in_process_server_on_a_port_in_use_is_a_config_error(model_file, used_port):
    with pytest.raises(ConfigError, match=rf"cannot listen on grpc://127.0.0.1:{used_port}: .*in use"):
        sl.flight.StreamServer(local_runtime(model_file), f"grpc://127.0.0.1:{used_port}")


def test_resume_without_a_checkpoint_says_it_starts_fresh(model_file, tmp_path):
    with ServerProcess(["--model", str(model_file), "--checkpoint", str(tmp_path / "ck"), "--resume"],
                       tmp_path) as server:
        assert "--resume: no checkpoint in" in server.first_line and "starting fresh" in server.first_line
        with server.client() as client:
            assert client.stats()["server"]["start"] == "fresh"
    with ServerProcess(["--model", str(model_file)], tmp_path) as server:
        assert "fresh" not in server.first_line
        with server.client() as client:
            assert client.stats()["server"]["start"] == "new"
