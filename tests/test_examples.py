"""``examples/``, each run as written: the files are executed unchanged, in their own processes.

The two bots run against this module's emulator (attested: they are given the image's PCR0 and the
emulator's root, as a production bot is given the EIF's) and ``tests/fake_exchange.py``, which
checks every signature with the key's secret; their settings come from the environment variables
they document. The strategy team's suite runs as ``pytest --zerocopy`` with its directory as the
working directory (it starts an emulator of its own), once as written, which must pass, and once
with its strategy broken, which must fail. The CI workflow is parsed, and the passing run is its
pytest step, run as written in the strategy suite's directory (its install step needs PyPI, which
the suite has not).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

import pytest
import yaml

from fake_exchange import FakeExchange, Received, fake_exchange, fake_exchange_server  # fake_exchange*: fixtures
from pytest_zerocopy import factories
from zerocopy.integrations.ccxt import PLACEHOLDER_SECRET

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
STRATEGY_TESTS = EXAMPLES / "strategy_tests"
BIN = str(Path(sys.executable).parent)  # the interpreter's scripts (pytest): a CI job's PATH
examples_emulator = factories.emulator_proc(scope="module")
examples_signer = factories.signer("examples_emulator", scope="module")
examples_key = factories.key_maker("examples_emulator", "examples_signer", scope="module")

PRICES = {"BTCUSDT": "30000.00", "ETHUSDT": "2000.00"}
MARKETS = [("BTCUSDT", "BTC"), ("ETHUSDT", "ETH")]


def run(command: list[str], *, cwd: Path, env: dict[str, str], timeout: float) -> subprocess.CompletedProcess:
    """``command`` in a process of its own, with this tree's code and nothing left behind: no
    bytecode, pytest cache or hypothesis files in the example's directory. ``subprocess.run``
    kills it on a timeout or Ctrl-C; the emulators it starts die with it (parent-death signal)."""
    base = {name: value for name, value in os.environ.items() if not name.startswith("ZEROCOPY_")}
    base.update(
        PATH=BIN + os.pathsep + os.environ.get("PATH", ""),
        PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
        PYTHONDONTWRITEBYTECODE="1",
        PYTEST_ADDOPTS="-p no:cacheprovider",
    )
    return subprocess.run(command, cwd=cwd, env=base | env, capture_output=True, text=True, timeout=timeout)


def _files(directory: Path) -> set[Path]:
    return {path.relative_to(directory) for path in directory.rglob("*")}


# == the bots, against the fake exchange ============================================================
@pytest.fixture
def bot_env(examples_emulator, tmp_path) -> dict[str, str]:
    """What a production bot is given: the enclave's address, the image's PCR0 and the root."""
    root = tmp_path / "attestation-root.pem"
    root.write_bytes(examples_emulator.root_certificate)
    return {
        "ZEROCOPY_ENCLAVE": examples_emulator.address,
        "ZEROCOPY_EXPECTED_PCR0": examples_emulator.pcrs[0].hex(),
        "ZEROCOPY_ATTESTATION_ROOT": str(root),
    }


def _params(request: Received) -> dict[str, str]:
    return dict(parse_qsl(request.query) + parse_qsl(request.body.decode()))


def _exchange_info() -> dict:
    lot = {"filterType": "LOT_SIZE", "minQty": "0.00001", "maxQty": "9000", "stepSize": "0.00001"}
    tick = {"filterType": "PRICE_FILTER", "minPrice": "0.01", "maxPrice": "1000000", "tickSize": "0.01"}
    return {"timezone": "UTC", "serverTime": 0, "rateLimits": [], "symbols": [
        {"symbol": symbol, "status": "TRADING", "baseAsset": base, "quoteAsset": "USDT", "baseAssetPrecision": 8,
         "quotePrecision": 8, "quoteAssetPrecision": 8, "orderTypes": ["LIMIT", "MARKET"], "isSpotTradingAllowed": True,
         "isMarginTradingAllowed": False, "permissions": ["SPOT"], "permissionSets": [["SPOT"]], "filters": [tick, lot]}
        for symbol, base in MARKETS
    ]}


def serve_binance(fake: FakeExchange, key: Any) -> None:
    """Binance's answers: market data unsigned, and for signed requests (verified first) an account,
    new orders numbered from 1001 and their cancels."""
    fake.key = key
    order_ids = iter(range(1001, 2000))

    def order(request: Received, status: str) -> dict:
        params = _params(request)
        order_id = params["orderId"] if status == "CANCELED" else next(order_ids)
        return {"symbol": params["symbol"], "orderId": int(order_id), "clientOrderId": "bot", "transactTime": 0, "price": params.get("price", "0"),
                "origQty": params.get("quantity", "0"), "executedQty": "0", "status": status, "timeInForce": "GTC", "type": "LIMIT", "side": "BUY"}

    fake.public.update({
        "/api/v3/exchangeInfo": _exchange_info(),
        "/api/v3/ticker/24hr": lambda request: {"symbol": (symbol := _params(request)["symbol"]), "lastPrice": PRICES[symbol], "closeTime": 0},
        "/api/v3/ticker/price": lambda request: {"symbol": (symbol := _params(request)["symbol"]), "price": PRICES[symbol]},
    })
    fake.answers.update({
        "GET /api/v3/account": {"balances": [{"asset": "USDT", "free": "1000.00", "locked": "0.00"}, {"asset": "BTC", "free": "0", "locked": "0"}]},
        "POST /api/v3/order": lambda request: order(request, "NEW"),
        "DELETE /api/v3/order": lambda request: order(request, "CANCELED"),
    })


def signed_requests(fake: FakeExchange, key: Any) -> list[Received]:
    """What reached the exchange signed, each verified again here (raises if one does not)."""
    signed = [request for request in fake.received if request.path not in fake.public]
    for request in signed:
        fake.verify(request)
        assert PLACEHOLDER_SECRET.encode() not in request.body + request.query.encode() + json.dumps(request.headers).encode()
    return signed


def test_the_ccxt_bot_trades_through_the_enclave_and_handles_a_refusal(bot_env, examples_key, fake_exchange, tmp_path):
    key = examples_key("binance-hmac", policy={"symbols": ["BTCUSDT"]})  # the bot also trades ETH/USDT
    serve_binance(fake_exchange, key)
    result = run([sys.executable, str(EXAMPLES / "ccxt_bot.py")], cwd=tmp_path, timeout=120,
                 env=bot_env | {"EXCHANGE_URL": fake_exchange.url, "ZEROCOPY_KEY": key.name})
    assert result.returncode == 0, result.stderr
    signed = signed_requests(fake_exchange, key)
    assert [(request.method, request.path) for request in signed] == [("GET", "/api/v3/account"), ("POST", "/api/v3/order"), ("DELETE", "/api/v3/order")]
    placed, cancelled = _params(signed[1]), _params(signed[2])
    assert (placed["symbol"], placed["side"], placed["type"], placed["price"]) == ("BTCUSDT", "BUY", "LIMIT", "24000")  # 80% of the last price
    assert (cancelled["symbol"], cancelled["orderId"]) == ("BTCUSDT", "1001")
    assert "BTC/USDT: placed order 1001" in result.stderr and "BTC/USDT: cancelled order 1001 (canceled)" in result.stderr
    assert re.search(r"ETH/USDT: refused by the enclave, skipped: binance refused by rule 'symbol'", result.stderr)
    assert not any("ETHUSDT" in request.query + request.body.decode() for request in signed)  # the refused order was never sent
    assert key.secret.decode() not in result.stdout + result.stderr


def test_the_async_bot_sends_its_requests_concurrently_through_one_async_signer(bot_env, examples_key, fake_exchange, tmp_path):
    key = examples_key("binance-hmac", policy={"symbols": ["BTCUSDT"]})
    serve_binance(fake_exchange, key)
    # The three orders are answered only once all three are at the exchange: a bot that sent them
    # one after another would wait here and fail, so passing shows they were in flight together.
    together = threading.Barrier(3, timeout=30)
    new_order = fake_exchange.answers["POST /api/v3/order"]
    fake_exchange.answers["POST /api/v3/order"] = lambda request: (together.wait(), new_order(request))[1]
    result = run([sys.executable, str(EXAMPLES / "async_bot.py")], cwd=tmp_path, timeout=120,
                 env=bot_env | {"EXCHANGE_URL": fake_exchange.url, "ZEROCOPY_KEY": key.name})
    assert result.returncode == 0, result.stderr
    signed = signed_requests(fake_exchange, key)
    assert sorted((request.method, request.path) for request in signed) == [("DELETE", "/api/v3/order")] * 3 + [("GET", "/api/v3/account")] + [("POST", "/api/v3/order")] * 3
    prices = sorted(_params(request)["price"] for request in signed if request.method == "POST")
    assert prices == ["21000.00", "22500.00", "24000.00"]  # the ladder: 70, 75 and 80% of the last price
    assert sorted(_params(request)["orderId"] for request in signed if request.method == "DELETE") == ["1001", "1002", "1003"]
    assert sorted(re.findall(r"cancelled order (\d+) \(CANCELED\)", result.stderr)) == ["1001", "1002", "1003"]
    assert key.secret.decode() not in result.stdout + result.stderr


# == the strategy team's suite and its CI ============================================================
def _passed(output: str) -> int:
    summary = output.strip().splitlines()[-1]
    assert not re.search(r"skipped|error|failed", summary), summary  # every test ran, against the enclave
    return int(re.search(r"(\d+) passed", summary).group(1))


def _pytest_zerocopy(cwd: Path, tmp_path: Path, command: str = "pytest --zerocopy") -> subprocess.CompletedProcess:
    return run(["bash", "-c", command], cwd=cwd, timeout=300, env={"HYPOTHESIS_STORAGE_DIRECTORY": str(tmp_path / "hypothesis")})


def test_a_strategy_that_breaks_the_policy_fails_the_suite(tmp_path):
    checkout = tmp_path / "checkout"
    shutil.copytree(STRATEGY_TESTS, checkout)
    strategy = checkout / "strategy.py"
    source = strategy.read_text()
    assert 'ORDER_QUANTITY = Decimal("0.01")' in source
    strategy.write_text(source.replace('ORDER_QUANTITY = Decimal("0.01")', 'ORDER_QUANTITY = Decimal("0.5")'))  # above max_quantity
    result = _pytest_zerocopy(checkout, tmp_path)
    assert result.returncode == 1, result.stdout[-4000:]
    failed = re.findall(r"^FAILED tests/test_strategy.py::(\S+)", result.stdout, re.MULTILINE)
    assert sorted(failed) == ["test_every_grid_order_is_signed_under_the_production_policy[BTCUSDT-mid0]", "test_every_grid_order_is_signed_under_the_production_policy[ETHUSDT-mid1]"]
    assert "rule 'max_quantity'" in result.stdout and re.search(r"\b2 failed, 3 passed\b", result.stdout.splitlines()[-1])


def _workflow_steps() -> list[dict]:
    workflow = yaml.safe_load((EXAMPLES / "ci" / "github-actions.yml").read_text())
    (job,) = workflow["jobs"].values()
    return job["steps"]


def test_the_ci_workflow_installs_the_test_extra_and_its_pytest_step_passes_the_strategy_teams_suite(tmp_path):
    steps = _workflow_steps()
    uses = [step["uses"].partition("@")[0] for step in steps if "uses" in step]
    assert uses == ["actions/checkout", "actions/setup-python"]
    python = next(step["with"]["python-version"] for step in steps if step.get("uses", "").startswith("actions/setup-python"))
    assert tuple(map(int, str(python).split("."))) >= (3, 11)  # what pyproject's requires-python says
    runs = [step["run"] for step in steps if "run" in step]
    # From ZeroCopy's repository, never PyPI's unrelated `zerocopy` (installing is not possible from the suite)
    assert re.fullmatch(r'python -m pip install "zerocopy\[test\] @ \$\{ZEROCOPY_SOURCE\}"', runs[0])
    assert yaml.safe_load((EXAMPLES / "ci" / "github-actions.yml").read_text())["env"]["ZEROCOPY_SOURCE"].startswith("git+https://")
    (pytest_step,) = [step for step in steps if "pytest" in step.get("run", "")]
    assert pytest_step["run"] == "pytest --zerocopy"  # so this one run is also the suite under plain `pytest --zerocopy`
    # The team's repository as actions/checkout leaves it: the example itself, which the run must
    # leave as it found it (one run serves both: the suite passing and the workflow's step).
    before = _files(STRATEGY_TESTS)
    result = _pytest_zerocopy(STRATEGY_TESTS / pytest_step.get("working-directory", "."), tmp_path, pytest_step["run"])
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert _passed(result.stdout) == 5
    assert _files(STRATEGY_TESTS) == before  # nothing left in the example's directory
