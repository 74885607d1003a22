"""The enclave's measured launch configuration: a TOML file inside the image.

In production the image's entrypoint is ``python -m enclave --config /etc/zerocopy/enclave.toml``,
so what the operator chose — the KMS region (hence the endpoint ``kms.<region>.amazonaws.com``,
reached through ``kms_proxy``), the KMS keys the enclave may seal to, busy-polling, the listening
address — is a file in the ramdisk, covered by PCR0 and PCR2. The host never sends any of it.
The emulator passes the same settings as flags, which it measures into its PCR0. The keys are
the option names of ``python -m enclave`` with ``_`` for ``-``; the host writes the file with
:func:`render_config` (``zerocopy eif build``) and the enclave reads it with :func:`load_config`.
"""

from __future__ import annotations

import tomllib
from typing import Any

__all__ = ["CONFIG_PATH", "CONFIG_FIELDS", "load_config", "render_config"]

CONFIG_PATH = "/etc/zerocopy/enclave.toml"
VMADDR_CID_ANY = 0xFFFFFFFF
# key -> (type, what it is); every key is optional, an absent one keeps the command's default.
CONFIG_FIELDS: dict[str, tuple[type, str]] = {
    "listen": (str, "vsock://CID:PORT the signer listens on"),
    "nsm": (str, "the NSM device"),
    "region": (str, "AWS region of KMS; the enclave reaches only kms.<region>.amazonaws.com"),
    "kms_proxy": (str, "the parent's vsock-proxy towards KMS, vsock://3:PORT"),
    "kms_ca": (str, "CA bundle for KMS's TLS certificate (absent: botocore's public CAs)"),
    "seal_key": (list, "ARNs of the KMS keys GENERATE may seal new keys to (the first is the default)"),
    "busy_poll_us": (int, "microseconds to spin for the next request before sleeping"),
    "max_connections": (int, "connections served at once"),
    "idle_timeout": (float, "seconds before an idle connection is closed"),
    "frame_timeout": (float, "seconds to finish a started frame"),
    "log_level": (str, "DEBUG, INFO, WARNING or ERROR"),
    "loopback_up": (bool, "bring the loopback interface up at start (an enclave boots with it down; the KMS forwarder listens on it)"),
}
MAX_CONFIG_BYTES = 64 * 1024
_ESCAPES = {'"': '\\"', "\\": "\\\\"}


def load_config(text: str | bytes, *, source: str = "the configuration") -> dict[str, Any]:
    """The settings in ``text`` (TOML), checked key by key; ``ValueError`` naming ``source`` and the key."""
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError:
            raise ValueError(f"{source} is not UTF-8 text") from None
    if not isinstance(text, str):
        raise TypeError("text must be str or bytes")
    if len(text) > MAX_CONFIG_BYTES:
        raise ValueError(f"{source} is larger than {MAX_CONFIG_BYTES} bytes")
    try:
        document = tomllib.loads(text)
    except (tomllib.TOMLDecodeError, RecursionError) as exc:
        raise ValueError(f"{source} is not TOML: {exc}") from None
    settings = {}
    for key, value in document.items():
        if key not in CONFIG_FIELDS:
            raise ValueError(f"{source}: unknown setting {key!r} (known: {', '.join(CONFIG_FIELDS)})")
        settings[key] = _checked(key, value, source)
    return settings


def _checked(key: str, value: Any, source: str) -> Any:
    kind, _ = CONFIG_FIELDS[key]
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if kind is int and isinstance(value, bool) or not isinstance(value, kind):
        raise ValueError(f"{source}: {key} must be {kind.__name__}, not {type(value).__name__}")
    if kind is list and not all(isinstance(item, str) for item in value):
        raise ValueError(f"{source}: {key} must be a list of strings")
    return value


def render_config(settings: dict[str, Any], *, port: int | None = None) -> str:
    """TOML for ``settings`` (keys of :data:`CONFIG_FIELDS`, ``None`` values left out), each key
    with its meaning as a comment; ``port`` sets ``listen`` to any CID on that vsock port. What it
    writes, :func:`load_config` reads back to the same settings."""
    if port is not None:
        settings = dict(settings, listen=f"vsock://{VMADDR_CID_ANY}:{port}")
    lines = ["# zerocopy enclave configuration: measured into PCR0 with the image; see enclave/protocol/config.py"]
    for key, value in settings.items():
        if value is None:
            continue
        checked = _checked(key, value, "settings") if key in CONFIG_FIELDS else None
        if checked is None:
            raise ValueError(f"settings: unknown setting {key!r}")
        lines += [f"# {CONFIG_FIELDS[key][1]}", f"{key} = {_toml_value(checked)}"]
    return "\n".join(lines) + "\n"


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(item) for item in value) + "]"
    return '"' + "".join(_ESCAPES.get(char) or (f"\\u{ord(char):04x}" if ord(char) < 0x20 or char == "\x7f" else char) for char in value) + '"'
