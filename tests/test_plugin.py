"""The pytest plugin as a strategy team sees it: a test file written against only the documented
fixtures and marker, run in a fresh pytest session with and without ``--zerocopy``."""

from __future__ import annotations

import re

import pytest

from pytest_zerocopy import factories

# Written as a user would, using nothing but the plugin's fixtures, marker and ZEROCOPY_ENCLAVE.
USER_TESTS = '''
import hashlib, hmac, os
import pytest
from hypothesis import given, settings, strategies as st
from zerocopy import Signer

@pytest.mark.zerocopy
def test_marker_alone_gives_an_enclave_address():
    with Signer.from_env() as signer:
        assert signer.keys() is not None

def test_key_factory_and_signer(zerocopy_key, zerocopy_signer):
    key = zerocopy_key("hmac-sha256", name="user-key")
    assert key.name == "user-key" and key.public_key is None
    assert zerocopy_signer.sign(key.name, b"abc") == hmac.new(key.secret, b"abc", hashlib.sha256).digest()

def test_asymmetric_key_has_a_public_half(zerocopy_key, zerocopy_signer):
    from cryptography.hazmat.primitives.serialization import load_pem_public_key
    key = zerocopy_key("ed25519")
    load_pem_public_key(key.public_key).verify(zerocopy_signer.sign(key.name, b"m"), b"m")

@pytest.fixture(scope="module")
def shared_key(zerocopy_key):
    return zerocopy_key("hmac-sha512")

@settings(max_examples=25, deadline=None)
@given(payload=st.binary(max_size=512))
def test_signatures_inside_hypothesis(shared_key, zerocopy_signer, payload):
    assert zerocopy_signer.sign(shared_key.name, payload) == hmac.new(shared_key.secret, payload, hashlib.sha512).digest()

def test_emulator_fixture(zerocopy_emulator):
    assert os.environ["ZEROCOPY_ENCLAVE"] == zerocopy_emulator.address
    assert zerocopy_emulator.root_certificate.startswith(b"-----BEGIN CERTIFICATE-----")

def test_unrelated_test_runs_anyway():
    assert True

ORDER = [("symbol", "BTCUSDT"), ("side", "BUY"), ("type", "LIMIT"), ("timeInForce", "GTC"), ("price", "100")]

@settings(max_examples=40, deadline=None)
@given(quantity=st.integers(1, 9))
def test_a_key_made_inside_given_is_one_key_with_a_rate_for_hypothesis(zerocopy_key, zerocopy_signer, quantity):
    named = zerocopy_key("binance-hmac", name="strategy-key")
    unnamed = zerocopy_key("binance-hmac")
    assert zerocopy_key("binance-hmac") is unnamed and zerocopy_key("binance-hmac", name="strategy-key") is named
    for key in (named, unnamed):  # 80 orders at once: the production default (bursts of 20) would refuse
        zerocopy_signer.sign_request(key.name, "POST", "/api/v3/order", params=ORDER + [("quantity", str(quantity))])

def test_the_same_name_with_other_arguments_is_a_clear_error(zerocopy_key):
    zerocopy_key("binance-hmac", name="strategy-key")
    with pytest.raises(ValueError, match="'strategy-key' was made earlier in this session with other arguments"):
        zerocopy_key("binance-hmac", name="strategy-key", policy={"max_quantity": "1"})

def test_a_policy_the_test_gives_keeps_its_own_rate(zerocopy_key, zerocopy_signer):
    from zerocopy import PolicyRefused
    key = zerocopy_key("binance-hmac", policy={"rate": {"per_second": "1", "burst": 1}})
    zerocopy_signer.sign_request(key.name, "POST", "/api/v3/order", params=ORDER + [("quantity", "1")])
    with pytest.raises(PolicyRefused) as refused:
        zerocopy_signer.sign_request(key.name, "POST", "/api/v3/order", params=ORDER + [("quantity", "1")])
    assert refused.value.rule == "rate"

def test_a_policy_file_is_a_path(zerocopy_key, zerocopy_signer, tmp_path):
    from zerocopy import PolicyRefused
    from zerocopy.policy import PolicyError
    policy = tmp_path / "policy.toml"
    policy.write_text('max_quantity = "0.5"\\n')
    key = zerocopy_key("binance-hmac", policy=policy)
    with pytest.raises(PolicyRefused) as refused:
        zerocopy_signer.sign_request(key.name, "POST", "/api/v3/order", params=ORDER + [("quantity", "1")])
    assert refused.value.rule == "max_quantity"
    with pytest.raises(PolicyError, match=r"looks like a file name: pass pathlib.Path"):
        zerocopy_key("binance-hmac", policy=str(policy))

def test_a_secret_of_the_wrong_type_is_a_type_error(zerocopy_key):
    with pytest.raises(TypeError, match="secret must be bytes or str .* not int"):
        zerocopy_key("binance-hmac", secret=12345)
'''


@pytest.fixture
def user_suite(pytester: pytest.Pytester) -> pytest.Pytester:
    pytester.makepyfile(test_user=USER_TESTS)
    # The suite's own addopts (which enable --zerocopy) must not leak into the inner session.
    pytester.makeini("[pytest]\naddopts = -p no:cacheprovider\n")
    return pytester


def test_user_suite_passes_with_zerocopy(user_suite: pytest.Pytester) -> None:
    result = user_suite.runpytest_subprocess("--zerocopy", "-q")
    result.assert_outcomes(passed=11)


def test_user_suite_is_skipped_without_zerocopy_with_a_reason_that_says_how(user_suite: pytest.Pytester) -> None:
    result = user_suite.runpytest_subprocess("-q", "-rs")
    result.assert_outcomes(passed=1, skipped=10)
    result.stdout.fnmatch_lines(["*run pytest with --zerocopy*"])


def test_the_plugin_imports_nothing_heavy_without_the_flag(pytester: pytest.Pytester) -> None:
    pytester.makeini("[pytest]\naddopts = -p no:cacheprovider\n")
    pytester.makepyfile(
        test_light="""
import sys
def test_modules():
    heavy = [name for name in ("moto", "emulator", "boto3", "flask") if name in sys.modules]
    assert heavy == []
"""
    )
    pytester.runpytest_subprocess("-q").assert_outcomes(passed=1)


def test_ini_key_enables_the_emulator_like_the_flag(pytester: pytest.Pytester) -> None:
    pytester.makeini("[pytest]\naddopts = -p no:cacheprovider\nzerocopy = true\n")
    pytester.makepyfile(test_ini="def test_it(zerocopy_signer):\n    assert zerocopy_signer.keys() == [] or True\n")
    pytester.runpytest_subprocess("-q").assert_outcomes(passed=1)


# An enclave of this module's own: the session's is at its 64-key limit, and these tests count keys.
own_emulator = factories.emulator_proc(scope="module")
own_signer = factories.signer("own_emulator", scope="module")
own_key = factories.key_maker("own_emulator", "own_signer", scope="module")

ATTACHED_TESTS = """
import hashlib, hmac, os
from pathlib import Path
from zerocopy import Signer

def test_the_fixture_is_the_emulator_s_interface(zerocopy_emulator, zerocopy_signer, zerocopy_key):
    assert zerocopy_emulator.address == os.environ["ZEROCOPY_ENCLAVE"]
    assert zerocopy_emulator.pcrs[0].hex() == Path("pcr0.txt").read_text()
    assert zerocopy_emulator.root_certificate == Path("root.pem").read_bytes() and zerocopy_emulator.debug is False
    with Signer(zerocopy_emulator.address, expected_pcrs={0: zerocopy_emulator.pcrs[0]}, roots=[zerocopy_emulator.root_certificate]) as attested:
        assert attested.attested
    assert zerocopy_signer.attested
    key = zerocopy_key("hmac-sha256")
    assert zerocopy_signer.sign(key.name, b"m") == hmac.new(key.secret, b"m", hashlib.sha256).digest()
    assert key.name in [info.name for info in zerocopy_signer.keys()]
    Path("loaded.txt").write_text(key.name)
"""


@pytest.mark.parametrize("root_from", ["document", "environment"])
def test_zerocopy_enclave_gives_the_emulator_s_interface_and_removes_its_keys(pytester, own_emulator, own_signer, monkeypatch, root_from) -> None:
    """``--zerocopy-enclave`` (``zerocopy emulator up``'s exports): ``.pcrs`` and ``.root_certificate``
    as with ``--zerocopy``, and the session's test keys gone from the enclave when it ends."""
    host, operator = own_emulator.credentials, own_emulator.operator_credentials
    exports = {
        "ZEROCOPY_KMS_ENDPOINT": own_emulator.kms_endpoint_url, "ZEROCOPY_KMS_CA": str(own_emulator.tls_ca_path), "AWS_REGION": own_emulator.region,
        "AWS_ACCESS_KEY_ID": host["access_key_id"], "AWS_SECRET_ACCESS_KEY": host["secret_access_key"], "AWS_SESSION_TOKEN": host["session_token"],
        "ZEROCOPY_KMS_OPERATOR_ACCESS_KEY_ID": operator["access_key_id"], "ZEROCOPY_KMS_OPERATOR_SECRET_ACCESS_KEY": operator["secret_access_key"],
    }  # fmt: skip
    for name, value in exports.items():
        monkeypatch.setenv(name, value)
    (pytester.path / "root.pem").write_bytes(own_emulator.root_certificate)
    (pytester.path / "pcr0.txt").write_text(own_emulator.pcrs[0].hex())
    if root_from == "environment":
        monkeypatch.setenv("ZEROCOPY_ATTESTATION_ROOT", str(pytester.path / "root.pem"))
    pytester.makeini("[pytest]\naddopts = -p no:cacheprovider\n")
    pytester.makepyfile(test_attached=ATTACHED_TESTS)
    before = {info.name for info in own_signer.keys()}
    result = pytester.runpytest_subprocess(f"--zerocopy-enclave={own_emulator.address}", "-q", "-W", "error::pytest.PytestWarning")
    result.assert_outcomes(passed=1)
    loaded = (pytester.path / "loaded.txt").read_text()
    assert loaded not in before and {info.name for info in own_signer.keys()} == before


def test_remove_unloads_only_keys_sealed_removable(own_key, own_signer) -> None:
    from zerocopy import PolicyRefused, UnknownKey

    removable, kept = own_key("hmac-sha256"), own_key("hmac-sha256", policy={"removable": False})
    own_signer.sign(removable.name, b"before")
    own_signer.remove(removable.name)
    assert removable.name not in [info.name for info in own_signer.keys()]
    with pytest.raises(UnknownKey):
        own_signer.sign(removable.name, b"after")
    with pytest.raises(UnknownKey, match="not provisioned"):
        own_signer.remove(removable.name)
    with pytest.raises(PolicyRefused) as refused:
        own_signer.remove(kept.name)
    assert refused.value.rule == "removable" and "removable = true" in str(refused.value)
    assert own_signer.sign(kept.name, b"still here")
    with pytest.raises(TypeError):
        own_signer.remove(kept)
    (failure,) = own_key.remove_loaded()  # what the fixture warns of at the end of its scope
    assert failure.startswith(f"{kept.name}: refused by rule 'removable'")


def test_a_removed_key_can_be_provisioned_again(own_key, own_signer) -> None:
    key = own_key("hmac-sha256", name="comes-back", secret=b"0123456789abcdef")
    signature = own_signer.sign(key.name, b"m")
    own_signer.remove(key.name)
    assert own_key.remove_loaded() == []  # the factory's own removal: a key already gone is no failure
    again = own_key("hmac-sha256", name="comes-back", secret=b"0123456789abcdef")
    assert own_signer.sign(again.name, b"m") == signature


# -- no secret in any report ------------------------------------------------------------------------
# Fails on purpose in every way pytest and hypothesis report a failure. The secrets come from the
# environment, not the source: pytest prints the source lines of a traceback.
LEAKY_TESTS = '''
import json, os, pickle, pprint, hashlib, hmac
import pytest
from hypothesis import given, note, settings, strategies as st

SECRETS = json.loads(os.environ["LEAK_SECRETS"])

@pytest.fixture(scope="module")
def hmac_key(zerocopy_key):
    return zerocopy_key("binance-hmac", secret=SECRETS["hmac"])

@pytest.fixture(scope="module")
def okx_key(zerocopy_key):
    return zerocopy_key("okx-hmac", secret=SECRETS["okx"], passphrase=SECRETS["passphrase"])

@pytest.fixture(scope="module")
def ed25519_key(zerocopy_key):
    return zerocopy_key("ed25519", secret=SECRETS["ed25519"])

@settings(max_examples=5, deadline=None)
@given(payload=st.binary(max_size=8))
def test_falsifying_example_with_key_fixtures(hmac_key, okx_key, ed25519_key, zerocopy_key, zerocopy_signer, payload):
    assert hmac.new(hmac_key.secret, payload, hashlib.sha256).digest() == hmac.new(okx_key.secret, payload, hashlib.sha256).digest()

@settings(max_examples=5, deadline=None)
@given(key=st.sampled_from(["hmac", "okx"]), data=st.data())
def test_a_drawn_key_and_notes(hmac_key, okx_key, key, data):
    drawn = data.draw(st.sampled_from([hmac_key, okx_key]))
    note(drawn)
    note(drawn.secret)
    note([okx_key.passphrase])  # a passphrase is a str (it goes into headers): print() shows it, as note() of a str does
    assert drawn.name == "never"

def test_assert_on_the_secret(hmac_key):
    assert hmac_key.secret == b"something else entirely"

def test_assert_on_the_secret_in_a_container(hmac_key):
    assert [hmac_key.secret] == [b"x"]

def test_assert_on_the_passphrase(okx_key):
    assert okx_key.passphrase == "another passphrase"

def test_assert_on_the_keys(hmac_key, okx_key):
    assert hmac_key == okx_key

def test_assert_on_a_field(ed25519_key):
    assert ed25519_key.name + "x" == ed25519_key.api_key

def _check(secret, passphrase):
    raise AssertionError("failed deep down, with the secret as a local")

def test_secret_in_a_helper_frame(okx_key):
    _check(okx_key.secret, okx_key.passphrase)

def test_printed_and_pretty_printed(hmac_key, okx_key, ed25519_key):
    print(hmac_key, hmac_key.secret, f"{okx_key.secret}", "%s" % ed25519_key.secret, repr(okx_key.passphrase))
    pprint.pprint({"keys": [hmac_key, okx_key, ed25519_key], "secret": ed25519_key.secret})
    from hypothesis.vendor.pretty import pretty
    print(pretty([hmac_key, okx_key.secret, okx_key.passphrase]))
    assert False

def test_pickled(hmac_key):
    pickle.dumps(hmac_key)

def test_pickled_secret(okx_key):
    pickle.dumps(okx_key.secret)

def test_the_same_name_again_fails_inside_the_factory(zerocopy_key):
    zerocopy_key("binance-hmac", secret=SECRETS["hmac"], name="twice")
    zerocopy_key("binance-hmac", secret=SECRETS["hmac"], name="twice", api_key="another")
'''
LEAKY_FAILURES = 12


def _forms(secret: bytes) -> set[str]:
    """How a secret shows when something prints it: raw, escaped, hex, base64 (and a PEM's body)."""
    import base64

    forms = {secret.decode("latin-1"), repr(secret)[2:-1], secret.hex(), secret.hex().upper(), base64.b64encode(secret).decode(), base64.urlsafe_b64encode(secret).decode()}
    forms |= {line for line in secret.decode("latin-1").splitlines() if len(line) >= 16 and not line.startswith("-----")}
    return {form for form in forms if len(form) >= 12}


def _leaks(secrets: dict[str, bytes], text: str) -> list[str]:
    return sorted(f"{name} as {form[:20]!r}..." for name, secret in secrets.items() for form in _forms(secret) if form in text)


def test_no_secret_shows_in_any_pytest_or_hypothesis_report(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    import json

    from pytest_zerocopy.keys import make_secret

    secrets = {
        "hmac": b"MY-REAL-EXCHANGE-SECRET-DO-NOT-PRINT",
        "okx": b"OKX-SECRET-DO-NOT-PRINT-0123456789",
        "passphrase": b"OKX-PASSPHRASE-DO-NOT-PRINT",
        "ed25519": bytes(make_secret("ed25519")),
    }
    assert _leaks(secrets, "x" + secrets["hmac"].hex() + "y") and _leaks(secrets, repr(secrets["ed25519"]))  # the scan finds what it looks for
    monkeypatch.setenv("LEAK_SECRETS", json.dumps({name: value.decode() for name, value in secrets.items()}))
    pytester.makeini("[pytest]\naddopts = -p no:cacheprovider\njunit_logging = all\n")
    pytester.makepyfile(test_leaky=LEAKY_TESTS)
    report = pytester.path / "report.xml"
    flags = ("--zerocopy", "-l", "--tb=long", "-vv", "-rA", "--hypothesis-verbosity=debug", "--hypothesis-show-statistics", f"--junitxml={report}")
    result = pytester.runpytest_subprocess(*flags)
    result.assert_outcomes(failed=LEAKY_FAILURES)
    output = "\n".join(result.outlines + result.errlines) + report.read_text()
    # The reports were made: hypothesis's falsifying examples with the fixtures, locals, the notes.
    assert "Falsifying example" in output or "Failing test case" in output
    assert re.search(r"hmac_key\s+= TestKey\(", output) and re.search(r"secret\s+= <secret: \d+ bytes>", output)  # --showlocals
    assert re.search(r"passphrase\s+= <secret: 27 characters>", output)
    assert "is not picklable" in output and "was made earlier in this session with other arguments" in output
    assert _leaks(secrets, output) == []


# -- settings checked at startup --------------------------------------------------------------------
@pytest.mark.parametrize("how", ["flag", "ini"])
def test_a_bad_clock_is_one_usage_error_at_startup(pytester: pytest.Pytester, how: str) -> None:
    ini = "[pytest]\naddopts = -p no:cacheprovider\n" + ("zerocopy_clock = fixed:\n" if how == "ini" else "")
    pytester.makeini(ini)
    pytester.makepyfile(test_clocked="def test_a(zerocopy_signer):\n    pass\n\ndef test_b(zerocopy_signer):\n    pass\n")
    result = pytester.runpytest_subprocess("--zerocopy", *(["--zerocopy-clock=fixed:"] if how == "flag" else []))
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    errors = [line for line in result.errlines if "zerocopy-clock" in line]
    assert len(errors) == 1 and "clock 'fixed:'" in errors[0] and "offset:<seconds>" in errors[0]
    assert not any("passed" in line or "failed" in line for line in result.outlines)


# -- strategies say what they drew -------------------------------------------------------------------
def test_drawn_requests_say_what_they_are() -> None:
    from hypothesis import given, settings

    from enclave.protocol.exchange import DANGEROUS_CATEGORIES
    from enclave.protocol.exchanges import exchange_for_scheme
    from pytest_zerocopy.strategies import requests

    catalogue = {endpoint.name: endpoint for endpoint in exchange_for_scheme("binance-hmac").endpoints}
    seen = set()

    @settings(max_examples=60, database=None)
    @given(requests("binance-hmac", symbols=["BTCUSDT"]))
    def check(request):
        assert request.endpoint in catalogue and catalogue[request.endpoint].category == request.category
        assert request.fund_moving is (request.category in DANGEROUS_CATEGORIES)
        assert request.fund_moving or (request.endpoint, request.category) == ("POST /api/v3/order", "trade")
        seen.add(request.fund_moving)

    check()
    assert seen == {True, False}


# -- ZEROCOPY_ENCLAVE with emulators of several scopes -----------------------------------------------
MODULE_EMULATOR_TESTS = """
import os
import pytest
from pytest_zerocopy import factories
from zerocopy import Signer

pytestmark = pytest.mark.zerocopy
module_emulator = factories.emulator_proc(scope="module")

def test_only_the_module_emulator(module_emulator):
    # The plugin's autouse fixture starts the session's emulator now, inside this module's one.
    assert os.environ["ZEROCOPY_ENCLAVE"] != module_emulator.address
    with Signer(module_emulator.address) as signer:
        assert signer.keys() == []
"""

SESSION_EMULATOR_TESTS = """
import os
import pytest
from zerocopy import Signer

@pytest.mark.zerocopy
def test_the_session_emulator_is_still_in_the_environment(zerocopy_emulator):
    assert os.environ.get("ZEROCOPY_ENCLAVE") == zerocopy_emulator.address
    with Signer.from_env() as signer:
        assert signer.keys() is not None
"""


def test_a_module_emulator_that_started_first_leaves_the_session_s_address_behind(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    """The module's emulator starts before the session's (which starts inside it) and stops first:
    ``ZEROCOPY_ENCLAVE`` must then name the session's emulator, not what was there before either."""
    monkeypatch.delenv("ZEROCOPY_ENCLAVE", raising=False)
    pytester.makeini("[pytest]\naddopts = -p no:cacheprovider\n")
    pytester.makepyfile(test_a_module=MODULE_EMULATOR_TESTS, test_b_session=SESSION_EMULATOR_TESTS)
    result = pytester.runpytest_subprocess("--zerocopy", "-q", "-p", "no:randomly")
    result.assert_outcomes(passed=2)
