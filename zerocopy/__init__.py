"""ZeroCopy: exchange API secrets in an AWS Nitro Enclave, signatures over vsock.

>>> from zerocopy import Signer
>>> with Signer.from_env() as signer:                       # doctest: +SKIP
...     order = signer.sign_request("binance-main", "POST", "/api/v3/order", params={...})
"""

from ._client import KeyInfo, ProvisionResult, SignedRequest, Signer
from .errors import (
    ConnectionClosed,
    EnclaveError,
    PolicyRefused,
    ProtocolError,
    ProvisioningError,
    UnknownKey,
    ZeroCopyError,
)

__all__ = [
    "Signer",
    "SignedRequest",
    "KeyInfo",
    "ProvisionResult",
    "ZeroCopyError",
    "ConnectionClosed",
    "EnclaveError",
    "PolicyRefused",
    "ProtocolError",
    "ProvisioningError",
    "UnknownKey",
]
__version__ = "0.1.0"
