"""Trainer files: :meth:`StreamTrainer.save <streamlstm.StreamTrainer.save>` /
:meth:`StreamTrainer.load <streamlstm.StreamTrainer.load>`, written atomically, no pickle.

A trainer file is a stream runtime file (:mod:`streamlstm.io.runtime_file`: model, every stream's
carries, the runtime's counters), so ``load_runtime`` and ``streamlstm serve`` read it too, with two
more schema metadata entries:

- ``streamlstm.trainer`` = JSON: ``format_version`` (1), the trainer's :meth:`config`, its counters and
  last loss, the optimizer's class name, its ``param_groups`` (without the parameters' positions,
  which are the model's order) and the non-tensor values of its per-parameter state;
- ``streamlstm.optimizer_tensors`` = the tensors of the optimizer's per-parameter state (momentum
  buffers, Adam moments, step counts), named ``<parameter index>.<name>``, as a tensor table
  (:func:`streamlstm.io.model_file.tensors_to_bytes`).

Loading rebuilds the optimizer from the callable given to ``load`` and restores its state, so a
training run saved after any batch continues exactly as if it had not stopped.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import torch

from streamlstm.errors import ConfigError, FileError, StateError
from streamlstm.io.checksum import decoding
from streamlstm.io.model_file import tensors_from_bytes, tensors_to_bytes
from streamlstm.io.runtime_file import load_runtime, read_metadata, save_runtime

__all__ = ["read_trainer", "write_trainer"]

FORMAT_VERSION = 1
_TRAINER, _TENSORS = b"streamlstm.trainer", b"streamlstm.optimizer_tensors"


def _optimizer_parts(optimizer: torch.optim.Optimizer) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    state = optimizer.state_dict()
    tensors, values = {}, {}
    for index, entry in state["state"].items():
        for name, value in entry.items():
            if torch.is_tensor(value):
                tensors[f"{index}.{name}"] = value
            else:
                values.setdefault(str(index), {})[name] = value
    groups = [{k: (list(v) if isinstance(v, tuple) else v) for k, v in group.items()}
              for group in state["param_groups"]]
    return {"class": type(optimizer).__name__, "param_groups": groups, "values": values}, tensors


def _optimizer_state(saved: dict[str, Any], tensors: dict[str, torch.Tensor],
                     fresh: list[dict[str, Any]]) -> dict[str, Any]:
    """The optimizer ``state_dict`` to load; tuples (JSON lists) come back where ``fresh`` groups
    hold tuples (Adam's ``betas``)."""
    groups = [{k: (tuple(v) if isinstance(v, list) and isinstance(like.get(k), tuple) else v)
               for k, v in group.items()} for group, like in zip(saved["param_groups"], fresh)]
    state: dict[int, dict[str, Any]] = {}
    for index, entry in saved["values"].items():
        state.setdefault(int(index), {}).update(entry)
    for name, value in tensors.items():
        index, key = name.split(".", 1)
        state.setdefault(int(index), {})[key] = value
    return {"state": state, "param_groups": groups + saved["param_groups"][len(groups):]}


def write_trainer(trainer: Any, path: Any) -> None:
    """Write ``trainer`` (a StreamTrainer) to ``path`` atomically (format above)."""
    if trainer.optimizer is None:
        raise StateError("the trainer has not learned yet and its model is not built: nothing to save")
    optimizer, tensors = _optimizer_parts(trainer.optimizer)
    settings = {"format_version": FORMAT_VERSION, "config": trainer.config(), "counters": trainer.counters,
                "last_loss": trainer.last_loss, "optimizer": optimizer}
    save_runtime(trainer.runtime, path, extra={_TRAINER: json.dumps(settings).encode(),
                                               _TENSORS: tensors_to_bytes(tensors)})


def read_trainer(cls: type, path: Any, optimizer: Callable[[Any], torch.optim.Optimizer],
                 loss: Any, device: Any) -> Any:
    """The StreamTrainer saved at ``path`` (see :meth:`StreamTrainer.load`)."""
    metadata = read_metadata(path)
    name = f"trainer file {str(path)!r}"
    if _TRAINER not in metadata:
        raise FileError(f"{str(path)!r} is not a trainer file (no {_TRAINER.decode()} metadata; a runtime file?)")
    with decoding(name, "trainer settings"):
        settings = json.loads(metadata[_TRAINER])
        version = settings.get("format_version")
        config, saved = settings["config"], settings["optimizer"]
        saved_tensors = tensors_from_bytes(metadata[_TENSORS])
        counters, last_loss = dict(settings["counters"]), settings["last_loss"]
    if version != FORMAT_VERSION:
        raise FileError(f"{name}: trainer format_version {version!r} is not supported (this streamlstm reads "
                        f"{FORMAT_VERSION})")
    if loss is None:
        if config["loss"] is None:
            raise ConfigError("the trainer was saved with a custom `loss` callable: pass it again as `loss=`")
        loss = config["loss"]
    if isinstance(optimizer, torch.optim.Optimizer) or not callable(optimizer):
        raise ConfigError("`optimizer` must be a callable taking the loaded model's parameters, e.g. "
                          "`lambda p: torch.optim.SGD(p, lr=0.1)`, got " + type(optimizer).__name__)
    runtime = load_runtime(path, device=device)
    trainer = cls.restore(runtime, optimizer, loss, config["target"], config["clip_grad_norm"])
    if type(trainer.optimizer).__name__ != saved["class"]:
        raise StateError(f"the file holds the state of a {saved['class']} optimizer, `optimizer` made a "
                         f"{type(trainer.optimizer).__name__}")
    try:
        fresh = trainer.optimizer.state_dict()["param_groups"]
        trainer.optimizer.load_state_dict(_optimizer_state(saved, saved_tensors, fresh))
    except (ValueError, KeyError) as exc:
        raise StateError(f"the saved optimizer state does not fit `optimizer`: {exc}") from exc
    trainer.counters.update(counters)
    trainer.last_loss = last_loss
    return trainer
