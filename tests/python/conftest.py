"""Shared paths and the reference model for the Python tests (pytest loads this file first).

Every seqkv checkout needs ../shared (the reference model and the dev KV dumps): without it the
tests fail, they do not skip.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SHARED = REPO / ".." / "shared"
MODEL_DIR = SHARED / "models" / "tinyllama-12m"
DUMP = SHARED / "kvdata" / "dev" / "doc00.safetensors"
PYTHON = os.environ.get("SEQKV_PYTHON", "/usr/bin/python3")


@pytest.fixture(scope="session")
def model():
    """The reference model, loaded once for every test module."""
    from seqkv_quality import LlamaModel

    if not (MODEL_DIR / "config.json").exists() or not DUMP.exists():
        pytest.fail(f"{SHARED.resolve()} lacks the reference model or dumps; every seqkv checkout "
                    "needs ../shared (see shared/README.md)")
    return LlamaModel.load(MODEL_DIR)
