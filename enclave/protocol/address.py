"""Addresses of enclave endpoints: ``vsock://CID:PORT``, ``unix:///path`` or ``tcp://127.0.0.1:PORT``.

On Nitro the signer listens on vsock. The emulator maps the same CID/port numbers to Unix socket
paths (``unix:///run-dir/vsock-16-5000.sock``); TCP is accepted on loopback only, so a signer is
never reachable from the network by accident.
"""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass
from typing import Any

from .errors import ZeroCopyError

__all__ = ["Address", "AddressError", "parse_address"]

UNIX_PATH_MAX = 107  # sun_path is 108 bytes including the terminating NUL
_U32 = 0xFFFFFFFF


class AddressError(ZeroCopyError, ValueError):
    """An address that is not one of the accepted forms."""


@dataclass(frozen=True)
class Address:
    scheme: str
    host: str = ""
    port: int = 0
    cid: int = 0
    path: str = ""

    @property
    def family(self) -> int:
        if self.scheme == "vsock":
            return socket.AF_VSOCK
        if self.scheme == "unix":
            return socket.AF_UNIX
        return socket.AF_INET6 if ":" in self.host else socket.AF_INET

    @property
    def sockaddr(self) -> Any:
        if self.scheme == "vsock":
            return (self.cid, self.port)
        if self.scheme == "unix":
            return self.path
        return (self.host, self.port)

    def __str__(self) -> str:
        if self.scheme == "vsock":
            return f"vsock://{self.cid}:{self.port}"
        if self.scheme == "unix":
            return f"unix://{self.path}"
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"tcp://{host}:{self.port}"


def _number(text: str, what: str, original: str) -> int:
    if not (text.isascii() and text.isdigit()) or len(text) > 10 or int(text) > _U32:  # "²" and "١" are digits too
        raise AddressError(f"{what} in {original!r} must be a number from 0 to {_U32}")
    return int(text)


def parse_address(text: str) -> Address:
    if isinstance(text, Address):
        return text
    if not isinstance(text, str):
        raise AddressError(f"address must be a string, not {type(text).__name__}")
    scheme, sep, rest = text.partition("://")
    if not sep:
        raise AddressError(f"address {text!r} needs a scheme: vsock://CID:PORT, unix:///path or tcp://127.0.0.1:PORT")
    if scheme == "vsock":
        cid, colon, port = rest.partition(":")
        if not colon:
            raise AddressError(f"vsock address {text!r} must look like vsock://CID:PORT")
        return Address("vsock", cid=_number(cid, "CID", text), port=_number(port, "port", text))
    if scheme == "unix":
        if not rest.startswith("/"):
            raise AddressError(f"unix address {text!r} must be an absolute path (unix:///dir/name.sock)")
        try:
            size = len(rest.encode())
        except UnicodeEncodeError:
            raise AddressError(f"unix socket path in {text!r} is not valid Unicode") from None
        if "\0" in rest or size > UNIX_PATH_MAX:
            raise AddressError(f"unix socket path in {text!r} is longer than {UNIX_PATH_MAX} bytes or has a NUL")
        return Address("unix", path=rest)
    if scheme == "tcp":
        if rest.startswith("["):
            host, bracket, port = rest[1:].partition("]:")
            if not bracket:
                raise AddressError(f"tcp address {text!r} must look like tcp://[::1]:PORT")
        else:
            host, colon, port = rest.rpartition(":")
            if not colon:
                raise AddressError(f"tcp address {text!r} must look like tcp://127.0.0.1:PORT")
        try:
            ip = ipaddress.ip_address(host)
        except ValueError:
            raise AddressError(f"tcp address {text!r} needs an IP literal, not a host name") from None
        if not ip.is_loopback:
            raise AddressError(f"tcp address {text!r} is not loopback; the signer is never exposed to a network")
        port_number = _number(port, "port", text)
        if port_number > 0xFFFF:
            raise AddressError(f"port in {text!r} must be at most 65535")
        return Address("tcp", host=str(ip), port=port_number)
    raise AddressError(f"unknown address scheme {scheme!r} in {text!r} (use vsock, unix or tcp)")
