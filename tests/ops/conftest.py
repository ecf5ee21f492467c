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
