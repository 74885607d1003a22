"""The pytest plugin as a strategy team sees it: a test file written against only the documented
fixtures and marker, run in a fresh pytest session with and without ``--zerocopy``."""

from __future__ import annotations

import pytest

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
'''


@pytest.fixture
def user_suite(pytester: pytest.Pytester) -> pytest.Pytester:
    pytester.makepyfile(test_user=USER_TESTS)
    # The suite's own addopts (which enable --zerocopy) must not leak into the inner session.
    pytester.makeini("[pytest]\naddopts = -p no:cacheprovider\n")
    return pytester


def test_user_suite_passes_with_zerocopy(user_suite: pytest.Pytester) -> None:
    result = user_suite.runpytest_subprocess("--zerocopy", "-q")
    result.assert_outcomes(passed=6)


def test_user_suite_is_skipped_without_zerocopy_with_a_reason_that_says_how(user_suite: pytest.Pytester) -> None:
    result = user_suite.runpytest_subprocess("-q", "-rs")
    result.assert_outcomes(passed=1, skipped=5)
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


def test_zerocopy_enclave_uses_a_running_enclave(pytester: pytest.Pytester, zerocopy_emulator) -> None:
    pytester.makeini("[pytest]\naddopts = -p no:cacheprovider\n")
    pytester.makepyfile(
        test_noproc="""
import os
def test_it(zerocopy_emulator, zerocopy_signer):
    assert zerocopy_emulator.address == os.environ["ZEROCOPY_ENCLAVE"]
    assert isinstance(zerocopy_signer.keys(), list)
"""
    )
    result = pytester.runpytest_subprocess(f"--zerocopy-enclave={zerocopy_emulator.address}", "-q")
    result.assert_outcomes(passed=1)
