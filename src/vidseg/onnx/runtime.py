"""ONNX Runtime sessions for exported graphs: provider choice and named inputs/outputs, shared by every model."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
import torch

from vidseg.errors import DataError


def providers_for(device: str | torch.device) -> list[str]:
    """ONNX Runtime execution providers for a torch-style device: CUDA (then CPU) for a CUDA device when this
    onnxruntime build has it, else CPU. A CUDA device without the CUDA provider warns and runs on CPU."""
    import onnxruntime as ort

    if torch.device(device).type == "cuda":
        if "CUDAExecutionProvider" in ort.get_available_providers():
            return ["CUDAExecutionProvider", "CPUExecutionProvider"]
        warnings.warn("this onnxruntime has no CUDAExecutionProvider (install onnxruntime-gpu); running the ONNX "
                      "graph on CPU", stacklevel=3)
    return ["CPUExecutionProvider"]


class OnnxSession:
    """One graph under ONNX Runtime: ``run(**inputs)`` takes and returns numpy arrays by name.

    Args:
        path: the .onnx file.
        device: "cpu" or "cuda[:N]" (see :func:`providers_for`).
        threads: intra-op threads (None: ONNX Runtime's default, one per core; OMP_NUM_THREADS when set).
    """

    def __init__(self, path: str | os.PathLike, *, device: str | torch.device = "cpu", threads: int | None = None):
        import onnxruntime as ort

        options = ort.SessionOptions()
        if threads is None and os.environ.get("OMP_NUM_THREADS", "").isdigit():
            threads = int(os.environ["OMP_NUM_THREADS"])
        if threads:
            options.intra_op_num_threads = threads
        options.log_severity_level = 3  # errors only: no warnings about unused initialisers
        # Idle intra-op threads sleep instead of spinning (as OMP_WAIT_POLICY=PASSIVE does for PyTorch): a spinning
        # pool keeps the cores busy between frames, away from decoding, writing and other processes.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.path = Path(path)
        try:
            self.session = ort.InferenceSession(str(path), sess_options=options, providers=providers_for(device))
        except Exception as err:  # onnxruntime raises its own Fail/InvalidGraph types
            reason = " ".join(str(err).split())[:300]
            raise DataError(f"{path}: ONNX Runtime cannot load the graph ({reason}); export it again") from err
        self.input_names = tuple(i.name for i in self.session.get_inputs())
        self.output_names = tuple(o.name for o in self.session.get_outputs())
        self.providers = tuple(self.session.get_providers())

    def run(self, **inputs: np.ndarray) -> dict[str, np.ndarray]:
        """Run the graph on named numpy inputs (every input of the graph) -> its outputs by name."""
        missing = [n for n in self.input_names if n not in inputs]
        if missing:
            raise ValueError(f"{self.path.name}: inputs {missing} not given")
        outputs = self.session.run(None, {n: inputs[n] for n in self.input_names})
        return dict(zip(self.output_names, outputs, strict=True))
