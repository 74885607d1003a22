"""A second, adversarial read of the day's additions (REMOVE, Kraken AmendOrder, Kraken's nonce
marker), attacked as root on the host would: through the real enclave on an emulator of this
module's own (the session enclave is at its key limit), with the host's tools or raw frames.

* Kraken's ``AmendOrder`` names no pair. Moving a stop order's ``trigger_price`` changes neither
  its size nor its limit price, yet fires it: a trade on a symbol the policy does not list.
* ``REMOVE`` of a key not sealed ``removable`` must not let the host reload its bundle with its
  rate bucket and notional window restarted, whatever order the frames come in.
* The empty ``nonce=`` marker must not let the host choose a nonce (two markers, a marker and a
  nonce, a marker in a body): the enclave's nonce goes where the marker is, or nothing is signed.
"""

from __future__ import annotations

import json

import pytest

import reference_signers as reference
from enclave.protocol import ControlResponse, ErrorCode, ErrorResponse, MessageType
from enclave.protocol.messages import Provision, Remove
from pytest_zerocopy import factories
from raw_host import send_controls
from zerocopy import PolicyRefused, UnsupportedOperation

# Not marked ``zerocopy``: the mark starts the session emulator inside this module's own, whose
# ZEROCOPY_ENCLAVE would then be restored out of order. The fixtures skip without --zerocopy.

NOW_MS = 1_700_000_000_000  # the enclave's pinned clock: no token of a rate bucket comes back
review_emulator = factories.emulator_proc(scope="module", clock=f"fixed:{NOW_MS}")
review_signer = factories.signer("review_emulator", scope="module")
review_key = factories.key_maker("review_emulator", "review_signer", scope="module")

AMEND = "/0/private/AmendOrder"




# -- Kraken AmendOrder without a pair --------------------------------------------------------------
@pytest.mark.parametrize(
    "change",
    [
        (("trigger_price", "1"),),  # a stop-loss on ETH, triggered now: a market sell of ETH
        (("trigger_price", "1"), ("post_only", "true")),
        (("display_qty", "5"),),
        (("deadline", "2023-11-14T22:13:21Z"),),
    ],
    ids=lambda change: "+".join(name for name, _ in change),
)
def test_an_amend_without_a_pair_is_refused_where_the_policy_lists_symbols(change, review_key, review_signer):
    """The bot may trade XBTUSD only; the host amends the operator's ETH stop order by its txid."""
    key = review_key("kraken", policy={"symbols": ["XBTUSD"]})
    with pytest.raises(PolicyRefused) as refused:
        review_signer.sign_request(key.name, "POST", AMEND, params=[("txid", "OETH-STOP-LOSS"), *change])
    assert refused.value.rule == "symbol" and "symbol" in str(refused.value)
    # The same amend is signed for a key whose policy does not limit symbols (the default).
    assert review_signer.sign_request(review_key("kraken").name, "POST", AMEND, params=[("txid", "OETH-STOP-LOSS"), *change]).body


# -- REMOVE and PROVISION against a key not sealed removable ---------------------------------------
BINANCE_ORDER = [("symbol", "LTCBTC"), ("side", "BUY"), ("type", "LIMIT"), ("timeInForce", "GTC"), ("quantity", "1"), ("price", "0.1")]


def _order(signer, name: str):
    return signer.sign_request(name, "POST", "/api/v3/order", params=BINANCE_ORDER)


def test_remove_and_provision_do_not_restart_the_limits_of_a_key_not_sealed_removable(review_emulator, review_signer):
    """The host has spent the key's rate (one order, no refill on the pinned clock) and holds its
    bundle. It sends REMOVE, then the bundle again, pipelined, and then the other way round: the
    key stays loaded, the same key, and its bucket stays empty."""
    credentials = review_emulator.credentials
    policy = {"rate": {"per_second": "0.001", "burst": 1}}  # no `removable`: the default, false
    bundle, _ = review_signer.generate("kept", "binance-ed25519", credentials=credentials, api_key="AK-KEPT", policy=policy)
    assert _order(review_signer, "kept").query
    with pytest.raises(PolicyRefused) as spent:
        _order(review_signer, "kept")
    assert spent.value.rule == "rate"
    removed, provisioned, reversed_provision, removed_again = send_controls(
        review_emulator.address,
        Remove(name="kept"),
        Provision(bundles=(bundle,), credentials=credentials),
        Provision(bundles=(bundle,), credentials=credentials),
        Remove(name="kept"),
    )
    for refusal in (removed, removed_again):
        assert type(refusal) is ErrorResponse and refusal.code is ErrorCode.POLICY_REFUSED and refusal.rule == "removable"
    for answer in (provisioned, reversed_provision):
        assert type(answer) is ControlResponse and answer.kind is MessageType.PROVISIONED
        (result,) = answer.fields["results"]
        assert result["loaded"] and not result["new"]  # the key already loaded, kept with its state
    with pytest.raises(PolicyRefused) as still:
        _order(review_signer, "kept")
    assert still.value.rule == "rate"


# -- Kraken's nonce marker ----------------------------------------------------------------------
@pytest.mark.parametrize(
    "params",
    [
        [("nonce", ""), ("nonce", "")],  # two markers
        [("nonce", ""), ("nonce", "1")],  # a marker and the host's own (tiny) nonce
        [("nonce", "1"), ("nonce", "")],
        [("txid", "O1"), ("nonce", "0")],  # a nonce that is no marker
        [("txid", "O1"), ("nonce", " ")],
    ],
    ids=["two-markers", "marker-then-nonce", "nonce-then-marker", "zero", "space"],
)
def test_the_nonce_marker_never_lets_the_host_choose_the_nonce(params, review_key, review_signer):
    key = review_key("kraken")
    with pytest.raises(PolicyRefused) as refused:
        review_signer.sign_request(key.name, "POST", "/0/private/CancelOrder", params=params)
    assert refused.value.rule in {"duplicate_parameter", "freshness", "non_canonical"}


def test_a_nonce_marker_in_a_body_is_refused_and_the_marker_gets_the_enclaves_nonce(review_key, review_signer):
    key = review_key("kraken")
    with pytest.raises(PolicyRefused):
        review_signer.sign_request(key.name, "POST", "/0/private/CancelOrder", body="nonce=&txid=O1")
    signed = review_signer.sign_request(key.name, "POST", "/0/private/CancelOrder", params=[("txid", "O1"), ("nonce", "")])
    body = signed.body if isinstance(signed.body, bytes) else signed.body.encode()
    fields = [tuple(field.split("=", 1)) for field in body.decode().split("&")]
    assert [name for name, _ in fields] == ["txid", "nonce"]
    nonce = int(fields[1][1])
    assert NOW_MS <= nonce < NOW_MS + 1000  # the enclave's clock (ms), a little on for each nonce it set
    expected = reference.kraken(key.secret, key.api_key, "/0/private/CancelOrder", fields, NOW_MS)
    assert signed.headers["API-Sign"] == dict(expected.headers)["API-Sign"]


# -- WebSocket logins: nothing of the host's in the string signed ---------------------------------
LOGINS = {"okx-hmac": ("login", "/api/v5/asset/withdrawal"), "bybit-hmac": ("auth", "/v5/asset/withdraw/create")}


@pytest.mark.parametrize("scheme", LOGINS)
def test_a_websocket_login_signs_only_the_documented_login_string(scheme, review_key, review_signer):
    """A key whose policy names its exchange's login: the host tries to get other bytes into the
    login's string to sign (params, a body, a REST path as the login's name) so that the signature
    would serve for a REST request, and gets a refusal; the login signed is the documented one."""
    login, fund_path = LOGINS[scheme]
    key = review_key(scheme, policy={"allow": [f"WS {login}"]})
    for params, body in (([("ccy", "BTC")], None), (None, '{"ccy":"BTC","amt":"1"}'), ([("timestamp", "1")], None)):
        with pytest.raises(PolicyRefused) as refused:
            review_signer.sign_request(key.name, "WS", login, params=params, body=body)
        assert refused.value.rule in {"unknown_parameter", "non_canonical"}
    # OKX signs the path: no such WebSocket endpoint. Bybit does not: the policy sees its login, the signer refuses the name.
    if scheme == "okx-hmac":
        with pytest.raises(PolicyRefused) as refused:
            review_signer.sign_request(key.name, "WS", fund_path)
        assert refused.value.rule == "endpoint"
    else:
        with pytest.raises(UnsupportedOperation, match="'auth', without params or body"):
            review_signer.sign_request(key.name, "WS", fund_path)
    signed = json.loads(review_signer.sign_request(key.name, "WS", login).body)
    if scheme == "okx-hmac":
        expected = reference.okx_ws_login(key.secret, key.api_key, NOW_MS)
    else:
        expected = reference.bybit_ws_auth(scheme, key.secret, key.api_key, NOW_MS + 5000)
    assert signed == expected
