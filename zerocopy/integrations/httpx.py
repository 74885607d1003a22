"""``httpx`` auth that signs through the enclave: ``httpx.Client(auth=ZeroCopyAuth(signer, key))``.

Sync clients call the blocking :class:`zerocopy.Signer`. Async clients run it in a thread
(``asyncio.to_thread``), or await the signer directly when its ``sign_request`` is a coroutine
function (``zerocopy.AsyncSigner``).
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import AsyncGenerator, Generator
from typing import Any

import httpx

from ._adapt import HttpFamily, KeyFamily, Outgoing, ToSend, sign_arguments, to_send

__all__ = ["ZeroCopyAuth"]


def _outgoing(request: httpx.Request) -> Outgoing:
    return Outgoing(request.method, str(request.url), dict(request.headers), request.content)


def _rebuilt(request: httpx.Request, sending: ToSend) -> httpx.Request:
    """A new request with exactly the signed URL, headers and body (httpx sets Content-Length)."""
    return httpx.Request(sending.method, httpx.URL(sending.url), headers=sending.headers, content=sending.body, extensions=request.extensions)


class ZeroCopyAuth(httpx.Auth):
    """Signs each request with the enclave key ``key``; a :class:`zerocopy.PolicyRefused`
    propagates and nothing is sent."""

    def __init__(self, signer: Any, key: str) -> None:
        self.signer = signer
        self._family = KeyFamily(key)
        self._awaits = inspect.iscoroutinefunction(getattr(signer, "sign_request", None))

    @property
    def key(self) -> str:
        return self._family.key

    def sync_auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        if self._awaits:
            raise TypeError("an async signer signs for httpx.AsyncClient only")
        family = self._family.known or self._family.resolve(self.signer.keys())
        request.read()
        outgoing = _outgoing(request)
        signed = self.signer.sign_request(self.key, **sign_arguments(family, outgoing).call_args())
        yield _rebuilt(request, to_send(family, outgoing, signed))

    async def async_auth_flow(self, request: httpx.Request) -> AsyncGenerator[httpx.Request, httpx.Response]:
        family = self._family.known or await self._resolve()
        await request.aread()
        outgoing = _outgoing(request)
        arguments = sign_arguments(family, outgoing).call_args()
        if self._awaits:
            signed = await self.signer.sign_request(self.key, **arguments)
        else:
            signed = await asyncio.to_thread(self.signer.sign_request, self.key, **arguments)
        yield _rebuilt(request, to_send(family, outgoing, signed))

    async def _resolve(self) -> HttpFamily:
        keys = self.signer.keys
        listed = await keys() if inspect.iscoroutinefunction(keys) else await asyncio.to_thread(keys)
        return self._family.resolve(listed)

    def __repr__(self) -> str:
        return f"<ZeroCopyAuth key={self.key!r}>"
