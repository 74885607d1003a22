"""Signature Version 4, checked as AWS checks a KMS request.

AWS refuses a request whose ``Authorization`` header is missing (``MissingAuthenticationToken``),
incomplete (``IncompleteSignatureException``), or whose signature is not the one the caller's
secret key gives (``InvalidSignatureException``, "The request signature we calculated does not
match the signature you provided. ..."). The canonical request covers the method, path, query,
the headers named in ``SignedHeaders`` and the SHA-256 of the body; the string to sign covers the
``X-Amz-Date`` time and the credential scope (date/region/service/aws4_request). A scope naming
another region or service is refused before the signature is computed, in AWS's words for a JSON
service (``InvalidSignatureException``, "Credential should be scoped to a valid region, not
'eu-west-1'. " / "Credential should be scoped to correct service: 'kms'. ", as real answers are
quoted in public issues; see ``tests/data/kms/aws-error-words.json``).
https://docs.aws.amazon.com/IAM/latest/UserGuide/reference_sigv-create-signed-request.html

Not checked: the request time against the clock (AWS allows 15 minutes), so a test clock or a
slow machine cannot make the emulator refuse what AWS would accept; query-string signatures.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import quote, unquote

from .exceptions import IncompleteSignatureException, InvalidSignatureException, MissingAuthenticationTokenException

__all__ = ["Authorization", "check_scope", "parse_authorization", "verify_signature"]

ALGORITHM = "AWS4-HMAC-SHA256"
_REQUIRED = ("Credential", "Signature", "SignedHeaders")
MISMATCH = (
    "The request signature we calculated does not match the signature you provided. "
    "Check your AWS Secret Access Key and signing method. Consult the service documentation for details."
)
WRONG_REGION = "Credential should be scoped to a valid region, not '{region}'. "
WRONG_SERVICE = "Credential should be scoped to correct service: '{service}'. "
# What botocore sends: 64 lower-case hex digits. Anything else cannot match, and comparing
# non-ASCII text with hmac.compare_digest would raise instead of refusing.
_SIGNATURE = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True)
class Authorization:
    """The parts of a SigV4 ``Authorization`` header."""

    access_key_id: str
    scope: str  # date/region/service/aws4_request
    signed_headers: tuple[str, ...]
    signature: str


def parse_authorization(header: str | None, *, has_date: bool = True) -> Authorization:
    """Split the header, or raise AWS's error for a missing or incomplete one."""
    if not header:
        raise MissingAuthenticationTokenException("Missing Authentication Token")
    fields = dict(token.split("=", 1) for token in re.split(r"[, ]", header)[1:] if "=" in token)
    problems = [f"Authorization header requires '{name}' parameter." for name in _REQUIRED if not fields.get(name)]
    if not has_date:
        problems.append("Authorization header requires existence of either a 'X-Amz-Date' or a 'Date' header.")
    if not header.startswith(f"{ALGORITHM} ") and not problems:
        problems.append("Authorization header requires 'Credential' parameter.")
    if problems:
        raise IncompleteSignatureException(" ".join(problems) + f" Authorization={header}")
    credential = fields["Credential"]
    parts = credential.split("/")
    if len(parts) != 5 or not parts[0]:
        raise IncompleteSignatureException(
            f"Credential must have exactly 5 slash-delimited elements, e.g. keyid/date/region/service/term, got '{credential}'"
        )
    return Authorization(parts[0], "/".join(parts[1:]), tuple(fields["SignedHeaders"].lower().split(";")), fields["Signature"])


def check_scope(authorization: Authorization, *, region: str, service: str) -> None:
    """Raise ``InvalidSignatureException`` unless the credential scope names this region and service."""
    _, scope_region, scope_service, _ = (authorization.scope.split("/") + ["", "", "", ""])[:4]
    if scope_region != region:
        raise InvalidSignatureException(WRONG_REGION.format(region=scope_region))
    if scope_service != service:
        raise InvalidSignatureException(WRONG_SERVICE.format(service=service))


def verify_signature(
    authorization: Authorization,
    secret_access_key: str,
    *,
    method: str,
    path: str,
    header: Callable[[str], list[str]],
    body: bytes,
) -> None:
    """Raise ``InvalidSignatureException`` unless the request carries the signature ``secret_access_key`` gives.

    ``header(name)`` returns every value of a header (case-insensitive), as received.
    """
    amz_date = (header("x-amz-date") or [""])[0]
    date, region, service, terminator = (authorization.scope.split("/") + ["", "", "", ""])[:4]
    canonical = "\n".join(
        [
            method,
            _canonical_path(path.split("?", 1)[0]),
            _canonical_query(path.split("?", 1)[1] if "?" in path else ""),
            "".join(f"{name}:{','.join(' '.join(v.split()) for v in header(name))}\n" for name in authorization.signed_headers),
            ";".join(authorization.signed_headers),
            hashlib.sha256(body).hexdigest(),
        ]
    )
    to_sign = "\n".join([ALGORITHM, amz_date, authorization.scope, hashlib.sha256(canonical.encode()).hexdigest()])
    key = ("AWS4" + secret_access_key).encode()
    for part in (date, region, service, terminator):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    expected = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
    if not _SIGNATURE.fullmatch(authorization.signature) or not hmac.compare_digest(expected, authorization.signature):
        raise InvalidSignatureException(MISMATCH)


def _canonical_path(path: str) -> str:
    return quote(unquote(path or "/"), safe="/~")


def _canonical_query(query: str) -> str:
    pairs = [part.split("=", 1) if "=" in part else [part, ""] for part in query.split("&") if part]
    encoded = sorted((quote(unquote(k), safe="-_.~"), quote(unquote(v), safe="-_.~")) for k, v in pairs)
    return "&".join(f"{k}={v}" for k, v in encoded)
