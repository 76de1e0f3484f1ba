"""Where streamlstm may write: one rule for every file it writes.

A file you name (``save_model``, ``save_runtime``, ``save_keras``, a replay's ``--out``) is written only
into a directory that exists: a missing directory is refused with an error naming your path, never
created silently (a typo would otherwise scatter files). A directory you name (a checkpoint directory,
the demo's ``--out``) is created when missing.
"""

from __future__ import annotations

import os
from pathlib import Path

from streamlstm.errors import SourceError

__all__ = ["require_directory"]


def require_directory(path: str | os.PathLike, what: str = "file") -> Path:
    """``path`` as a Path, once its directory is known to exist; else :class:`SourceError` naming it."""
    target = Path(path)
    parent = target.parent
    if not parent.is_dir():
        problem = "is not a directory" if parent.exists() else "does not exist"
        raise SourceError(f"cannot write {what} {target}: its directory {parent} {problem} "
                          f"(streamlstm creates no directories for the files it writes)")
    return target
