"""The emulated Nitro Secure Module.

:class:`EmulatedNsm` is the device model: 32 PCRs (0-15 locked at launch), the request set of
aws-nitro-enclaves-nsm-api with its response shapes and error names, and attestation documents
signed like real ones (COSE_Sign1, ES384, raw r||s, the emulator's P-384 chain in ``cabundle``).
:class:`NsmDeviceServer` serves it over the socket the launcher hands to the enclave process as an
inherited file descriptor — the only process that can reach it, as only the enclave can open
``/dev/nsm`` on Nitro.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import socket
import struct
import threading
from typing import Any

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

from enclave.nsm import REQUEST_MAX, RESPONSE_MAX
from enclave.protocol import cbor

from .measure import ZERO, extend
from .pki import LEAF_LIFETIME, AttestationPki, Leaf

__all__ = ["DOCUMENT_ENCODINGS", "EmulatedNsm", "NsmDeviceServer", "encode_payload", "sign_cose", "PCR_COUNT"]

log = logging.getLogger("emulator.nsm")
PCR_COUNT = 32  # as the NSM device has
LOCKED_AT_LAUNCH = range(16)
MAX_FIELD = 1024
_LENGTH = struct.Struct(">I")
_PROTECTED = cbor.dumps({1: -35})  # alg: ES384
#: How the payload map is encoded: Nitro has emitted an indefinite-length map (0xbf … 0xff) since
#: about September 2025 and a definite one (0xa9) before; both occur in the field.
DOCUMENT_ENCODINGS = ("indefinite", "definite")


def encode_payload(fields: dict[str, Any], encoding: str = "indefinite") -> bytes:
    """The payload map in one of :data:`DOCUMENT_ENCODINGS`; inner items are definite, as AWS's."""
    if encoding == "definite":
        return cbor.dumps(fields)
    if encoding == "indefinite":
        return b"\xbf" + b"".join(cbor.dumps(key) + cbor.dumps(value) for key, value in fields.items()) + b"\xff"
    raise ValueError(f"document encoding must be one of {', '.join(DOCUMENT_ENCODINGS)}, not {encoding!r}")


def sign_cose(payload: bytes, key: ec.EllipticCurvePrivateKey) -> bytes:
    """An untagged COSE_Sign1 over ``payload`` with ES384, signature as raw r||s."""
    to_sign = cbor.dumps(["Signature1", _PROTECTED, b"", payload])
    r, s = decode_dss_signature(key.sign(to_sign, ec.ECDSA(hashes.SHA384())))
    return cbor.dumps([_PROTECTED, {}, payload, r.to_bytes(48, "big") + s.to_bytes(48, "big")])


class EmulatedNsm:
    def __init__(self, pki: AttestationPki, *, module_id: str, pcrs: dict[int, bytes], document_encoding: str = "indefinite") -> None:
        encode_payload({}, document_encoding)  # refuse an unknown encoding now, not at the first document
        self.pki = pki
        self.module_id = module_id
        self.document_encoding = document_encoding
        self._pcrs = [pcrs.get(index, ZERO) for index in range(PCR_COUNT)]
        self._locked = [index in LOCKED_AT_LAUNCH for index in range(PCR_COUNT)]
        self._leaf: Leaf | None = None
        self._lock = threading.Lock()

    @property
    def pcrs(self) -> dict[int, bytes]:
        return {index: self._pcrs[index] for index in range(16)}

    def handle(self, request: Any) -> Any:
        """One NSM request (decoded CBOR) to its response (to be encoded)."""
        with self._lock:
            if request == "DescribeNSM":
                return {
                    "DescribeNSM": {
                        "version_major": 1, "version_minor": 0, "version_patch": 0,
                        "module_id": self.module_id, "max_pcrs": PCR_COUNT,
                        "locked_pcrs": [i for i in range(PCR_COUNT) if self._locked[i]], "digest": "SHA384",
                    }
                }
            if request == "GetRandom":
                return {"GetRandom": {"random": os.urandom(256)}}
            if not isinstance(request, dict) or len(request) != 1:
                return {"Error": "InvalidOperation"}
            ((name, body),) = request.items()
            handler = getattr(self, f"_{name}", None) if name in _REQUESTS else None
            if handler is None:
                return {"Error": "InvalidOperation"}
            required, optional = _REQUESTS[name]
            if not isinstance(body, dict) or not required <= set(body) <= required | optional:
                return {"Error": "InvalidArgument"}
            return handler(body)

    def _index(self, index: Any) -> int | None:
        return index if isinstance(index, int) and not isinstance(index, bool) and 0 <= index < PCR_COUNT else None

    def _DescribePCR(self, body: dict) -> Any:
        if (i := self._index(body["index"])) is None:
            return {"Error": "InvalidIndex"}
        return {"DescribePCR": {"lock": self._locked[i], "data": self._pcrs[i]}}

    def _ExtendPCR(self, body: dict) -> Any:
        if (i := self._index(body["index"])) is None:
            return {"Error": "InvalidIndex"}
        data = body["data"]
        if not isinstance(data, bytes) or len(data) > MAX_FIELD:
            return {"Error": "InputTooLarge" if isinstance(data, bytes) else "InvalidArgument"}
        if self._locked[i]:
            return {"Error": "ReadOnlyIndex"}
        self._pcrs[i] = extend(self._pcrs[i], data)
        return {"ExtendPCR": {"data": self._pcrs[i]}}

    def _LockPCR(self, body: dict) -> Any:
        if (i := self._index(body["index"])) is None:
            return {"Error": "InvalidIndex"}
        if self._locked[i]:
            # nsm-api's nsm-check expects an error for PCRs 0-15, locked at launch; for a PCR the
            # enclave locked itself it does not say, so the emulator refuses that too (the error
            # name is not checked there either): code that works here then works on Nitro.
            return {"Error": "ReadOnlyIndex"}
        self._locked[i] = True
        return "LockPCR"

    def _LockPCRs(self, body: dict) -> Any:
        count = body["range"]
        if not isinstance(count, int) or isinstance(count, bool) or not 0 <= count <= PCR_COUNT:
            return {"Error": "InvalidIndex"}
        for i in range(count):
            self._locked[i] = True
        return "LockPCRs"

    def _Attestation(self, body: dict) -> Any:
        # Omitted and null mean the same (serde reads a missing Option as None); nsm-api sends null.
        user_data, nonce, public_key = body.get("user_data"), body.get("nonce"), body.get("public_key")
        for value in (user_data, nonce, public_key):
            if value is not None and not isinstance(value, bytes):
                return {"Error": "InvalidArgument"}
            if value is not None and len(value) > MAX_FIELD:
                return {"Error": "InputTooLarge"}
        return {"Attestation": {"document": self.attestation_document(user_data=user_data, nonce=nonce, public_key=public_key)}}

    def attestation_document(self, *, user_data: bytes | None = None, nonce: bytes | None = None, public_key: bytes | None = None) -> bytes:
        now = self.pki.clock()
        leaf = self._current_leaf(now)
        payload = encode_payload(
            {
                "module_id": self.module_id,
                "digest": "SHA384",
                "timestamp": int(now.timestamp() * 1000),
                "pcrs": {index: self._pcrs[index] for index in range(16)},
                "certificate": leaf.der,
                "cabundle": list(leaf.cabundle),
                "public_key": public_key,
                "user_data": user_data,
                "nonce": nonce,
            },
            self.document_encoding,
        )
        return sign_cose(payload, leaf.key)

    def sign(self, payload: bytes) -> bytes:
        """A COSE_Sign1 over ``payload`` with this NSM's current leaf key, as the device signs documents."""
        return sign_cose(payload, self._current_leaf(self.pki.clock()).key)

    def _current_leaf(self, now: dt.datetime) -> Leaf:
        # Re-issue well before expiry, so a fresh document never carries a nearly dead leaf.
        leaf = self._leaf
        if leaf is None or leaf.certificate.not_valid_after_utc - now < LEAF_LIFETIME / 3:
            leaf = self._leaf = self.pki.issue_leaf(self.module_id)
        return leaf


# Each request's (required, optional) fields, as aws-nitro-enclaves-nsm-api's Request enum.
_REQUESTS = {
    "DescribePCR": ({"index"}, set()),
    "ExtendPCR": ({"index", "data"}, set()),
    "LockPCR": ({"index"}, set()),
    "LockPCRs": ({"range"}, set()),
    "Attestation": (set(), {"user_data", "nonce", "public_key"}),
}


class NsmDeviceServer:
    """Serves an :class:`EmulatedNsm` on one end of a socket pair, in a thread."""

    def __init__(self, nsm: EmulatedNsm, sock: socket.socket) -> None:
        self.nsm = nsm
        self.sock = sock
        self._thread = threading.Thread(target=self._serve, name="nsm-device", daemon=True)

    def start(self) -> "NsmDeviceServer":
        self._thread.start()
        return self

    def stop(self) -> None:
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()
        self._thread.join(timeout=5)

    def _serve(self) -> None:
        try:
            while True:
                header = self._read(4)
                if header is None:
                    return
                (length,) = _LENGTH.unpack(header)
                if length > REQUEST_MAX:
                    self._reply({"Error": "InputTooLarge"})
                    return  # cannot resynchronise without reading the oversized body
                body = self._read(length)
                if body is None:
                    return
                try:
                    request = cbor.loads(body, any_encoding=True)  # any client's encoder
                except cbor.CborError:
                    self._reply({"Error": "InvalidArgument"})
                    continue
                self._reply(self.nsm.handle(request))
        except OSError:
            return
        finally:
            # Whatever ends the loop, let the peer see EOF instead of blocking on a reply forever.
            try:
                self.sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def _reply(self, response: Any) -> None:
        encoded = cbor.dumps(response)
        if len(encoded) > RESPONSE_MAX:
            encoded = cbor.dumps({"Error": "BufferTooSmall"})
        self.sock.sendall(_LENGTH.pack(len(encoded)) + encoded)

    def _read(self, count: int) -> bytes | None:
        chunks = []
        while count:
            chunk = self.sock.recv(count)
            if not chunk:
                return None
            chunks.append(chunk)
            count -= len(chunk)
        return b"".join(chunks)
