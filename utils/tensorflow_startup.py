"""Import TensorFlow without its start-up chatter on the terminal.

TensorFlow's C++ core logs at import time, before its log settings apply ("All log messages before
absl::InitializeLog() is called are written to STDERR", "oneDNN custom operations are on", "Could not find cuda
drivers"), and logs an ERROR line ("failed call to cuInit") on every machine without a GPU. None of it says
anything is wrong, and an engineer reading ``ERROR`` before every verdict learns to ignore errors.

`import_tensorflow` imports TensorFlow (and initialises its devices) with the process's stderr captured, then
writes back every captured line that is not one of those known notices, so a real message still reaches the
terminal. It also makes TensorFlow's own log show errors only (``TF_CPP_MIN_LOG_LEVEL=3``; a problem still
surfaces as the Python exception it raises). Set ``TF_CPP_MIN_LOG_LEVEL=0`` to see TensorFlow's whole log,
start-up included.
"""

from __future__ import annotations

import os
import re
import sys
import tempfile
from types import ModuleType

START_UP_NOTICES = re.compile(
    r"All log messages before absl::InitializeLog\(\) is called"
    r"|oneDNN custom operations are on"
    r"|Could not find cuda drivers on your machine"
    r"|failed call to cuInit"
    r"|Unable to register cu(DNN|FFT|BLAS) factory"
    r"|computation placer already registered"
    r"|TF-TRT Warning: Could not find TensorRT"
    r"|This TensorFlow binary is optimized to use available CPU instructions"
    r"|To enable the following instructions:.*rebuild TensorFlow"
)


def is_start_up_notice(line: str) -> bool:
    """True for a line TensorFlow prints on every start that says nothing is wrong."""
    return START_UP_NOTICES.search(line) is not None


def import_tensorflow() -> ModuleType:
    """`import tensorflow`, quietly (see the module docstring); returns the module. Importing it again is free."""
    if "tensorflow" in sys.modules:
        return sys.modules["tensorflow"]
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    if os.environ["TF_CPP_MIN_LOG_LEVEL"] == "0":
        import tensorflow

        return tensorflow
    with tempfile.TemporaryFile(mode="w+b") as captured:
        sys.stderr.flush()
        saved_stderr = os.dup(2)
        os.dup2(captured.fileno(), 2)
        try:
            import tensorflow

            tensorflow.config.list_physical_devices()  # device discovery logs the cuInit line
        finally:
            sys.stderr.flush()
            os.dup2(saved_stderr, 2)
            os.close(saved_stderr)
            captured.seek(0)
            kept = [line for line in captured.read().decode(errors="replace").splitlines(keepends=True)
                    if not is_start_up_notice(line)]
            sys.stderr.write("".join(kept))
            sys.stderr.flush()
    return tensorflow
