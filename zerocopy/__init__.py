"""ZeroCopy: exchange API secrets in an AWS Nitro Enclave, signatures over vsock.

>>> from zerocopy import Signer
>>> with Signer.from_env() as signer:                       # doctest: +SKIP
...     order = signer.sign_request("binance-main", "POST", "/api/v3/order", params={...})
"""

from typing import TYPE_CHECKING

from . import errors
from .errors import *  # noqa: F403 - one hierarchy, all of it exported (errors.__all__)

__all__ = ["Signer", "AsyncSigner", "SignedRequest", "KeyInfo", "ProvisionResult", *errors.__all__]
__version__ = "0.1.0"

if TYPE_CHECKING:
    from ._async import AsyncSigner
    from ._client import KeyInfo, ProvisionResult, SignedRequest, Signer

# Imported on first use, so the CLI (``zerocopy.__main__``) starts without the clients' imports
# (asyncio among them) and can answer a Ctrl-C during start-up with one line.
_LAZY = {"Signer": "._client", "SignedRequest": "._client", "KeyInfo": "._client", "ProvisionResult": "._client", "AsyncSigner": "._async"}


def __getattr__(name: str) -> object:
    if name not in _LAZY:
        raise AttributeError(f"module 'zerocopy' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(_LAZY[name], __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})
