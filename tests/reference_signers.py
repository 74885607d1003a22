"""Reference signers, written straight from each exchange's documentation.

They share no code with ``enclave/`` (nothing here imports it) and are checked against the
published vectors in ``tests/data/exchange-vectors/`` as well, so a property test that finds the
enclave and a reference in agreement is comparing two independent readings of the same page.

Each request signer takes the request in the enclave's shape (``params`` a sequence of
``(name, value)`` pairs, ``body`` bytes, ``now_ms`` the clock) and returns a :class:`Signed`
with the query string, body and headers to send, plus the exact string that was signed.

Where a document leaves a choice open, the choice the project documents in
``enclave/protocol/signing.py`` and the exchange modules is taken (percent-encoding with ``urllib.parse.quote(…, safe="")``, where
Binance puts ``timestamp`` and ``signature``, Bybit's ``recv_window`` pseudo-parameter).

Sources:

* Binance REST: https://developers.binance.com/docs/binance-spot-api-docs/rest-api/request-security
* Binance WebSocket API: https://developers.binance.com/docs/binance-spot-api-docs/websocket-api/request-security
* Bybit v5: https://bybit-exchange.github.io/docs/v5/guide#authentication
* OKX v5: https://www.okx.com/docs-v5/en/#overview-rest-authentication
* Kraken: https://docs.kraken.com/api/docs/guides/spot-rest-auth
* Coinbase: https://docs.cdp.coinbase.com/coinbase-app/authentication-authorization/api-key-authentication
"""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import json
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Callable, Sequence
from urllib.parse import quote, urlencode

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

Pairs = Sequence[tuple[str, str]]

COINBASE_HOST = "api.coinbase.com"


@dataclass(frozen=True)
class Signed:
    query: str
    body: bytes
    headers: tuple[tuple[str, str], ...]
    string_to_sign: bytes


def form(pairs: Pairs) -> str:
    """``name=value&…`` with every byte outside A-Z a-z 0-9 - . _ ~ percent-encoded (UTF-8)."""
    return urlencode(list(pairs), quote_via=quote)


# -- primitives -------------------------------------------------------------------------------
def hmac_sha256(key: bytes, message: bytes) -> bytes:
    return hmac.new(key, message, hashlib.sha256).digest()


def hmac_sha512(key: bytes, message: bytes) -> bytes:
    return hmac.new(key, message, hashlib.sha512).digest()


@functools.lru_cache(maxsize=16)
def private_key(pem: bytes) -> Any:
    return serialization.load_pem_private_key(pem, password=None)


def rsa_pkcs1v15_sha256(pem: bytes, message: bytes) -> bytes:
    return private_key(pem).sign(message, padding.PKCS1v15(), hashes.SHA256())


def ed25519_sign(pem: bytes, message: bytes) -> bytes:
    return private_key(pem).sign(message)


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


# -- Binance ----------------------------------------------------------------------------------
def binance_signer(scheme: str, secret: bytes) -> Callable[[bytes], str]:
    """The signature text for a payload: HMAC hex, or base64 of the RSA / Ed25519 signature."""
    if scheme == "binance-hmac":
        return lambda payload: hmac_sha256(secret, payload).hex()
    if scheme == "binance-rsa":
        return lambda payload: b64(rsa_pkcs1v15_sha256(secret, payload))
    if scheme == "binance-ed25519":
        return lambda payload: b64(ed25519_sign(secret, payload))
    raise ValueError(scheme)


def binance_rest(scheme: str, secret: bytes, api_key: str, params: Pairs, body: bytes, now_ms: int) -> Signed:
    """totalParams = query string + request body (no separator); signature appended to the last part."""
    query = form(params)
    body_names = [item.partition("=")[0] for item in body.decode("ascii").split("&")] if body else []
    if "timestamp" not in [quote(name, safe="") for name, _ in params] + body_names:
        if body:
            body = body + f"&timestamp={now_ms}".encode()
        elif query:
            query += f"&timestamp={now_ms}"
        else:
            query = f"timestamp={now_ms}"
    total = query.encode("ascii") + body
    signature = quote(binance_signer(scheme, secret)(total), safe="")
    if body:
        body = body + b"&signature=" + signature.encode()
    else:
        query += "&signature=" + signature
    return Signed(query, body, (("X-MBX-APIKEY", api_key),), total)


def binance_ws(secret: bytes, api_key: str, params: Pairs, now_ms: int) -> Signed:
    """All params except signature, apiKey included, sorted by name; UTF-8; HMAC-SHA256 hex."""
    request = {name: value for name, value in params}
    request["apiKey"] = api_key
    request.setdefault("timestamp", str(now_ms))
    payload = "&".join(f"{name}={value}" for name, value in sorted(request.items())).encode("utf-8")
    request["signature"] = hmac_sha256(secret, payload).hex()
    return Signed("", json.dumps(request, separators=(",", ":"), ensure_ascii=False).encode("utf-8"), (), payload)


def okx_ws_login(secret_document: bytes, api_key: str, now_ms: int) -> dict:
    """OKX WebSocket login (docs-v5 "WebSocket: Login"): sign = Base64(HmacSHA256(timestamp + 'GET'
    + '/users/self/verify', secretKey)), timestamp in Unix seconds."""
    document = json.loads(secret_document)
    timestamp = str(now_ms // 1000)
    sign = b64(hmac_sha256(document["secret"].encode(), (timestamp + "GET" + "/users/self/verify").encode()))
    return {"op": "login", "args": [{"apiKey": api_key, "passphrase": document["passphrase"], "timestamp": timestamp, "sign": sign}]}


def bybit_ws_auth(scheme: str, secret: bytes, api_key: str, expires_ms: int) -> dict:
    """Bybit WebSocket auth (v5 "Websocket Authentication"): signature over 'GET/realtime' + expires,
    hex HMAC-SHA256 (system-generated keys) or base64 RSA-SHA256 (self-generated)."""
    payload = f"GET/realtime{expires_ms}".encode()
    signature = hmac_sha256(secret, payload).hex() if scheme == "bybit-hmac" else b64(rsa_pkcs1v15_sha256(secret, payload))
    return {"op": "auth", "args": [api_key, str(expires_ms), signature]}


# -- Bybit ------------------------------------------------------------------------------------
def bybit(scheme: str, secret: bytes, api_key: str, method: str, params: Pairs, body: bytes, now_ms: int) -> Signed:
    """timestamp + api_key + recv_window + (queryString | jsonBodyString)."""
    recv_window = "5000"
    rest = []
    for name, value in params:
        if name == "recv_window":
            recv_window = value
        else:
            rest.append((name, value))
    query = form(rest) if method == "GET" else ""
    plain = str(now_ms).encode() + api_key.encode() + recv_window.encode() + (query.encode() if method == "GET" else body)
    if scheme == "bybit-hmac":
        sign = hmac_sha256(secret, plain).hex()
    else:
        sign = b64(rsa_pkcs1v15_sha256(secret, plain))
    headers = (("X-BAPI-API-KEY", api_key), ("X-BAPI-TIMESTAMP", str(now_ms)), ("X-BAPI-SIGN", sign), ("X-BAPI-RECV-WINDOW", recv_window))
    # Bybit's examples (api-usage-examples V5_demo Encryption_HMAC.py / Encryption_RSA.py) send
    # X-BAPI-SIGN-TYPE: 2 with every request and a JSON Content-Type with a body.
    headers += (("X-BAPI-SIGN-TYPE", "2"),) + ((("Content-Type", "application/json"),) if method == "POST" else ())
    return Signed(query, body, headers, plain)


# -- OKX --------------------------------------------------------------------------------------
def okx_timestamp(now_ms: int) -> str:
    """ISO 8601, UTC, millisecond precision, e.g. 2020-12-08T09:08:57.715Z."""
    moment = datetime.fromtimestamp(now_ms // 1000, tz=timezone.utc).replace(microsecond=(now_ms % 1000) * 1000)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def okx(secret_document: bytes, api_key: str, method: str, path: str, params: Pairs, body: bytes, now_ms: int) -> Signed:
    """sign = Base64(HmacSHA256(timestamp + method + requestPath + body, SecretKey))."""
    document = json.loads(secret_document)
    timestamp = okx_timestamp(now_ms)
    query = form(params) if method == "GET" else ""
    request_path = path + ("?" + query if query else "")
    prehash = (timestamp + method + request_path).encode() + body
    sign = b64(hmac_sha256(document["secret"].encode(), prehash))
    headers = (("OK-ACCESS-KEY", api_key), ("OK-ACCESS-SIGN", sign), ("OK-ACCESS-TIMESTAMP", timestamp), ("OK-ACCESS-PASSPHRASE", document["passphrase"]))
    # "Request bodies should have content type application/json" (OKX v5, REST API requests).
    headers += (("Content-Type", "application/json"),) if method == "POST" else ()
    return Signed(query, body, headers, prehash)


# -- Kraken -----------------------------------------------------------------------------------
def kraken(secret_b64: bytes, api_key: str, path: str, params: Pairs, now_ms: int) -> Signed:
    """API-Sign = HMAC-SHA512 of (URI path + SHA256(nonce + POST data)) and base64 decoded secret."""
    fields = list(params)
    nonce = dict(fields).get("nonce")
    if nonce is None:
        nonce = str(now_ms)
        fields.insert(0, ("nonce", nonce))
    postdata = form(fields)
    message = path.encode() + hashlib.sha256((nonce + postdata).encode()).digest()
    sign = b64(hmac_sha512(base64.b64decode(secret_b64.strip()), message))
    return Signed("", postdata.encode(), (("API-Key", api_key), ("API-Sign", sign)), message)


# -- Coinbase ---------------------------------------------------------------------------------
def b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def coinbase_check(public_key: ec.EllipticCurvePublicKey, api_key: str, method: str, path: str, now_ms: int, token: str) -> tuple[dict, dict]:
    """Verify an ES256 JWT the way Coinbase does and return (header, claims).

    Raises ``cryptography.exceptions.InvalidSignature`` or ``AssertionError``.
    """
    header_b64, claims_b64, signature_b64 = token.split(".")
    signature = b64url_decode(signature_b64)
    assert len(signature) == 64, "ES256 signatures are r||s, 32 bytes each"
    der = encode_dss_signature(int.from_bytes(signature[:32], "big"), int.from_bytes(signature[32:], "big"))
    public_key.verify(der, f"{header_b64}.{claims_b64}".encode(), ec.ECDSA(hashes.SHA256()))
    header = json.loads(b64url_decode(header_b64))
    claims = json.loads(b64url_decode(claims_b64))
    nonce = header.get("nonce", "")
    assert len(nonce) == 64 and all(c in "0123456789abcdef" for c in nonce), "nonce: 32 random bytes, hex"
    assert header == {"alg": "ES256", "kid": api_key, "nonce": nonce, "typ": "JWT"}
    nbf = now_ms // 1000
    assert claims == {"sub": api_key, "iss": "cdp", "nbf": nbf, "exp": nbf + 120, "uri": f"{method} {COINBASE_HOST}{path}"}
    return header, claims


def coinbase_eddsa_check(public_key: ed25519.Ed25519PublicKey, api_key: str, method: str, path: str, now_ms: int, token: str) -> tuple[dict, dict]:
    """Verify an EdDSA (Ed25519) JWT the way Coinbase does and return (header, claims): the same
    header and claims as ES256 but ``alg: EdDSA`` and the 64 raw Ed25519 signature bytes (RFC 8037).

    Raises ``cryptography.exceptions.InvalidSignature`` or ``AssertionError``.
    """
    header_b64, claims_b64, signature_b64 = token.split(".")
    signature = b64url_decode(signature_b64)
    assert len(signature) == 64, "Ed25519 signatures are 64 bytes"
    public_key.verify(signature, f"{header_b64}.{claims_b64}".encode())
    header = json.loads(b64url_decode(header_b64))
    claims = json.loads(b64url_decode(claims_b64))
    nonce = header.get("nonce", "")
    assert len(nonce) == 64 and all(c in "0123456789abcdef" for c in nonce), "nonce: 32 random bytes, hex"
    assert header == {"alg": "EdDSA", "kid": api_key, "nonce": nonce, "typ": "JWT"}
    nbf = now_ms // 1000
    assert claims == {"sub": api_key, "iss": "cdp", "nbf": nbf, "exp": nbf + 120, "uri": f"{method} {COINBASE_HOST}{path}"}
    return header, claims


def python_kraken_sdk_nonce(now: float) -> int:
    """python-kraken-sdk 3's nonce at ``now`` (seconds): ``int(time.time() * 100_000_000)``,
    from ``kraken/base_api/__init__.py``; its tests pin the clock to compare with the real one."""
    return int(now * 100_000_000)
