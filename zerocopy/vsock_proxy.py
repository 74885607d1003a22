"""The parent instance's ``vsock-proxy`` allowlist: the one service the enclave may reach, KMS.

AWS's ``vsock-proxy`` (aws-nitro-enclaves-cli, ``vsock_proxy/``) refuses to start unless its
target ``<remote_addr> <remote_port>`` is listed in a YAML config file (``--config``, by default
``/etc/nitro_enclaves/vsock-proxy.yaml``)::

    allowlist:
    - {address: kms.us-east-1.amazonaws.com, port: 443}

The enclave only ever CONNECTs to ``kms.<region>.amazonaws.com:443`` (``enclave.kms.KmsSettings``),
so this module writes a file that allows exactly that, in the line format of the example config
AWS ships. It writes the YAML by hand: the host package does not depend on a YAML library, and
every value is checked to be one that any YAML parser reads back as the same string or integer.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from .errors import AllowlistConfigError

__all__ = [
    "AllowlistConfigError",
    "DEFAULT_CONFIG_PATH",
    "DEFAULT_PROXY_PORT",
    "KMS_PORT",
    "allowlist_yaml",
    "kms_allowlist",
    "kms_host",
    "proxy_command",
]

DEFAULT_CONFIG_PATH = "/etc/nitro_enclaves/vsock-proxy.yaml"  # the real proxy's --config default
DEFAULT_PROXY_PORT = 8000  # the vsock port the enclave's --kms-proxy points at
KMS_PORT = 443

_REGION = re.compile(r"[a-z]{2}(-[a-z]+)+-\d{1,2}")  # as enclave.kms.KmsSettings checks it
_LABEL = r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?"
# A DNS name whose last label starts with a letter, or a dotted-quad IPv4 address: neither can be
# read by YAML as a number, boolean, null or date, so a plain (unquoted) scalar stays a string.
_HOST_NAME = re.compile(rf"(?:{_LABEL}\.)+[a-z](?:[a-z0-9-]{{0,61}}[a-z0-9])?")
_IPV4 = re.compile(r"(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)(?:\.(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)){3}")


def kms_host(region: str) -> str:
    """The KMS endpoint of ``region`` that the enclave connects to."""
    if not _REGION.fullmatch(region):
        raise AllowlistConfigError(f"{region!r} is not an AWS region name")
    return f"kms.{region}.amazonaws.com"


def allowlist_yaml(endpoints: Iterable[tuple[str, int]]) -> str:
    """A vsock-proxy config file allowing exactly ``endpoints`` (``(address, port)`` pairs)."""
    lines = ["allowlist:"]
    for address, port in endpoints:
        _check_endpoint(address, port)
        lines.append(f"- {{address: {address}, port: {port}}}")
    if len(lines) == 1:
        raise AllowlistConfigError("an allowlist needs at least one endpoint")
    return "\n".join(lines) + "\n"


def kms_allowlist(region: str) -> str:
    """The config file for a parent instance whose enclave uses KMS in ``region``."""
    return allowlist_yaml([(kms_host(region), KMS_PORT)])


def proxy_command(region: str, config_path: str = DEFAULT_CONFIG_PATH, *, vsock_port: int = DEFAULT_PROXY_PORT) -> str:
    """How to start AWS's vsock-proxy with that file (the arguments of its systemd unit)."""
    return f"vsock-proxy {vsock_port} {kms_host(region)} {KMS_PORT} --config {config_path}"


def _check_endpoint(address: object, port: object) -> None:
    if not isinstance(address, str) or not (_HOST_NAME.fullmatch(address) or _IPV4.fullmatch(address)) or len(address) > 253:
        raise AllowlistConfigError(f"{address!r} is not a lower-case host name or an IPv4 address")
    # bool is an int in Python; YAML would write it as true/false, which the proxy rejects as a port
    if not isinstance(port, int) or isinstance(port, bool) or not 1 <= port <= 65535:
        raise AllowlistConfigError(f"{port!r} is not a TCP port")
