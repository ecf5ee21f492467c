"""One intra-op thread for the ops tests: the machines they run on are shared, and with another busy
process an OpenMP worker spin-waiting on the same core makes tiny parallel ops 100x slower."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


class FakeKernels:
    """Stands in for the compiled Triton kernels behind the real wrappers and ``launch``: records each launch
    (kernel, stages, warps, constexpr settings), writes "nothing found" (-1, or 0 for the cost volume) into
    the output, and raises Triton's own OutOfResources where ``fail(name, meta)`` says so. ``limit`` is the
    device's shared memory per block the wrappers see (None: no limit, as off CUDA)."""

    # kernel attribute -> (module, name in LAST_CONFIG, index of the output among the arguments, fill value)
    KERNELS = {
        "_global_argmin_kernel": ("vidseg.ops.triton_kernels", "global", 4, -1),
        "_local_tc_kernel": ("vidseg.ops.triton_local_tc", "local_tc", 4, -1),
        "_local_direct_kernel": ("vidseg.ops.triton_kernels", "local_direct", 3, -1),
        "_correlation_kernel": ("vidseg.ops.triton_kernels", "correlation", 2, 0.0),
    }

    def __init__(self) -> None:
        self.launches: list[dict] = []
        self.limit: int | None = None
        self.fail = lambda name, meta: False

    def kernel(self, name: str, out_index: int, fill):
        fake = self

        class Kernel:
            def __getitem__(self, grid):
                def run(*args, num_warps, num_stages, **meta):
                    from triton.runtime.errors import OutOfResources

                    settings = {k: v for k, v in meta.items() if isinstance(v, (int, bool))}
                    fake.launches.append({"kernel": name, "num_warps": num_warps, "num_stages": num_stages, **settings})
                    if fake.fail(name, meta):
                        raise OutOfResources(300000, 232448, "shared memory")
                    args[out_index].fill_(fill)

                return run

        return Kernel()


@pytest.fixture
def fake_kernels(monkeypatch):
    """:class:`FakeKernels` patched into vidseg.ops' Triton modules (CPU tensors, no interpreter needed)."""
    pytest.importorskip("triton")
    import importlib

    fake = FakeKernels()
    for attr, (module, name, index, fill) in FakeKernels.KERNELS.items():
        monkeypatch.setattr(importlib.import_module(module), attr, fake.kernel(name, index, fill))
    for module in ("vidseg.ops.triton_kernels", "vidseg.ops.triton_local_tc"):
        monkeypatch.setattr(importlib.import_module(module), "shared_memory_limit", lambda device: fake.limit)
    return fake
