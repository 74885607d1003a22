"""Local stand-ins for Nitro: emulated vsock, NSM and attesting KMS, around the real enclave code.

Needs the ``emulator`` extra (moto). Emulator timings are not Nitro timings.
"""

from ._emulator import ACCOUNT_ID, Emulator, EmulatorError
from .account import HOST_ROLE_ARN

__all__ = ["Emulator", "EmulatorError", "ACCOUNT_ID", "HOST_ROLE_ARN"]
