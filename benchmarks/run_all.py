"""Every figure of issue 12 in one run: JSON, a Markdown table and a latency histogram.

Run: ``.venv/bin/python benchmarks/run_all.py [--quick] [--out DIR]``

Writes ``results.json``, ``results.md`` and ``latency.png`` (the picture needs matplotlib, the
``bench`` extra; without it the command says so in one line and writes the rest) into ``--out``
(default ``benchmarks/results``) and prints the table. Each latency figure is a ratio to a floor
measured the same way in the same run (see ``bench_sign.py``): these machines are shared and
noisy, so compare ratios between runs, not microseconds. ``--quick`` runs every part with tiny
counts (a few seconds of each): the suite runs it to check that every figure comes out; its
numbers mean nothing.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks import bench_audit_wrap, bench_sign, concurrency, floors, overheads, report  # noqa: E402

#: Counts per mode: the default run takes about 30 s on a quiet 2-core machine.
SETTINGS = {
    "default": {"samples": 1000, "rounds": 3, "clients": 64, "load_processes": 4, "load_seconds": 5.0, "pipelined": 20_000,
                "audit_capacity": 65_536, "audit_receipts": 3 * 65_536, "kms_samples": 200, "emulator_repeats": 5, "pytest_keys": 5,
                "frame_requests": 10_000, "frame_rounds": 10},
    "quick": {"samples": 50, "rounds": 1, "clients": 64, "load_processes": 2, "load_seconds": 0.5, "pipelined": 1_000,
              "audit_capacity": 1024, "audit_receipts": 4096, "kms_samples": 10, "emulator_repeats": 1, "pytest_keys": 2,
              "frame_requests": 300, "frame_rounds": 2},
}
PIPELINE_BATCHES = (100, 5000)
AUDIT_CAPACITY = 65_536  # the enclave's receipt buffer: sign_many "with a full audit buffer" fills it


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny counts: checks every figure comes out (what the suite runs)")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results", help="where to write results.json, results.md, latency.png")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    mode = "quick" if args.quick else "default"
    settings = SETTINGS[mode]
    began = time.monotonic()
    host = report.machine()
    measured = {"audit": audit_wrap(settings)}
    print("audit buffer wrap-around: measured", file=sys.stderr)
    measured["session_frames"] = overheads.attested_session_frames(settings["frame_requests"], settings["frame_rounds"])
    print("the attested session's frames, in process: measured", file=sys.stderr)
    measured["emulator"] = overheads.emulator_start_stop(settings["emulator_repeats"] - 1)
    emulator = overheads.TimedEmulator(measured["emulator"])
    with emulator:
        measured["latency"] = bench_sign.measure(argparse.Namespace(samples=settings["samples"], rounds=settings["rounds"], no_flood=True, flood_samples=0), emulator.emulator)
        if measured["latency"] is None:
            return 1
        print("sign round trips against their floors: measured", file=sys.stderr)
        measured.update(pipelines_and_load(settings, emulator.emulator))
        print("sign_many against the bare server, and the concurrent clients: measured", file=sys.stderr)
    print("emulator start/stop: measured", file=sys.stderr)
    measured["kms"] = overheads.kms_generate_mac(settings["kms_samples"], bench_sign.RAW_PAYLOAD)
    measured["pytest"] = overheads.pytest_plugin_cost(settings["pytest_keys"])
    print("KMS GenerateMac and pytest --zerocopy: measured", file=sys.stderr)
    result = {
        "machine": host,
        "settings": {"mode": mode, **settings, "seconds": round(time.monotonic() - began, 1)},
        "figures": figures(measured),
    }
    report.check_finite(result)
    for note in report.write(result, histograms(measured), args.out):
        print(note, file=sys.stderr)
    print(report.markdown(result))
    print(f"written to {args.out} in {result['settings']['seconds']} s", file=sys.stderr)
    return 0


def audit_wrap(settings: dict) -> dict:
    """Receipts recorded past the buffer's wrap-around: p99.99 over p50 (``bench_audit_wrap``)."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from enclave.audit import AuditLog

    log = AuditLog(Ed25519PrivateKey.generate(), capacity=settings["audit_capacity"])
    recorded = bench_audit_wrap.summary(bench_audit_wrap.time_records(log, settings["audit_receipts"]))
    return {"log": recorded, "floor": bench_audit_wrap.summary(bench_audit_wrap.time_floor(settings["audit_receipts"]))}


def pipelines_and_load(settings: dict, emulator) -> dict:
    """On ``emulator``'s main enclave (keys ``raw`` and ``binance`` loaded by ``bench_sign``):
    ``sign_many`` against the bare pipelined server with the audit buffer as it is, then the
    concurrent clients (alone on the enclave: its 64 connections are theirs), then ``sign_many``
    again with the audit buffer full."""
    from zerocopy import Signer
    from zerocopy._latency import pinned_apart

    with floors.BarePipelinedServer({"raw": b"k" * 64}) as bare, Signer(bare.address, timeout=60) as floor:
        with pinned_apart(emulator.enclave.pid, bare.pid) as pinned:
            with Signer(emulator.address, timeout=60) as signer:
                empty = pipelined_ratios(signer, floor, settings["pipelined"])
            cpus = os.sched_getaffinity(0) if pinned else None
            load = concurrency.concurrent_clients(emulator.address, "binance", bench_sign.BINANCE_PARAMS, clients=settings["clients"],
                                                  processes=settings["load_processes"], seconds=settings["load_seconds"], cpus=cpus)
            with Signer(emulator.address, timeout=60) as signer:
                for _ in range(AUDIT_CAPACITY // 5000 + 1):  # the audit buffer full: every later receipt overwrites one
                    signer.sign_many([("raw", bench_sign.RAW_PAYLOAD)] * 5000)
                full = pipelined_ratios(signer, floor, settings["pipelined"])
    return {"pipelined": {"empty": empty, "full": full}, "load": load}


def pipelined_ratios(signer, floor, total: int) -> dict[int, dict[str, float]]:
    """Per batch size, signatures per second through ``sign_many`` to the enclave and to the bare
    server (interleaved, the better of three each), after checking both sign the same bytes."""
    batch = [("raw", bench_sign.RAW_PAYLOAD)] * 8
    if signer.sign_many(batch) != floor.sign_many(batch):
        raise RuntimeError("the bare server's signatures differ from the enclave's: it is not doing the same job")
    rates: dict[int, dict[str, float]] = {}
    for size in PIPELINE_BATCHES:
        items = [("raw", bench_sign.RAW_PAYLOAD)] * size
        rounds = max(1, total // size)
        best = {"enclave": 0.0, "bare": 0.0}
        for _ in range(3):
            for name, connected in (("enclave", signer), ("bare", floor)):
                began = time.perf_counter()
                for _ in range(rounds):
                    connected.sign_many(items)
                best[name] = max(best[name], rounds * size / (time.perf_counter() - began))
        rates[size] = {**best, "ratio": best["enclave"] / best["bare"]}
    return rates


def figures(measured: dict) -> list[dict]:
    """Every figure of the issue's table, with its target."""
    latency, figure = measured["latency"], report.figure
    sign = bench_sign.build_report(**{**latency, "samples": None})
    kms_p50 = statistics.median(measured["kms"]) / 1000
    out = [
        figure("blocking_sign_request", "blocking: `sign_request` p50 / blocking echo", sign["sign_request_over_floor_p50"], "×", at_most=2.0),
        figure("blocking_sign", "blocking: raw `sign` p50 / blocking echo", sign["sign_over_floor_p50"], "×", at_most=1.3),
        figure("spinning_sign_request", "spinning: `sign_request` p50 / spinning echo", sign["sign_request_spinning_over_floor_p50"], "×", at_most=3.0),
        figure("spinning_sign", "spinning: raw `sign` p50 / spinning echo", sign["sign_spinning_over_floor_p50"], "×", at_most=1.5),
        figure("blocking_echo_p50", "blocking echo floor p50", sign["echo_p50_us"], "µs"),
        figure("spinning_echo_p50", "spinning echo floor p50", sign["echo_spinning_p50_us"], "µs"),
        figure("blocking_sign_request_p50", "blocking `sign_request` p50", sign["sign_request_p50_us"], "µs"),
        figure("spinning_sign_request_p50", "spinning `sign_request` p50", sign["sign_request_spinning_p50_us"], "µs"),
        figure("attested_session_cost", "attested session: cost per request (spinning `sign`, p50 difference)", sign["sign_spinning_attested_minus_plain_p50_us"], "µs", at_most=2.0),
        figure("attested_session_cost_blocking", "attested session: cost per request (blocking `sign`, p50 difference)", sign["sign_attested_minus_plain_p50_us"], "µs"),
        *_session_frame_figures(measured["session_frames"]),
        figure("kms_generate_mac_p50", "KMS-style API: boto3 `GenerateMac` to moto on loopback, p50", kms_p50, "µs"),
        figure("kms_over_sign_request", "`GenerateMac` p50 / blocking `sign_request` p50", kms_p50 / sign["sign_request_p50_us"], "×"),
    ]
    for state, by_size in measured["pipelined"].items():
        for size, rates in by_size.items():
            out.append(figure(f"sign_many_{state}_{size}", f"`sign_many` batches of {size:,}, audit buffer {state}: rate / bare pipelined server", rates["ratio"], "×", at_least=0.5))
            out.append(figure(f"sign_many_{state}_{size}_rate", f"`sign_many` batches of {size:,}, audit buffer {state}: signatures/s", rates["enclave"], "/s"))
    out.extend(_load_and_overheads(measured))
    return out


def _session_frame_figures(frames: dict) -> list[dict]:
    """The attested session's cost resolved in process (``overheads.attested_session_frames``)."""
    figure = report.figure
    return [
        figure("attested_session_frames_cost", "attested session, in process: cost per `sign_request` (both sides' frames, sealed minus plain)", frames["cost_us"], "µs", at_most=2.0),
        figure("attested_session_frames_ratio", "attested session, in process: sealed / plain frames per `sign_request`", frames["ratio"], "×"),
        figure("attested_session_frames_plain", "plain frames per `sign_request`, both sides, in process", frames["plain_us"], "µs"),
        figure("attested_session_frames_session", "its four `Session` seals and opens alone", frames["session_us"], "µs"),
        figure("attested_session_frames_aead", "its four AES-256-GCM calls alone (`cryptography`)", frames["aead_us"], "µs"),
    ]


def _load_and_overheads(measured: dict) -> list[dict]:
    load, audit, emulator, plugin, figure = measured["load"], measured["audit"], measured["emulator"], measured["pytest"], report.figure
    clients = load["clients"]
    return [
        figure("clients_rate", f"{clients} concurrent clients: `sign_request`/s in total", load["requests_per_second"], "/s", at_least=30_000),
        figure("clients_p50", f"{clients} concurrent clients: p50", load["p50_us"], "µs"),
        figure("clients_p99", f"{clients} concurrent clients: p99", load["p99_us"] / 1000, "ms", at_most=5.0),
        figure("clients_p99_spread", f"{clients} concurrent clients: worst client's p99 / median client's", load["client_p99_spread"], "×", at_most=3.0),
        figure("audit_wrap_tail", f"audit receipts across wrap-around ({audit['log']['count']:,}): p99.99 / p50", audit["log"]["p99_99_to_p50"], "×", at_most=10.0),
        figure("audit_floor_tail", "its floor, one SHA-256 of a receipt-sized line as many times: p99.99 / p50", audit["floor"]["p99_99_to_p50"], "×"),
        figure("emulator_start", "emulator start (median)", statistics.median(emulator["start_s"]), "s", at_most=1.0),
        *(figure(f"emulator_start_{name}", f"emulator start, of which: {label} (median)", statistics.median(each[name] for each in emulator["phases"]), "s")
          for name, label in overheads.START_PHASES),
        figure("emulator_stop", "emulator stop (median)", statistics.median(emulator["stop_s"]), "s", at_most=0.3),
        figure("pytest_plugin_unused", "`pytest --zerocopy`, no test using it: added to the session", plugin["plugin_unused_adds_s"], "s"),
        figure("pytest_first_signing_test", "`pytest --zerocopy`: first signing test (emulator start, a key sealed and loaded)", plugin["first_signing_test_adds_s"], "s"),
        figure("pytest_first_test_setup", "`pytest --zerocopy`: first signing test, of which its setup (the emulator starts)", plugin["first_test_setup_s"], "s"),
        figure("pytest_first_test_call", "`pytest --zerocopy`: first signing test, of which its call (the session's KMS key; the first key sealed and loaded)", plugin["first_test_call_s"], "s"),
        figure("pytest_per_key", "`pytest --zerocopy`: each further key", plugin["per_further_key_s"], "s"),
        figure("pytest_session_end", "`pytest --zerocopy`: session end (emulator stop)", plugin["session_end_adds_s"], "s"),
    ]


def histograms(measured: dict) -> dict[str, list[int]]:
    """The picture's series (ns): ZeroCopy in both modes, their floors, and KMS GenerateMac."""
    samples = measured["latency"]["samples"]
    return {
        "echo floor, blocking": samples["echo"], "sign_request, blocking": samples["sign_request"], "sign, blocking": samples["sign"],
        "echo floor, spinning": samples["echo_spinning"], "sign_request, spinning": samples["sign_request_spinning"],
        "sign, spinning": samples["sign_spinning"], "KMS GenerateMac (moto, loopback)": measured["kms"],
    }


if __name__ == "__main__":
    raise SystemExit(main())
