"""Generate first, bind the API key id later (issue 11), end to end on an emulator of this module's
own (the session enclave is at its key limit): a key pair generated without an API key id signs
nothing; BIND gives it one, once, and the enclave re-seals it; the re-sealed bundle loads bound in
the next boot. Signatures are checked with the public key alone, by each exchange's documented
rules (tests/reference_signers.py), never by the enclave's code. The attacks are made as the host
would make them (raw frames on the enclave's socket, with the host's own AWS credentials) are in
tests/attacks/test_attack_bind.py."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
from urllib.parse import unquote

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ed25519, padding, rsa
from cryptography.hazmat.primitives.serialization import load_pem_public_key
from hypothesis import given
from hypothesis import strategies as st

from enclave.protocol import ErrorCode
from enclave.protocol.bundle import SealedBundle
from enclave.protocol.messages import Bind, Bound, MessageError
from pytest_zerocopy import factories
from reference_signers import coinbase_check, form
from zerocopy import EnclaveError, KeyNotBound, PolicyRefused, ProvisioningError, Signer, UnknownKey

# Not marked ``zerocopy``: the mark starts the session emulator inside this module's own, whose
# ZEROCOPY_ENCLAVE would then be restored out of order. The fixtures skip without --zerocopy.

NOW_MS = 1_700_000_000_000  # the enclave's pinned clock (a launch option): timestamps are known
bind_emulator = factories.emulator_proc(scope="module", clock=f"fixed:{NOW_MS}")
bind_signer = factories.signer("bind_emulator", scope="module")

BINANCE_ORDER = [("symbol", "LTCBTC"), ("side", "BUY"), ("type", "LIMIT"), ("timeInForce", "GTC"), ("quantity", "1"), ("price", "0.1")]
BYBIT_ORDER = {"category": "spot", "symbol": "BTCUSDT", "side": "Buy", "orderType": "Limit", "qty": "0.01", "price": "30000", "timeInForce": "GTC", "orderLinkId": "bind-1"}
SCHEMES = ("binance-ed25519", "binance-rsa", "bybit-rsa", "coinbase-jwt")


def _sign_order(signer: Signer, name: str, scheme: str):
    if scheme.startswith("binance"):
        return signer.sign_request(name, "POST", "/api/v3/order", params=BINANCE_ORDER)
    if scheme == "bybit-rsa":
        return signer.sign_request(name, "POST", "/v5/order/create", body=json.dumps(BYBIT_ORDER))
    return signer.sign_request(name, "GET", "/api/v3/brokerage/accounts")


def _verify_primitive(public_key, signature: bytes, message: bytes) -> None:
    if isinstance(public_key, ed25519.Ed25519PublicKey):
        public_key.verify(signature, message)
    else:
        assert isinstance(public_key, rsa.RSAPublicKey)
        public_key.verify(signature, message, padding.PKCS1v15(), hashes.SHA256())


def _verify(scheme: str, public_pem: str, api_key: str, signed) -> None:
    """``signed`` is what the exchange would accept from ``api_key``'s account: the signature
    verifies with the public key over the string the exchange's documentation says it signs."""
    public_key = load_pem_public_key(public_pem.encode())
    if scheme.startswith("binance"):
        total = form(BINANCE_ORDER) + f"&timestamp={NOW_MS}"  # the enclave adds the timestamp
        query, _, signature = signed.query.rpartition("&signature=")
        assert query == total and signed.headers == {"X-MBX-APIKEY": api_key}
        _verify_primitive(public_key, base64.b64decode(unquote(signature)), total.encode())
    elif scheme == "bybit-rsa":
        headers = signed.headers
        assert headers["X-BAPI-API-KEY"] == api_key and headers["X-BAPI-TIMESTAMP"] == str(NOW_MS)
        assert json.loads(signed.body) == BYBIT_ORDER
        plain = f"{NOW_MS}{api_key}{headers['X-BAPI-RECV-WINDOW']}".encode() + signed.body.encode()
        _verify_primitive(public_key, base64.b64decode(headers["X-BAPI-SIGN"]), plain)
    else:
        token = signed.headers["Authorization"].removeprefix("Bearer ")
        coinbase_check(public_key, api_key, "GET", "/api/v3/brokerage/accounts", NOW_MS, token)


def _receipts(signer: Signer, name: str) -> list[dict]:
    return [json.loads(line) for line in signer.audit()["receipts"] if json.loads(line)["key"] == name]


@pytest.mark.parametrize("scheme", SCHEMES)
def test_generated_without_an_api_key_it_signs_only_once_bound(bind_emulator, bind_signer, scheme):
    name = f"later-{scheme}"
    credentials = bind_emulator.credentials
    unbound, public_pem = bind_signer.generate(name, scheme, credentials=credentials)
    assert SealedBundle.from_json(unbound).api_key == ""
    (info,) = [key for key in bind_signer.keys() if key.name == name]
    assert info.api_key == "" and info.public_key == public_pem
    with pytest.raises(KeyNotBound, match=f"zerocopy bind {name} --api-key") as refused:
        _sign_order(bind_signer, name, scheme)
    assert isinstance(refused.value, PolicyRefused) and refused.value.rule == "api-key"
    with pytest.raises(KeyNotBound):
        bind_signer.sign(name, b"raw payload")
    assert [(r["decision"], r["rule"]) for r in _receipts(bind_signer, name)] == [("refused", "api-key")] * 2

    api_key = f"AK-{scheme}-0001"
    bound = bind_signer.bind(name, api_key, credentials=credentials)
    sealed = SealedBundle.from_json(bound)
    assert (sealed.name, sealed.scheme, sealed.api_key) == (name, scheme, api_key)
    assert sealed.kms_key_id == SealedBundle.from_json(unbound).kms_key_id == bind_emulator.seal_key
    assert sealed.policy_sha256 == SealedBundle.from_json(unbound).policy_sha256
    assert b"PRIVATE KEY" not in bound
    (info,) = [key for key in bind_signer.keys() if key.name == name]
    assert info.api_key == api_key and info.public_key == public_pem  # the same key pair
    _verify(scheme, public_pem, api_key, _sign_order(bind_signer, name, scheme))
    *_, bind_receipt, signed = _receipts(bind_signer, name)
    assert signed["decision"] == "signed"
    assert (bind_receipt["decision"], bind_receipt["request"], bind_receipt["reason"]) == ("bound", "bind", f"API key id {api_key}")
    assert bind_receipt["digest"] == hashlib.sha256(bound).hexdigest()  # names the bundle the operator keeps


def test_the_re_sealed_bundles_load_bound_in_the_next_boot(bind_emulator, bind_signer):
    credentials = bind_emulator.credentials
    made = {}
    for scheme in SCHEMES:
        _, public_pem = bind_signer.generate(f"reboot-{scheme}", scheme, credentials=credentials)
        made[scheme] = (public_pem, bind_signer.bind(f"reboot-{scheme}", f"AK-reboot-{scheme}", credentials=credentials))
    with bind_emulator.launch(clock=f"fixed:{NOW_MS}") as next_boot, Signer(next_boot.address) as signer:
        assert next_boot.pcrs[0] == bind_emulator.pcrs[0]  # the same image and options: the seal key's policy admits it
        results = signer.provision([bundle for _, bundle in made.values()], credentials=credentials)
        assert [result.error for result in results] == [None] * len(SCHEMES)
        for scheme, (public_pem, _) in made.items():
            _verify(scheme, public_pem, f"AK-reboot-{scheme}", _sign_order(signer, f"reboot-{scheme}", scheme))


def test_the_async_signer_binds_as_the_signer_does(bind_emulator):
    from zerocopy import AsyncSigner

    credentials = bind_emulator.credentials

    async def run():
        async with AsyncSigner(bind_emulator.address) as signer:
            _, public_pem = await signer.generate("async-later", "binance-rsa", credentials=credentials)
            refusal = None
            try:
                await signer.sign_request("async-later", "POST", "/api/v3/order", params=BINANCE_ORDER)
            except KeyNotBound as refused:
                refusal = refused
            bundle = await signer.bind("async-later", "AK-ASYNC", credentials=credentials)
            return public_pem, refusal, bundle, await signer.sign_request("async-later", "POST", "/api/v3/order", params=BINANCE_ORDER)

    public_pem, refusal, bundle, signed = asyncio.run(run())
    assert refusal is not None and refusal.rule == "api-key" and SealedBundle.from_json(bundle).api_key == "AK-ASYNC"
    _verify("binance-rsa", public_pem, "AK-ASYNC", signed)


def test_binding_refuses_unknown_bound_and_raw_keys_with_clear_errors(bind_emulator, bind_signer):
    credentials = bind_emulator.credentials
    with pytest.raises(UnknownKey, match="not loaded in this enclave"):
        bind_signer.bind("no-such-key", "AK", credentials=credentials)
    bind_signer.generate("raw-ed25519", "ed25519", credentials=credentials)
    with pytest.raises(ProvisioningError, match="not an exchange key waiting for its API key id"):
        bind_signer.bind("raw-ed25519", "AK", credentials=credentials)
    bind_signer.generate("already", "binance-ed25519", credentials=credentials, api_key="AK-FROM-THE-START")
    with pytest.raises(ProvisioningError, match="already bound to API key id 'AK-FROM-THE-START'"):
        bind_signer.bind("already", "AK-OTHER", credentials=credentials)
    bind_signer.generate("bad-id", "bybit-rsa", credentials=credentials)
    with pytest.raises(ValueError, match="must not be empty|not empty"):
        bind_signer.bind("bad-id", "", credentials=credentials)
    with pytest.raises(EnclaveError, match="API key must be 1 to 256 printable ASCII") as refused:
        bind_signer.bind("bad-id", "has space", credentials=credentials)
    assert refused.value.code is ErrorCode.BAD_REQUEST
    (info,) = [key for key in bind_signer.keys() if key.name == "bad-id"]
    assert info.api_key == ""  # still unbound, still bindable


def test_bind_and_remove_leave_receipts_that_a_fetched_log_verifies_and_counts(bind_emulator, bind_signer, tmp_path):
    """BIND and REMOVE changed what the enclave signs with and left no receipt: the log showed
    orders signed under an API key id nobody could see being given, or a key's limits restarted
    by a REMOVE and a PROVISION without a trace. Each is a receipt now, chained and checkpointed
    like a signature, and ``zerocopy audit verify`` counts them."""
    from zerocopy.audit import fetch_into, verify_log

    credentials = bind_emulator.credentials
    policy = {"removable": True}
    _, public_pem = bind_signer.generate("audited", "binance-ed25519", credentials=credentials, policy=policy)
    bound = bind_signer.bind("audited", "AK-AUDITED", credentials=credentials)
    bind_signer.remove("audited")
    log = tmp_path / "audit.jsonl"
    fetch_into(bind_signer, log)
    report = verify_log(log.read_bytes().splitlines(), roots=[bind_emulator.root_certificate], expected_pcrs={0: bind_emulator.pcrs[0]})
    bound_receipt, removed_receipt = [r for r in (json.loads(line) for line in log.read_bytes().splitlines()) if r.get("key") == "audited"]
    assert report.bound >= 1 and report.removed == 1 and not report.gaps
    assert report.receipts == report.signed + report.refused + report.bound + report.removed
    assert bound_receipt["decision"] == "bound" and bound_receipt["digest"] == hashlib.sha256(bound).hexdigest()
    assert removed_receipt["decision"] == "removed" and removed_receipt["request"] == "remove"
    assert removed_receipt["digest"] == SealedBundle.from_json(bound).policy_sha256  # the policy it had signed under


# -- the new message's parser, with garbage ------------------------------------------------------
_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=8) | st.binary(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3),
    max_leaves=8,
)


@given(st.one_of(_VALUES, st.dictionaries(st.sampled_from(["name", "api_key", "credentials", "region", "bundle", "x"]), _VALUES)))
def test_any_bind_or_bound_fields_are_a_message_or_a_message_error(fields):
    for kind in (Bind, Bound):
        try:
            message = kind.from_fields(fields)
        except MessageError as exc:
            assert exc.code is ErrorCode.BAD_REQUEST
            continue
        assert kind.from_fields(message.to_fields()) == message
        assert "host-secret" not in repr(message)


def test_bind_reprs_hold_no_credentials_or_bundles():
    shown = repr(Bind(name="k", api_key="AK", credentials={"access_key_id": "AKIAHOST", "secret_access_key": "host-secret"}))
    shown += repr(Bound(bundle=b"sealed-bytes"))
    assert "host-secret" not in shown and "AKIAHOST" not in shown and "sealed-bytes" not in shown


def test_the_cli_generates_without_an_api_key_then_binds(bind_emulator, tmp_path, capsys, monkeypatch):
    from zerocopy._cli import main

    monkeypatch.setenv("AWS_REGION", bind_emulator.region)
    host = bind_emulator.credentials
    for name, field in (("AWS_ACCESS_KEY_ID", "access_key_id"), ("AWS_SECRET_ACCESS_KEY", "secret_access_key"), ("AWS_SESSION_TOKEN", "session_token")):
        monkeypatch.setenv(name, host[field])
    enclave, unbound, bound = ["--enclave", bind_emulator.address], tmp_path / "unbound.json", tmp_path / "bound.json"
    assert main(["generate", "--name", "cli-later", "--scheme", "bybit-rsa", "-o", str(unbound), *enclave]) == 0
    captured = capsys.readouterr()
    assert captured.out.startswith("-----BEGIN PUBLIC KEY-----") and "zerocopy bind cli-later --api-key ID" in captured.err
    assert main(["sign", "--key", "cli-later", "--request", "GET", "/v5/order/realtime", "--param", "category=spot", *enclave]) == 1
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "'api-key'" in error and "zerocopy bind cli-later" in error
    assert main(["bind", "cli-later", "--api-key", "AK-CLI", "-o", str(bound), "--json", *enclave]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result == {"name": "cli-later", "api_key": "AK-CLI", "sealed_by": bind_emulator.seal_key, "output": str(bound)}
    assert SealedBundle.from_json(bound.read_bytes()).api_key == "AK-CLI"
    assert main(["keys", *enclave]) == 0
    assert "cli-later\tbybit-rsa\tapi_key=AK-CLI\t" in capsys.readouterr().out
    again = tmp_path / "again.json"
    assert main(["bind", "cli-later", "--api-key", "AK-OTHER", "-o", str(again), *enclave]) == 1
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "already bound to API key id 'AK-CLI'" in error and not again.exists()


def test_the_keyring_swaps_a_key_only_while_it_is_the_one_loaded():
    """Two binds of one key: the second swap finds another key in its place and is refused."""
    from enclave.keyring import KeyConflict, Keyring, LoadedKey
    from enclave.protocol.policy import PolicyState, SigningPolicy
    from enclave.schemes import generate_key, load_key

    secret = generate_key("binance-ed25519")

    def loaded(api_key: str) -> LoadedKey:
        policy = PolicyState(SigningPolicy.parse(None, scheme="binance-ed25519"))
        return LoadedKey("k", "binance-ed25519", api_key, "default", "arn:k", policy, load_key("binance-ed25519", secret, api_key), api_key)

    keyring = Keyring()
    unbound, first, second = loaded(""), loaded("AK-1"), loaded("AK-2")
    assert not unbound.signing_key.bound and first.signing_key.bound
    keyring.add(unbound)
    keyring.replace(unbound, first)
    with pytest.raises(KeyConflict, match="changed meanwhile"):
        keyring.replace(unbound, second)
    assert keyring.get("k") is first


@pytest.mark.parametrize("api_key", ["", "has space", "ключ", "x" * 257])
def test_an_api_key_id_the_enclave_would_refuse_is_a_usage_error(api_key, capsys):
    from zerocopy._cli import main

    for argv in (["bind", "k", "--api-key", api_key, "-o", "out.json"], ["generate", "--name", "k", "--scheme", "bybit-rsa", "--api-key", api_key, "-o", "out.json"]):
        with pytest.raises(SystemExit) as exited:
            main(argv)
        assert exited.value.code == 2 and "argument --api-key" in capsys.readouterr().err.splitlines()[-1]


def test_bind_and_bound_go_on_the_wire_in_field_order():
    from enclave.protocol import cbor

    credentials = {"access_key_id": "AKIAHOST", "secret_access_key": "host-secret"}
    for kind, fields in (
        (Bind, {"name": "k", "api_key": "AK", "credentials": credentials}),
        (Bind, {"name": "k", "api_key": "AK", "credentials": credentials, "region": "us-east-1"}),
        (Bound, {"bundle": b"{}"}),
    ):
        assert cbor.dumps(kind.from_fields(fields).to_fields()) == cbor.dumps(fields)
    with pytest.raises(MessageError, match="api_key must be 1 to 256 characters"):
        Bind.from_fields({"name": "k", "api_key": "x" * 257, "credentials": credentials})
    with pytest.raises(MessageError, match="BIND: missing field 'credentials'"):
        Bind.from_fields({"name": "k", "api_key": "AK"})
