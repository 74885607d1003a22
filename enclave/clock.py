"""The enclave's clock. Only policy freshness checks and receipts read it.

On Nitro the enclave's clock is kvm-clock, which the host cannot set; there is no message to set
it. For tests the emulator may launch the enclave with a pinned or offset clock — a launch option,
so it is part of the measured command line and shows in PCR0.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime

__all__ = ["Clock", "parse_clock"]


@dataclass(frozen=True)
class Clock:
    offset_ms: int = 0
    fixed_ms: int | None = None

    def now_ms(self) -> int:
        if self.fixed_ms is not None:
            return self.fixed_ms
        return time.time_ns() // 1_000_000 + self.offset_ms

    def __str__(self) -> str:
        if self.fixed_ms is not None:
            return f"fixed:{self.fixed_ms}"
        return f"offset:{self.offset_ms / 1000:g}" if self.offset_ms else "system"


def parse_clock(spec: str) -> Clock:
    """``system``, ``fixed:<ms since epoch | ISO 8601 with zone>`` or ``offset:<seconds>``."""
    kind, _, value = spec.partition(":")
    try:
        if kind == "system" and not value:
            return Clock()
        if kind == "fixed":
            if value.isdigit():
                return Clock(fixed_ms=int(value))
            moment = datetime.fromisoformat(value)
            if moment.tzinfo is None:
                raise ValueError("needs a time zone")
            return Clock(fixed_ms=int(moment.timestamp() * 1000))
        if kind == "offset":
            return Clock(offset_ms=round(float(value) * 1000))
    except (ValueError, OverflowError) as exc:  # offset:inf overflows
        raise ValueError(f"clock {spec!r}: {exc}") from None
    raise ValueError(f"clock {spec!r} must be 'system', 'fixed:<ms or ISO time>' or 'offset:<seconds>'")
