"""The attesting KMS's HTTP layer: AWS JSON 1.1 in, AWS JSON 1.1 out, in the order AWS checks.

Requests are ``POST`` with ``X-Amz-Target: TrentService.<Operation>`` and a JSON body. Like AWS's
JSON 1.1 front end (as kinesalite records it), the request is refused, in this order:

1. an empty body: ``SerializationException`` for a known operation, else ``UnknownOperationException``;
2. a body that is not a JSON object: ``SerializationException``;
3. a target that is not exactly ``TrentService.`` plus an operation of botocore's KMS model
   (case-sensitive): ``UnknownOperationException``, ``{"__type": "UnknownOperationException"}``;
4. no or an incomplete SigV4 ``Authorization`` header: ``MissingAuthenticationTokenException`` /
   ``IncompleteSignatureException``; a credential scope of another region or service:
   ``InvalidSignatureException``; an access key nobody owns, or a session token that does not go
   with it (a long-term key takes none): ``UnrecognizedClientException``; an expired session:
   ``ExpiredTokenException``; a wrong signature: ``InvalidSignatureException``;
5. members of the wrong type / breaking the model's constraints: ``SerializationException`` /
   ``ValidationException`` (:mod:`.service_model`);
6. then the model authorizes (:class:`~.models.AttestingKms`) and answers, or passes the call to
   moto. Nothing unknown ever reaches moto.

Every answer is JSON; an unexpected failure is a ``KMSInternalException`` (500), never a traceback.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from . import service_model
from .exceptions import KMSInternalException, KmsException, SerializationException, UnknownOperationException
from .models import AttestingKms

__all__ = ["REASON_HEADER", "HttpResponse", "Passthrough", "dispatch", "error_response"]

MAX_BODY = 1 << 20
_JSON = "application/x-amz-json-1.1"
_log = logging.getLogger(__name__)


#: Response header with the emulator's reason for an AccessDeniedException (the deciding statement).
#: AWS's message never names it; boto3 shows it in ``error.response["ResponseMetadata"]["HTTPHeaders"]``.
REASON_HEADER = "x-zerocopy-emulator-reason"


@dataclass(frozen=True)
class HttpResponse:
    status: int
    body: bytes
    content_type: str = _JSON
    headers: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class Passthrough:
    """Authorized: forward the request to moto, with ``body`` (the validated members) as its body."""

    body: bytes = field(default=b"{}", compare=False)


def error_response(exc: KmsException) -> HttpResponse:
    reason = getattr(exc, "reason", "")
    headers = ((REASON_HEADER, _header_safe(reason)),) if reason else ()
    return HttpResponse(exc.status, json.dumps(exc.body()).encode(), headers=headers)


def _header_safe(text: str) -> str:
    return "".join(c if " " <= c <= "~" else "?" for c in text)[:1000]


def dispatch(model: AttestingKms, headers: Mapping[str, str], body: bytes, *, method: str = "POST", path: str = "/") -> HttpResponse | Passthrough:
    """Answer one request. ``headers`` is looked up case-insensitively (an ``HTTPMessage`` or a dict)."""
    header = _header_lookup(headers)
    try:
        operation = _operation(next(iter(header("x-amz-target")), None))
        params = _params(body, operation)
        if operation is None:
            raise UnknownOperationException()
        caller = model.identify(header, body, method=method, path=path)
        params = service_model.validate(operation, params)
        answer = model.handle(operation, params, caller)
        if answer is None:
            return Passthrough(json.dumps(params).encode())
        return HttpResponse(200, json.dumps(answer).encode())
    except KmsException as exc:
        return error_response(exc)
    except Exception:  # a bug here must not become a dropped connection or a traceback on the wire
        _log.exception("the attesting KMS failed on a request")
        return error_response(KMSInternalException("The KMS emulator failed to process the request."))


def _header_lookup(headers: Mapping[str, str]) -> Callable[[str], list[str]]:
    """``name -> every value of that header``, case-insensitively."""
    if hasattr(headers, "get_all"):  # email.message.Message / http.client.HTTPMessage
        return lambda name: list(headers.get_all(name) or [])  # type: ignore[attr-defined]
    lowered: dict[str, list[str]] = {}
    for name, value in headers.items():
        lowered.setdefault(str(name).lower(), []).append(value)
    return lambda name: lowered.get(name.lower(), [])


def _operation(target: str | None) -> str | None:
    """The operation a target names exactly, or ``None``."""
    prefix = service_model.TARGET_PREFIX
    if not isinstance(target, str) or not target.startswith(prefix):
        return None
    name = target[len(prefix) :]
    return name if name in service_model.operation_names() else None


def _params(body: bytes, operation: str | None) -> dict:
    if len(body) > MAX_BODY:
        raise SerializationException("Request body is too large")
    if not body:
        raise SerializationException() if operation is not None else UnknownOperationException()
    try:
        params = json.loads(body, parse_constant=_no_constant)
    except (ValueError, RecursionError):  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        raise SerializationException() from None
    if not isinstance(params, dict):
        raise SerializationException("Start of list found where not expected" if isinstance(params, list) else "Expected null")
    return params


def _no_constant(name: str) -> float:
    raise ValueError(f"{name} is not JSON")
