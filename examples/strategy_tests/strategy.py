"""The team's strategy: a grid of small limit buys just below the mid price, signed by the enclave."""

from __future__ import annotations

from decimal import Decimal

from zerocopy import SignedRequest, Signer

GRID_STEPS = (Decimal("0.99"), Decimal("0.98"), Decimal("0.97"))  # fractions of the mid price
ORDER_QUANTITY = Decimal("0.01")  # base units per order
TICK = Decimal("0.01")


def grid_orders(symbol: str, mid: Decimal) -> list[dict[str, str]]:
    """Binance order parameters for one grid, nearest the mid price first."""
    return [
        {"symbol": symbol, "side": "BUY", "type": "LIMIT", "timeInForce": "GTC",
         "quantity": str(ORDER_QUANTITY), "price": str((mid * step).quantize(TICK))}
        for step in GRID_STEPS
    ]


def sign_grid(signer: Signer, key: str, symbol: str, mid: Decimal) -> list[SignedRequest]:
    """The grid's orders, each signed by the enclave and ready to send."""
    return [signer.sign_request(key, "POST", "/api/v3/order", params=order) for order in grid_orders(symbol, mid)]
