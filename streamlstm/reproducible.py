"""Bitwise reproducible CPU math from one process to the next.

PyTorch's CPU BLAS is Intel oneMKL, whose results are bitwise reproducible from run to run only under
its documented "reproducibility conditions": a fixed number of threads with dynamic adjustment off
(``MKL_DYNAMIC=FALSE``), and Conditional Numerical Reproducibility mode (``MKL_CBWR``; ``AUTO`` is
the fastest branch for the CPU at hand). Outside them a GEMM's last bits may change with the memory
alignment of its operands or with the threads MKL picked, from one process to the next. A resumed
replay must continue bit for bit like the run that was never interrupted (``streamlstm replay
--resume``, a server restored from its checkpoint, a runtime loaded from ``state_dict()`` in a new
process); in CI about one test in ten killed and resumed a replay whose last bits then differed.

Importing streamlstm therefore sets both, unless the environment already names them
(``MKL_CBWR=COMPATIBLE`` for results that are the same across CPUs, say): ``MKL_CBWR=AUTO``, which
MKL reads at its first call (so it applies unless the process ran MKL code before importing
streamlstm), and the thread count set again to its current value, which turns MKL's dynamic
adjustment off (PyTorch does so on every ``torch.set_num_threads``; MKL reads ``MKL_DYNAMIC`` too
early for a default to help). On a 2-core AMD EPYC VM, ``benchmarks/bench_runtime.py`` showed no
cost beyond its run-to-run noise (its raw PyTorch baselines moved by up to 20% between runs, in either
mode).
"""

from __future__ import annotations

import os

import torch


def default_to_reproducible_blas() -> None:
    """``MKL_CBWR=AUTO`` and no dynamic thread adjustment, each unless the environment names it."""
    os.environ.setdefault("MKL_CBWR", "AUTO")
    if "MKL_DYNAMIC" not in os.environ:
        torch.set_num_threads(torch.get_num_threads())
