"""Many concurrent clients, each a ``Signer`` placing Binance orders in a loop, from load-generator
processes of their own (never the enclave's process, never this one: a load generator in the
measuring process would time its own GIL).

Every client records each ``sign_request``'s round trip; the figures are the total rate, p50 and
p99 over all requests, and the spread of the clients' own p99s (the worst client's p99 over the
median client's): a server that serves some connections and starves others shows there.
"""

from __future__ import annotations

import contextlib
import json
import os
import statistics
import subprocess
import sys

_GENERATOR = """\
import json, sys, threading, time
from zerocopy import Signer
job = json.loads(sys.argv[1])
params = [tuple(pair) for pair in job["params"]]
latencies = [[] for _ in range(job["clients"])]
signers = [Signer(job["address"], timeout=30) for _ in range(job["clients"])]
start = threading.Barrier(job["clients"] + 1)

def client(index):
    signer, samples, clock = signers[index], latencies[index], time.perf_counter_ns
    start.wait()
    deadline = time.monotonic() + job["seconds"]
    while time.monotonic() < deadline:
        began = clock()
        signer.sign_request(job["key"], "POST", "/api/v3/order", params=params)
        samples.append((clock() - began) // 1000)

threads = [threading.Thread(target=client, args=(index,)) for index in range(job["clients"])]
for thread in threads:
    thread.start()
print("connected", flush=True)
sys.stdin.readline()  # go
start.wait()
for thread in threads:
    thread.join()
for signer in signers:
    signer.close()
print(json.dumps(latencies), flush=True)
"""


def concurrent_clients(address: str, key: str, params: list, *, clients: int, processes: int, seconds: float, cpus: set[int] | None) -> dict:
    """``clients`` Signers spread over ``processes`` load generators (pinned to ``cpus`` if
    given), all signing for ``seconds`` at once: the figures of the module docstring."""
    shares = [clients // processes + (index < clients % processes) for index in range(processes)]
    generators: list[subprocess.Popen] = []
    try:
        for share in filter(None, shares):
            job = json.dumps({"address": address, "key": key, "params": params, "clients": share, "seconds": seconds})
            generator = subprocess.Popen([sys.executable, "-c", _GENERATOR, job], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
            generators.append(generator)
            if cpus:
                with contextlib.suppress(ProcessLookupError):
                    os.sched_setaffinity(generator.pid, cpus)
        for generator in generators:
            if generator.stdout.readline() != "connected\n":
                raise RuntimeError("a load generator could not connect its clients")
        for generator in generators:  # all at once
            generator.stdin.write("go\n")
            generator.stdin.flush()
        per_client = [latencies for generator in generators for latencies in json.loads(generator.stdout.readline())]
        for generator in generators:
            generator.wait(timeout=60)
    finally:
        for generator in generators:
            if generator.poll() is None:
                generator.kill()
                generator.wait()
            for pipe in (generator.stdin, generator.stdout):
                pipe.close()
    return client_figures(per_client, seconds)


def _percentile(ordered: list[int], fraction: float) -> float:
    return float(ordered[min(len(ordered) - 1, int(len(ordered) * fraction))])


def client_figures(per_client: list[list[int]], seconds: float) -> dict:
    """Rate, p50/p99 (µs) over every request, and the spread of the clients' p99s."""
    everything = sorted(latency for latencies in per_client for latency in latencies)
    if not everything or not all(per_client):
        raise RuntimeError("a client signed nothing in the time given")
    client_p99s = sorted(_percentile(sorted(latencies), 0.99) for latencies in per_client)
    return {
        "clients": len(per_client),
        "requests": len(everything),
        "requests_per_second": len(everything) / seconds,
        "p50_us": _percentile(everything, 0.5),
        "p99_us": _percentile(everything, 0.99),
        "client_p99_median_us": statistics.median(client_p99s),
        "client_p99_worst_us": client_p99s[-1],
        "client_p99_spread": client_p99s[-1] / statistics.median(client_p99s),
    }
