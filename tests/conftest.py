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


@pytest.fixture(scope="session")
def math_data():
    """The shared verl math parquet files: $STARE_MATH_DATA, else <repo>/../shared/data/math; tests
    that use this fixture skip where the folder is absent (a user's machine, a bare clone)."""
    import pathlib

    default = pathlib.Path(__file__).resolve().parents[1].parent / "shared" / "data" / "math"
    path = pathlib.Path(os.environ.get("STARE_MATH_DATA") or default)
    if not (path / "aime24.parquet").is_file():
        pytest.skip(f"shared math data not found (set STARE_MATH_DATA); looked in {path}")
    return path
