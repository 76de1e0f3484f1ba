"""Importing streamlstm puts MKL in its reproducible mode (streamlstm/reproducible.py), in a real process."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

pytestmark = pytest.mark.skipif(not torch.backends.mkl.is_available(), reason="this torch build has no MKL")

# One GEMM and one batched GEMM (the step kernel's) after importing streamlstm, each logged by MKL_VERBOSE.
PROGRAM = """
import streamlstm, torch
from streamlstm.layers.kernels import gate_major_cell, gate_major_weights
a = torch.randn(64, 41)
torch.mm(a, torch.randn(41, 128))
gate_major_cell(torch.randn(64, 8), torch.zeros(64, 32), torch.zeros(64, 32),
                gate_major_weights(torch.randn(8, 128), torch.randn(32, 128), torch.zeros(128)))
"""


def _mkl_calls(**env: str) -> list[str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("MKL_")} | {"MKL_VERBOSE": "1", **env}
    done = subprocess.run([sys.executable, "-c", PROGRAM], capture_output=True, text=True, env=environ, timeout=120)
    assert done.returncode == 0, done.stderr
    calls = [line for line in done.stdout.splitlines() if "GEMM" in line]
    assert any("SGEMM_BATCH" in line for line in calls), done.stdout
    return calls


def test_import_turns_on_cnr_mode_and_fixed_threads():
    for call in _mkl_calls():
        assert "CNR:AUTO" in call and "Dyn:0" in call, call


def test_a_value_the_user_set_is_kept():
    for call in _mkl_calls(MKL_CBWR="COMPATIBLE", MKL_DYNAMIC="TRUE"):
        assert "CNR:COMPATIBLE" in call and "Dyn:1" in call, call
