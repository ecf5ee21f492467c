"""Task registry: how the entry points (train, evaluate, predict, the demo) reach a task's code.

An entry point never branches on the task name: it looks the task up here. Everything a task needs beyond
that (its LightningModule and datamodule, the monitored metric, split names) comes from its config group
``conf/task/<name>.yaml``. Callables are named as ``"module:attribute"`` strings and imported on first
use, so importing the registry pulls in no model code.

    spec = get_task("vps")
    results = spec.load("evaluate")(cfg)
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class TaskSpec:
    """One task's entry points.

    Attributes:
        name: the ``task=`` value, e.g. "vos".
        summary: one line for listings and error messages.
        evaluate: ``"module:function"``, ``function(cfg) -> results``, behind ``python -m vidseg.evaluate``.
        predict: ``"module:function"``, ``function(cfg) -> summary dict``, behind ``python -m vidseg.predict``.
        predictor: ``"module:Class"`` with ``Class.from_checkpoint(path, device=..., precision=...)``, the
            streaming Python API; None while the task has no trainable model.
        module: ``"module:Class"``, the task's LightningModule (what ``model._target_`` instantiates);
            None while the task has no trainable model.
    """

    name: str
    summary: str
    evaluate: str
    predict: str
    predictor: str | None = None
    module: str | None = None

    def load(self, attribute: str) -> Any:
        """Import and return the callable named by ``attribute`` ("evaluate", "predict", ...)."""
        target = getattr(self, attribute)
        if target is None:
            raise LookupError(f"task {self.name!r} has no {attribute} yet")
        module_name, _, name = target.partition(":")
        return getattr(importlib.import_module(module_name), name)


_TASKS: dict[str, TaskSpec] = {}


def register_task(spec: TaskSpec) -> TaskSpec:
    """Add a task; its name must be new."""
    if spec.name in _TASKS:
        raise ValueError(f"task {spec.name!r} is already registered")
    _TASKS[spec.name] = spec
    return spec


def list_tasks() -> list[str]:
    return sorted(_TASKS)


def get_task(name: str) -> TaskSpec:
    """The task registered under ``name``; an error listing the known tasks otherwise."""
    try:
        return _TASKS[str(name)]
    except KeyError:
        raise ValueError(f"unknown task {name!r}; use task=<{'|'.join(list_tasks())}>") from None
