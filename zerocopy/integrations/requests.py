"""``requests`` auth that signs through the enclave: ``session.auth = ZeroCopyAuth(signer, key)``.

Also usable as ``session.auth`` under an exchange's official SDK built on ``requests``, with a
placeholder secret: the SDK's own signature headers and parameters are replaced by the enclave's.
"""

from __future__ import annotations

from typing import Any

import requests
from requests.structures import CaseInsensitiveDict

from ._adapt import KeyFamily, Outgoing, sign_arguments, to_send

__all__ = ["ZeroCopyAuth"]


def _body_bytes(body: Any) -> bytes:
    if body is None:
        return b""
    if isinstance(body, str):
        return body.encode("utf-8")
    if isinstance(body, (bytes, bytearray)):
        return bytes(body)
    raise TypeError("ZeroCopyAuth signs requests whose body is bytes or text, not a stream or file")


class ZeroCopyAuth(requests.auth.AuthBase):
    """Signs each request with the enclave key ``key`` (its exchange is asked of the enclave once).

    The request is rewritten to exactly what was signed: URL query, body, headers and
    Content-Length. A :class:`zerocopy.PolicyRefused` propagates and nothing is sent.
    """

    def __init__(self, signer: Any, key: str) -> None:
        self.signer = signer
        self._family = KeyFamily(key)

    @property
    def key(self) -> str:
        return self._family.key

    def __call__(self, prepared: requests.PreparedRequest) -> requests.PreparedRequest:
        family = self._family.known or self._family.resolve(self.signer.keys())
        outgoing = Outgoing(prepared.method or "GET", prepared.url or "", dict(prepared.headers), _body_bytes(prepared.body))
        arguments = sign_arguments(family, outgoing)
        signed = self.signer.sign_request(self.key, **arguments.call_args())
        sending = to_send(family, outgoing, signed)
        prepared.url = sending.url
        prepared.headers = CaseInsensitiveDict(sending.headers)
        prepared.body = sending.body or None
        prepared.prepare_content_length(prepared.body)
        return prepared

    def __repr__(self) -> str:
        return f"<ZeroCopyAuth key={self.key!r}>"
