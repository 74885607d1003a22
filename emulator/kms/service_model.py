"""The KMS API as botocore's service model describes it: operation names, input shapes, errors.

The front routes by this model (``X-Amz-Target: TrentService.<Name>`` must name one of its
operations, exactly) and checks every request body against the operation's input shape the way
AWS's JSON 1.1 services do, in two passes:

1. types: a member of the wrong JSON type is a ``SerializationException`` with the wording of
   AWS's JSON deserializer ("Start of list found where not expected", "class java.lang.Boolean
   can not be converted to an String", "... can not be converted to a Blob: Invalid Base64
   character: '!'"). ``null`` counts as absent and unknown members are ignored, as on AWS.
2. constraints: required, length, range, enum and pattern, each failure worded as AWS words it
   ("1 validation error detected: Value '0' at 'numberOfBytes' failed to satisfy constraint:
   Member must have value greater than or equal to 1"), up to ten, as a ``ValidationException``.
   Values of sensitive members (``Plaintext``) are left out of the message, as AWS does.

The wording comes from real AWS answers recorded by LocalStack's KMS snapshot tests
(``tests/aws/services/kms/test_kms.snapshot.json``) and by kinesalite, which mirrors AWS's JSON
1.1 (Coral) front end. The model itself is botocore's ``kms/2014-11-01/service-2.json``.
https://docs.aws.amazon.com/kms/latest/APIReference/CommonErrors.html
"""

from __future__ import annotations

import base64
import binascii
import functools
import math
import re
from typing import Any

from .exceptions import SerializationException, ValidationException

__all__ = [
    "COMMON_ERRORS",
    "MAX_VALIDATION_ERRORS",
    "error_codes",
    "operation_names",
    "validate",
]

TARGET_PREFIX = "TrentService."
MAX_VALIDATION_ERRORS = 10
#: Errors any KMS call can answer besides the ones its model lists (front-end and auth errors).
COMMON_ERRORS = frozenset(
    {
        "AccessDeniedException",
        "ExpiredTokenException",
        "IncompleteSignatureException",
        "InvalidSignatureException",
        "KMSInternalException",
        "MissingAuthenticationTokenException",
        "SerializationException",
        "UnknownOperationException",
        "UnrecognizedClientException",
        "ValidationException",
    }
)


@functools.lru_cache(maxsize=1)
def _model() -> Any:
    from .. import _boto

    return _boto.service_model("kms")


@functools.lru_cache(maxsize=1)
def operation_names() -> frozenset[str]:
    """Every KMS operation name, spelt as the model spells it (``X-Amz-Target`` is case-sensitive)."""
    return frozenset(_model().operation_names)


@functools.lru_cache(maxsize=None)
def error_codes(operation: str) -> frozenset[str]:
    """The error codes the model lists for ``operation``."""
    return frozenset(shape.error_code or shape.name for shape in _model().operation_model(operation).error_shapes)


def input_members(operation: str) -> tuple[str, ...]:
    shape = _model().operation_model(operation).input_shape
    return tuple(shape.members) if shape is not None else ()


def required_members(operation: str) -> tuple[str, ...]:
    shape = _model().operation_model(operation).input_shape
    return tuple(shape.required_members) if shape is not None else ()


def validate(operation: str, params: dict[str, Any]) -> dict[str, Any]:
    """Check ``params`` against the input shape of ``operation``; return them cleaned.

    The cleaned copy has no unknown members and no ``null`` values, and integers truncated as
    AWS truncates them. Raises :class:`SerializationException` or :class:`ValidationException`.
    """
    shape = _model().operation_model(operation).input_shape
    if shape is None:
        return {}
    cleaned = _convert(shape, params)
    errors: list[str] = []
    _check_structure(shape, cleaned, "", errors)
    if errors:
        count = len(errors)
        noun = "error" if count == 1 else "errors"
        raise ValidationException(f"{count} validation {noun} detected: " + "; ".join(errors[:MAX_VALIDATION_ERRORS]))
    return cleaned


# --- pass 1: JSON types ---------------------------------------------------------------------------

_JAVA_NAMES = {"string": "String", "integer": "Integer", "long": "Long", "boolean": "Boolean", "timestamp": "Timestamp"}
_BASE64_CHARS = re.compile(r"[^A-Za-z0-9+/=]|=[^=]")


def _convert(shape: Any, value: Any) -> Any:
    kind = shape.type_name
    converter = _CONVERTERS.get(kind)
    if converter is None:  # a shape type this model does not use today: refuse, do not guess
        raise SerializationException(f"Unsupported member type {kind}")
    return converter(shape, value)


def _container_error(value: Any) -> SerializationException | None:
    if isinstance(value, list):
        return SerializationException("Start of list found where not expected")
    if isinstance(value, dict):
        return SerializationException("Start of structure or map found where not expected.")
    return None


def _scalar_error(value: Any, target: str) -> SerializationException:
    article = "a" if target == "Blob" else "an"
    container = _container_error(value)
    if container is not None:
        return container
    if isinstance(value, bool):
        return SerializationException(f"class java.lang.Boolean can not be converted to {article} {target}")
    if isinstance(value, (int, float)):
        return SerializationException(f"class java.math.BigDecimal can not be converted to {article} {target}")
    return SerializationException(f"class java.lang.String can not be converted to {article} {target}")


def _string(shape: Any, value: Any) -> str:
    if not isinstance(value, str):
        raise _scalar_error(value, "String")
    return value


def _number(shape: Any, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _scalar_error(value, _JAVA_NAMES[shape.type_name])
    if isinstance(value, float):
        if not math.isfinite(value):
            raise SerializationException(f"class java.math.BigDecimal can not be converted to an {_JAVA_NAMES[shape.type_name]}")
        return math.trunc(value)
    return value


def _boolean(shape: Any, value: Any) -> bool:
    if isinstance(value, str):
        raise SerializationException(f"'{value.upper()}' can not be converted to an Boolean")
    if not isinstance(value, bool):
        raise _scalar_error(value, "Boolean")
    return value


def _timestamp(shape: Any, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _scalar_error(value, "Timestamp")
    return value


def _blob(shape: Any, value: Any) -> str:
    if not isinstance(value, str):
        raise _scalar_error(value, "Blob")
    # A sensitive member (Plaintext, ...) is never echoed, as _show() leaves it out of validation
    # messages; the rest of AWS's words stay.
    quoted = "Value" if shape.metadata.get("sensitive") else f"'{value}'"
    if len(value) % 4:
        raise SerializationException(
            f"{quoted} can not be converted to a Blob: Base64 encoded length is expected a multiple of 4 bytes but found: {len(value)}"
        )
    bad = _BASE64_CHARS.search(value)
    if bad:
        raise SerializationException(f"{quoted} can not be converted to a Blob: Invalid Base64 character: '{bad.group(0)[0]}'")
    try:
        base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise SerializationException(f"{quoted} can not be converted to a Blob: Invalid last non-pad Base64 character dectected") from None
    return value


def _list(shape: Any, value: Any) -> list:
    if isinstance(value, dict):
        raise SerializationException("Start of structure or map found where not expected.")
    if not isinstance(value, list):
        raise SerializationException("Expected list or null")
    return [_convert(shape.member, item) for item in value if item is not None]


def _map(shape: Any, value: Any) -> dict:
    if isinstance(value, list):
        raise SerializationException("Start of list found where not expected")
    if not isinstance(value, dict):
        raise SerializationException("Expected map or null")
    return {key: _convert(shape.value, item) for key, item in value.items() if item is not None}


def _structure(shape: Any, value: Any) -> dict:
    if isinstance(value, list):
        raise SerializationException("Start of list found where not expected")
    if not isinstance(value, dict):
        raise SerializationException("Expected null")
    members = shape.members
    return {name: _convert(members[name], item) for name, item in value.items() if name in members and item is not None}


_CONVERTERS = {
    "string": _string,
    "integer": _number,
    "long": _number,
    "boolean": _boolean,
    "timestamp": _timestamp,
    "blob": _blob,
    "list": _list,
    "map": _map,
    "structure": _structure,
}


# --- pass 2: constraints --------------------------------------------------------------------------


def _lower_first(name: str) -> str:
    return name[:1].lower() + name[1:]


def _check_structure(shape: Any, value: dict, path: str, errors: list[str]) -> None:
    required = set(shape.required_members)
    for name, member in shape.members.items():
        here = f"{path}{_lower_first(name)}"
        if name not in value:
            if name in required:
                errors.append(f"Value null at '{here}' failed to satisfy constraint: Member must not be null")
            continue
        _check(member, value[name], here, errors)


def _check(shape: Any, value: Any, path: str, errors: list[str]) -> None:
    kind = shape.type_name
    meta = shape.metadata
    if kind == "structure":
        _check_structure(shape, value, f"{path}.", errors)
        return
    if kind == "list":
        for index, item in enumerate(value, start=1):
            _check(shape.member, item, f"{path}.{index}.member", errors)
    elif kind == "map":
        for key, item in value.items():
            _check(shape.value, item, f"{path}.{key}", errors)
    shown = _show(shape, value)
    if kind in ("integer", "long"):
        if "min" in meta and value < meta["min"]:
            errors.append(_failed(shown, path, f"Member must have value greater than or equal to {meta['min']}"))
        if "max" in meta and value > meta["max"]:
            errors.append(_failed(shown, path, f"Member must have value less than or equal to {meta['max']}"))
        return
    if kind in ("string", "blob", "list", "map"):
        size = len(base64.b64decode(value)) if kind == "blob" else len(value)
        if "min" in meta and size < meta["min"]:
            errors.append(_failed(shown, path, f"Member must have length greater than or equal to {meta['min']}"))
        if "max" in meta and size > meta["max"]:
            errors.append(_failed(shown, path, f"Member must have length less than or equal to {meta['max']}"))
    if kind == "string":
        if "enum" in meta and value not in meta["enum"]:
            errors.append(_failed(shown, path, f"Member must satisfy enum value set: [{', '.join(meta['enum'])}]"))
        if "pattern" in meta and not _pattern(meta["pattern"]).fullmatch(value):
            errors.append(_failed(shown, path, f"Member must satisfy regular expression pattern: {meta['pattern']}"))


@functools.lru_cache(maxsize=None)
def _pattern(pattern: str) -> re.Pattern[str]:
    return re.compile(pattern, re.ASCII)  # Java's \w, \d, \s are ASCII-only


def _failed(shown: str | None, path: str, constraint: str) -> str:
    value = "" if shown is None else f" {shown}"
    return f"Value{value} at '{path}' failed to satisfy constraint: {constraint}"


def _show(shape: Any, value: Any) -> str | None:
    """How AWS quotes a value in a validation message; ``None`` for sensitive members."""
    if shape.metadata.get("sensitive"):
        return None
    kind = shape.type_name
    if kind == "blob":
        size = len(base64.b64decode(value))
        return f"'java.nio.HeapByteBuffer[pos=0 lim={size} cap={size}]'"
    if kind == "list":
        return "'[" + ", ".join(str(item) for item in value) + "]'"
    if kind == "map":
        return "'{" + ", ".join(f"{key}={item}" for key, item in value.items()) + "}'"
    return f"'{value}'"
