"""Shared test setup: single-threaded torch (CI has 2 cores and runs other work beside the tests)."""

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _fresh_inert_warnings():
    from stare.inert import reset_inert_warnings

    reset_inert_warnings()
    yield
