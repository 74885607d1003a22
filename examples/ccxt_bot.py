"""An ordinary ccxt bot whose Binance key lives in a ZeroCopy enclave.

It reads its balance and, for each symbol it trades, rests a small limit buy well below the market
and cancels it. The one ZeroCopy line is ``attach``: ccxt builds every request as it always does,
the enclave signs it (no secret is in this process), and a request the key's policy refuses is
never sent: it reaches the bot as the ``ccxt.PermissionDenied`` a ccxt bot already handles.

Run it with the enclave's address in ``ZEROCOPY_ENCLAVE`` (and ``ZEROCOPY_EXPECTED_PCR0``, the
image's PCR0, so the bot attests the enclave before sending anything)::

    python examples/ccxt_bot.py

It places real orders on the exchange its key is for. Settings, from the environment:
``ZEROCOPY_KEY`` (the enclave key's name, default ``binance-main``), ``BOT_SYMBOLS``
(``BTC/USDT,ETH/USDT``), ``BOT_ORDER_COST`` (quote currency per order, ``20``) and
``EXCHANGE_URL`` (an API root other than Binance's; the test suite points it at a local fake
exchange that checks every signature).
"""

from __future__ import annotations

import logging
import os
import re
import sys

import ccxt

from zerocopy import Signer
from zerocopy.integrations.ccxt import attach

log = logging.getLogger("ccxt_bot")


def make_exchange() -> ccxt.binance:
    """A plain ccxt Binance instance for a spot bot: no API key or secret here."""
    exchange = ccxt.binance({
        "enableRateLimit": True,
        "options": {
            "fetchMarkets": {"types": ["spot"]},
            # Binance's margin-pair and currency lists are signed reads whose only parameter is
            # the timestamp: the enclave cannot tell them from an account-security change, so the
            # default policy refuses them. A spot bot does not need them.
            "fetchMargins": False,
            "fetchCurrencies": False,
        },
    })
    url = os.environ.get("EXCHANGE_URL")
    if url:  # every API root of the exchange, moved to the one given
        exchange.urls["api"] = {name: re.sub(r"^https://[^/]+", url.rstrip("/"), root) for name, root in exchange.urls["api"].items()}
    return exchange


def rest_and_cancel(exchange: ccxt.binance, symbol: str, cost: float) -> None:
    """A limit buy at 80% of the last price (it rests unfilled), then its cancel."""
    price = float(exchange.price_to_precision(symbol, exchange.fetch_ticker(symbol)["last"] * 0.8))
    amount = float(exchange.amount_to_precision(symbol, cost / price))
    order = exchange.create_order(symbol, "limit", "buy", amount, price)
    log.info("%s: placed order %s, buy %s at %s (%s)", symbol, order["id"], amount, price, order["status"])
    cancelled = exchange.cancel_order(order["id"], symbol)
    log.info("%s: cancelled order %s (%s)", symbol, order["id"], cancelled["status"])


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")
    symbols = os.environ.get("BOT_SYMBOLS", "BTC/USDT,ETH/USDT").split(",")
    cost = float(os.environ.get("BOT_ORDER_COST", "20"))
    with Signer.from_env() as signer:
        exchange = attach(make_exchange(), signer, os.environ.get("ZEROCOPY_KEY", "binance-main"))
        try:
            exchange.load_markets()
            balance = exchange.fetch_balance()
            log.info("free balances: %s", {currency: amount for currency, amount in balance["free"].items() if amount})
            for symbol in symbols:
                try:
                    rest_and_cancel(exchange, symbol, cost)
                except ccxt.PermissionDenied as refusal:  # the key's policy refused it: nothing was sent
                    log.warning("%s: refused by the enclave, skipped: %s", symbol, refusal)
        finally:
            exchange.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
