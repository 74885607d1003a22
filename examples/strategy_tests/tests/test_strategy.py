"""The grid strategy against the real enclave code (``pytest --zerocopy``), under the production policy."""

import hashlib
import hmac
from decimal import Decimal
from urllib.parse import parse_qsl

import pytest
from hypothesis import given, settings

import strategy
import zerocopy
from pytest_zerocopy.strategies import fund_moving_requests


@pytest.mark.parametrize(("symbol", "mid"), [("BTCUSDT", Decimal("61250.50")), ("ETHUSDT", Decimal("2410.07"))])
def test_every_grid_order_is_signed_under_the_production_policy(symbol, mid, trading_key, zerocopy_signer):
    signed = strategy.sign_grid(zerocopy_signer, trading_key.name, symbol, mid)
    assert len(signed) == len(strategy.GRID_STEPS)
    for request, order in zip(signed, strategy.grid_orders(symbol, mid)):
        query, _, signature = request.query.rpartition("&signature=")
        # What Binance checks: HMAC-SHA256 of the query under the key's secret, and the API key.
        assert signature == hmac.new(trading_key.secret, query.encode(), hashlib.sha256).hexdigest()
        assert request.headers["X-MBX-APIKEY"] == trading_key.api_key
        assert dict(parse_qsl(query)).items() >= order.items()  # the order as the strategy built it


def test_an_order_beyond_the_policy_is_refused_before_it_could_be_sent(trading_key, zerocopy_signer):
    order = {**strategy.grid_orders("BTCUSDT", Decimal("60000"))[0], "quantity": "1"}
    with pytest.raises(zerocopy.PolicyRefused) as refused:
        zerocopy_signer.sign_request(trading_key.name, "POST", "/api/v3/order", params=order)
    assert refused.value.rule == "max_quantity"


def test_symbols_outside_the_policy_are_refused(trading_key, zerocopy_signer):
    with pytest.raises(zerocopy.PolicyRefused) as refused:
        strategy.sign_grid(zerocopy_signer, trading_key.name, "DOGEUSDT", Decimal("0.25"))
    assert refused.value.rule == "symbol"


@settings(max_examples=30)
@given(request=fund_moving_requests("binance-hmac"))
def test_the_trading_key_can_never_move_funds(request, trading_key, zerocopy_signer):
    with pytest.raises(zerocopy.PolicyRefused):
        zerocopy_signer.sign_request(trading_key.name, **request.call_args())
