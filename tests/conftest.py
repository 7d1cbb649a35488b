"""Shared fixtures: a tiny generated demo set and a tiny trained run, built once per test session."""
from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
PROJECT_ROOT = Path(__file__).resolve().parents[1]
if str(PROJECT_ROOT) not in sys.path:
    sys.path.insert(0, str(PROJECT_ROOT))

TINY_SIZE = 32  # model input size of the tiny run: fast on two CPU cores


@pytest.fixture(scope="session")
def tiny_demo(tmp_path_factory) -> Path:
    """A 64 px demo set in MVTec layout: 16 good training images, 4 good and 10 defective test images."""
    from utils.synthetic import generate_demo_set

    return generate_demo_set(tmp_path_factory.mktemp("demo") / "demo", size=64, n_train_good=16,
                             n_test_good=4, n_defective=10, seed=0)


@pytest.fixture(scope="session")
def tiny_run(tiny_demo, tmp_path_factory) -> Path:
    """myCAE trained for 2 epochs at 32 px on the tiny demo set: a complete run folder."""
    from utils.config import TrainConfig
    from utils.training import train

    out = tmp_path_factory.mktemp("runs")
    return train(TrainConfig(data=str(tiny_demo), model="myCAE", size=TINY_SIZE, epochs=2, batch_size=4, out=str(out)))
