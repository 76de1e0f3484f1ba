"""Reading and writing streamlstm data: model files (and, later, Arrow files, replay and Flight)."""

from __future__ import annotations

from streamlstm.io.model_file import load_model, save_model

__all__ = ["load_model", "save_model"]
