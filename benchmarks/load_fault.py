"""Load and fault: many attested clients sign for a while, and the enclave is killed mid-run.

Run: ``.venv/bin/python benchmarks/load_fault.py [--clients 64] [--seconds 20] [--json]``

Every client is a ``Signer`` with an attested session of its own, sending a mix of raw signatures,
Binance orders and withdrawals (which the policy must refuse). Every answer is checked
independently of ZeroCopy: raw signatures and order signatures with Python's ``hmac``, refusals by
their rule. Part-way through, the enclave process is killed with SIGKILL, started again and
re-provisioned from its sealed bundles, as an operator (or a host agent) would; clients get typed
errors while it is down, then reconnect and re-attest by themselves.

It prints what happened to every request:

* ``ok`` — signed, and the signature checks out; ``refused`` — refused as the policy must;
* ``typed errors`` — ZeroCopy's own errors (the connection closed, the key not loaded yet, …),
  expected only around the restart;
* ``lost`` — no answer in time (a timeout) or a client still stuck at the end: must be 0;
* ``mismatched`` — a signature that does not check out, or a withdrawal signed: must be 0;
* ``untyped`` — any other exception: must be 0;

with p50/p99 of the signed requests and the recovery time (SIGKILL to the first signature after
re-provisioning). Exit status 1 if lost, mismatched or untyped is not 0, or nothing was signed
after the restart.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import hmac
import json
import os
import random
import signal
import statistics
import sys
import threading
import time
from collections import Counter
from typing import Any

RAW_SECRET = b"load-and-fault raw secret"
BINANCE_SECRET = b"load-and-fault binance secret"
BINANCE_API_KEY = "load-and-fault-api-key"
POLICY = """
# A spot order's parameters are also a test order and a margin order: allow all three or none.
allow = ["POST /api/v3/order", "POST /api/v3/order/test", "POST /sapi/v1/margin/order"]
symbols = ["BTCUSDT"]
max_quantity = "1"
[rate]
per_second = "100000"
burst = 100000
"""
STUCK_SECONDS = 30  # a client not back this long after the deadline has lost its request


@dataclasses.dataclass
class Tally:
    """What happened to every request, from all clients (thread-safe)."""

    outcomes: Counter = dataclasses.field(default_factory=Counter)
    typed: Counter = dataclasses.field(default_factory=Counter)
    latencies: list[float] = dataclasses.field(default_factory=list)
    first_ok_after_restart: float | None = None
    examples: list[str] = dataclasses.field(default_factory=list)
    lock: threading.Lock = dataclasses.field(default_factory=threading.Lock)

    def add(self, outcome: str, *, seconds: float = 0.0, detail: str = "", restarted_at: float | None = None) -> None:
        now = time.monotonic()
        with self.lock:
            self.outcomes[outcome] += 1
            if outcome == "ok":
                self.latencies.append(seconds)
                if restarted_at is not None and self.first_ok_after_restart is None and now > restarted_at:
                    self.first_ok_after_restart = now
            elif outcome == "typed":
                self.typed[detail] += 1
            elif outcome in ("lost", "mismatched", "untyped") and len(self.examples) < 10:
                self.examples.append(f"{outcome}: {detail}")


class Fault:
    """When the enclave was killed and when it was serving its keys again."""

    def __init__(self) -> None:
        self.killed_at: float | None = None
        self.reprovisioned_at: float | None = None


def _order(rnd: random.Random) -> list[tuple[str, str]]:
    return [
        ("symbol", "BTCUSDT"), ("side", rnd.choice(["BUY", "SELL"])), ("type", "LIMIT"), ("timeInForce", "GTC"),
        ("quantity", f"0.{rnd.randint(1, 999):03d}"), ("price", str(rnd.randint(10_000, 90_000))),
        ("timestamp", str(int(time.time() * 1000))),
    ]  # fmt: skip


def _withdrawal() -> list[tuple[str, str]]:
    return [("coin", "BTC"), ("address", "bc1qattacker"), ("amount", "1"), ("timestamp", str(int(time.time() * 1000)))]


def _check_order(signed: Any) -> str | None:
    """None if the query's signature is Binance's HMAC of the rest of it under the sealed secret."""
    query, _, signature = signed.query.rpartition("&signature=")
    expected = hmac.new(BINANCE_SECRET, query.encode(), hashlib.sha256).hexdigest()
    if not hmac.compare_digest(signature, expected) or signed.headers.get("X-MBX-APIKEY") != BINANCE_API_KEY:
        return f"order signature {signature[:16]}… does not match"
    return None


def _one_request(signer: Any, rnd: random.Random) -> tuple[str, str]:
    """(outcome, detail) of one request, checked independently."""
    from zerocopy import PolicyRefused

    roll = rnd.random()
    if roll < 0.5:
        payload = rnd.randbytes(rnd.randint(1, 200))
        signature = signer.sign("load-raw", payload)
        expected = hmac.new(RAW_SECRET, payload, hashlib.sha256).digest()
        return ("ok", "") if hmac.compare_digest(signature, expected) else ("mismatched", "raw signature does not match")
    if roll < 0.9:
        signed = signer.sign_request("load-binance", "POST", "/api/v3/order", params=_order(rnd))
        problem = _check_order(signed)
        return ("ok", "") if problem is None else ("mismatched", problem)
    try:
        signer.sign_request("load-binance", "POST", "/sapi/v1/capital/withdraw/apply", params=_withdrawal())
    except PolicyRefused as refusal:
        return ("refused", "") if refusal.rule == "funds" else ("mismatched", f"withdrawal refused by {refusal.rule!r}, not 'funds'")
    return ("mismatched", "a withdrawal was signed")


def client(emulator: Any, seed: int, deadline: float, tally: Tally, fault: Fault) -> None:
    from zerocopy import PolicyRefused, ZeroCopyError
    from zerocopy.errors import Timeout

    rnd = random.Random(seed)
    signer = None
    try:
        while time.monotonic() < deadline:
            started = time.monotonic()
            try:
                if signer is None:
                    signer = emulator.signer(timeout=10)
                outcome, detail = _one_request(signer, rnd)
            except Timeout as exc:
                outcome, detail = "lost", f"no answer within the timeout: {exc}"
            except PolicyRefused as refusal:  # an order the policy allows, refused: the engine is wrong
                outcome, detail = "mismatched", f"an allowed order refused by {refusal.rule!r}"
            except ZeroCopyError as exc:
                outcome, detail = "typed", type(exc).__name__
                time.sleep(0.02)  # the enclave is down or restarting: try again shortly, as a bot would
            except Exception as exc:  # the point: anything untyped is a defect
                outcome, detail = "untyped", f"{type(exc).__name__}: {exc}"
            tally.add(outcome, seconds=time.monotonic() - started, detail=detail, restarted_at=fault.reprovisioned_at)
    finally:
        if signer is not None:
            signer.close()


def _provision(emulator: Any, bundles: list[bytes]) -> None:
    with emulator.signer() as operator:
        results = operator.provision(bundles, credentials=emulator.credentials)
    failed = [result for result in results if not result.loaded]
    if failed:
        raise SystemExit(f"provisioning failed: {failed[0].error}")


def _seal_bundles(emulator: Any) -> list[bytes]:
    from zerocopy.kms_policy import attested_key_policy
    from zerocopy.sealing import seal

    policy = attested_key_policy(emulator.account_id, image_sha384=emulator.pcrs[0])
    key_arn = emulator.kms.create_key(Policy=json.dumps(policy), Description="load and fault")["KeyMetadata"]["Arn"]
    raw = seal(emulator.kms, key_id=key_arn, name="load-raw", scheme="hmac-sha256", secret=RAW_SECRET, api_key="", policy=None)
    exchange = seal(emulator.kms, key_id=key_arn, name="load-binance", scheme="binance-hmac", secret=BINANCE_SECRET, api_key=BINANCE_API_KEY, policy=_policy())
    return [raw.to_json(), exchange.to_json()]


def _policy() -> dict:
    from zerocopy.policy import parse_policy_text

    return parse_policy_text(POLICY)


def kill_and_restart(emulator: Any, bundles: list[bytes], fault: Fault) -> None:
    """SIGKILL the enclave, start it again at the same address, load its keys again."""
    enclave = emulator.enclave
    fault.killed_at = time.monotonic()
    os.kill(enclave.pid, signal.SIGKILL)
    enclave.restart()
    _provision(emulator, bundles)
    fault.reprovisioned_at = time.monotonic()


def run(*, clients: int, seconds: float, kill_at: float) -> dict:
    from emulator import Emulator

    tally, fault = Tally(), Fault()
    with Emulator() as emulator:
        bundles = _seal_bundles(emulator)
        _provision(emulator, bundles)
        deadline = time.monotonic() + seconds
        threads = [threading.Thread(target=client, args=(emulator, seed, deadline, tally, fault), daemon=True) for seed in range(clients)]
        for thread in threads:
            thread.start()
        time.sleep(seconds * kill_at)
        kill_and_restart(emulator, bundles, fault)
        for thread in threads:
            thread.join(max(0.0, deadline - time.monotonic()) + STUCK_SECONDS)
        stuck = sum(thread.is_alive() for thread in threads)
        tally.outcomes["lost"] += stuck
    return _report(tally, fault, clients=clients, seconds=seconds)


def _report(tally: Tally, fault: Fault, *, clients: int, seconds: float) -> dict:
    latencies = sorted(tally.latencies)
    recovery = None
    if fault.killed_at is not None and tally.first_ok_after_restart is not None:
        recovery = tally.first_ok_after_restart - fault.killed_at
    return {
        "clients": clients,
        "seconds": seconds,
        "requests": sum(tally.outcomes.values()),
        "ok": tally.outcomes["ok"],
        "refused": tally.outcomes["refused"],
        "typed_errors": dict(tally.typed),
        "lost": tally.outcomes["lost"],
        "mismatched": tally.outcomes["mismatched"],
        "untyped": tally.outcomes["untyped"],
        "p50_ms": round(statistics.median(latencies) * 1000, 2) if latencies else None,
        "p99_ms": round(latencies[int(len(latencies) * 0.99) - 1] * 1000, 2) if len(latencies) >= 100 else None,
        "recovery_s": round(recovery, 2) if recovery is not None else None,
        "examples": tally.examples,
    }


def healthy(report: dict) -> bool:
    return report["lost"] == report["mismatched"] == report["untyped"] == 0 and report["recovery_s"] is not None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=64)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--kill-at", type=float, default=0.4, help="when to kill the enclave, as a fraction of the run")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    report = run(clients=args.clients, seconds=args.seconds, kill_at=args.kill_at)
    if args.json:
        print(json.dumps(report))
    else:
        for name in ("clients", "seconds", "requests", "ok", "refused", "typed_errors", "lost", "mismatched", "untyped", "p50_ms", "p99_ms", "recovery_s"):
            print(f"{name:>13}: {report[name]}")
        for example in report["examples"]:
            print(f"      example: {example}")
    return 0 if healthy(report) else 1


if __name__ == "__main__":
    sys.exit(main())
