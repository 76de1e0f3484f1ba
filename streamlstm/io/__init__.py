"""Reading and writing streamlstm data: model files, runtime files, replay sources, sinks and checkpoints."""

from __future__ import annotations

from streamlstm.io.model_file import load_model, save_model
from streamlstm.io.runtime_file import load_runtime, save_runtime

__all__ = ["load_model", "load_runtime", "save_model", "save_runtime"]
