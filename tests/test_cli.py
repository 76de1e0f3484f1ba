"""The command line, run as users run it: a subprocess of ``python -m streamlstm``."""

from __future__ import annotations

import subprocess
import sys


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "streamlstm", *args], capture_output=True, text=True, timeout=300)


def test_help_lists_commands_and_exit_codes():
    result = run_cli("--help")
    assert result.returncode == 0
    assert "demo" in result.stdout and "Exit codes" in result.stdout


def test_unknown_command_is_a_usage_error():
    result = run_cli("no-such-command")
    assert result.returncode == 2
    assert "invalid choice" in result.stderr


def test_demo_shows_the_layers_and_fused_generic_agreement():
    result = run_cli("demo")
    assert result.returncode == 0, result.stderr
    assert "RNN(LSTMCell(4), return_sequences, return_state)" in result.stdout
    difference = float(result.stdout.rsplit("max |difference|:", 1)[1].split()[0])
    assert difference < 1e-5


def test_version_flag_prints_the_package_version():
    import streamlstm

    result = run_cli("--version")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"streamlstm {streamlstm.__version__}"
