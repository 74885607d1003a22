"""ZeroCopy: exchange API secrets in an AWS Nitro Enclave, signatures over vsock.

>>> from zerocopy import Signer
>>> with Signer.from_env() as signer:                       # doctest: +SKIP
...     order = signer.sign_request("binance-main", "POST", "/api/v3/order", params={...})
"""

from ._async import AsyncSigner
from ._client import KeyInfo, ProvisionResult, SignedRequest, Signer
from . import errors
from .errors import *  # noqa: F403 - one hierarchy, all of it exported (errors.__all__)

__all__ = ["Signer", "AsyncSigner", "SignedRequest", "KeyInfo", "ProvisionResult", *errors.__all__]
__version__ = "0.1.0"
