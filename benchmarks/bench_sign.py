"""Sign round-trip latency and throughput on the emulator, as ratios to a bare echo.

Run: ``.venv/bin/python benchmarks/bench_sign.py [--samples N] [--json] [--no-flood]``

The baseline is a separate process echoing the same number of bytes over the same kind of socket
(a Unix socket, which is what emulated vsock is), measured in the same run: these machines are
shared and noisy, so only the ratios are comparable between runs. On Nitro, vsock dominates and
the absolute figures differ.

Series:

* ``sign`` / ``sign_request``: a plain (unattested) connection.
* ``sign_attested`` / ``sign_request_attested``: a ``Signer(expected_pcrs=…, roots=…)``; on an
  enclave that speaks attested sessions every frame is sealed (AES-256-GCM, both directions), so
  the ratio to the plain series is what the session costs per request.
* ``*_polling``: the same image launched with ``--busy-poll-us 100`` (what the EIF's Dockerfile
  does); ``*_attested_polling`` is an attested session to it.
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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=5000)
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds; the median round is reported")
    parser.add_argument("--flood-samples", type=int, default=2000)
    parser.add_argument("--no-flood", action="store_true", help="skip the provisioning- and audit-flood scenarios")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    from emulator import Emulator
    from zerocopy import Signer
    from zerocopy._latency import EchoServer, pinned_apart, time_calls
    from zerocopy.sealing import seal

    names = ("echo", "sign", "sign_request", "sign_attested", "sign_request_attested", "sign_polling", "sign_request_polling",
             "sign_attested_polling", "sign_request_attested_polling")
    results: dict[str, list] = {name: [] for name in names}
    flood: dict | None = None
    audit: dict | None = None
    with Emulator() as emulator:
        key_arn = emulator.kms.create_key()["KeyMetadata"]["Arn"]
        bundles = [
            seal(emulator.kms, key_id=key_arn, name="raw", scheme="hmac-sha256", secret=b"k" * 64).to_json(),
            seal(emulator.kms, key_id=key_arn, name="binance", scheme="binance-hmac", secret=b"k" * 64, api_key="bench",
                 policy={"freshness": {"enabled": False}, "rate": {"per_second": "100000", "burst": 100000}}).to_json(),
        ]
        # The same image again, spinning 100 µs for the next request before sleeping (--busy-poll-us).
        polling = emulator.launch(busy_poll_us=100)
        with contextlib.ExitStack() as stack:
            signer = stack.enter_context(Signer(emulator.address))
            attested = stack.enter_context(emulator.signer())  # expected_pcrs and roots: attests first
            polling_signer = stack.enter_context(Signer(polling.address))
            polling_attested = stack.enter_context(Signer(polling.address, expected_pcrs={0: polling.pcrs[0]}, roots=[emulator.root_certificate]))
            echo = stack.enter_context(EchoServer())
            for connected in (signer, polling_signer):
                loaded = connected.provision(bundles, credentials=emulator.credentials)
                if not all(result.loaded for result in loaded):
                    print(f"provisioning failed: {loaded}", file=sys.stderr)
                    return 1
            frame = b"x" * (10 + 1 + 3 + len(RAW_PAYLOAD))  # the size of a SIGN frame for RAW_PAYLOAD
            pinned = stack.enter_context(pinned_apart(emulator.enclave.pid, polling.pid, echo.pid))
            for _ in range(args.rounds):
                results["echo"].append(time_calls(lambda: echo.roundtrip(frame), args.samples))
                for suffix, connected in (("", signer), ("_attested", attested), ("_polling", polling_signer), ("_attested_polling", polling_attested)):
                    results["sign" + suffix].append(time_calls(lambda: connected.sign("raw", RAW_PAYLOAD), args.samples))
                    results["sign_request" + suffix].append(time_calls(lambda: connected.sign_request("binance", "POST", "/api/v3/order", params=BINANCE_PARAMS), args.samples))
            connects = []
            for _ in range(max(5, args.samples // 250)):  # a new attested Signer: handshake, NSM document, verification
                start = time.perf_counter()
                emulator.signer().close()
                connects.append(time.perf_counter() - start)
            pipelined = {}
            batch = [("raw", RAW_PAYLOAD)] * 100
            for label, connected in (("plain", signer), ("attested", attested)):
                start = time.perf_counter()
                rounds = max(1, args.samples // 100)
                for _ in range(rounds):
                    connected.sign_many(batch)
                pipelined[label] = rounds * 100 / (time.perf_counter() - start)
            if not args.no_flood:
                client_cpus = os.sched_getaffinity(0) if pinned else None
                flood = provision_flood(emulator, bundles[0], args.flood_samples, client_cpus)
                audit = audit_flood(emulator, signer, args.flood_samples, client_cpus)

    def median_round(name: str):
        return sorted(results[name], key=lambda p: p.p50_us)[len(results[name]) // 2]

    medians = {name: median_round(name) for name in names}
    echo_p50 = medians["echo"].p50_us
    report: dict[str, object] = {
        "client_and_server_on_separate_cpus": pinned,
        "pipelined_signs_per_second": round(pipelined["plain"]),
        "pipelined_signs_per_second_attested": round(pipelined["attested"]),
        "attested_connect_p50_ms": round(sorted(connects)[len(connects) // 2] * 1000, 2),
    }
    for name, measured in medians.items():
        report[f"{name}_p50_us"] = round(measured.p50_us, 1)
        report[f"{name}_p99_us"] = round(measured.p99_us, 1)
        if name != "echo":
            report[f"{name}_over_echo_p50"] = round(measured.p50_us / echo_p50, 2)
    for plain in ("sign", "sign_request", "sign_polling", "sign_request_polling"):
        attested_name = plain.replace("_polling", "") + "_attested" + ("_polling" if plain.endswith("_polling") else "")
        report[f"{plain}_attested_over_plain_p50"] = round(medians[attested_name].p50_us / medians[plain].p50_us, 3)
        report[f"{plain}_attested_minus_plain_p50_us"] = round(medians[attested_name].p50_us - medians[plain].p50_us, 1)
    if flood is not None:
        quiet, flooded = flood["quiet"], flood["flooded"]
        report.update({
            "flood_quiet_p50_us": round(quiet["p50_us"], 1), "flood_quiet_p99_us": round(quiet["p99_us"], 1),
            "flood_p50_us": round(flooded["p50_us"], 1), "flood_p99_us": round(flooded["p99_us"], 1),
            "flood_over_quiet_p99": round(flooded["p99_us"] / quiet["p99_us"], 2),
            "flood_p99_over_echo_p50": round(flooded["p99_us"] / echo_p50, 1),
            "flooders": flood["flooders"],
        })
    if audit is not None:
        quiet, flooded = audit["quiet"], audit["flooded"]
        report.update({
            "audit_flood_quiet_p50_us": round(quiet["p50_us"], 1), "audit_flood_quiet_p99_us": round(quiet["p99_us"], 1),
            "audit_flood_p50_us": round(flooded["p50_us"], 1), "audit_flood_p99_us": round(flooded["p99_us"], 1),
            "audit_flood_over_quiet_p50": round(flooded["p50_us"] / quiet["p50_us"], 2),
            "audit_flood_over_quiet_p99": round(flooded["p99_us"] / quiet["p99_us"], 2),
            "audit_flooders": audit["flooders"],
        })
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        labels = {"echo": "bare echo", "sign": "sign (raw HMAC)", "sign_request": "sign_request (Binance)",
                  "sign_attested": "sign, attested session", "sign_request_attested": "sign_request, attested",
                  "sign_polling": "sign, busy-poll 100 µs", "sign_request_polling": "sign_request, busy-poll",
                  "sign_attested_polling": "sign, attested, busy-poll", "sign_request_attested_polling": "sign_request, att., busy-poll"}
        for name, measured in medians.items():
            ratio = "" if name == "echo" else f"   = {report[f'{name}_over_echo_p50']}x echo (p50)"
            print(f"{labels[name]:<26} {measured}{ratio}")
        for plain in ("sign", "sign_request", "sign_polling", "sign_request_polling"):
            print(f"attested/plain {plain:<20} {report[f'{plain}_attested_over_plain_p50']}x p50 "
                  f"({report[f'{plain}_attested_minus_plain_p50_us']:+} µs)")
        print(f"pipelined sign_many        {report['pipelined_signs_per_second']} signatures/s on one connection "
              f"({report['pipelined_signs_per_second_attested']} attested)")
        print(f"attested connect           p50 {report['attested_connect_p50_ms']} ms (attestation and verification, per connection)")
        if flood is not None:
            print(f"sign during a PROVISION flood ({FLOOD_CONNECTIONS} connections): p50 {report['flood_p50_us']} µs, "
                  f"p99 {report['flood_p99_us']} µs = {report['flood_over_quiet_p99']}x the quiet p99 "
                  f"({report['flood_quiet_p99_us']} µs); flooders got {report['flooders']}")
        if audit is not None:
            print(f"sign during an AUDIT flood ({FLOOD_CONNECTIONS} connections, full pages): p50 {report['audit_flood_p50_us']} µs "
                  f"= {report['audit_flood_over_quiet_p50']}x quiet, p99 {report['audit_flood_p99_us']} µs = "
                  f"{report['audit_flood_over_quiet_p99']}x the quiet p99 ({report['audit_flood_quiet_p99_us']} µs); flooders got {report['audit_flooders']}")
        print(f"(client and servers pinned to separate CPUs: {pinned}; emulator on a shared machine: compare ratios, not microseconds)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
