"""Signing schemes: how a loaded secret turns bytes or a request into a signature.

A scheme object is built once per key at provisioning (parsing the secret, precomputing what can
be precomputed) and then signs on the hot path without further checks. Secrets never appear in a
repr, an exception message or a log line, and no exception raised here carries another exception
(which could quote the secret) as its ``__cause__`` or ``__context__``.

Raw schemes sign arbitrary payloads. Exchange schemes additionally build the exchange's string to
sign from a request (:meth:`SigningKey.sign_http`), so the enclave — not the host — decides which
bytes are signed. ``sign_http(method, path, params, body, now_ms)`` takes the request in parts
(``params`` are ``(name, value)`` pairs in the caller's order, ``body`` the bytes to send, ``now_ms``
the enclave clock) and returns what to send: the query string (without ``?``), the body and the
headers to add.

Rules shared by every exchange scheme
-------------------------------------
* **Encoding.** Parameter names and values are UTF-8, percent-encoded with only the RFC 3986
  unreserved characters (``A-Z a-z 0-9 - . _ ~``) left as they are (a space is ``%20``). The string
  the enclave signs is byte for byte the string it returns to send, so the exchange sees what was
  signed.
* **Refusals** (:class:`SchemeError`): an empty or repeated parameter name (a repeated name could
  let the exchange act on a value the policy never saw), a parameter the enclave sets itself
  (``signature``, ``apiKey``), a method the exchange does not sign, a path that is not an absolute
  printable-ASCII path without ``?``/``#``, and an API key that is not 1–256 printable ASCII
  characters (it goes into a header).

Per exchange
------------
``binance-hmac`` / ``binance-rsa`` / ``binance-ed25519`` (REST, SIGNED endpoints)
    Payload = query string + body, concatenated without a separator (Binance "totalParams"); the
    body, if any (not for GET), is the ``application/x-www-form-urlencoded`` ASCII text to send; a
    name may not appear both in params and in the body. If no ``timestamp`` parameter is given (in
    params or the body) the enclave appends ``timestamp=<now_ms>`` to the last non-empty part. ``signature`` (HMAC-SHA256 hex; RSA
    PKCS#1 v1.5 SHA-256 base64; Ed25519 base64 — base64 percent-encoded) is appended to the body
    when there is one, else to the query, as in Binance's examples. Header ``X-MBX-APIKEY``.
``binance-ws-hmac`` (WebSocket API)
    ``method="WS"``, ``path`` = the WebSocket method name (``order.place``), params = the request's
    ``params`` as strings, body empty. The enclave adds ``apiKey`` and, if absent, ``timestamp``;
    the payload is every param sorted by name (code-point order) as ``name=value`` joined by ``&``,
    UTF-8, not percent-encoded; HMAC-SHA256 hex. Returned: empty query, ``body`` = the params object
    as compact UTF-8 JSON (caller's order, then ``apiKey``, ``timestamp`` if added, ``signature``),
    no headers.
``bybit-hmac`` / ``bybit-rsa`` (v5)
    GET: params form the query string, body empty. POST: the raw JSON body, no params. String to
    sign = timestamp + api key + recv window + (query string | body); HMAC-SHA256 hex or RSA PKCS#1
    v1.5 SHA-256 base64. The timestamp is always the enclave clock (``X-BAPI-TIMESTAMP``). The recv
    window is ``5000`` (Bybit's default) unless the caller passes the pseudo-parameter
    ``recv_window`` (a positive integer of at most 6 digits), which is removed from the
    parameters and sent only as ``X-BAPI-RECV-WINDOW`` (Bybit v5 has no query parameter of that
    name). Headers ``X-BAPI-API-KEY``, ``X-BAPI-TIMESTAMP``, ``X-BAPI-SIGN``, ``X-BAPI-RECV-WINDOW``.
``okx-hmac`` (v5)
    The sealed secret is UTF-8 JSON ``{"secret": "...", "passphrase": "..."}`` — exactly these two
    non-empty strings — so the passphrase is sealed and policy-bound with the key. Prehash =
    timestamp (ISO 8601 UTC, milliseconds, ``Z``, from the enclave clock) + method + requestPath
    (path, plus ``?query`` for GET) + body; base64 HMAC-SHA256. GET takes params and no body, POST
    a body and no params. Headers ``OK-ACCESS-KEY``, ``OK-ACCESS-SIGN``, ``OK-ACCESS-TIMESTAMP``,
    ``OK-ACCESS-PASSPHRASE`` (OKX sends the passphrase in clear: the host sees it).
``kraken`` (Spot REST, private endpoints)
    The secret is the base64 private key Kraken shows. POST to ``/0/private/...``; the POST fields
    are passed as params (body empty) and the enclave returns the encoded POST data as ``body``.
    If the caller gives no ``nonce`` field the enclave puts ``nonce=<n>`` first, with
    ``n = max(now_ms, previous enclave nonce + 1)`` so nonces stay strictly increasing per loaded
    key. API-Sign = base64(HMAC-SHA512(base64decode(secret), path + SHA256(nonce + postdata))).
    Headers ``API-Key``, ``API-Sign``.
``coinbase-jwt`` (Advanced Trade, CDP API keys)
    The secret is the P-256 private key PEM, ``api_key`` the key name
    ``organizations/{org_id}/apiKeys/{key_id}``. The enclave issues an ES256 JWT: header
    ``{alg: ES256, kid: api_key, nonce: 64 random hex digits, typ: JWT}``, claims ``{sub: api_key,
    iss: "cdp", nbf: now (s), exp: nbf + 120, uri: "METHOD api.coinbase.com/path"}`` (no query
    string in ``uri``), signature raw ``r||s`` base64url. Params become the query string, the body
    is sent as given. Header ``Authorization: Bearer <jwt>``.

:meth:`SigningKey.sign` of an exchange scheme returns the raw bytes of its primitive over the
payload: the HMAC digest, the RSA or Ed25519 signature, ``r||s`` (64 bytes) for ``coinbase-jwt``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import re
import secrets
import threading
from datetime import datetime, timedelta, timezone
from typing import Any, ClassVar, Iterable, NamedTuple
from urllib.parse import quote

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

from .protocol.schemes import ASYMMETRIC_SCHEMES, EXCHANGE_SCHEMES, SCHEME_NAMES

__all__ = ["SchemeError", "SignedHttp", "SigningKey", "SCHEMES", "load_key", "generate_key"]

MAX_SECRET = 16 * 1024
MAX_NOW_MS = 253_402_300_800_000  # 10000-01-01T00:00:00Z

Params = tuple[tuple[str, str], ...]

_API_KEY = re.compile(r"[!-~]{1,256}")
_PATH = re.compile(r"/[!-~]*")
_DIGITS = re.compile(r"[0-9]{1,20}")
_RECV_WINDOW = re.compile(r"[1-9][0-9]{0,5}")
_WS_METHOD = re.compile(r"[A-Za-z][A-Za-z0-9._]{0,63}")
_OKX_PASSPHRASE = re.compile(r"[!-~](?:[ -~]{0,126}[!-~])?")
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


class SchemeError(ValueError):
    """The secret does not fit the scheme, or the scheme cannot do what was asked."""


class SignedHttp(NamedTuple):  # a NamedTuple: built once per signature, on the hot path
    query: str
    body: bytes
    headers: tuple[tuple[str, str], ...]


class SigningKey:
    name: ClassVar[str]
    asymmetric: ClassVar[bool] = False
    exchange: ClassVar[str | None] = None
    # what generate_key makes for this scheme: "ed25519", "p256" or "rsa" (asymmetric schemes only)
    key_kind: ClassVar[str | None] = None

    def __init__(self, secret: bytes, api_key: str) -> None:
        if not isinstance(secret, bytes) or not 0 < len(secret) <= MAX_SECRET:
            raise SchemeError(f"{self.name}: the secret must be 1 to {MAX_SECRET} bytes")
        if not isinstance(api_key, str):
            raise SchemeError(f"{self.name}: the API key must be a string")
        if self.exchange is not None and not _API_KEY.fullmatch(api_key):
            raise SchemeError(f"{self.name}: the API key must be 1 to 256 printable ASCII characters without spaces")
        self.api_key = api_key
        self._load(secret)

    def _load(self, secret: bytes) -> None:
        raise NotImplementedError

    def sign(self, payload: bytes) -> bytes:
        raise NotImplementedError

    def sign_http(self, method: str, path: str, params: Params, body: bytes, now_ms: int) -> SignedHttp:
        raise SchemeError(f"{self.name} signs raw payloads only; it has no request format")

    def public_key_pem(self) -> bytes | None:
        return None

    def __repr__(self) -> str:
        return f"<{type(self).__name__} scheme={self.name!r} secret=<hidden>>"

    def __reduce__(self) -> Any:
        raise TypeError(f"{type(self).__name__} holds a secret and cannot be pickled or copied")


# -- raw schemes ------------------------------------------------------------------------------
class _Hmac(SigningKey):
    digest: ClassVar[str]

    def _load(self, secret: bytes) -> None:
        self._secret = secret

    def sign(self, payload: bytes) -> bytes:
        return hmac.digest(self._secret, payload, self.digest)


class HmacSha256(_Hmac):
    name = "hmac-sha256"
    digest = "sha256"


class HmacSha512(_Hmac):
    name = "hmac-sha512"
    digest = "sha512"


def _load_private_pem(secret: bytes, scheme: str) -> object:
    try:
        key: object = serialization.load_pem_private_key(secret, password=None)
    except Exception:  # ValueError, TypeError, UnsupportedAlgorithm: never echo or chain the key bytes
        key = None
    if key is None:  # raised outside the except block, so no __context__ refers to the parse error
        raise SchemeError(f"{scheme}: the secret must be an unencrypted PEM private key")
    return key


class _Asymmetric(SigningKey):
    asymmetric = True
    key_type: ClassVar[type]

    def _load(self, secret: bytes) -> None:
        key = _load_private_pem(secret, self.name)
        if not isinstance(key, self.key_type):
            raise SchemeError(f"{self.name}: the PEM key is not of the right type for this scheme")
        self._check(key)
        self._key: Any = key

    def _check(self, key: Any) -> None:
        pass

    def public_key_pem(self) -> bytes:
        return self._key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


class Ed25519(_Asymmetric):
    name = "ed25519"
    key_type = ed25519.Ed25519PrivateKey
    key_kind = "ed25519"

    def sign(self, payload: bytes) -> bytes:
        return self._key.sign(payload)


class EcdsaP256(_Asymmetric):
    """ECDSA over P-256 with SHA-256; the signature is DER (as ``cryptography`` produces it)."""

    name = "ecdsa-p256"
    key_type = ec.EllipticCurvePrivateKey
    key_kind = "p256"

    def _check(self, key: Any) -> None:
        if not isinstance(key.curve, ec.SECP256R1):
            raise SchemeError(f"{self.name}: the key must be on curve P-256")

    def sign(self, payload: bytes) -> bytes:
        return self._key.sign(payload, ec.ECDSA(hashes.SHA256()))


class RsaPkcs1v15Sha256(_Asymmetric):
    name = "rsa-pkcs1v15-sha256"
    key_type = rsa.RSAPrivateKey
    key_kind = "rsa"

    def _check(self, key: Any) -> None:
        if key.key_size < 2048:
            raise SchemeError(f"{self.name}: the RSA key must be at least 2048 bits")

    def sign(self, payload: bytes) -> bytes:
        return self._key.sign(payload, padding.PKCS1v15(), hashes.SHA256())


# -- request helpers --------------------------------------------------------------------------
_UNRESERVED = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")


def _enc(text: str) -> str:
    # Most names and values are unreserved already; quote() costs a microsecond each.
    return text if _UNRESERVED.issuperset(text) else quote(text, safe="")


def _query_string(params: Iterable[tuple[str, str]]) -> str:
    params = tuple(params)
    if _UNRESERVED.issuperset("".join(item for pair in params for item in pair)):
        return "&".join(f"{name}={value}" for name, value in params)  # nothing to encode: the usual case
    return "&".join(f"{_enc(name)}={_enc(value)}" for name, value in params)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _check_method(scheme: str, method: str, allowed: tuple[str, ...]) -> None:
    if method not in allowed:
        raise SchemeError(f"{scheme}: the method must be {' or '.join(allowed)}")


def _check_path(scheme: str, path: str, prefix: str = "/") -> None:
    if not isinstance(path, str) or not _PATH.fullmatch(path) or "?" in path or "#" in path or not path.startswith(prefix):
        raise SchemeError(
            f"{scheme}: the path must be an absolute path starting with {prefix!r}, printable ASCII, "
            "without '?' or '#' (parameters go in params)"
        )


def _check_params(scheme: str, params: Params, reserved: tuple[str, ...] = ()) -> Params:
    params = tuple(params)
    for pair in params:
        if not (type(pair) is tuple and len(pair) == 2 and type(pair[0]) is str and type(pair[1]) is str):
            raise SchemeError(f"{scheme}: params must be (name, value) pairs of strings")
    names = [name for name, _ in params]
    if not all(names):
        raise SchemeError(f"{scheme}: a parameter name is empty")
    if not _utf8_ok("".join(item for pair in params for item in pair)):
        raise SchemeError(f"{scheme}: parameter names and values must be valid Unicode text")
    for name in reserved:
        if name in names:
            raise SchemeError(f"{scheme}: the enclave sets {name!r} itself; do not pass it")
    if len(set(names)) != len(names):
        duplicate = next(name for name in names if names.count(name) > 1)
        raise SchemeError(f"{scheme}: parameter {duplicate[:64]!r} appears more than once")
    return params


def _utf8_ok(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _now(scheme: str, now_ms: int) -> int:
    if type(now_ms) is not int or not 0 <= now_ms < MAX_NOW_MS:
        raise SchemeError(f"{scheme}: the enclave clock reading is out of range")
    return now_ms


def _iso_ms(now_ms: int) -> str:
    stamp = _EPOCH + timedelta(milliseconds=now_ms)
    return f"{stamp:%Y-%m-%dT%H:%M:%S}.{now_ms % 1000:03d}Z"


# -- Binance ----------------------------------------------------------------------------------
def _form_keys(scheme: str, body: bytes) -> list[str]:
    """Names in an ``application/x-www-form-urlencoded`` body, as written (still percent-encoded)."""
    if not body:
        return []
    if not body.isascii():
        raise SchemeError(f"{scheme}: the body must be application/x-www-form-urlencoded ASCII (percent-encode other characters)")
    keys = []
    for field in body.decode("ascii").split("&"):
        key = field.split("=", 1)[0]
        if not key:
            raise SchemeError(f"{scheme}: the body has an empty field name")
        keys.append(key)
    return keys


class _BinanceRest(SigningKey):
    exchange = "binance"
    methods: ClassVar[tuple[str, ...]] = ("GET", "POST", "PUT", "DELETE")

    def encode_signature(self, signature: bytes) -> str:
        return _b64(signature)

    def sign_http(self, method: str, path: str, params: Params, body: bytes, now_ms: int) -> SignedHttp:
        _check_method(self.name, method, self.methods)
        _check_path(self.name, path)
        if method == "GET" and body:
            raise SchemeError(f"{self.name}: a GET request has no body; pass the parameters as params")
        params = _check_params(self.name, params, reserved=("signature",))
        names = [name for name, _ in params]
        if body:
            names = [_enc(name) for name in names] + _form_keys(self.name, body)
            if len(set(names)) != len(names):
                raise SchemeError(f"{self.name}: a parameter appears both in the query and in the body")
            if "signature" in names:
                raise SchemeError(f"{self.name}: the enclave sets 'signature' itself; do not pass it")
        query = _query_string(params)
        if "timestamp" not in names:
            stamp = f"timestamp={_now(self.name, now_ms)}"
            if body:
                body = body + b"&" + stamp.encode()
            else:
                query = f"{query}&{stamp}" if query else stamp
        signature = _enc(self.encode_signature(self.sign(query.encode() + body)))
        if body:
            body = body + b"&signature=" + signature.encode()
        else:
            query = f"{query}&signature={signature}"
        return SignedHttp(query, body, (("X-MBX-APIKEY", self.api_key),))


class BinanceHmac(_BinanceRest, HmacSha256):
    """Binance REST/SAPI ``HMAC_SHA256``: hex HMAC of query string + body, key in ``X-MBX-APIKEY``."""

    name = "binance-hmac"

    def encode_signature(self, signature: bytes) -> str:
        return signature.hex()


class BinanceRsa(_BinanceRest, RsaPkcs1v15Sha256):
    """Binance REST with an RSA key: base64 RSASSA-PKCS1-v1_5 SHA-256 over query string + body."""

    name = "binance-rsa"


class BinanceEd25519(_BinanceRest, Ed25519):
    """Binance REST with an Ed25519 key: base64 Ed25519 signature over query string + body."""

    name = "binance-ed25519"


class BinanceWsHmac(HmacSha256):
    """Binance WebSocket API, HMAC key: signs the sorted ``params`` including ``apiKey``."""

    name = "binance-ws-hmac"
    exchange = "binance"

    def sign_http(self, method: str, path: str, params: Params, body: bytes, now_ms: int) -> SignedHttp:
        if method != "WS":
            raise SchemeError(f"{self.name}: the method must be 'WS' (and the path the WebSocket API method, e.g. 'order.place')")
        if not isinstance(path, str) or not _WS_METHOD.fullmatch(path):
            raise SchemeError(f"{self.name}: the path must be a WebSocket API method name such as 'order.place'")
        if body:
            raise SchemeError(f"{self.name}: pass the request params as params; the enclave writes the JSON")
        fields = dict(_check_params(self.name, params, reserved=("apiKey", "signature")))
        fields["apiKey"] = self.api_key
        if "timestamp" not in fields:
            fields["timestamp"] = str(_now(self.name, now_ms))
        payload = "&".join(f"{name}={fields[name]}" for name in sorted(fields))
        fields["signature"] = self.sign(payload.encode("utf-8")).hex()
        return SignedHttp("", json.dumps(fields, ensure_ascii=False, separators=(",", ":")).encode("utf-8"), ())


# -- Bybit ------------------------------------------------------------------------------------
class _BybitV5(SigningKey):
    exchange = "bybit"
    DEFAULT_RECV_WINDOW: ClassVar[str] = "5000"

    def encode_signature(self, signature: bytes) -> str:
        return _b64(signature)

    def sign_http(self, method: str, path: str, params: Params, body: bytes, now_ms: int) -> SignedHttp:
        _check_method(self.name, method, ("GET", "POST"))
        _check_path(self.name, path)
        params = _check_params(self.name, params)
        recv_window = self.DEFAULT_RECV_WINDOW
        rest = []
        for name, value in params:
            if name == "recv_window":
                if not _RECV_WINDOW.fullmatch(value):
                    raise SchemeError(f"{self.name}: recv_window must be a positive number of milliseconds (at most 6 digits)")
                recv_window = value
            else:
                rest.append((name, value))
        if method == "GET":
            if body:
                raise SchemeError(f"{self.name}: a GET request has no body; pass the parameters as params")
            query = _query_string(rest)
            payload = query.encode()
        else:
            if rest:
                raise SchemeError(f"{self.name}: POST parameters go in the JSON body, not in params")
            query = ""
            payload = body
        timestamp = str(_now(self.name, now_ms))
        signature = self.encode_signature(self.sign(f"{timestamp}{self.api_key}{recv_window}".encode() + payload))
        headers = (
            ("X-BAPI-API-KEY", self.api_key),
            ("X-BAPI-TIMESTAMP", timestamp),
            ("X-BAPI-SIGN", signature),
            ("X-BAPI-RECV-WINDOW", recv_window),
        )
        return SignedHttp(query, body, headers)


class BybitHmac(_BybitV5, HmacSha256):
    """Bybit v5 with a system-generated (HMAC) key: hex HMAC-SHA256."""

    name = "bybit-hmac"

    def encode_signature(self, signature: bytes) -> str:
        return signature.hex()


class BybitRsa(_BybitV5, RsaPkcs1v15Sha256):
    """Bybit v5 with a self-generated RSA key: base64 RSASSA-PKCS1-v1_5 SHA-256."""

    name = "bybit-rsa"


# -- OKX --------------------------------------------------------------------------------------
def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise ValueError("duplicate key")
        result[key] = value
    return result


def _okx_secret(secret: bytes) -> tuple[bytes, str] | None:
    try:
        document = json.loads(secret.decode("utf-8"), object_pairs_hook=_no_duplicates)
    except (ValueError, RecursionError):  # JSONDecodeError quotes the document: never chain it
        return None
    if not isinstance(document, dict) or set(document) != {"secret", "passphrase"}:
        return None
    key, passphrase = document["secret"], document["passphrase"]
    if not (isinstance(key, str) and key and _utf8_ok(key)):
        return None
    if not (isinstance(passphrase, str) and _OKX_PASSPHRASE.fullmatch(passphrase)):
        return None
    return key.encode("utf-8"), passphrase


class OkxHmac(SigningKey):
    """OKX v5: base64 HMAC-SHA256 of timestamp + method + requestPath + body; passphrase sealed with the key."""

    name = "okx-hmac"
    exchange = "okx"

    def _load(self, secret: bytes) -> None:
        parsed = _okx_secret(secret)
        if parsed is None:
            raise SchemeError(
                f"{self.name}: the secret must be UTF-8 JSON {{\"secret\": \"...\", \"passphrase\": \"...\"}} with exactly "
                "those two non-empty string fields (the passphrase printable ASCII)"
            )
        self._secret, self._passphrase = parsed

    def sign(self, payload: bytes) -> bytes:
        return hmac.digest(self._secret, payload, "sha256")

    def sign_http(self, method: str, path: str, params: Params, body: bytes, now_ms: int) -> SignedHttp:
        _check_method(self.name, method, ("GET", "POST"))
        _check_path(self.name, path)
        params = _check_params(self.name, params)
        if method == "GET":
            if body:
                raise SchemeError(f"{self.name}: a GET request has no body; pass the parameters as params")
            query = _query_string(params)
            request_path = f"{path}?{query}" if query else path
        else:
            if params:
                raise SchemeError(f"{self.name}: POST parameters go in the JSON body, not in params")
            query = ""
            request_path = path
        timestamp = _iso_ms(_now(self.name, now_ms))
        signature = _b64(self.sign(f"{timestamp}{method}{request_path}".encode() + body))
        headers = (
            ("OK-ACCESS-KEY", self.api_key),
            ("OK-ACCESS-SIGN", signature),
            ("OK-ACCESS-TIMESTAMP", timestamp),
            ("OK-ACCESS-PASSPHRASE", self._passphrase),
        )
        return SignedHttp(query, body, headers)


# -- Kraken -----------------------------------------------------------------------------------
def _b64decode_strict(text: bytes) -> bytes | None:
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        return None


class Kraken(SigningKey):
    """Kraken Spot REST: API-Sign = base64(HMAC-SHA512(key, path + SHA256(nonce + postdata)))."""

    name = "kraken"
    exchange = "kraken"

    def _load(self, secret: bytes) -> None:
        key = _b64decode_strict(secret.strip(b" \t\r\n"))
        if not key:
            raise SchemeError(f"{self.name}: the secret must be the base64 private key Kraken shows (standard alphabet, padded)")
        self._secret = key
        self._nonce_lock = threading.Lock()
        self._last_nonce = 0

    def sign(self, payload: bytes) -> bytes:
        return hmac.digest(self._secret, payload, "sha512")

    def _next_nonce(self, now_ms: int, supplied: str | None) -> str:
        with self._nonce_lock:
            if supplied is not None:
                self._last_nonce = max(self._last_nonce, int(supplied))
                return supplied
            self._last_nonce = max(now_ms, self._last_nonce + 1)
            return str(self._last_nonce)

    def sign_http(self, method: str, path: str, params: Params, body: bytes, now_ms: int) -> SignedHttp:
        _check_method(self.name, method, ("POST",))
        _check_path(self.name, path, prefix="/0/private/")
        if body:
            raise SchemeError(f"{self.name}: pass the POST fields as params; the enclave encodes the body")
        params = _check_params(self.name, params)
        supplied = dict(params).get("nonce")
        if supplied is not None and not _DIGITS.fullmatch(supplied):
            raise SchemeError(f"{self.name}: nonce must be an unsigned decimal integer")
        nonce = self._next_nonce(_now(self.name, now_ms), supplied)
        postdata = _query_string(params if supplied is not None else (("nonce", nonce),) + params).encode()
        message = path.encode() + hashlib.sha256(nonce.encode() + postdata).digest()
        return SignedHttp("", postdata, (("API-Key", self.api_key), ("API-Sign", _b64(self.sign(message)))))


# -- Coinbase ---------------------------------------------------------------------------------
class CoinbaseJwt(EcdsaP256):
    """Coinbase Advanced Trade: a fresh ES256 JWT per request, sent as ``Authorization: Bearer``."""

    name = "coinbase-jwt"
    exchange = "coinbase"
    HOST: ClassVar[str] = "api.coinbase.com"
    LIFETIME_S: ClassVar[int] = 120

    def sign(self, payload: bytes) -> bytes:
        r, s = decode_dss_signature(self._key.sign(payload, ec.ECDSA(hashes.SHA256())))
        return r.to_bytes(32, "big") + s.to_bytes(32, "big")

    def sign_http(self, method: str, path: str, params: Params, body: bytes, now_ms: int) -> SignedHttp:
        _check_method(self.name, method, ("GET", "POST", "PUT", "DELETE"))
        _check_path(self.name, path)
        params = _check_params(self.name, params)
        issued = _now(self.name, now_ms) // 1000
        header = {"alg": "ES256", "kid": self.api_key, "nonce": secrets.token_hex(32), "typ": "JWT"}
        claims = {
            "sub": self.api_key,
            "iss": "cdp",
            "nbf": issued,
            "exp": issued + self.LIFETIME_S,
            "uri": f"{method} {self.HOST}{path}",
        }
        signing_input = f"{_b64url(_compact_json(header))}.{_b64url(_compact_json(claims))}"
        token = f"{signing_input}.{_b64url(self.sign(signing_input.encode('ascii')))}"
        return SignedHttp(_query_string(params), body, (("Authorization", f"Bearer {token}"),))


def _compact_json(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode("ascii")


# -- registry ---------------------------------------------------------------------------------
SCHEMES: dict[str, type[SigningKey]] = {
    scheme.name: scheme
    for scheme in (
        HmacSha256,
        HmacSha512,
        Ed25519,
        EcdsaP256,
        RsaPkcs1v15Sha256,
        BinanceHmac,
        BinanceRsa,
        BinanceEd25519,
        BinanceWsHmac,
        BybitHmac,
        BybitRsa,
        OkxHmac,
        Kraken,
        CoinbaseJwt,
    )
}


def _check_registry() -> None:
    """The implementations must be exactly the names in :mod:`enclave.protocol.schemes`.

    Raised explicitly (not ``assert``) so that ``python -O`` keeps the check.
    """
    if len(SCHEMES) != len(SCHEME_NAMES) or set(SCHEMES) != set(SCHEME_NAMES):
        raise AssertionError(f"enclave.schemes implements {sorted(SCHEMES)}, the protocol names {sorted(SCHEME_NAMES)}")
    for name, kind in SCHEMES.items():
        if kind.exchange != EXCHANGE_SCHEMES.get(name):
            raise AssertionError(f"{name}: exchange {kind.exchange!r} differs from the protocol's {EXCHANGE_SCHEMES.get(name)!r}")
        if kind.asymmetric != (name in ASYMMETRIC_SCHEMES) or kind.asymmetric != (kind.key_kind is not None):
            raise AssertionError(f"{name}: asymmetric flag differs from the protocol's ASYMMETRIC_SCHEMES")


_check_registry()


def load_key(scheme: str, secret: bytes, api_key: str) -> SigningKey:
    kind = SCHEMES.get(scheme)
    if kind is None:
        raise SchemeError(f"unknown scheme {str(scheme)[:64]!r}; known: {', '.join(sorted(SCHEMES))}")
    return kind(secret, api_key)


def generate_key(scheme: str) -> bytes:
    """A fresh private key (PEM, PKCS#8) for an asymmetric scheme, generated inside the enclave.

    Ed25519 for ``ed25519``/``binance-ed25519``, P-256 for ``ecdsa-p256``/``coinbase-jwt``,
    RSA-2048 for ``rsa-pkcs1v15-sha256``/``binance-rsa``/``bybit-rsa``.
    """
    kind = SCHEMES.get(scheme)
    if kind is None or not kind.asymmetric:
        raise SchemeError(f"{str(scheme)[:64]!r} is not an asymmetric scheme; only those can generate keys")
    if kind.key_kind == "ed25519":
        key: Any = ed25519.Ed25519PrivateKey.generate()
    elif kind.key_kind == "p256":
        key = ec.generate_private_key(ec.SECP256R1())
    elif kind.key_kind == "rsa":
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    else:  # pragma: no cover - _check_registry guarantees a key kind for every asymmetric scheme
        raise SchemeError(f"{scheme}: no key generator")
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
