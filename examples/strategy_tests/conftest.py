"""The team's fixtures: its trading key, sealed with the production policy, in the test enclave.

``zerocopy_key`` and ``zerocopy_signer`` come from the ZeroCopy pytest plugin (``pytest
--zerocopy``); they are session-scoped, so they also work inside hypothesis ``@given`` tests.
"""

from pathlib import Path

import pytest
from hypothesis import settings

# An enclave round trip takes longer than a pure function: no per-example deadline.
settings.register_profile("strategy-tests", deadline=None)
settings.load_profile("strategy-tests")

POLICY = Path(__file__).with_name("policy.toml")


@pytest.fixture(scope="session")
def trading_key(zerocopy_key):
    """A Binance key under the policy the production key is sealed with (policy.toml)."""
    return zerocopy_key("binance-hmac", policy=POLICY.read_text())
