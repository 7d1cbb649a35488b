"""TensorFlow's start-up notices are kept off the terminal, and nothing else is (utils/tensorflow_startup.py)."""

from __future__ import annotations

import pytest

from utils.tensorflow_startup import is_start_up_notice

# What TensorFlow printed on every start of every script, GPU or not: a script's stderr must hold none of it.
SHOWN_BEFORE = ("absl::InitializeLog", "oneDNN custom operations", "cuda drivers", "cuInit")


def assert_quiet_start(stderr: str) -> None:
    for notice in SHOWN_BEFORE:
        assert notice not in stderr, stderr[-2000:]

# Lines as TensorFlow 2.21 prints them on a machine without a GPU.
NOTICES = [
    "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR",
    "I0000 00:00:1796315973.357348   28606 port.cc:153] oneDNN custom operations are on. You may see slightly "
    "different numerical results due to floating-point round-off errors from different computation orders.",
    "I0000 00:00:1796315973.357798   28606 cudart_stub.cc:31] Could not find cuda drivers on your machine, GPU will "
    "not be used.",
    "E0000 00:00:1796315979.430583   28606 cuda_platform.cc:52] failed call to cuInit: INTERNAL: CUDA error: Failed "
    "call to cuInit: UNKNOWN ERROR (303)",
]
OTHER_LINES = [
    "E0000 00:00:1796315979.430583   28606 op_kernel.cc:1840] OP_REQUIRES failed: OOM when allocating tensor",
    "Traceback (most recent call last):",
    "UserWarning: the model was saved with a newer Keras",
    "error: 'saved_models/run/model.keras' is damaged",
]


@pytest.mark.parametrize("line", NOTICES)
def test_start_up_notices_are_recognised(line):
    assert is_start_up_notice(line)


@pytest.mark.parametrize("line", OTHER_LINES)
def test_other_lines_reach_the_terminal(line):
    assert not is_start_up_notice(line)
