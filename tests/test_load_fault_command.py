"""``benchmarks/load_fault.py`` (the README's load-and-fault command): a short run in CI.

The README runs 64 clients for 20 s; here 8 clients for a few seconds, with the same SIGKILL,
restart and re-provisioning part-way, so the command and its checks cannot rot.
"""

from __future__ import annotations

import json

from benchmarks import load_fault


def test_a_short_run_loses_nothing_and_recovers(capsys):
    assert load_fault.main(["--clients", "8", "--seconds", "4", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert (report["lost"], report["mismatched"], report["untyped"]) == (0, 0, 0)
    assert report["ok"] > 100 and report["refused"] > 0
    assert report["recovery_s"] is not None and report["recovery_s"] < 30


def test_a_wrong_signature_counts_as_mismatched():
    class Forged:
        query = "symbol=BTCUSDT&timestamp=1&signature=" + "00" * 32
        headers = {"X-MBX-APIKEY": load_fault.BINANCE_API_KEY}

    assert "does not match" in load_fault._check_order(Forged())
    assert not load_fault.healthy({"lost": 0, "mismatched": 1, "untyped": 0, "recovery_s": 1.0})
