"""Client of the Nitro Secure Module: attestation documents, PCRs, randomness.

The NSM speaks CBOR requests and responses (aws-nitro-enclaves-nsm-api). On Nitro they pass
through an ioctl on ``/dev/nsm``; the emulator hands the enclave process one end of a socket pair
instead (``fd://N``), carrying the same CBOR messages framed by a 4-byte big-endian length. The
client below is the same either way; only the device differs.
"""

from __future__ import annotations

import ctypes
import fcntl
import os
import socket
import struct
import threading
from typing import Any, Protocol

from .protocol import cbor

__all__ = ["NsmError", "NsmDevice", "IoctlDevice", "SocketDevice", "open_device", "Nsm"]

REQUEST_MAX = 0x1000
RESPONSE_MAX = 0x3000
_LENGTH = struct.Struct(">I")


def _iowr(kind: int, number: int, size: int) -> int:
    return (3 << 30) | (size << 16) | (kind << 8) | number


class _IoVec(ctypes.Structure):
    _fields_ = [("base", ctypes.c_void_p), ("length", ctypes.c_size_t)]


class _NsmMessage(ctypes.Structure):
    _fields_ = [("request", _IoVec), ("response", _IoVec)]


NSM_IOCTL_REQUEST = _iowr(0x0A, 0, ctypes.sizeof(_NsmMessage))


class NsmError(Exception):
    """The NSM refused a request (``code`` is its error name) or answered malformed bytes."""

    def __init__(self, message: str, *, code: str = "InvalidResponse") -> None:
        super().__init__(message)
        self.code = code


class NsmDevice(Protocol):
    def exchange(self, request: bytes) -> bytes: ...

    def close(self) -> None: ...


class IoctlDevice:
    """``/dev/nsm`` on a Nitro Enclave: one ioctl per request."""

    def __init__(self, path: str = "/dev/nsm") -> None:
        self._fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
        self._lock = threading.Lock()

    def exchange(self, request: bytes) -> bytes:
        if len(request) > REQUEST_MAX:
            raise NsmError("NSM request too large", code="InputTooLarge")
        request_buffer = ctypes.create_string_buffer(request, len(request))
        response_buffer = ctypes.create_string_buffer(RESPONSE_MAX)
        message = _NsmMessage(
            _IoVec(ctypes.addressof(request_buffer), len(request)),
            _IoVec(ctypes.addressof(response_buffer), RESPONSE_MAX),
        )
        with self._lock:
            fcntl.ioctl(self._fd, NSM_IOCTL_REQUEST, message)
        return response_buffer.raw[: message.response.length]

    def close(self) -> None:
        os.close(self._fd)


class SocketDevice:
    """The emulator's NSM: length-prefixed CBOR over an inherited socket."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self._lock = threading.Lock()

    def exchange(self, request: bytes) -> bytes:
        if len(request) > REQUEST_MAX:
            raise NsmError("NSM request too large", code="InputTooLarge")
        with self._lock:
            self._sock.sendall(_LENGTH.pack(len(request)) + request)
            (length,) = _LENGTH.unpack(self._read(4))
            if length > RESPONSE_MAX:
                raise NsmError("NSM response too large")
            return self._read(length)

    def _read(self, count: int) -> bytes:
        chunks, remaining = [], count
        while remaining:
            chunk = self._sock.recv(remaining)
            if not chunk:
                raise NsmError("NSM device closed")
            chunks.append(chunk)
            remaining -= len(chunk)
        return b"".join(chunks)

    def close(self) -> None:
        self._sock.close()


def open_device(spec: str) -> NsmDevice:
    """``/dev/nsm`` (or another device path) or ``fd://N`` for an inherited socket."""
    if spec.startswith("fd://"):
        number = spec[len("fd://") :]
        if not number.isdigit():
            raise ValueError(f"NSM device {spec!r} must look like fd://N")
        return SocketDevice(socket.socket(fileno=int(number)))
    if spec.startswith("/"):
        return IoctlDevice(spec)
    raise ValueError(f"NSM device {spec!r} must be a device path such as /dev/nsm or fd://N")


def _optional_bytes(value: bytes | None, name: str) -> bytes | None:
    if value is not None and (not isinstance(value, bytes) or len(value) > 1024):
        raise ValueError(f"{name} must be at most 1024 bytes")
    return value


class Nsm:
    """Typed calls over an :class:`NsmDevice`."""

    def __init__(self, device: NsmDevice) -> None:
        self.device = device

    def _call(self, request: Any, expected: str) -> Any:
        raw = self.device.exchange(cbor.dumps(request))
        try:
            response = cbor.loads(raw, any_encoding=True)  # AWS's encoders have varied
        except cbor.CborError as exc:
            raise NsmError(f"malformed NSM response: {exc}") from None
        if isinstance(response, dict) and set(response) == {"Error"}:
            code = response["Error"] if isinstance(response["Error"], str) else "InvalidResponse"
            raise NsmError(f"NSM refused {expected}: {code}", code=code)
        if response == expected:
            return None
        if not isinstance(response, dict) or set(response) != {expected}:
            raise NsmError(f"unexpected NSM response to {expected}")
        return response[expected]

    def attestation(self, *, public_key: bytes | None = None, user_data: bytes | None = None, nonce: bytes | None = None) -> bytes:
        body = self._call(
            {
                "Attestation": {
                    "user_data": _optional_bytes(user_data, "user_data"),
                    "nonce": _optional_bytes(nonce, "nonce"),
                    "public_key": _optional_bytes(public_key, "public_key"),
                }
            },
            "Attestation",
        )
        document = body.get("document") if isinstance(body, dict) else None
        if not isinstance(document, bytes) or not document:
            raise NsmError("NSM attestation response has no document")
        return document

    def describe_pcr(self, index: int) -> tuple[bool, bytes]:
        body = self._call({"DescribePCR": {"index": index}}, "DescribePCR")
        if not isinstance(body, dict) or not isinstance(body.get("lock"), bool) or not isinstance(body.get("data"), bytes):
            raise NsmError("malformed DescribePCR response")
        return body["lock"], body["data"]

    def extend_pcr(self, index: int, data: bytes) -> bytes:
        body = self._call({"ExtendPCR": {"index": index, "data": data}}, "ExtendPCR")
        if not isinstance(body, dict) or not isinstance(body.get("data"), bytes):
            raise NsmError("malformed ExtendPCR response")
        return body["data"]

    def lock_pcr(self, index: int) -> None:
        self._call({"LockPCR": {"index": index}}, "LockPCR")

    def lock_pcrs(self, range_: int) -> None:
        self._call({"LockPCRs": {"range": range_}}, "LockPCRs")

    def describe_nsm(self) -> dict:
        body = self._call("DescribeNSM", "DescribeNSM")
        if not isinstance(body, dict):
            raise NsmError("malformed DescribeNSM response")
        return body

    def get_random(self) -> bytes:
        body = self._call("GetRandom", "GetRandom")
        if not isinstance(body, dict) or not isinstance(body.get("random"), bytes):
            raise NsmError("malformed GetRandom response")
        return body["random"]
