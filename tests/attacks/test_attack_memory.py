"""Memory the host can make the enclave keep is bounded: keys, their policy state, receipts, buffers.

The other bounds have tests of their own (the policy engine's per-key state, the audit log, frame
buffers: SECURITY.md lists them); this file shows the one that multiplies them: the number of keys.
A host can seal bundles under a KMS key of its own and provision as many as it likes; the enclave
holds at most ``MAX_KEYS`` and refuses the next one before it asks KMS.
"""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor

import pytest

from enclave.keyring import MAX_KEYS
from zerocopy import Signer
from zerocopy.sealing import seal

pytestmark = pytest.mark.zerocopy


def test_a_host_provisioning_keys_without_end_is_stopped_at_the_enclaves_limit(zerocopy_emulator):
    emulator = zerocopy_emulator
    # The host's own KMS key (the operator's client stands in for any key the host can reach).
    host_key = emulator.kms.create_key(Description="the host's own key")["KeyMetadata"]["Arn"]

    def sealed(index: int) -> bytes:
        return seal(emulator.kms, key_id=host_key, name=f"flood-{index}", scheme="hmac-sha256", secret=f"flood-{index}".encode()).to_json()

    with ThreadPoolExecutor(max_workers=8) as sealers:  # each a KMS round trip: sealed side by side
        bundles = list(sealers.map(sealed, range(MAX_KEYS + 2)))
    with emulator.launch() as fresh, Signer(fresh.address, expected_pcrs={0: emulator.pcrs[0]}, roots=[emulator.root_certificate]) as signer:
        results = [result for start in range(0, len(bundles), 32) for result in signer.provision(bundles[start : start + 32], credentials=emulator.credentials)]
        loaded = [result for result in results if result.loaded]
        refused = [result for result in results if not result.loaded]
        assert len(loaded) == MAX_KEYS and len(refused) == 2
        assert all(f"{MAX_KEYS} keys" in result.error for result in refused)
        assert len(signer.keys()) == MAX_KEYS
        # Provisioning a key that is already loaded stays idempotent at the limit (a reboot's replay).
        (again,) = signer.provision([bundles[0]], credentials=emulator.credentials)
        assert again.loaded
        assert json.loads(bundles[0])["name"] in {key.name for key in signer.keys()}
