"""Sign round-trip latency and throughput on the emulator, as ratios to a bare echo.

Run: ``.venv/bin/python benchmarks/bench_sign.py [--samples N] [--json]``

The baseline is a separate process echoing the same number of bytes over the same kind of socket
(a Unix socket, which is what emulated vsock is), measured in the same run: these machines are
shared and noisy, so only the ratios are comparable between runs. On Nitro, vsock dominates and
the absolute figures differ.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import time

BINANCE_PARAMS = [
    ("symbol", "LTCBTC"), ("side", "BUY"), ("type", "LIMIT"), ("timeInForce", "GTC"),
    ("quantity", "1"), ("price", "0.1"), ("recvWindow", "5000"), ("timestamp", "1499827319559"),
]
RAW_PAYLOAD = b"symbol=LTCBTC&side=BUY&type=LIMIT&timeInForce=GTC&quantity=1&price=0.1&recvWindow=5000&timestamp=1499827319559"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=5000)
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds; the median round is reported")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    from emulator import Emulator
    from zerocopy import Signer
    from zerocopy._latency import EchoServer, pinned_apart, time_calls
    from zerocopy.sealing import seal

    names = ("echo", "sign", "sign_request", "sign_polling", "sign_request_polling")
    results: dict[str, list] = {name: [] for name in names}
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
            polling_signer = stack.enter_context(Signer(polling.address))
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
                for suffix, connected in (("", signer), ("_polling", polling_signer)):
                    results["sign" + suffix].append(time_calls(lambda: connected.sign("raw", RAW_PAYLOAD), args.samples))
                    results["sign_request" + suffix].append(time_calls(lambda: connected.sign_request("binance", "POST", "/api/v3/order", params=BINANCE_PARAMS), args.samples))
            batch = [("raw", RAW_PAYLOAD)] * 100
            start = time.perf_counter()
            rounds = max(1, args.samples // 100)
            for _ in range(rounds):
                signer.sign_many(batch)
            pipelined_per_second = rounds * 100 / (time.perf_counter() - start)

    def median_round(name: str):
        return sorted(results[name], key=lambda p: p.p50_us)[len(results[name]) // 2]

    medians = {name: median_round(name) for name in names}
    echo = medians["echo"]
    report: dict[str, object] = {"client_and_server_on_separate_cpus": pinned, "pipelined_signs_per_second": round(pipelined_per_second)}
    for name, measured in medians.items():
        report[f"{name}_p50_us"] = round(measured.p50_us, 1)
        report[f"{name}_p99_us"] = round(measured.p99_us, 1)
        if name != "echo":
            report[f"{name}_over_echo_p50"] = round(measured.p50_us / echo.p50_us, 2)
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        labels = {"echo": "bare echo", "sign": "sign (raw HMAC)", "sign_request": "sign_request (Binance)",
                  "sign_polling": "sign, busy-poll 100 µs", "sign_request_polling": "sign_request, busy-poll"}
        for name, measured in medians.items():
            ratio = "" if name == "echo" else f"   = {report[f'{name}_over_echo_p50']}x echo (p50)"
            print(f"{labels[name]:<26} {measured}{ratio}")
        print(f"pipelined sign_many        {report['pipelined_signs_per_second']} signatures/s on one connection")
        print(f"(client and servers pinned to separate CPUs: {pinned}; emulator on a shared machine: compare ratios, not microseconds)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
