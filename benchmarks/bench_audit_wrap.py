"""The audit log's cost per receipt while its buffer fills, wraps around and stays full.

Run: ``.venv/bin/python benchmarks/bench_audit_wrap.py [--receipts N] [--capacity N] [--json]``

Records ``N`` receipts (default three times the enclave's 65,536) into one ``AuditLog`` in this
process, timing each ``record`` (what a signature pays for its receipt, lock included), and
reports p50, p99, p99.99 and the worst, each also as a ratio to p50, for the receipts before the
buffer was full and for those after. Receipts used to be hashed in batches: one request after
65,536 unfetched receipts took 0.4-0.6 s, every 256th a few milliseconds, and every one past the
wrap-around about 6.7 µs more.

On a shared machine the tail is the scheduler's as much as the log's (a process preempted for a
tick, 4 ms here, lands in whichever sample was running), so the same run also times a floor: the
least a receipt can cost, one SHA-256 of a receipt-sized line, as many times. Compare the log's
tail with the floor's, not with zero.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey  # noqa: E402

from enclave.audit import AuditLog  # noqa: E402


def time_records(log: AuditLog, count: int) -> list[int]:
    """Nanoseconds each of ``count`` receipts took to record (a signed order's typical fields)."""
    clock, samples = time.perf_counter_ns, []
    for index in range(count):
        started = clock()
        log.record(1_700_000_000_000 + index, "binance-main", "signed", "", "POST /api/v3/order", "ab" * 32, symbol="BTCUSDT", quantity="0.01", notional="300")
        samples.append(clock() - started)
    return samples


def time_floor(count: int) -> list[int]:
    """Nanoseconds each of ``count`` hashes of a receipt-sized line took: the machine's floor."""
    clock, samples, line = time.perf_counter_ns, [], b"x" * 300
    for _ in range(count):
        started = clock()
        hashlib.sha256(line).hexdigest()
        samples.append(clock() - started)
    return samples


def summary(samples_ns: list[int]) -> dict[str, float]:
    ordered = sorted(samples_ns)

    def at(fraction: float) -> float:
        return ordered[min(len(ordered) - 1, int(len(ordered) * fraction))] / 1000

    p50 = at(0.5)
    figures = {"count": len(ordered), "p50_us": p50, "p99_us": at(0.99), "p99_99_us": at(0.9999), "max_us": ordered[-1] / 1000}
    figures.update(p99_99_to_p50=figures["p99_99_us"] / p50, max_to_p50=figures["max_us"] / p50)
    return {name: round(value, 2) for name, value in figures.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--capacity", type=int, default=65536, help="the audit buffer's size (the enclave's: 65,536)")
    parser.add_argument("--receipts", type=int, default=3 * 65536, help="receipts to record (default: three buffers)")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args(argv)
    log = AuditLog(Ed25519PrivateKey.generate(), capacity=args.capacity)
    samples = time_records(log, args.receipts)
    report = {
        "capacity": args.capacity,
        "filling": summary(samples[: args.capacity]),
        "full": summary(samples[args.capacity :]) if args.receipts > args.capacity else None,
        "dropped": log.dropped,
        "floor": summary(time_floor(args.receipts)),
    }
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        for phase in ("filling", "full", "floor"):
            figures = report[phase]
            if figures:
                print(
                    f"{phase:8} n={figures['count']:<7} p50 {figures['p50_us']:.1f} µs  p99 {figures['p99_us']:.1f} µs  "
                    f"p99.99 {figures['p99_99_us']:.1f} µs ({figures['p99_99_to_p50']:.1f}× p50)  worst {figures['max_us']:.0f} µs ({figures['max_to_p50']:.0f}× p50)"
                )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
