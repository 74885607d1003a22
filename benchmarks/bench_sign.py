"""Sign round-trip latency and throughput on the emulator, as ratios to a floor run the same way.

Run: ``.venv/bin/python benchmarks/bench_sign.py [--samples N] [--json] [--no-flood]``

Each floor is a separate process echoing the same number of bytes over the same kind of socket
(a Unix socket, which is what emulated vsock is), measured in the same run: these machines are
shared and noisy, so only the ratios are comparable between runs. On Nitro, vsock dominates and
the absolute figures differ. There are two floors, one per way of waiting, and each series is a
ratio to its own (``*_over_floor_p50``):

* blocking mode — the enclave and the client sleep in ``recv`` between requests, and so does the
  ``echo`` floor: every round trip pays two CPU wake-ups;
* spinning mode — the enclave busy-polls (``--busy-poll-us 100``, what the EIF's Dockerfile runs)
  and the client spins (``Signer(busy_poll_us=100)``); the ``echo_spinning`` floor's server and
  client spin the same 100 µs. No wake-ups: what is left is the Python on both ends.

A spinning signer compared with a sleeping echo can come out "faster than the floor" (0.78×): it
saves the wake-ups the echo still pays. That comparison says nothing; this one does.

Series:

* ``sign`` / ``sign_request``: a plain (unattested) connection, blocking mode.
* ``sign_attested`` / ``sign_request_attested``: a ``Signer(expected_pcrs=…, roots=…)``; on an
  enclave that speaks attested sessions every frame is sealed (AES-256-GCM, both directions), so
  the ratio to the plain series is what the session costs per request.
* ``*_spinning``: the same four in spinning mode, against the same image launched with
  ``--busy-poll-us 100``.
* ``gathered_async_signs_per_second``: an ``AsyncSigner`` with 100 ``sign`` calls gathered at a
  time on one connection, next to ``sign_many``'s pipelined rate.
* ``flood``: sign latency from a separate client process while 8 connections from another process
  keep provisioning (every PROVISION a real KMS Decrypt through the emulated KMS), next to the
  same client process with no flood. Reports the p99 ratio flood/quiet and what the flooders got.
* ``audit flood``: the same while 8 connections fetch full audit pages (``AUDIT {after: 0,
  limit: 5000}``, 512 KiB each, from a full buffer of 65,536 receipts) as fast as the enclave
  answers them; the flooders read raw frames without decoding, so the client side stays cheap.
  Reports the p50 and p99 ratios flood/quiet. Before the audit lane had its share of the time
  (``enclave.server.AUDIT_SHARE``) they were about 12× and 30× here (the review measured p99
  0.56 → 22.6 ms with flooders and client in one process); with it, about 1× and 3–10×.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import time

BINANCE_PARAMS = [
    ("symbol", "LTCBTC"), ("side", "BUY"), ("type", "LIMIT"), ("timeInForce", "GTC"),
    ("quantity", "1"), ("price", "0.1"), ("recvWindow", "5000"), ("timestamp", "1499827319559"),
]
RAW_PAYLOAD = b"symbol=LTCBTC&side=BUY&type=LIMIT&timeInForce=GTC&quantity=1&price=0.1&recvWindow=5000&timestamp=1499827319559"
FLOOD_CONNECTIONS = 8

# A client in its own process (the emulator's KMS front runs as threads of this one, and a flood
# of provisioning keeps them busy: a client here would time its own GIL, not the enclave).
_MEASURE = """\
import json, sys
from zerocopy import Signer
from zerocopy._latency import time_calls
address, key, samples = sys.argv[1], sys.argv[2], int(sys.argv[3])
with Signer(address) as signer:
    measured = time_calls(lambda: signer.sign(key, b"flood-probe"), samples)
print(json.dumps({"p50_us": measured.p50_us, "p99_us": measured.p99_us, "count": measured.count}))
"""

_FLOOD = """\
import json, socket, sys, threading
from zerocopy import Signer, ZeroCopyError
from zerocopy.errors import EnclaveBusy
job = json.loads(sys.stdin.readline())
stop = threading.Event()
counts = {"provisioned": 0, "fetched": 0, "busy": 0, "other_errors": 0}
lock = threading.Lock()
ready = threading.Barrier(job["connections"] + 1)

def provision(signer):
    try:
        signer.provision([job["bundle"].encode()], credentials=job["credentials"])
        return "provisioned"
    except EnclaveBusy:
        return "busy"
    except ZeroCopyError:
        return "other_errors"

def read_exactly(sock, count):
    parts = []
    while count:
        part = sock.recv(min(count, 1 << 20))
        if not part:
            raise ConnectionError("closed")
        parts.append(part)
        count -= len(part)
    return b"".join(parts)

AUDIT = bytes.fromhex(job.get("audit_frame", ""))

def fetch(sock):  # raw: what a host flooding the enclave would do, without the cost of decoding
    sock.sendall(AUDIT)
    header = read_exactly(sock, 10)
    read_exactly(sock, int.from_bytes(header[:4], "big"))
    return "fetched" if header[5] == 0x93 else "busy"

def flood():
    if job["kind"] == "audit":
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.connect(job["address"].removeprefix("unix://"))
        ready.wait()
        with sock:
            while not stop.is_set():
                outcome = fetch(sock)
                with lock:
                    counts[outcome] += 1
        return
    with Signer(job["address"]) as signer:
        ready.wait()
        while not stop.is_set():
            outcome = provision(signer)
            with lock:
                counts[outcome] += 1

threads = [threading.Thread(target=flood) for _ in range(job["connections"])]
for thread in threads:
    thread.start()
ready.wait()
print("flooding", flush=True)
sys.stdin.readline()  # until the benchmark says stop
stop.set()
for thread in threads:
    thread.join()
print(json.dumps({name: count for name, count in counts.items() if count or name in ("busy", "other_errors")}), flush=True)
"""


def _measure_in_subprocess(address: str, key: str, samples: int, cpus: set[int] | None) -> dict:
    process = subprocess.Popen([sys.executable, "-c", _MEASURE, address, key, str(samples)], stdout=subprocess.PIPE, text=True)
    if cpus:
        with contextlib.suppress(ProcessLookupError):
            os.sched_setaffinity(process.pid, cpus)
    out, _ = process.communicate(timeout=600)
    if process.returncode:
        raise RuntimeError("the measuring client failed")
    return json.loads(out)


def provision_flood(emulator, bundle: bytes, samples: int, client_cpus: set[int] | None) -> dict:
    """Sign latency from a fresh process, quiet and then under a flood of PROVISION."""
    job = {"kind": "provision", "address": emulator.address, "bundle": bundle.decode(), "credentials": emulator.credentials}
    return _flooded(emulator, job, samples, client_cpus)


def audit_flood(emulator, signer, samples: int, client_cpus: set[int] | None) -> dict:
    """Sign latency from a fresh process, quiet and then while 8 connections fetch full audit
    pages; ``signer`` first fills the enclave's audit buffer (65,536 receipts and more)."""
    from enclave.protocol import Connection, ControlRequest, MessageType, Role

    for _ in range(70):
        signer.sign_many([("raw", RAW_PAYLOAD)] * 1000)
    frame = Connection(Role.CLIENT).send(ControlRequest(1, MessageType.AUDIT, {"after": 0, "limit": 5000}))
    job = {"kind": "audit", "address": emulator.address, "audit_frame": frame.hex()}
    return _flooded(emulator, job, samples, client_cpus)


def _flooded(emulator, job: dict, samples: int, client_cpus: set[int] | None) -> dict:
    quiet = _measure_in_subprocess(emulator.address, "raw", samples, client_cpus)
    flooder = subprocess.Popen([sys.executable, "-c", _FLOOD], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        if client_cpus:
            with contextlib.suppress(ProcessLookupError):
                os.sched_setaffinity(flooder.pid, client_cpus)
        assert flooder.stdin is not None and flooder.stdout is not None
        flooder.stdin.write(json.dumps({**job, "connections": FLOOD_CONNECTIONS}) + "\n")
        flooder.stdin.flush()
        flooder.stdout.readline()  # "flooding"
        time.sleep(1.0)  # let every flooder get a request in
        flooded = _measure_in_subprocess(emulator.address, "raw", samples, client_cpus)
        flooder.stdin.write("stop\n")
        flooder.stdin.flush()
        counts = json.loads(flooder.stdout.readline())
        flooder.wait(timeout=120)
    finally:
        if flooder.poll() is None:
            flooder.kill()
            flooder.wait()
    return {"quiet": quiet, "flooded": flooded, "flooders": counts}


#: How long the spinning mode's enclave, client and echo floor each spin before sleeping.
BUSY_POLL_US = 100
MODES = ("", "_spinning")  # blocking, spinning: each with its own echo floor
SIGNER_SERIES = ("sign", "sign_request", "sign_attested", "sign_request_attested")
SERIES = tuple(name + mode for mode in MODES for name in ("echo", *SIGNER_SERIES))
PLAIN_SERIES = ("sign", "sign_request", "sign_spinning", "sign_request_spinning")
LABELS = {"echo": "echo floor, blocking", "sign": "sign (raw HMAC)", "sign_request": "sign_request (Binance)",
          "sign_attested": "sign, attested session", "sign_request_attested": "sign_request, attested"}
LABELS.update({name + "_spinning": label.replace("echo floor, blocking", "echo floor") + ", spinning" for name, label in LABELS.items()})


def floor_of(series: str) -> str:
    """The floor a series is measured against: the echo that waits the same way."""
    return "echo_spinning" if series.endswith("_spinning") else "echo"


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=5000)
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds; the median round is reported")
    parser.add_argument("--flood-samples", type=int, default=2000)
    parser.add_argument("--no-flood", action="store_true", help="skip the provisioning- and audit-flood scenarios")
    parser.add_argument("--json", action="store_true")
    return parser.parse_args()


def main() -> int:
    args = parse_args()
    measured = measure(args)
    if measured is None:
        return 1
    report = build_report(**measured)
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print_report(report, measured["medians"])
    return 0


def bench_bundles(emulator) -> list[bytes]:
    from zerocopy.sealing import seal

    key_arn = emulator.kms.create_key()["KeyMetadata"]["Arn"]
    return [
        seal(emulator.kms, key_id=key_arn, name="raw", scheme="hmac-sha256", secret=b"k" * 64).to_json(),
        seal(emulator.kms, key_id=key_arn, name="binance", scheme="binance-hmac", secret=b"k" * 64, api_key="bench",
             policy={"freshness": {"enabled": False}, "rate": {"per_second": "100000", "burst": 100000}}).to_json(),
    ]


def measure(args: argparse.Namespace, emulator=None) -> dict | None:
    """Every series, measured on ``emulator`` (one of its own if None): the figures
    ``build_report`` takes, or None if provisioning failed. Loads the keys ``raw`` and
    ``binance`` into its main enclave, and leaves them there."""
    from emulator import Emulator

    if emulator is None:
        with Emulator() as own:
            return _measure_on(own, args)
    return _measure_on(emulator, args)


def _measure_on(emulator, args: argparse.Namespace) -> dict | None:
    from zerocopy import Signer
    from zerocopy._latency import EchoServer, pinned_apart

    bundles = bench_bundles(emulator)
    with contextlib.ExitStack() as stack:
        # The same image again, spinning for the next request before sleeping (--busy-poll-us).
        polling = stack.enter_context(emulator.launch(busy_poll_us=BUSY_POLL_US))
        signers = {
            "": stack.enter_context(Signer(emulator.address)),
            "_attested": stack.enter_context(emulator.signer()),  # expected_pcrs and roots: attests first
            "_spinning": stack.enter_context(Signer(polling.address, busy_poll_us=BUSY_POLL_US)),
            "_attested_spinning": stack.enter_context(
                Signer(polling.address, expected_pcrs={0: polling.pcrs[0]}, roots=[emulator.root_certificate], busy_poll_us=BUSY_POLL_US)),
        }  # fmt: skip
        echoes = {"": stack.enter_context(EchoServer()), "_spinning": stack.enter_context(EchoServer(busy_poll_us=BUSY_POLL_US))}
        for connected in (signers[""], signers["_spinning"]):
            loaded = connected.provision(bundles, credentials=emulator.credentials)
            if not all(result.loaded for result in loaded):
                print(f"provisioning failed: {loaded}", file=sys.stderr)
                return None
        pinned = stack.enter_context(pinned_apart(emulator.enclave.pid, polling.pid, *(echo.pid for echo in echoes.values())))
        results = latency_rounds(args, echoes, signers)
        medians = {name: sorted(rounds, key=lambda r: r[0].p50_us)[len(rounds) // 2] for name, rounds in results.items()}
        figures = {
            "medians": {name: measured for name, (measured, _) in medians.items()},
            "samples": {name: samples for name, (_, samples) in medians.items()},
            "pinned": pinned,
            "connects": attested_connects(emulator, max(5, args.samples // 250)),
            "pipelined": {label: pipelined_rate(signers[suffix], args.samples) for label, suffix in (("plain", ""), ("attested", "_attested"))},
            "gathered": gathered_rate(emulator.address, args.samples),
            "flood": None,
            "audit": None,
        }
        if not args.no_flood:
            client_cpus = os.sched_getaffinity(0) if pinned else None
            figures["flood"] = provision_flood(emulator, bundles[0], args.flood_samples, client_cpus)
            figures["audit"] = audit_flood(emulator, signers[""], args.flood_samples, client_cpus)
    return figures


def latency_rounds(args: argparse.Namespace, echoes: dict, signers: dict) -> dict[str, list]:
    """Interleaved rounds of every latency series (so drift on a shared machine hits all alike):
    per series, a ``(Percentiles, samples in ns)`` for each round."""
    from zerocopy._latency import percentiles, time_samples

    results: dict[str, list] = {name: [] for name in SERIES}

    def timed(name: str, call) -> None:
        samples = time_samples(call, args.samples)
        results[name].append((percentiles(samples), samples))

    frame = b"x" * (10 + 1 + 3 + len(RAW_PAYLOAD))  # the size of a SIGN frame for RAW_PAYLOAD
    for _ in range(args.rounds):
        for mode, echo in echoes.items():
            timed("echo" + mode, lambda: echo.roundtrip(frame))
        for suffix, connected in signers.items():
            timed("sign" + suffix, lambda: connected.sign("raw", RAW_PAYLOAD))
            timed("sign_request" + suffix, lambda: connected.sign_request("binance", "POST", "/api/v3/order", params=BINANCE_PARAMS))
    return results


def attested_connects(emulator, count: int) -> list[float]:
    """Seconds per new attested Signer: handshake, NSM document, verification."""
    connects = []
    for _ in range(count):
        start = time.perf_counter()
        emulator.signer().close()
        connects.append(time.perf_counter() - start)
    return connects


def pipelined_rate(signer, samples: int) -> float:
    """Signatures per second with ``sign_many`` batches of 100 on one connection."""
    batch = [("raw", RAW_PAYLOAD)] * 100
    rounds = max(1, samples // 100)
    start = time.perf_counter()
    for _ in range(rounds):
        signer.sign_many(batch)
    return rounds * 100 / (time.perf_counter() - start)


def gathered_rate(address: str, samples: int) -> float:
    """Signatures per second from an ``AsyncSigner``, 100 ``sign`` calls gathered at a time on
    its one connection (the async counterpart of ``pipelined_rate``)."""
    import asyncio

    from zerocopy import AsyncSigner

    async def run() -> float:
        async with AsyncSigner(address) as signer:
            rounds = max(1, samples // 100)
            start = time.perf_counter()
            for _ in range(rounds):
                await asyncio.gather(*(signer.sign("raw", RAW_PAYLOAD) for _ in range(100)))
            return rounds * 100 / (time.perf_counter() - start)

    return asyncio.run(run())


def build_report(*, medians: dict, samples: dict | None = None, pinned: bool, connects: list[float], pipelined: dict, gathered: float, flood: dict | None, audit: dict | None) -> dict[str, object]:
    echo_p50 = medians["echo"].p50_us
    report: dict[str, object] = {
        "client_and_server_on_separate_cpus": pinned,
        "pipelined_signs_per_second": round(pipelined["plain"]),
        "gathered_async_signs_per_second": round(gathered),
        "pipelined_signs_per_second_attested": round(pipelined["attested"]),
        "attested_connect_p50_ms": round(sorted(connects)[len(connects) // 2] * 1000, 2),
    }
    for name, measured in medians.items():
        report[f"{name}_p50_us"] = round(measured.p50_us, 1)
        report[f"{name}_p99_us"] = round(measured.p99_us, 1)
        if not name.startswith("echo"):
            report[f"{name}_over_floor_p50"] = round(measured.p50_us / medians[floor_of(name)].p50_us, 2)
    for plain in PLAIN_SERIES:
        attested_name = plain.replace("_spinning", "") + "_attested" + ("_spinning" if plain.endswith("_spinning") else "")
        report[f"{plain}_attested_over_plain_p50"] = round(medians[attested_name].p50_us / medians[plain].p50_us, 3)
        report[f"{plain}_attested_minus_plain_p50_us"] = round(medians[attested_name].p50_us - medians[plain].p50_us, 1)
    if flood is not None:
        report.update(flood_figures("flood", flood, echo_p50))
    if audit is not None:
        report.update(flood_figures("audit_flood", audit, echo_p50))
    return report


def flood_figures(prefix: str, measured: dict, echo_p50: float) -> dict[str, object]:
    quiet, flooded = measured["quiet"], measured["flooded"]
    figures: dict[str, object] = {
        f"{prefix}_quiet_p50_us": round(quiet["p50_us"], 1), f"{prefix}_quiet_p99_us": round(quiet["p99_us"], 1),
        f"{prefix}_p50_us": round(flooded["p50_us"], 1), f"{prefix}_p99_us": round(flooded["p99_us"], 1),
        f"{prefix}_over_quiet_p99": round(flooded["p99_us"] / quiet["p99_us"], 2),
    }
    if prefix == "flood":
        figures.update({"flood_p99_over_echo_p50": round(flooded["p99_us"] / echo_p50, 1), "flooders": measured["flooders"]})
    else:
        figures.update({f"{prefix}_over_quiet_p50": round(flooded["p50_us"] / quiet["p50_us"], 2), "audit_flooders": measured["flooders"]})
    return figures


def print_report(report: dict, medians: dict) -> None:
    for name, measured in medians.items():
        ratio = "" if name.startswith("echo") else f"   = {report[f'{name}_over_floor_p50']}x its floor ({LABELS[floor_of(name)]}, p50)"
        print(f"{LABELS[name]:<36} {measured}{ratio}")
    for plain in PLAIN_SERIES:
        print(f"attested/plain {plain:<20} {report[f'{plain}_attested_over_plain_p50']}x p50 "
              f"({report[f'{plain}_attested_minus_plain_p50_us']:+} µs)")
    print(f"pipelined sign_many        {report['pipelined_signs_per_second']} signatures/s on one connection "
          f"({report['pipelined_signs_per_second_attested']} attested)")
    print(f"gathered AsyncSigner.sign  {report['gathered_async_signs_per_second']} signatures/s on one connection (100 in flight)")
    print(f"attested connect           p50 {report['attested_connect_p50_ms']} ms (attestation and verification, per connection)")
    if "flood_p99_us" in report:
        print(f"sign during a PROVISION flood ({FLOOD_CONNECTIONS} connections): p50 {report['flood_p50_us']} µs, "
              f"p99 {report['flood_p99_us']} µs = {report['flood_over_quiet_p99']}x the quiet p99 "
              f"({report['flood_quiet_p99_us']} µs); flooders got {report['flooders']}")
    if "audit_flood_p99_us" in report:
        print(f"sign during an AUDIT flood ({FLOOD_CONNECTIONS} connections, full pages): p50 {report['audit_flood_p50_us']} µs "
              f"= {report['audit_flood_over_quiet_p50']}x quiet, p99 {report['audit_flood_p99_us']} µs = "
              f"{report['audit_flood_over_quiet_p99']}x the quiet p99 ({report['audit_flood_quiet_p99_us']} µs); flooders got {report['audit_flooders']}")
    print(f"(client and servers pinned to separate CPUs: {report['client_and_server_on_separate_cpus']}; emulator on a shared machine: compare ratios, not microseconds)")


if __name__ == "__main__":
    sys.exit(main())
