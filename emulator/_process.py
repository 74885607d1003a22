"""What every process the emulator starts shares (kept free of heavy imports: moto's process imports it)."""

from __future__ import annotations

import ctypes
import signal

__all__ = ["set_parent_death_signal"]

_PR_SET_PDEATHSIG = 1


def set_parent_death_signal() -> None:
    # Runs between fork and exec: the child dies with the process that launched it.
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
