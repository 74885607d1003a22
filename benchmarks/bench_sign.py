"""Sign round-trip latency and throughput on the emulator, as ratios to a bare echo.

Run: ``.venv/bin/python benchmarks/bench_sign.py [--samples N] [--json]``

The baseline is a separate process echoing the same number of bytes over the same kind of socket
(a Unix socket, which is what emulated vsock is), measured in the same run: these machines are
shared and noisy, so only the ratios are comparable between runs. On Nitro, vsock dominates and
the absolute figures differ.
"""

from __future__ import annotations

import argparse
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
    from zerocopy._latency import EchoServer, time_calls
    from zerocopy.sealing import seal

    results: dict[str, list] = {"echo": [], "sign": [], "sign_request": []}
    with Emulator() as emulator:
        key_arn = emulator.kms.create_key()["KeyMetadata"]["Arn"]
        bundles = [
            seal(emulator.kms, key_id=key_arn, name="raw", scheme="hmac-sha256", secret=b"k" * 64),
            seal(emulator.kms, key_id=key_arn, name="binance", scheme="binance-hmac", secret=b"k" * 64, api_key="bench", policy={"freshness": {"enabled": False}, "rate": {"per_second": "100000", "burst": 100000}}),
        ]
        with Signer(emulator.address) as signer, EchoServer() as echo:
            loaded = signer.provision([bundle.to_json() for bundle in bundles], credentials=emulator.credentials)
            if not all(result.loaded for result in loaded):
                print(f"provisioning failed: {loaded}", file=sys.stderr)
                return 1
            frame = b"x" * (10 + 1 + 3 + len(RAW_PAYLOAD))  # the size of a SIGN frame for RAW_PAYLOAD
            for _ in range(args.rounds):
                results["echo"].append(time_calls(lambda: echo.roundtrip(frame), args.samples))
                results["sign"].append(time_calls(lambda: signer.sign("raw", RAW_PAYLOAD), args.samples))
                results["sign_request"].append(time_calls(lambda: signer.sign_request("binance", "POST", "/api/v3/order", params=BINANCE_PARAMS), args.samples))
            batch = [("raw", RAW_PAYLOAD)] * 100
            start = time.perf_counter()
            rounds = max(1, args.samples // 100)
            for _ in range(rounds):
                signer.sign_many(batch)
            pipelined_per_second = rounds * 100 / (time.perf_counter() - start)

    def median_round(name: str):
        return sorted(results[name], key=lambda p: p.p50_us)[len(results[name]) // 2]

    echo, sign, http = median_round("echo"), median_round("sign"), median_round("sign_request")
    report = {
        "echo_p50_us": round(echo.p50_us, 1), "echo_p99_us": round(echo.p99_us, 1),
        "sign_p50_us": round(sign.p50_us, 1), "sign_p99_us": round(sign.p99_us, 1),
        "sign_request_p50_us": round(http.p50_us, 1), "sign_request_p99_us": round(http.p99_us, 1),
        "sign_over_echo_p50": round(sign.p50_us / echo.p50_us, 2),
        "sign_request_over_echo_p50": round(http.p50_us / echo.p50_us, 2),
        "pipelined_signs_per_second": round(pipelined_per_second),
    }
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(f"bare echo           {echo}")
        print(f"sign (raw HMAC)     {sign}   = {report['sign_over_echo_p50']}x echo (p50)")
        print(f"sign_request        {http}   = {report['sign_request_over_echo_p50']}x echo (p50)")
        print(f"pipelined sign_many {report['pipelined_signs_per_second']} signatures/s on one connection")
        print("(emulator on a shared machine: compare ratios, not microseconds)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
