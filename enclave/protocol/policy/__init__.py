"""The signing-policy language and its decision function.

A policy is sealed with its secret (its SHA-256 is part of the KMS encryption context), so the
host cannot swap or loosen it. Three parts: :mod:`.document` (the schema and canonical form),
:mod:`.engine` (the decision, reading the key's exchange descriptor) and :mod:`.limits` (the rate
bucket, the notional window and the remembered verdicts, each bounded and locked on its own).
``zerocopy.policy.explain`` says a parsed policy in plain words, on the host.

Document (JSON; ``zerocopy seal --policy`` also reads TOML) — every field is optional::

    version = 1
    scheme = "binance-hmac"       # optional: the scheme the policy is written for
    allow = ["POST /api/v3/order", "DELETE /api/v3/order"]   # endpoints ("METHOD path")
    raw_signing = false           # Signer.sign() of arbitrary bytes
    borrowing = false             # orders that make the exchange lend
    symbols = ["BTCUSDT"]         # allowlist for orders, amends and cancels
    max_quantity = "0.5"          # per order, in base units
    max_notional = "25000"        # per order, price x quantity (quote units)
    [per_symbol.BTCUSDT]          # tighter limits for one symbol
    max_quantity = "0.1"
    [notional_window]             # cumulative notional of signed orders
    seconds = 3600
    max_notional = "100000"
    [rate]                        # token bucket over orders and amends
    per_second = "5"
    burst = 10
    [freshness]                   # client-supplied timestamps (Binance)
    enabled = true
    max_skew_ms = 5000
    max_recv_window_ms = 5000
"""

from .document import PolicyError, normalize_document
from .engine import Authorized, PolicyState, Refusal, SigningPolicy

__all__ = ["PolicyError", "Refusal", "SigningPolicy", "PolicyState", "Authorized", "normalize_document"]
