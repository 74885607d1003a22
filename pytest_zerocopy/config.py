"""Plugin settings: each is a command-line flag and an ini key, resolved once."""

from __future__ import annotations

from typing import Any, TypedDict

__all__ = ["ZeroCopyConfig", "get_config", "check_config", "SETTINGS"]

# name: (flag, ini key, help, kind)
SETTINGS: dict[str, tuple[str, str, str, str]] = {
    "enabled": ("--zerocopy", "zerocopy", "Start the ZeroCopy emulator (once per session, on first use) for tests marked 'zerocopy' or using its fixtures.", "bool"),
    "enclave": ("--zerocopy-enclave", "zerocopy_enclave", "Use the enclave already running at this address (vsock://, unix://, tcp://) instead of starting the emulator.", "string"),
    "debug": ("--zerocopy-debug", "zerocopy_debug", "Launch the emulated enclave in debug mode (all-zero PCR0-2).", "bool"),
    "clock": ("--zerocopy-clock", "zerocopy_clock", "Launch the emulated enclave with this clock: system, fixed:<ms|ISO> or offset:<seconds>.", "string"),
}


class ZeroCopyConfig(TypedDict):
    enabled: bool
    enclave: str | None
    debug: bool
    clock: str | None


def get_config(config: Any) -> ZeroCopyConfig:
    values: dict[str, Any] = {}
    for name, (flag, ini, _help, kind) in SETTINGS.items():
        value = config.getoption(name="zerocopy_" + name if name != "enabled" else "zerocopy")
        if value in (None, False):
            raw = config.getini(ini)
            value = raw if kind == "bool" else (raw or None)
        values[name] = value
    return ZeroCopyConfig(
        enabled=bool(values["enabled"]),
        enclave=values["enclave"],
        debug=bool(values["debug"]),
        clock=values["clock"],
    )


def check_config(settings: ZeroCopyConfig) -> None:
    """Refuse at startup, as one usage error, a setting the emulated enclave would refuse at each launch."""
    import pytest

    if settings["clock"] is not None:
        from enclave.clock import parse_clock

        try:
            parse_clock(settings["clock"])
        except ValueError as exc:
            raise pytest.UsageError(f"--zerocopy-clock (ini zerocopy_clock): {exc}; give system, fixed:<ms since the epoch or ISO time with a zone> or offset:<seconds>") from None
