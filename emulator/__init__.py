"""Local stand-ins for Nitro: emulated vsock, NSM and attesting KMS, around the real enclave code.

Needs the ``emulator`` extra (moto). Emulator timings are not Nitro timings.

The names below load on first use, so the ``zerocopy`` command can find the emulator's commands
(``emulator.commands``) without paying for the emulator on every run.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ._emulator import ACCOUNT_ID, Emulator, EmulatorError
    from .account import HOST_ROLE_ARN

__all__ = ["Emulator", "EmulatorError", "ACCOUNT_ID", "HOST_ROLE_ARN"]

_HOMES = {"Emulator": "._emulator", "EmulatorError": "._emulator", "ACCOUNT_ID": "._emulator", "HOST_ROLE_ARN": ".account"}


def __getattr__(name: str) -> Any:
    if name not in _HOMES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(import_module(_HOMES[name], __name__), name)


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
