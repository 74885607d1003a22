"""What one key's policy remembers between requests: the rate bucket, the notional window and the
verdicts per request shape. Each is bounded in memory whatever the host sends, and takes its own
lock (a key's bucket and window share one: metering an order is one step).

Time is the enclave clock in milliseconds, passed in. The state lives in enclave memory: an enclave
restart refills the bucket and empties the window.
"""

from __future__ import annotations

import threading
from collections import deque
from decimal import Context, Decimal, Inexact, InvalidOperation, Overflow, Rounded
from typing import Any

__all__ = ["TokenBucket", "NotionalWindow", "Verdicts", "WINDOW_BUCKETS", "VERDICT_BYTES", "MAX_REMEMBERED_SHAPES", "EXACT"]

WINDOW_BUCKETS = 4096  # the notional window keeps at most this many sums
VERDICT_BYTES = 1 << 20  # remembered verdicts, per key
MAX_REMEMBERED_SHAPES = 4096
# Amounts are checked decimals (document.DECIMAL: at most 31 digits before the point and 30 after),
# so a notional (quantity × price) has at most 122 significant digits, and a window's total, below
# its cap (at most 31 digits) plus one order, no more. Decimal's default context keeps 28 and
# rounds: 5 × 200.0000000000000000000000001 came to 1000.000000000000000000000000, under a cap of
# 1000. Sizes are multiplied and summed in a context wide enough to be exact, which traps an
# inexact result (none can occur) rather than round it.
EXACT = Context(prec=256, traps=[Inexact, Rounded, InvalidOperation, Overflow])


class TokenBucket:
    """``per_second`` tokens a second, at most ``burst`` saved up; a request takes one."""

    def __init__(self, per_second: Decimal, burst: int, *, lock: Any = None) -> None:
        # Floats are exact enough for a rate limit, and several times cheaper than Decimal here.
        self._per_second = float(per_second)
        self._burst = float(burst)
        self._tokens = self._burst
        self._last_refill_ms: int | None = None
        self.lock = lock if lock is not None else threading.Lock()  # may be shared (with a window: one lock for both)

    def take(self, now_ms: int) -> bool:
        """Take a token; ``False`` (and nothing taken) if the bucket is empty."""
        with self.lock:
            return self.take_locked(now_ms)

    def take_locked(self, now_ms: int) -> bool:
        """:meth:`take`, for a caller that holds :attr:`lock`."""
        last = self._last_refill_ms
        if last is not None and now_ms > last:
            self._tokens = min(self._burst, self._tokens + self._per_second * (now_ms - last) / 1000)
        if last is None or now_ms > last:  # a clock read that is behind refills nothing
            self._last_refill_ms = now_ms
        if self._tokens < 1:
            return False
        self._tokens -= 1
        return True

    def give_back(self) -> None:
        """Return a token taken for a request that another limit then refused."""
        with self.lock:
            self.give_back_locked()

    def give_back_locked(self) -> None:
        self._tokens = min(self._burst, self._tokens + 1)


class NotionalWindow:
    """The notional signed in the last ``seconds``, as at most ``WINDOW_BUCKETS`` sums.

    Orders close in time share a bucket, which leaves the window only when its newest order has:
    the total can only be over-counted (by at most one bucket's span), never under-counted. Time
    is the latest the window has seen: a clock read that is behind (two threads, a stepped clock)
    counts as that time, so nothing that left the window comes back or is missed.
    """

    def __init__(self, seconds: int, *, lock: Any = None) -> None:
        self.span_ms = seconds * 1000
        self.bucket_ms = max(1000, self.span_ms // WINDOW_BUCKETS)
        self._buckets: deque[list] = deque()  # [first_ms, last_ms, sum]
        self._total = Decimal(0)  # kept exact (EXACT): a rounded total could pass an order over the cap
        self._now_ms: int | None = None
        self.lock = lock if lock is not None else threading.Lock()

    def __len__(self) -> int:
        return len(self._buckets)

    def admit(self, now_ms: int, notional: Decimal, limit: Decimal, *, commit: bool = True) -> Decimal | None:
        """Count ``notional`` (if ``commit``) unless it would bring the total above ``limit``; then
        return that total instead, counting nothing. Checked and counted as one step."""
        with self.lock:
            return self.admit_locked(now_ms, notional, limit, commit=commit)

    def admit_locked(self, now_ms: int, notional: Decimal, limit: Decimal, *, commit: bool = True) -> Decimal | None:
        """:meth:`admit`, for a caller that holds :attr:`lock`."""
        # Time is the latest the window has seen (see the class): a reading that is behind counts as that.
        latest = self._now_ms
        now_ms = self._now_ms = now_ms if latest is None or now_ms > latest else latest
        buckets, horizon = self._buckets, now_ms - self.span_ms
        add = EXACT.add
        while buckets and buckets[0][1] <= horizon:
            self._total = EXACT.subtract(self._total, buckets.popleft()[2])
        total = add(self._total, notional)
        if total > limit:
            return total
        if commit:
            last = buckets[-1] if buckets else None
            if last is not None and now_ms < last[0] + self.bucket_ms:  # buckets begin a span apart
                last[1] = now_ms
                last[2] = add(last[2], notional)
            else:
                buckets.append([now_ms, now_ms, notional])
            self._total = total
        return None


class Verdicts:
    """Verdicts remembered per request shape, bounded in entries and in (estimated) bytes.

    Full, it forgets the oldest shapes: a host cycling through junk shapes costs the bot a
    recomputation (microseconds), never memory. Lookups take no lock (a dict read is atomic).
    """

    def __init__(self, *, max_entries: int = MAX_REMEMBERED_SHAPES, max_bytes: int = VERDICT_BYTES) -> None:
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self.bytes = 0
        self._entries: dict[tuple, tuple[Any, int]] = {}
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, shape: tuple) -> Any:
        entry = self._entries.get(shape)
        return None if entry is None else entry[0]

    def remember(self, shape: tuple, verdict: Any, cost: int) -> None:
        if cost > self.max_bytes:
            return
        with self._lock:
            if shape in self._entries:
                return
            while self._entries and (len(self._entries) >= self.max_entries or self.bytes + cost > self.max_bytes):
                self.bytes -= self._entries.pop(next(iter(self._entries)))[1]
            self._entries[shape] = (verdict, cost)
            self.bytes += cost
