"""Catch host syncs on CPU: every place a step reads device data back to Python, or uploads host data.

On CUDA, a host read of device data (``.item()``, ``bool(t)``, ``int(t)``, ``.tolist()``, ``.cpu()``,
boolean-mask indexing, ``nonzero``/``unique``: anything whose result or output shape depends on the values)
waits for the GPU to finish all queued work; so does a pageable upload of host numbers
(``torch.tensor(x, device=...)``). On CPU nothing waits, so such a regression goes unnoticed without a GPU.

:class:`HostSyncGuard` is a ``TorchFunctionMode`` that follows the data: tensors given as ``sources`` (the
batch, the model's parameters and buffers) and everything computed from them are *device data*. A sync
operation on device data, or an explicit-device ``torch.tensor``, is recorded with the innermost line of
vidseg's source (or of the caller) that led to it. Host-side values stay allowed: a CPU random draw
(``torch.rand(())``) and what is computed from it alone are not device data.

Known limits: views are followed only through the operation that made them (an in-place write into a view
does not mark its base); ``.to(device)`` of host-made tensors is not reported (on CPU it cannot be told from
a no-op). Code inside one intercepted call (a torch function, a C++ kernel) is not looked into.
"""

from __future__ import annotations

import os
import traceback
from collections.abc import Iterable
from dataclasses import dataclass

import pytorch_lightning as pl
import torch
from torch.overrides import TorchFunctionMode
from torch.utils._pytree import tree_flatten

import vidseg

# Reads of values back to the host (method or function names as torch reports them).
HOST_READS = frozenset({
    "item", "tolist", "numpy", "cpu", "__bool__", "__int__", "__float__", "__index__", "__complex__", "__format__",
    "__repr__", "__str__", "is_nonzero", "equal", "allclose",
})
# Outputs whose shape depends on the values (the size is read back).
DATA_DEPENDENT_SHAPES = frozenset({
    "nonzero", "argwhere", "masked_select", "unique", "unique_consecutive", "bincount", "repeat_interleave",
})
INDEXING = frozenset({"__getitem__", "__setitem__", "index_put_", "index_put"})
UPLOADS = frozenset({"tensor", "as_tensor", "scalar_tensor"})
IN_PLACE_DUNDERS = frozenset({"__setitem__", "__iadd__", "__isub__", "__imul__", "__itruediv__", "__ifloordiv__",
                              "__imod__", "__ipow__", "__iand__", "__ior__", "__ixor__", "__ilshift__", "__irshift__"})

VIDSEG_SRC = os.path.dirname(vidseg.__file__) + os.sep
HERE = os.path.abspath(__file__)


@dataclass(frozen=True)
class HostSync:
    """One sync: the operation, and the innermost vidseg source line (else the first caller outside torch)."""

    op: str
    file: str  # relative to src/vidseg (or absolute outside it)
    line: int
    function: str

    def __str__(self) -> str:
        return f"{self.op} at {self.file}:{self.line} in {self.function}"


def _site(op: str) -> HostSync:
    frames = traceback.extract_stack()[:-3]  # drop _site, _record and __torch_function__
    ours = [f for f in frames if os.path.abspath(f.filename).startswith(VIDSEG_SRC)]
    if ours:
        frame = ours[-1]
        return HostSync(op, os.path.relpath(frame.filename, VIDSEG_SRC), frame.lineno, frame.name)
    outside = [f for f in frames if f"{os.sep}torch{os.sep}" not in f.filename and os.path.abspath(f.filename) != HERE]
    frame = outside[-1] if outside else frames[-1]
    return HostSync(op, frame.filename, frame.lineno, frame.name)


def _is_bool_index(index) -> bool:
    items = index if isinstance(index, tuple) else (index,)
    return any(isinstance(i, torch.Tensor) and i.dtype in (torch.bool, torch.uint8) for i in items)


class HostSyncGuard(TorchFunctionMode):
    """Record host syncs on ``sources`` and what is computed from them while the mode is active.

    ``syncs`` lists them in order; :meth:`sites` gives the distinct ones.
    """

    def __init__(self, sources: Iterable[torch.Tensor] = ()) -> None:
        super().__init__()
        self._device_data: dict[int, torch.Tensor] = {}  # strong references: ids are never reused meanwhile
        self.syncs: list[HostSync] = []
        self.mark(sources)

    def mark(self, tensors: Iterable[torch.Tensor]) -> None:
        for t in tensors:
            if isinstance(t, torch.Tensor):
                self._device_data[id(t)] = t

    def is_device_data(self, t: object) -> bool:
        return isinstance(t, torch.Tensor) and id(t) in self._device_data

    def sites(self) -> list[HostSync]:
        return list(dict.fromkeys(self.syncs))

    def _record(self, op: str) -> None:
        self.syncs.append(_site(op))

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = getattr(func, "__name__", str(func))
        inputs = [t for t in tree_flatten((args, kwargs))[0] if isinstance(t, torch.Tensor)]
        derived = any(self.is_device_data(t) for t in inputs)
        if name in UPLOADS and kwargs.get("device") is not None:
            self._record(f"torch.{name}(..., device=)")  # a pageable host-to-device copy: the host waits
        elif derived and (name in HOST_READS or name in DATA_DEPENDENT_SHAPES):
            if not (name == "repeat_interleave" and kwargs.get("output_size") is not None):
                self._record(name)
        elif name in INDEXING and len(args) > 1 and _is_bool_index(args[1]) and derived:
            self._record(f"boolean-mask {name}")
        out = func(*args, **kwargs)
        if derived:
            self.mark(t for t in tree_flatten(out)[0] if isinstance(t, torch.Tensor))
            in_place = (name.endswith("_") and not name.startswith("__")) or name in IN_PLACE_DUNDERS
            if in_place and args and isinstance(args[0], torch.Tensor):
                self.mark([args[0]])
            if isinstance(kwargs.get("out"), torch.Tensor):
                self.mark([kwargs["out"]])
        return out


class GuardTrainingStep(pl.Callback):
    """Run every ``training_step`` of a real fit under a :class:`HostSyncGuard` whose sources are the batch's
    tensors and the module's parameters and buffers; ``guards`` keeps one guard per step. Add it to a run
    with ``+callbacks.guard._target_=tests.helpers.host_sync.GuardTrainingStep`` (``instances`` finds it)."""

    instances: list[GuardTrainingStep] = []

    def __init__(self) -> None:
        self.guards: list[HostSyncGuard] = []
        GuardTrainingStep.instances.append(self)

    def setup(self, trainer, pl_module, stage: str) -> None:
        step = pl_module.training_step

        def guarded(batch, batch_idx):
            sources = [*tree_flatten(batch)[0], *pl_module.parameters(), *pl_module.buffers()]
            with HostSyncGuard(sources) as guard:
                output = step(batch, batch_idx)
            self.guards.append(guard)
            return output

        pl_module.training_step = guarded

    def sites(self) -> list[HostSync]:
        return list(dict.fromkeys(s for guard in self.guards for s in guard.syncs))
