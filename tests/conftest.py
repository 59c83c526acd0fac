"""Shared test set-up: data location, precision, threads."""

import os
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"

# Tests read the prepared datasets from ../shared/data unless L2O_DATA_DIR says otherwise.
os.environ.setdefault("L2O_DATA_DIR", str(SHARED_DATA))
torch.set_num_threads(1)


@pytest.fixture
def data_dir() -> Path:
    path = Path(os.environ["L2O_DATA_DIR"])
    if not path.exists():
        pytest.skip(f"prepared datasets not found at {path}")
    return path


@pytest.fixture(scope="session")
def built_book(tmp_path_factory) -> Path:
    """The real book, built once per session into a temporary folder (warnings are errors,
    the HTML is checked); used by the build test and the browser test."""
    from l2o import book

    return book.build_book(path_output=tmp_path_factory.mktemp("book"))
