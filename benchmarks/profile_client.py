"""The client's own cost of one ``Signer.sign`` and ``Signer.sign_request``, with no enclave to wait for.

Run: ``.venv/bin/python benchmarks/profile_client.py [--calls N] [--strace] [--cprofile] [--json]``

A ``Signer`` talks to a Unix socket whose other end is this process: before each call the answer
to the request id the call will use is already written to the socket, so the call sends, finds its
answer waiting and returns — no wake-up, no server Python, only the client's plumbing (arguments,
the lock, the deadline, encoding, the system calls, parsing the answer). The figure includes the
harness's own write of the answer and read of the request (``harness_us``, timed alone on a socket
pair). ``--strace`` runs the same loop under ``strace -c -f`` and reports system calls per call
(the harness's own: one ``sendto`` and one ``recvfrom`` per call, included);
``--cprofile`` prints the top functions. On these shared machines compare figures from one run.
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import json
import os
import pstats
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator

from enclave.protocol import Connection, HttpSignature, Role, Signature
from zerocopy import Signer

PARAMS = [("symbol", "LTCBTC"), ("side", "BUY"), ("type", "LIMIT"), ("timeInForce", "GTC"), ("quantity", "1"), ("price", "0.1"), ("recvWindow", "5000"), ("timestamp", "1499827319559")]
RAW_PAYLOAD = "&".join(map("=".join, PARAMS)).encode()
WARMUP = 2000


def answers(kind: str, count: int) -> list[bytes]:
    """The enclave's answers to request ids 1..count, as a server connection frames them."""
    conn = Connection(Role.SERVER)
    query = "&".join(map("=".join, PARAMS)) + "&signature=" + "0" * 64
    if kind == "sign":
        return [conn.send(Signature(request_id, bytes(32))) for request_id in range(1, count + 1)]
    return [conn.send(HttpSignature(request_id, query, b"", (("X-MBX-APIKEY", "bench"),))) for request_id in range(1, count + 1)]


@contextlib.contextmanager
def connected(kind: str) -> Iterator[tuple[socket.socket, Callable[[], object]]]:
    """The server end of a Signer's connection, and the call to make on that Signer."""
    directory = tempfile.mkdtemp(prefix="zc-client-")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        listener.bind(os.path.join(directory, "s.sock"))
        listener.listen(1)
        with Signer(f"unix://{directory}/s.sock") as signer:
            server, _ = listener.accept()
            with server:
                if kind == "sign":
                    yield server, lambda: signer.sign("raw", RAW_PAYLOAD)
                else:
                    yield server, lambda: signer.sign_request("binance", "POST", "/api/v3/order", params=PARAMS)
    finally:
        listener.close()
        shutil.rmtree(directory, ignore_errors=True)


def per_call_us(kind: str, calls: int, profiler: cProfile.Profile | None = None) -> float:
    """µs per call (the best of five loops), each call's answer written before it is made."""
    with connected(kind) as (server, call):
        return _timed(server, call, answers(kind, WARMUP + 5 * calls), calls, profiler)


def _timed(server: socket.socket, call: Callable[[], object], frames: list[bytes], calls: int, profiler: cProfile.Profile | None) -> float:
    frames_left = iter(frames)

    def loop(count: int) -> int:
        start = time.perf_counter_ns()
        for _ in range(count):
            server.send(next(frames_left))
            call()
            server.recv(65536)
        return time.perf_counter_ns() - start

    loop(WARMUP)
    if profiler is not None:
        profiler.enable()
    best = min(loop(calls) for _ in range(5))
    if profiler is not None:
        profiler.disable()
    return best / calls / 1000


def harness_us(kind: str, calls: int) -> float:
    """The harness alone: the answer written and read, a request's worth written and read."""
    frame, request = answers(kind, 1)[0], bytes(200 if kind == "sign_request" else 130)
    first, second = socket.socketpair()
    with first, second:
        start = time.perf_counter_ns()
        for _ in range(calls):
            first.send(frame)
            second.recv(65536)
            second.send(request)
            first.recv(65536)
        return (time.perf_counter_ns() - start) / calls / 1000


def syscalls_per_call(kind: str, calls: int) -> dict[str, float] | None:
    """System calls per call, from ``strace -c -f`` over this script's loop (None: no strace)."""
    if shutil.which("strace") is None:
        return None
    with tempfile.NamedTemporaryFile("r", suffix=".strace") as out:
        counts = []
        for count in (calls, 2 * calls):  # the difference leaves out start-up and the warm-up
            command = ["strace", "-c", "-f", "-o", out.name, sys.executable, __file__, "--only", kind, "--calls", str(count), "--loops", "1"]
            subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
            out.seek(0)
            counts.append(_strace_counts(out.read()))
    return {name: round((counts[1].get(name, 0) - counts[0].get(name, 0)) / calls, 2) for name in counts[1] if counts[1][name] - counts[0].get(name, 0) > calls // 10}


def _strace_counts(summary: str) -> dict[str, int]:
    counts = {}
    for line in summary.splitlines():
        fields = line.split()
        if len(fields) >= 5 and fields[3].isdigit() and fields[-1] != "total":
            counts[fields[-1]] = int(fields[3])
    return counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=4000)
    parser.add_argument("--strace", action="store_true", help="also count system calls per call (strace -c -f)")
    parser.add_argument("--cprofile", action="store_true")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--only", choices=("sign", "sign_request"), help=argparse.SUPPRESS)  # one plain loop, for strace
    parser.add_argument("--loops", type=int, default=5, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.only:
        return _plain_loop(args.only, args.calls)
    profiler = cProfile.Profile() if args.cprofile else None
    figures = {kind: {"per_call_us": round(per_call_us(kind, args.calls, profiler), 2), "harness_us": round(harness_us(kind, args.calls), 2),
                      "syscalls_per_call": syscalls_per_call(kind, args.calls) if args.strace else None} for kind in ("sign", "sign_request")}  # fmt: skip
    print(json.dumps(figures, indent=2) if args.json else "\n".join(f"{kind:13s} {figure}" for kind, figure in figures.items()))
    if profiler is not None:
        pstats.Stats(profiler).sort_stats("tottime").print_stats(20)


def _plain_loop(kind: str, calls: int) -> None:
    """``calls`` calls after the warm-up, nothing else (what ``syscalls_per_call`` traces)."""
    with connected(kind) as (server, call):
        for frame in answers(kind, WARMUP + calls):
            server.send(frame)
            call()
            server.recv(65536)


if __name__ == "__main__":
    main()
