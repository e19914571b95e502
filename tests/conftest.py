"""Shared fixtures. Real images live in ../shared/data beside the project (see its README);
tests that need them skip with a reason when it is absent. WWGAN_SHARED overrides the path."""

import os
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("WWGAN_SHARED", ROOT.parent / "shared"))


def shared_path(*parts: str) -> Path:
    """Path under ../shared, or skip the calling test with the reason."""
    path = SHARED.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"real data not found at {path} (needs ../shared beside the project)")
    return path


@pytest.fixture(autouse=True)
def _deterministic_cpu():
    torch.use_deterministic_algorithms(True, warn_only=True)
    yield
