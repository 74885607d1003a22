"""An asyncio bot: httpx for HTTP, a ZeroCopy enclave for every signature, requests in parallel.

All requests share one ``AsyncSigner`` (one connection to the enclave, calls pipelined on it) and
one ``httpx.AsyncClient`` whose auth is ``ZeroCopyAuth``: the bot writes plain Binance requests,
the enclave adds the timestamp, the API key header and the signature. The bot reads its balance
and the price at once, places a ladder of limit buys well below the market concurrently, then
cancels them concurrently. A request the key's policy refuses raises ``zerocopy.PolicyRefused``
before anything is sent.

Run it with the enclave's address in ``ZEROCOPY_ENCLAVE`` (and ``ZEROCOPY_EXPECTED_PCR0`` to
attest it)::

    python examples/async_bot.py

It places real orders on the exchange its key is for. Settings, from the environment:
``ZEROCOPY_KEY`` (``binance-main``), ``BOT_SYMBOL`` (``BTCUSDT``), ``BOT_ORDER_COST`` (quote
currency per order, ``20``), ``EXCHANGE_URL`` (``https://api.binance.com``; the test suite points
it at a local fake exchange that checks every signature).
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
from decimal import ROUND_DOWN, Decimal

import httpx

from zerocopy import AsyncSigner, PolicyRefused
from zerocopy.integrations.httpx import ZeroCopyAuth

log = logging.getLogger("async_bot")
SYMBOL = os.environ.get("BOT_SYMBOL", "BTCUSDT")
LADDER = (Decimal("0.70"), Decimal("0.75"), Decimal("0.80"))  # fractions of the last price


async def place(client: httpx.AsyncClient, price: Decimal, cost: Decimal) -> int:
    quantity = (cost / price).quantize(Decimal("0.00001"), rounding=ROUND_DOWN)
    response = await client.post("/api/v3/order", data={
        "symbol": SYMBOL, "side": "BUY", "type": "LIMIT", "timeInForce": "GTC",
        "quantity": str(quantity), "price": str(price),
    })
    response.raise_for_status()
    order_id = response.json()["orderId"]
    log.info("placed order %s: buy %s %s at %s", order_id, quantity, SYMBOL, price)
    return order_id


async def cancel(client: httpx.AsyncClient, order_id: int) -> None:
    response = await client.delete("/api/v3/order", params={"symbol": SYMBOL, "orderId": str(order_id)})
    response.raise_for_status()
    log.info("cancelled order %s (%s)", order_id, response.json()["status"])


async def main() -> int:
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # not a line per request
    cost = Decimal(os.environ.get("BOT_ORDER_COST", "20"))
    api = os.environ.get("EXCHANGE_URL", "https://api.binance.com")
    async with AsyncSigner.from_env() as signer, httpx.AsyncClient(base_url=api, auth=ZeroCopyAuth(signer, os.environ.get("ZEROCOPY_KEY", "binance-main")), timeout=10) as client:
        account, ticker = await asyncio.gather(
            client.get("/api/v3/account", params={"omitZeroBalances": "false"}),
            client.get("/api/v3/ticker/price", params={"symbol": SYMBOL}, auth=None),  # market data: unsigned
        )
        for response in (account, ticker):
            response.raise_for_status()
        log.info("free balances: %s", {item["asset"]: item["free"] for item in account.json()["balances"] if Decimal(item["free"])})
        last = Decimal(ticker.json()["price"])
        prices = [(last * fraction).quantize(Decimal("0.01")) for fraction in LADDER]
        outcomes = await asyncio.gather(*(place(client, price, cost) for price in prices), return_exceptions=True)
        # Cancel whatever was placed before looking at what failed: no order is left resting.
        await asyncio.gather(*(cancel(client, outcome) for outcome in outcomes if isinstance(outcome, int)))
        for outcome in outcomes:
            if isinstance(outcome, PolicyRefused):  # the key's policy refused that order: it was not sent
                log.warning("refused by the enclave: %s", outcome)
            elif isinstance(outcome, BaseException):
                raise outcome
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
