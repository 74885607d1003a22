"""What each exchange's signature covers, and the endpoints the policy engine knows.

Binance and Bybit sign only the parameters (Binance: query string + form body; Bybit: timestamp,
API key, recv window and the query string or JSON body) — not the method and not the path. A
signature is therefore valid for *every* endpoint that accepts the same parameter set: the
parameters of a ``GET /api/v3/order`` also cancel an order with ``DELETE``, those of
``POST /api/v3/order/test`` also place a real order, and a bare ``timestamp`` also flips
Binance's fast-withdraw switch. The engine decides on the parameter set: it finds every endpoint
listed here that accepts it and applies the strictest rule among them. Parameter sets no listed
endpoint accepts are refused, so an endpoint that is missing from this catalogue can never be
reached with a signature from the enclave.

OKX and Kraken sign the path (OKX also the method), so there the endpoint itself decides.
Coinbase's JWT covers the method and path but not the body: a policy can restrict which requests
get a JWT, but not what is in their bodies (see ``docs/policy.md``).

Parameter names are from the exchanges' API documentation (Binance Spot API and SAPI, Binance
WebSocket API, Bybit v5, OKX v5, Kraken REST, Coinbase Advanced Trade), as of 2025.

Each endpoint also lists the documented spellings of its enumerated parameters (``values``): the
engine reads some of them (order types, margin flags, size units), and an exchange that accepts
``margin_buy`` for ``MARGIN_BUY`` would otherwise act on a value the engine misread. A value not
listed is refused as non-canonical. Sources are named in ``docs/policy.md``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

__all__ = ["Endpoint", "Flags", "CATALOGUES", "SIGNATURE_COVERS", "DANGEROUS_CATEGORIES", "endpoint_name"]

# Categories that are refused unless a policy names the endpoint explicitly (and that a refusal
# names as its rule). Settings (leverage) are here too: they change what every later order risks.
DANGEROUS_CATEGORIES = frozenset({"funds", "security", "session", "settings"})

# exchange -> what the signature covers besides the parameters
SIGNATURE_COVERS = {
    "binance": frozenset(),
    "binance-ws": frozenset(),
    "bybit": frozenset({"format"}),  # query string (GET) vs JSON body (POST) differ in bytes
    "okx": frozenset({"method", "path"}),
    "kraken": frozenset({"path"}),
    "coinbase": frozenset({"method", "path", "no-body"}),
}


class Flags(frozenset):
    """Documented flags of a comma-separated list parameter (Kraken's ``oflags``): each at most once."""


_NO_VALUES: Mapping[str, frozenset[str]] = MappingProxyType({})


@dataclass(frozen=True)
class Endpoint:
    method: str
    path: str
    category: str  # "trade", "read", "funds", "security", "session", "settings"
    kind: str  # "order", "amend", "cancel", "read", "other"
    required: frozenset[str] = frozenset()
    optional: frozenset[str] = frozenset()
    name: str = ""  # "METHOD path", filled in by _e
    # enumerated parameter -> its documented spellings (a Flags: a comma-separated list of them)
    values: Mapping[str, frozenset[str]] = field(default_factory=lambda: _NO_VALUES, compare=False, repr=False)

    def accepts(self, names: frozenset[str]) -> bool:
        return self.required <= names and names <= self.required | self.optional


def endpoint_name(method: str, path: str) -> str:
    return f"{method.upper()} {path}"


def _e(method: str, path: str, category: str, kind: str, required: str = "", optional: str = "", values: Mapping[str, frozenset[str]] = _NO_VALUES) -> Endpoint:
    endpoint = Endpoint(method, path, category, kind, frozenset(required.split()), frozenset(optional.split()), endpoint_name(method, path), MappingProxyType(dict(values)))
    assert set(endpoint.values) <= endpoint.required | endpoint.optional, endpoint.name
    return endpoint


def _spellings(**documented: str | Flags) -> dict[str, frozenset[str]]:
    """``name="A B"`` -> ``{name: {"A", "B"}}``: the spellings an exchange documents for a parameter."""
    return {name: spellings if isinstance(spellings, Flags) else frozenset(spellings.split()) for name, spellings in documented.items()}


# -- Binance Spot REST and SAPI (signature over query string + body) -------------------------
_BN_TIME = " timestamp"
_BN_OPTIONAL_TIME = " recvWindow"
_BN_NEW_ORDER = (
    "timeInForce quantity quoteOrderQty price newClientOrderId strategyId strategyType stopPrice "
    "trailingDelta icebergQty newOrderRespType selfTradePreventionMode pegPriceType pegOffsetValue pegOffsetType" + _BN_OPTIONAL_TIME
)
# Spot API enums.md and the endpoint pages (rest-api.md); SAPI "Margin Account New Order (TRADE)".
_BN_ORDER_VALUES = _spellings(
    side="BUY SELL",
    type="LIMIT MARKET STOP_LOSS STOP_LOSS_LIMIT TAKE_PROFIT TAKE_PROFIT_LIMIT LIMIT_MAKER",
    timeInForce="GTC IOC FOK",
    newOrderRespType="ACK RESULT FULL",
    selfTradePreventionMode="NONE EXPIRE_TAKER EXPIRE_MAKER EXPIRE_BOTH DECREMENT TRANSFER",
    pegPriceType="PRIMARY_PEG MARKET_PEG",
    pegOffsetType="PRICE_LEVEL",
)
_BN_TEST_VALUES = {**_BN_ORDER_VALUES, **_spellings(computeCommissionRates="true false")}
_BN_MARGIN_VALUES = {
    **{name: _BN_ORDER_VALUES[name] for name in ("side", "type", "timeInForce", "newOrderRespType")},
    **_spellings(
        selfTradePreventionMode="NONE EXPIRE_TAKER EXPIRE_MAKER EXPIRE_BOTH",
        sideEffectType="NO_SIDE_EFFECT MARGIN_BUY AUTO_REPAY AUTO_BORROW_REPAY",
        isIsolated="TRUE FALSE",
        autoRepayAtCancel="true false",
    ),
}
_BN_CANCEL_VALUES = _spellings(cancelRestrictions="ONLY_NEW ONLY_PARTIALLY_FILLED")
_BN_ACCOUNT_VALUES = _spellings(omitZeroBalances="true false")
BINANCE = (
    _e("POST", "/api/v3/order", "trade", "order", "symbol side type" + _BN_TIME, _BN_NEW_ORDER, _BN_ORDER_VALUES),
    _e("POST", "/api/v3/order/test", "trade", "order", "symbol side type" + _BN_TIME, _BN_NEW_ORDER + " computeCommissionRates", _BN_TEST_VALUES),
    _e("POST", "/sapi/v1/margin/order", "trade", "order", "symbol side type" + _BN_TIME,
       "isIsolated timeInForce quantity quoteOrderQty price stopPrice newClientOrderId icebergQty newOrderRespType "
       "sideEffectType selfTradePreventionMode autoRepayAtCancel" + _BN_OPTIONAL_TIME, _BN_MARGIN_VALUES),
    _e("DELETE", "/api/v3/order", "trade", "cancel", "symbol" + _BN_TIME, "orderId origClientOrderId newClientOrderId cancelRestrictions" + _BN_OPTIONAL_TIME, _BN_CANCEL_VALUES),
    _e("GET", "/api/v3/order", "read", "read", "symbol" + _BN_TIME, "orderId origClientOrderId" + _BN_OPTIONAL_TIME),
    _e("DELETE", "/api/v3/openOrders", "trade", "cancel", "symbol" + _BN_TIME, _BN_OPTIONAL_TIME),
    _e("GET", "/api/v3/openOrders", "read", "read", _BN_TIME, "symbol" + _BN_OPTIONAL_TIME),
    _e("GET", "/api/v3/allOrders", "read", "read", "symbol" + _BN_TIME, "orderId startTime endTime limit" + _BN_OPTIONAL_TIME),
    _e("GET", "/api/v3/myTrades", "read", "read", "symbol" + _BN_TIME, "orderId startTime endTime fromId limit" + _BN_OPTIONAL_TIME),
    _e("GET", "/api/v3/account", "read", "read", _BN_TIME, "omitZeroBalances" + _BN_OPTIONAL_TIME, _BN_ACCOUNT_VALUES),
    _e("GET", "/api/v3/rateLimit/order", "read", "read", _BN_TIME, _BN_OPTIONAL_TIME),
    # Account security: a bare timestamp is a valid signature for these.
    _e("POST", "/sapi/v1/account/enableFastWithdrawSwitch", "security", "other", _BN_TIME, _BN_OPTIONAL_TIME),
    _e("POST", "/sapi/v1/account/disableFastWithdrawSwitch", "security", "other", _BN_TIME, _BN_OPTIONAL_TIME),
    # Fund-moving.
    _e("POST", "/sapi/v1/capital/withdraw/apply", "funds", "other", "coin address amount" + _BN_TIME,
       "withdrawOrderId network addressTag transactionFeeFlag name walletType" + _BN_OPTIONAL_TIME),
    _e("POST", "/sapi/v1/asset/transfer", "funds", "other", "type asset amount" + _BN_TIME, "fromSymbol toSymbol" + _BN_OPTIONAL_TIME),
    _e("POST", "/sapi/v1/futures/transfer", "funds", "other", "asset amount type" + _BN_TIME, _BN_OPTIONAL_TIME),
    _e("POST", "/sapi/v1/sub-account/universalTransfer", "funds", "other", "fromAccountType toAccountType asset amount" + _BN_TIME,
       "fromEmail toEmail clientTranId symbol" + _BN_OPTIONAL_TIME),
    _e("POST", "/sapi/v1/sub-account/transfer/subToMaster", "funds", "other", "asset amount" + _BN_TIME, _BN_OPTIONAL_TIME),
    _e("POST", "/sapi/v1/margin/borrow-repay", "funds", "other", "asset isIsolated symbol amount type" + _BN_TIME, _BN_OPTIONAL_TIME),
    _e("POST", "/sapi/v1/asset/dust", "funds", "other", "asset" + _BN_TIME, "accountType" + _BN_OPTIONAL_TIME),
)

# -- Binance WebSocket API (signature over all params sorted, apiKey included) ----------------
_WS_TIME = " apiKey timestamp"
BINANCE_WS = (
    _e("WS", "order.place", "trade", "order", "symbol side type" + _WS_TIME, _BN_NEW_ORDER, _BN_ORDER_VALUES),
    _e("WS", "order.test", "trade", "order", "symbol side type" + _WS_TIME, _BN_NEW_ORDER + " computeCommissionRates", _BN_TEST_VALUES),
    _e("WS", "order.cancel", "trade", "cancel", "symbol" + _WS_TIME, "orderId origClientOrderId newClientOrderId cancelRestrictions" + _BN_OPTIONAL_TIME, _BN_CANCEL_VALUES),
    _e("WS", "order.status", "read", "read", "symbol" + _WS_TIME, "orderId origClientOrderId" + _BN_OPTIONAL_TIME),
    _e("WS", "openOrders.cancelAll", "trade", "cancel", "symbol" + _WS_TIME, _BN_OPTIONAL_TIME),
    _e("WS", "openOrders.status", "read", "read", _WS_TIME, "symbol" + _BN_OPTIONAL_TIME),
    _e("WS", "account.status", "read", "read", _WS_TIME, "omitZeroBalances" + _BN_OPTIONAL_TIME, _BN_ACCOUNT_VALUES),
    # After a logon the session sends requests without signatures: the whole key, unchecked.
    _e("WS", "session.logon", "session", "other", _WS_TIME, _BN_OPTIONAL_TIME),
)

# -- Bybit v5 (GET: query string; POST: JSON body) --------------------------------------------
_BYBIT_ORDER = (
    "isLeverage marketUnit price triggerDirection orderFilter triggerPrice triggerBy orderIv timeInForce positionIdx "
    "orderLinkId takeProfit stopLoss tpTriggerBy slTriggerBy reduceOnly closeOnTrigger smpType mmp tpslMode "
    "tpLimitPrice slLimitPrice tpOrderType slOrderType"
)
# v5 "Place Order" (order/create-order), "Enums Definitions" (enum); JSON true/false and integers
# are compared as the text "true", "false", "1".
_BYBIT_TRIGGER = "LastPrice IndexPrice MarkPrice"
_BYBIT_CATEGORY = _spellings(category="spot linear inverse option")
_BYBIT_FILTER = _spellings(orderFilter="Order tpslOrder StopOrder")
_BYBIT_ORDER_VALUES = _spellings(
    category="spot linear inverse option",
    side="Buy Sell",
    orderType="Market Limit",
    isLeverage="0 1",
    marketUnit="baseCoin quoteCoin",
    triggerDirection="1 2",
    orderFilter="Order tpslOrder StopOrder",
    triggerBy=_BYBIT_TRIGGER, tpTriggerBy=_BYBIT_TRIGGER, slTriggerBy=_BYBIT_TRIGGER,
    timeInForce="GTC IOC FOK PostOnly RPI",
    positionIdx="0 1 2",
    reduceOnly="true false", closeOnTrigger="true false", mmp="true false",
    smpType="None CancelMaker CancelTaker CancelBoth",
    tpslMode="Full Partial",
    tpOrderType="Market Limit", slOrderType="Market Limit",
)
_BYBIT_AMEND_VALUES = {name: _BYBIT_ORDER_VALUES[name] for name in ("category", "tpslMode", "triggerBy", "tpTriggerBy", "slTriggerBy")}
BYBIT = (
    _e("POST", "/v5/order/create", "trade", "order", "category symbol side orderType qty", _BYBIT_ORDER, _BYBIT_ORDER_VALUES),
    _e("POST", "/v5/order/amend", "trade", "amend", "category symbol",
       "orderId orderLinkId orderIv triggerPrice qty price tpslMode takeProfit stopLoss tpTriggerBy slTriggerBy triggerBy tpLimitPrice slLimitPrice", _BYBIT_AMEND_VALUES),
    _e("POST", "/v5/order/cancel", "trade", "cancel", "category symbol", "orderId orderLinkId orderFilter", {**_BYBIT_CATEGORY, **_BYBIT_FILTER}),
    _e("POST", "/v5/order/cancel-all", "trade", "cancel", "category", "symbol baseCoin settleCoin orderFilter stopOrderType", {**_BYBIT_CATEGORY, **_BYBIT_FILTER}),
    _e("GET", "/v5/order/realtime", "read", "read", "category", "symbol baseCoin settleCoin orderId orderLinkId openOnly orderFilter limit cursor",
       {**_BYBIT_CATEGORY, **_BYBIT_FILTER, **_spellings(openOnly="0 1 2")}),
    _e("GET", "/v5/order/history", "read", "read", "category", "symbol baseCoin settleCoin orderId orderLinkId orderFilter orderStatus startTime endTime limit cursor",
       {**_BYBIT_CATEGORY, **_BYBIT_FILTER}),
    _e("GET", "/v5/account/wallet-balance", "read", "read", "accountType", "coin"),
    _e("GET", "/v5/position/list", "read", "read", "category", "symbol baseCoin settleCoin limit cursor", _BYBIT_CATEGORY),
    _e("POST", "/v5/position/set-leverage", "settings", "other", "category symbol buyLeverage sellLeverage"),
    _e("POST", "/v5/asset/transfer/inter-transfer", "funds", "other", "transferId coin amount fromAccountType toAccountType"),
    _e("POST", "/v5/asset/transfer/universal-transfer", "funds", "other", "transferId coin amount fromMemberId toMemberId fromAccountType toAccountType"),
    _e("POST", "/v5/asset/withdraw/create", "funds", "other", "coin address amount timestamp", "chain tag forceChain accountType feeType beneficiary"),
)

# -- OKX v5 (method and path signed) ----------------------------------------------------------
_OKX_ORDER = "clOrdId tag posSide px reduceOnly tgtCcy banAmend pxUsd pxVol quickMgnType stpId stpMode attachAlgoOrds ccy"
# v5 "Place order", "Amend order", "Get order List", "Get positions"; JSON true/false compare as text.
_OKX_ORDER_TYPES = "market limit post_only fok ioc optimal_limit_ioc mmp mmp_and_post_only op_fok"
_OKX_ORDER_VALUES = _spellings(
    tdMode="cross isolated cash spot_isolated",
    side="buy sell",
    posSide="long short net",
    ordType=_OKX_ORDER_TYPES,
    reduceOnly="true false",
    tgtCcy="base_ccy quote_ccy",
    banAmend="true false",
    quickMgnType="manual auto_borrow auto_repay",
    stpMode="cancel_maker cancel_taker cancel_both",
)
OKX = (
    _e("POST", "/api/v5/trade/order", "trade", "order", "instId tdMode side ordType sz", _OKX_ORDER, _OKX_ORDER_VALUES),
    _e("POST", "/api/v5/trade/amend-order", "trade", "amend", "instId", "ordId clOrdId cxlOnFail reqId newSz newPx newPxUsd newPxVol", _spellings(cxlOnFail="true false")),
    _e("POST", "/api/v5/trade/cancel-order", "trade", "cancel", "instId", "ordId clOrdId"),
    _e("GET", "/api/v5/trade/order", "read", "read", "instId", "ordId clOrdId"),
    _e("GET", "/api/v5/trade/orders-pending", "read", "read", "", "instType uly instFamily instId ordType state after before limit",
       _spellings(instType="SPOT MARGIN SWAP FUTURES OPTION", ordType=_OKX_ORDER_TYPES, state="live partially_filled")),
    _e("GET", "/api/v5/account/balance", "read", "read", "", "ccy"),
    _e("GET", "/api/v5/account/positions", "read", "read", "", "instType instId posId", _spellings(instType="MARGIN SWAP FUTURES OPTION")),
    _e("POST", "/api/v5/account/set-leverage", "settings", "other", "lever mgnMode", "instId ccy posSide"),
    _e("POST", "/api/v5/asset/transfer", "funds", "other", "ccy amt from to", "subAcct type loanTrans omitPosRisk clientId"),
    _e("POST", "/api/v5/asset/withdrawal", "funds", "other", "ccy amt dest toAddr", "chain areaCode rcvrInfo clientId fee"),
)

# -- Kraken (URI path signed; POST form data with nonce) ---------------------------------------
# REST "Add Order", "Edit Order", "Get Open Orders", "Query Orders Info". ``leverage`` takes a
# number (or "2:1"), not an enumeration: the borrowing rule refuses it whatever its value.
_KRAKEN_FLAGS = Flags("post fcib fciq nompp viqc".split())
_KRAKEN_ORDER_VALUES = _spellings(
    ordertype="market limit iceberg stop-loss take-profit stop-loss-limit take-profit-limit trailing-stop trailing-stop-limit settle-position",
    type="buy sell",
    trigger="index last",
    reduce_only="true false",
    stptype="cancel-newest cancel-oldest cancel-both",
    oflags=_KRAKEN_FLAGS,
    timeinforce="GTC IOC GTD",
    validate="true false",
)
KRAKEN = (
    _e("POST", "/0/private/AddOrder", "trade", "order", "nonce ordertype type volume pair",
       "userref cl_ord_id displayvol price price2 trigger leverage reduce_only stptype oflags timeinforce starttm expiretm validate deadline", _KRAKEN_ORDER_VALUES),
    _e("POST", "/0/private/EditOrder", "trade", "amend", "nonce txid pair", "userref volume displayvol price price2 oflags deadline cancel_response validate",
       _spellings(oflags=_KRAKEN_FLAGS, cancel_response="true false", validate="true false")),
    _e("POST", "/0/private/CancelOrder", "trade", "cancel", "nonce", "txid cl_ord_id"),
    _e("POST", "/0/private/CancelAll", "trade", "cancel", "nonce"),
    _e("POST", "/0/private/Balance", "read", "read", "nonce"),
    _e("POST", "/0/private/OpenOrders", "read", "read", "nonce", "trades userref cl_ord_id", _spellings(trades="true false")),
    _e("POST", "/0/private/QueryOrders", "read", "read", "nonce txid", "trades userref consolidate_taker", _spellings(trades="true false", consolidate_taker="true false")),
    _e("POST", "/0/private/Withdraw", "funds", "other", "nonce asset key amount", "address max_fee"),
    _e("POST", "/0/private/WalletTransfer", "funds", "other", "nonce asset from to amount"),
    _e("POST", "/0/private/WithdrawCancel", "funds", "other", "nonce asset refid"),
)

# -- Coinbase Advanced Trade (JWT over method + host + path; the body is not covered) ---------
COINBASE = (
    _e("POST", "/api/v3/brokerage/orders", "trade", "order"),
    _e("POST", "/api/v3/brokerage/orders/batch_cancel", "trade", "cancel"),
    _e("POST", "/api/v3/brokerage/orders/edit", "trade", "amend"),
    _e("GET", "/api/v3/brokerage/orders/historical/batch", "read", "read"),
    _e("GET", "/api/v3/brokerage/accounts", "read", "read"),
    _e("POST", "/api/v3/brokerage/portfolios/move_funds", "funds", "other"),
    _e("POST", "/v2/accounts/{account_id}/transactions", "funds", "other"),
)

CATALOGUES: dict[str, tuple[Endpoint, ...]] = {
    "binance": BINANCE,
    "binance-ws": BINANCE_WS,
    "bybit": BYBIT,
    "okx": OKX,
    "kraken": KRAKEN,
    "coinbase": COINBASE,
}
