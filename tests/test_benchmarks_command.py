"""``benchmarks/run_all.py`` (the README's benchmark command): its ``--quick`` run, in a process of
its own, writes every figure of issue 12 — present, finite, with its target where the issue sets
one — as JSON and as a Markdown table, and the histogram or one line saying why not.

No timing thresholds: on a shared machine the quick run's numbers mean nothing; what is checked is
that the command and every part of it keep working. Also unit checks of the report's verdicts.
"""

from __future__ import annotations

import importlib.util
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks import concurrency, overheads, report

ROOT = Path(__file__).resolve().parent.parent
#: Every figure the issue's table has (the sign_many ones per batch size and audit-buffer state).
EXPECTED = {
    "blocking_sign_request", "blocking_sign", "spinning_sign_request", "spinning_sign", "blocking_echo_p50", "spinning_echo_p50",
    "blocking_sign_request_p50", "spinning_sign_request_p50", "attested_session_cost", "attested_session_cost_blocking",
    "attested_session_frames_cost", "attested_session_frames_ratio", "attested_session_frames_plain", "attested_session_frames_session",
    "attested_session_frames_aead",
    "kms_generate_mac_p50", "kms_over_sign_request", "clients_rate", "clients_p50", "clients_p99", "clients_p99_spread",
    "audit_wrap_tail", "audit_floor_tail", "emulator_start", "emulator_stop", "pytest_plugin_unused", "pytest_first_signing_test",
    "pytest_per_key", "pytest_session_end", "pytest_first_test_setup", "pytest_first_test_call",
    *(f"emulator_start_{phase}" for phase in ("moto", "kms_front", "seal_key", "enclave", "host_role")),
    *(f"sign_many_{state}_{size}{rate}" for state in ("empty", "full") for size in (100, 5000) for rate in ("", "_rate")),
}
WITH_TARGETS = {"blocking_sign_request", "blocking_sign", "spinning_sign_request", "spinning_sign", "attested_session_cost", "attested_session_frames_cost", "clients_rate",
                "clients_p99", "clients_p99_spread", "audit_wrap_tail", "emulator_start", "emulator_stop", "sign_many_empty_100", "sign_many_full_5000"}


def test_the_quick_run_writes_every_figure_finite_as_json_and_table(tmp_path):
    out = tmp_path / "results"
    command = [sys.executable, str(ROOT / "benchmarks" / "run_all.py"), "--quick", "--out", str(out)]
    result = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    written = json.loads((out / "results.json").read_text())
    assert written["settings"]["mode"] == "quick" and written["machine"]["nproc"] >= 1 and written["machine"]["cpu_model"]
    by_id = {entry["id"]: entry for entry in written["figures"]}
    assert set(by_id) == EXPECTED and len(written["figures"]) == len(EXPECTED)
    for entry in written["figures"]:
        assert isinstance(entry["value"], (int, float)) and math.isfinite(entry["value"]), entry
        assert entry["unit"] and entry["label"]
    for ident in WITH_TARGETS:
        assert by_id[ident]["target"] and isinstance(by_id[ident]["met"], bool), by_id[ident]
    assert by_id["clients_rate"]["label"].startswith("64 concurrent clients")
    table = (out / "results.md").read_text()
    assert table in result.stdout  # the command prints the table it writes
    assert all(f"| {entry['label']} |" in table for entry in written["figures"])
    if importlib.util.find_spec("matplotlib") is None:
        assert "matplotlib is not installed" in result.stderr and not (out / "latency.png").exists()
    else:
        assert (out / "latency.png").read_bytes().startswith(b"\x89PNG")


def test_a_target_missed_says_by_how_much_and_one_met_says_nothing_more():
    missed = report.figure("x", "x", 3.4, "×", at_most=2.0)
    assert missed["met"] is False and missed["gap"] == "1.70× over"
    short = report.figure("y", "y", 15_000, "/s", at_least=30_000)
    assert short["met"] is False and short["gap"] == "0.50× of it"
    assert report.figure("z", "z", 1.0, "×", at_most=2.0)["met"] is True and report.figure("w", "w", 1.0, "µs")["met"] is None
    table = report.markdown({"machine": report.machine(), "settings": {"mode": "quick"}, "figures": [missed, short]})
    assert "missed: 1.70× over" in table and "missed: 0.50× of it" in table


def test_client_figures_spread_is_the_worst_clients_p99_over_the_median_clients():
    steady = [[100] * 100 for _ in range(4)]
    starved = steady[:3] + [[100] * 90 + [5000] * 10]
    assert concurrency.client_figures(steady, 1.0)["client_p99_spread"] == 1.0
    figures = concurrency.client_figures(starved, 2.0)
    assert figures["client_p99_spread"] == 50.0 and figures["requests_per_second"] == 200.0 and figures["clients"] == 4


def test_a_figure_that_is_not_finite_is_refused():
    broken = {"figures": [report.figure("nan", "nan", float("nan"), "×")]}
    with pytest.raises(ValueError, match="nan"):
        report.check_finite(broken)


def test_the_in_process_session_figure_times_sealed_frames_against_plain_ones():
    """The attested pair really seals (no plaintext on the wire, after a real handshake) and the
    plain pair does not; every figure comes out finite. No threshold: that is the benchmark's job."""
    from zerocopy._client import _sign_http_request

    from benchmarks.bench_sign import BINANCE_PARAMS

    request = _sign_http_request("binance", "POST", "/api/v3/order", BINANCE_PARAMS, None)
    client, enclave = overheads._connection_pair(attested=True)
    assert client.session is not None and enclave.session is not None and b"LTCBTC" not in client.send_sign_http(3, request)
    plain, _ = overheads._connection_pair(attested=False)
    assert plain.session is None and b"LTCBTC" in plain.send_sign_http(3, request)
    figures = overheads.attested_session_frames(50, rounds=1)
    assert set(figures) == {"plain_us", "attested_us", "cost_us", "ratio", "session_us", "aead_us"}
    assert all(math.isfinite(value) for value in figures.values()) and min(figures["plain_us"], figures["session_us"], figures["aead_us"]) > 0
