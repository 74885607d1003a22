"""The attesting KMS's HTTP layer: parse the JSON 1.1 request, call the model, render the answer.

Requests are ``POST /`` with ``X-Amz-Target: TrentService.<Operation>`` and a JSON body.
``Decrypt`` and ``GenerateDataKey`` with a ``Recipient`` are answered by the model itself (it holds
the attestation logic); every other call is authorized by the model and then passed to moto
unchanged.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from .exceptions import KmsException, ValidationException
from .models import AttestingKms

__all__ = ["HttpResponse", "Passthrough", "dispatch"]

MAX_BODY = 1 << 20
_JSON = "application/x-amz-json-1.1"


@dataclass(frozen=True)
class HttpResponse:
    status: int
    body: bytes
    content_type: str = _JSON


@dataclass(frozen=True)
class Passthrough:
    """Authorized: forward the original request to moto."""


def error_response(exc: KmsException) -> HttpResponse:
    return HttpResponse(exc.status, json.dumps({"__type": exc.code, "message": exc.message}).encode())


def dispatch(model: AttestingKms, target: str | None, body: bytes) -> HttpResponse | Passthrough:
    try:
        operation = _operation(target)
        params = _params(body)
        if operation == "Decrypt":
            return HttpResponse(200, json.dumps(model.decrypt(params)).encode())
        if operation == "GenerateDataKey" and "Recipient" in params:
            return HttpResponse(200, json.dumps(model.generate_data_key(params)).encode())
        model.authorize_request(operation, params)
        return Passthrough()
    except KmsException as exc:
        return error_response(exc)


def _operation(target: str | None) -> str:
    prefix = "TrentService."
    if not target or not target.startswith(prefix) or not target[len(prefix) :].isalnum():
        raise ValidationException("X-Amz-Target must name a TrentService operation")
    return target[len(prefix) :]


def _params(body: bytes) -> dict[str, Any]:
    if len(body) > MAX_BODY:
        raise ValidationException("request body too large")
    try:
        params = json.loads(body or b"{}")
    except (ValueError, RecursionError):
        raise ValidationException("request body is not valid JSON") from None
    if not isinstance(params, dict):
        raise ValidationException("request body must be a JSON object")
    return params
