"""Deterministic power-loss points for the fault-injection tests.

When the environment variable `OTA_CLIENT_TEST_KILL_AT` names a step, the client SIGKILLs
itself on reaching it, exactly as a power cut would stop it there. It only ever kills its own
process and changes nothing else; unset (as on every device), `kill_point` does nothing.
"""

from __future__ import annotations

import os
import signal

ENV = "OTA_CLIENT_TEST_KILL_AT"


def kill_point(step: str) -> None:
    """Die here if the tests asked for it."""
    if os.environ.get(ENV) == step:
        os.kill(os.getpid(), signal.SIGKILL)
