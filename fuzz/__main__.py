"""``python -m fuzz``: throw mutated and random inputs at every parser of untrusted bytes.

For each target it reports the inputs tried, how many were accepted, how many got the target's
typed error, how many crashed (anything else: an untyped exception, a 5xx from the KMS front, or
an input that took longer than ``--hang-seconds``) and the slowest input. Crashing inputs are
written to ``--crashes DIR`` to reproduce them. Exit status 1 if anything crashed.

    python -m fuzz                      # every target, 10,000 inputs each
    python -m fuzz --inputs 500 cbor frames --seed 7
"""

from __future__ import annotations

import argparse
import logging
import random
import signal
import sys
import time
import traceback
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

from .targets import TARGETS, Harness, Target


class _Hang(Exception):
    """An input took longer than the hang limit."""


@dataclass
class Result:
    target: str
    inputs: int = 0
    accepted: int = 0
    typed: int = 0
    crashes: list[str] = field(default_factory=list)
    slowest: float = 0.0
    seconds: float = 0.0


def fuzz(target: Target, harness: Harness, *, inputs: int, seed: int, hang_seconds: float, crashes_dir: Path) -> Result:
    rnd = random.Random(f"{seed}:{target.name}")
    result = Result(target.name)
    started = time.perf_counter()
    previous = signal.signal(signal.SIGALRM, _raise_hang)  # the hang limit interrupts a stuck input
    try:
        for index in range(inputs):
            data = harness.generate(rnd)
            took, problem = _one(target, harness, data, hang_seconds)
            result.inputs += 1
            result.slowest = max(result.slowest, took)
            if problem is None:
                result.accepted += 1
            elif problem == "typed":
                result.typed += 1
            else:
                result.crashes.append(f"{_save(crashes_dir, target.name, index, data)}: {problem}")
    finally:
        signal.signal(signal.SIGALRM, previous)
    result.seconds = time.perf_counter() - started
    return result


def _one(target: Target, harness: Harness, data: bytes, hang_seconds: float) -> tuple[float, str | None]:
    """(seconds, None if accepted | "typed" | a description of the crash)."""
    start = time.perf_counter()
    signal.setitimer(signal.ITIMER_REAL, hang_seconds)
    try:
        outcome = harness.run(data)
        problem = harness.crashed(outcome)
    except _Hang:
        problem = f"took longer than {hang_seconds} s"
    except target.typed:
        problem = "typed"
    except Exception as exc:  # the point: anything untyped is a finding
        problem = f"{type(exc).__name__}: {str(exc)[:200]} at {_where(exc)}"
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
    return time.perf_counter() - start, problem


def _where(exc: BaseException) -> str:
    frames = traceback.extract_tb(exc.__traceback__)
    last = frames[-1] if frames else None
    return f"{Path(last.filename).name}:{last.lineno}" if last else "?"


def _save(directory: Path, name: str, index: int, data: bytes) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{name}-{index}.bin"
    path.write_bytes(data)
    return path


def _raise_hang(signum: int, frame: object) -> None:
    raise _Hang()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fuzz", description=__doc__.split("\n\n")[0])
    parser.add_argument("targets", nargs="*", metavar="TARGET", help=f"targets to run (default: all): {', '.join(t.name for t in TARGETS)}")
    parser.add_argument("--inputs", type=int, default=10_000, help="inputs per target (default 10000)")
    parser.add_argument("--seed", type=int, default=0, help="random seed; the same seed replays the same inputs")
    parser.add_argument("--hang-seconds", type=float, default=5.0, help="an input slower than this counts as a crash")
    parser.add_argument("--crashes", type=Path, default=Path("fuzz-crashes"), help="where crashing inputs are written")
    args = parser.parse_args(argv)
    chosen = [t for t in TARGETS if not args.targets or t.name in args.targets]
    unknown = set(args.targets) - {t.name for t in TARGETS}
    if unknown:
        parser.error(f"unknown target(s): {', '.join(sorted(unknown))}")
    results = []
    print(f"{'target':<14} {'inputs':>7} {'accepted':>9} {'typed errors':>13} {'crashes':>8} {'slowest':>10} {'total':>8}")
    logging.disable(logging.CRITICAL)  # targets log what they refuse; the table says it all
    try:
        for target in chosen:
            with ExitStack() as stack:
                harness = target.open(stack)
                result = fuzz(target, harness, inputs=args.inputs, seed=args.seed, hang_seconds=args.hang_seconds, crashes_dir=args.crashes)
            results.append(result)
            print(f"{result.target:<14} {result.inputs:>7} {result.accepted:>9} {result.typed:>13} {len(result.crashes):>8} {result.slowest * 1000:>8.1f}ms {result.seconds:>7.1f}s", flush=True)
    finally:
        logging.disable(logging.NOTSET)
    crashes = [line for result in results for line in result.crashes]
    for line in crashes[:50]:
        print(f"CRASH {line}", file=sys.stderr)
    print(f"{sum(r.inputs for r in results)} inputs, {len(crashes)} crashes", file=sys.stderr)
    return 1 if crashes else 0


if __name__ == "__main__":
    sys.exit(main())
