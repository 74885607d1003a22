"""The pure-Python cost of one Binance ``sign_request``, stage by stage, in one process, no sockets.

Run: ``.venv/bin/python benchmarks/profile_sign_request.py [--iterations N] [--repeats R] [--cprofile] [--json]``

Each stage runs in a hot loop of its own (``time.perf_counter_ns`` around N calls, best of R
repeats, in µs per call): what the client encodes, what the server decodes, the policy decision,
the request built and signed, the receipt, the answer encoded, the answer decoded; then the whole
chain (client encode -> ``Connection`` -> ``EnclaveService.handle`` -> ``Connection`` -> client
decode) as one loop; and, since a key remembers the shapes it signed (issue 12), what ``handle``
runs for a request of a shape its key signed before: the policy by the shape's plan, the query
signed, the receipt. On these shared 2-core machines only figures from one run compare; Python run
right after the CPU was idle costs 2.5-3x its hot-loop time, which is what a round trip pays.
"""

from __future__ import annotations

import argparse
import cProfile
import json
import pstats
import time
from collections.abc import Callable
from typing import Any

from enclave.clock import Clock
from enclave.keyring import LoadedKey
from enclave.protocol import Connection, HttpSignature, Role
from enclave.protocol.policy import PolicyState, SigningPolicy
from enclave.schemes import load_key
from enclave.service import EnclaveService, _request_digest
from zerocopy._client import _sign_http_request, _signed_request

KEY = "bench-binance"
METHOD, PATH = "POST", "/api/v3/order"
PARAMS = [("symbol", "LTCBTC"), ("side", "BUY"), ("type", "LIMIT"), ("timeInForce", "GTC"), ("quantity", "1"), ("price", "0.1"), ("recvWindow", "5000")]
# A production-like policy (every trade and read endpoint, the default): symbols, sizes, a notional window and a rate that the loop never exhausts.
POLICY = {
    "version": 1,
    "symbols": ["LTCBTC", "BTCUSDT"],
    "max_quantity": "10",
    "max_notional": "100",
    "notional_window": {"seconds": 60, "max_notional": "1000000000000"},
    "rate": {"per_second": "100000000", "burst": 100000},
    "freshness": {"max_skew_ms": 60000},  # each stage's inputs are made fresh, and a stage runs for seconds
}


def make_service(policy: dict | None = None) -> EnclaveService:
    """An enclave service with one Binance HMAC key loaded directly (no KMS: the sign path only)."""
    service = EnclaveService(nsm=None, kms=None, clock=Clock())  # type: ignore[arg-type]
    signing_key = load_key("binance-hmac", b"s" * 64, "bench-api-key")
    parsed = SigningPolicy.parse(POLICY if policy is None else policy, scheme="binance-hmac")
    service.keyring.add(LoadedKey(KEY, "binance-hmac", "bench-api-key", "0" * 64, "arn:bench", PolicyState(parsed), signing_key, "bench"))
    return service


def _params_now() -> list[tuple[str, str]]:
    return PARAMS + [("timestamp", str(time.time_ns() // 1_000_000))]


def stages(service: EnclaveService) -> dict[str, Callable[[], Any]]:
    """One closure per stage, each over inputs prepared once (the timestamp stays fresh for the run)."""
    client, server = Connection(Role.CLIENT), Connection(Role.SERVER)
    params = _params_now()
    body = _sign_http_request(KEY, METHOD, PATH, params, None)
    frame = client.send_sign_http(7, body)
    server.receive_data(frame)
    event = server.next_event()
    key = service.keyring.get(KEY)
    now = service.clock.now_ms()
    authorized = key.policy_state.authorize_request(event.method, event.path, event.params, event.body, now)
    signed = key.signing_key.sign_http(event.method, event.path, authorized.params, authorized.body, now)
    answer = HttpSignature(7, signed.query, signed.body, signed.headers)
    reply = server.send(answer)

    def server_decode() -> Any:
        server.receive_data(frame)
        return server.next_event()

    def client_decode() -> Any:
        client.receive_data(reply)
        return _signed_request(METHOD, PATH, None, client.next_event())

    def audit() -> None:
        request, digest = f"{METHOD} {PATH}", _request_digest(authorized.params, authorized.body)
        if hasattr(service.audit, "record_signed"):  # the sign path's receipt since issue 12
            service.audit.record_signed(now, key.name, request, digest, authorized.symbol, authorized.quantity, authorized.notional)
        else:
            service.audit.record(now, key.name, "signed", "", request, digest, symbol=authorized.symbol, quantity=authorized.quantity, notional=authorized.notional)

    return {
        "client encode": lambda: client.send_sign_http(7, _sign_http_request(KEY, METHOD, PATH, params, None)),
        "server decode": server_decode,
        "policy": lambda: key.policy_state.authorize_request(event.method, event.path, event.params, event.body, now),
        "request build + HMAC": lambda: key.signing_key.sign_http(event.method, event.path, authorized.params, authorized.body, now),
        "audit": audit,
        "response encode": lambda: server.send(HttpSignature(7, signed.query, signed.body, signed.headers)),
        "client decode": client_decode,
        **remembered_shape_stages(service, event, now),
        "server handle (policy+sign+audit)": lambda: service.handle(event),
        "whole sign_request": whole_chain(service, params),
    }


def remembered_shape_stages(service: EnclaveService, event: Any, now: int) -> dict[str, Callable[[], Any]]:
    """What ``handle`` does for a query-only request of a shape its key signed before (since
    issue 12's shapes; none before them): the policy by the shape's plan, the query signed, the receipt."""
    key = service.keyring.get(KEY)
    service.handle(event)  # the shape is remembered once a request of it was signed
    shape = getattr(key, "shapes", {}).get((event.method, event.path, *[name for name, _ in event.params]))
    if shape is None:
        return {}
    query = "&".join(map("=".join, event.params))
    authorized = key.policy_state.authorize_planned(shape.plan, event.params, now)

    digest_of = _receipt_digest()

    def receipt() -> None:
        service.audit.record_signed_as(shape.receipt, now, digest_of(event.params, query), authorized.symbol, authorized.quantity, authorized.notional)

    return {
        "policy, a remembered shape": lambda: key.policy_state.authorize_planned(shape.plan, event.params, now),
        "build + HMAC, a remembered shape": lambda: key.signing_key.sign_known_query(query, shape.scheme, now),
        "receipt, a remembered shape": receipt,
    }


def _receipt_digest() -> Callable[[Any, str], str]:
    """The request digest as ``handle`` makes it for a remembered shape: from the plain query's
    bytes since issue 12's third pass, from the params before it."""
    from enclave import service

    plain = getattr(service, "_plain_query_digest", None)
    if plain is not None:
        return lambda params, query: plain(query)  # type: ignore[no-any-return]
    return lambda params, query: _request_digest(params, b"")


def whole_chain(service: EnclaveService, params: list[tuple[str, str]]) -> Callable[[], Any]:
    client, server = Connection(Role.CLIENT), Connection(Role.SERVER)

    def one() -> Any:
        client_frame = client.send_sign_http(7, _sign_http_request(KEY, METHOD, PATH, params, None))
        server.receive_data(client_frame)
        answer = server.send(service.handle(server.next_event()))
        client.receive_data(answer)
        return _signed_request(METHOD, PATH, None, client.next_event())

    return one


def best_us(call: Callable[[], Any], iterations: int, repeats: int, clock: Callable[[], int] = time.perf_counter_ns) -> float:
    """µs per call, the best of ``repeats`` loops. ``clock`` may be ``time.thread_time_ns``: on a
    machine others load, the CPU this thread used, not the time it waited for one."""
    for _ in range(min(iterations, 2000)):
        call()
    best = None
    for _ in range(repeats):
        start = clock()
        for _ in range(iterations):
            call()
        elapsed = clock() - start
        best = elapsed if best is None or elapsed < best else best
    return best / iterations / 1000  # type: ignore[operator]


def measure(iterations: int, repeats: int, clock: Callable[[], int] = time.perf_counter_ns) -> dict[str, float]:
    service = make_service()
    # Each stage's inputs made just before it runs, so the request's timestamp stays fresh.
    return {name: round(best_us(stages(service)[name], iterations, repeats, clock), 2) for name in stages(service)}


def profile(iterations: int) -> None:
    one = whole_chain(make_service(), _params_now())
    profiler = cProfile.Profile()
    profiler.runcall(lambda: [one() for _ in range(iterations)])
    pstats.Stats(profiler).sort_stats("tottime").print_stats(25)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=10000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--cprofile", action="store_true", help="also print cProfile's top functions for the whole chain")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--cpu-time", action="store_true", help="time with this thread's CPU time (time.thread_time_ns): steadier on a loaded machine")
    args = parser.parse_args()
    # A stage's timestamp is fixed while it runs, so its key's bucket does not refill meanwhile.
    if min(args.iterations, 2000) + args.iterations * args.repeats > POLICY["rate"]["burst"]:
        parser.error(f"warm-up plus --repeats x --iterations must stay within the policy's burst of {POLICY['rate']['burst']:,} orders")
    figures = measure(args.iterations, args.repeats, time.thread_time_ns if args.cpu_time else time.perf_counter_ns)
    if args.json:
        print(json.dumps(figures))
    else:
        for name, micros in figures.items():
            print(f"{name:36s} {micros:7.2f} µs")
    if args.cprofile:
        profile(args.iterations)


if __name__ == "__main__":
    main()
