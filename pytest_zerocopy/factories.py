"""Fixture factories: an emulator process, a no-process twin for a running enclave, signers, keys.

Like pytest-postgresql's ``factories.postgresql_proc`` / ``postgresql_noproc``: the plugin builds
its default fixtures with these, and a test suite can build more (e.g. a second emulator in debug
mode) by calling them in its ``conftest.py``.
"""

from __future__ import annotations

import os
import warnings
from typing import Any, Callable

import pytest

from .config import get_config

__all__ = ["emulator_proc", "emulator_noproc", "signer", "key_maker", "RunningEnclave"]

ENV_VAR = "ZEROCOPY_ENCLAVE"
#: The node id of the test running now (set by the plugin): a key asked for twice in one test is one key.
CURRENT_TEST = pytest.StashKey[str]()
ENABLE_HINT = "needs the ZeroCopy emulator: run pytest with --zerocopy (or --zerocopy-enclave=ADDR for a running enclave)"


class RunningEnclave:
    """An enclave that was started elsewhere (``zerocopy emulator up``), with the interface of
    ``emulator.Emulator`` that tests use: ``.address``, ``.pcrs``, ``.root_certificate``, ``.debug``,
    ``.kms``, ``.credentials``, ``.region``, ``.signer()``.

    ``.pcrs`` come from a fresh attestation document of the enclave, verified against
    ``.root_certificate``: the PEM file ``ZEROCOPY_ATTESTATION_ROOT`` names when set, else the root
    the document itself carries (first in its cabundle; on Nitro, AWS's). That pins what the session
    first saw (the signers it gives check it on every connection); it is no trust decision.
    KMS details come from ``ZEROCOPY_KMS_ENDPOINT`` / ``ZEROCOPY_KMS_CA`` and AWS credentials from
    the environment: the host's (``AWS_*``) provision; the test key is created with the operator's
    (``ZEROCOPY_KMS_OPERATOR_ACCESS_KEY_ID`` / ``..._SECRET_ACCESS_KEY``) when set, else the host's."""

    def __init__(self, address: str) -> None:
        self.address = address
        self.region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"
        self.kms_endpoint_url = os.environ.get("ZEROCOPY_KMS_ENDPOINT")
        self.kms_ca = os.environ.get("ZEROCOPY_KMS_CA")
        self._attested: tuple[bytes, dict[int, bytes]] | None = None

    def _attestation(self) -> tuple[bytes, dict[int, bytes]]:
        if self._attested is None:
            from zerocopy import Signer
            from zerocopy.errors import ZeroCopyError

            nonce = os.urandom(32)
            try:
                with Signer(self.address) as plain:
                    document = plain.attest(nonce)
                root = _attestation_root(document)
                from zerocopy.attestation import verify

                verified = verify(document, roots=[root], nonce=nonce, allow_debug=True)
            except (ZeroCopyError, OSError, ValueError, IndexError) as exc:
                pytest.fail(f"--zerocopy-enclave={self.address}: could not attest the enclave: {exc}", pytrace=False)
            self._attested = (root, dict(verified.pcrs))
        return self._attested

    @property
    def pcrs(self) -> dict[int, bytes]:
        return dict(self._attestation()[1])

    @property
    def root_certificate(self) -> bytes:
        """The PEM of the attestation root (pass it as ``roots=[...]``)."""
        return self._attestation()[0]

    @property
    def debug(self) -> bool:
        return not any(self.pcrs[0])

    @property
    def kms(self) -> Any:
        from zerocopy._aws import aws_session

        if not self.kms_endpoint_url:
            pytest.fail("with --zerocopy-enclave, set ZEROCOPY_KMS_ENDPOINT (and ZEROCOPY_KMS_CA) to seal test keys", pytrace=False)
        session = aws_session(self.region)
        operator = os.environ.get("ZEROCOPY_KMS_OPERATOR_ACCESS_KEY_ID")
        if operator:
            import boto3

            secret = os.environ.get("ZEROCOPY_KMS_OPERATOR_SECRET_ACCESS_KEY")
            session = boto3.session.Session(aws_access_key_id=operator, aws_secret_access_key=secret, region_name=self.region)
        return session.client("kms", endpoint_url=self.kms_endpoint_url, verify=self.kms_ca or True)

    @property
    def credentials(self) -> dict[str, str]:
        from zerocopy._aws import aws_session, host_credentials
        from zerocopy.errors import ZeroCopyError

        try:
            return host_credentials(aws_session(self.region))
        except ZeroCopyError:
            pytest.fail("with --zerocopy-enclave, AWS credentials are needed to provision test keys", pytrace=False)

    def signer(self, **kwargs: Any) -> Any:
        """A ``Signer`` that checks the enclave's attestation (root and PCR0 as first seen) on
        every connection, as ``Emulator.signer()`` does; keyword arguments override."""
        from zerocopy import Signer

        root, pcrs = self._attestation()
        options = {"expected_pcrs": {0: pcrs[0]}, "roots": [root], "allow_debug": not any(pcrs[0]), **kwargs}
        return Signer(self.address, **options)

    def check(self) -> None:
        pass


def _attestation_root(document: bytes) -> bytes:
    """The PEM of the root to check ``document`` against: ``ZEROCOPY_ATTESTATION_ROOT``'s file, else
    the first certificate of the document's own cabundle."""
    from cryptography import x509
    from cryptography.hazmat.primitives.serialization import Encoding

    from zerocopy.attestation import _decode_cose, _decode_payload
    from zerocopy.errors import ConfigurationError

    path = os.environ.get("ZEROCOPY_ATTESTATION_ROOT")
    if path:
        try:
            return open(path, "rb").read()
        except OSError as exc:
            raise ConfigurationError(f"ZEROCOPY_ATTESTATION_ROOT={path}: {exc.strerror}") from None
    _protected, payload, _signature = _decode_cose(document)
    return x509.load_der_x509_certificate(_decode_payload(payload)["cabundle"][0]).public_bytes(Encoding.PEM)


# The enclaves that set ZEROCOPY_ENCLAVE, newest last, and what it was before the first. Fixtures of
# different scopes do not end in the reverse order they started (a session emulator started inside
# a module's one outlives it), so each one's end removes its own entry rather than restoring a snapshot.
_ACTIVE_ADDRESSES: list[list[str]] = []
_ADDRESS_BEFORE: list[str | None] = []


def _with_env(address: str):
    if not _ACTIVE_ADDRESSES:
        _ADDRESS_BEFORE[:] = [os.environ.get(ENV_VAR)]
    entry = [address]  # a list of its own: identity tells two enclaves at one address apart
    _ACTIVE_ADDRESSES.append(entry)
    os.environ[ENV_VAR] = address

    def restore() -> None:
        _ACTIVE_ADDRESSES[:] = [active for active in _ACTIVE_ADDRESSES if active is not entry]
        current = _ACTIVE_ADDRESSES[-1][0] if _ACTIVE_ADDRESSES else _ADDRESS_BEFORE[0]
        if current is None:
            os.environ.pop(ENV_VAR, None)
        else:
            os.environ[ENV_VAR] = current

    return restore


def emulator_proc(*, debug: bool | None = None, clock: str | None = None, enclave_dir: str | None = None, scope: str = "session") -> Callable:
    """A fixture that starts an ``emulator.Emulator`` (lazily, on first use) and stops it at the end
    of its scope. Arguments left ``None`` come from the command line / ini settings."""

    @pytest.fixture(scope=scope)
    def zerocopy_emulator_fixture(request: pytest.FixtureRequest) -> Any:
        config = get_config(request.config)
        if config["enclave"]:
            handle: Any = RunningEnclave(config["enclave"])
            restore = _with_env(handle.address)
            yield handle
            restore()
            return
        if not config["enabled"]:
            pytest.skip(ENABLE_HINT)
        from emulator import Emulator

        with Emulator(
            debug=config["debug"] if debug is None else debug,
            clock=config["clock"] if clock is None else clock,
            enclave_dir=enclave_dir,
        ) as emulator:
            restore = _with_env(emulator.address)
            try:
                yield emulator
            finally:
                restore()

    return zerocopy_emulator_fixture


def emulator_noproc(address: str, *, scope: str = "session") -> Callable:
    """A fixture for an enclave that is already running at ``address``."""

    @pytest.fixture(scope=scope)
    def zerocopy_noproc_fixture() -> Any:
        handle = RunningEnclave(address)
        restore = _with_env(address)
        yield handle
        restore()

    return zerocopy_noproc_fixture


def signer(emulator_fixture_name: str, *, scope: str = "session") -> Callable:
    """A connected ``zerocopy.Signer`` to the enclave of the named emulator fixture."""

    @pytest.fixture(scope=scope)
    def zerocopy_signer_fixture(request: pytest.FixtureRequest) -> Any:
        emulator = request.getfixturevalue(emulator_fixture_name)
        with emulator.signer() as connected:
            yield connected

    return zerocopy_signer_fixture


def key_maker(emulator_fixture_name: str, signer_fixture_name: str, *, scope: str = "session") -> Callable:
    """The ``zerocopy_key(scheme, ...)`` factory, sealing through the emulator's KMS under a key
    whose policy pins the enclave's PCR0 (so the test path is the production path). The keys it
    loaded are removed from the enclave when its scope ends (they are sealed ``removable``)."""

    @pytest.fixture(scope=scope)
    def zerocopy_key_fixture(request: pytest.FixtureRequest) -> Any:
        from .keys import KeyMaker

        emulator = request.getfixturevalue(emulator_fixture_name)
        connected = request.getfixturevalue(signer_fixture_name)
        maker = KeyMaker(
            kms=emulator.kms, kms_key_id=_test_kms_key(emulator), signer=connected, credentials=lambda: emulator.credentials,
            region=emulator.region, current_test=lambda: request.config.stash.get(CURRENT_TEST, None),
        )  # fmt: skip
        yield maker
        failures = maker.remove_loaded()
        if failures:
            warnings.warn(pytest.PytestWarning("zerocopy_key: test keys left loaded in the enclave: " + "; ".join(failures)))

    return zerocopy_key_fixture


def _test_kms_key(emulator: Any) -> str:
    """A KMS key for this session's test keys: its policy pins the enclave's PCR0 (the account
    taken from the key's own ARN, so a running enclave's account needs no setting); a debug
    enclave's all-zero PCR0 cannot be pinned, so that key keeps the account's default policy."""
    import json

    from zerocopy.kms_policy import attested_key_policy

    kms = emulator.kms
    key_arn = kms.create_key(Description="zerocopy test keys")["KeyMetadata"]["Arn"]
    if not emulator.debug:
        policy = attested_key_policy(key_arn.split(":")[4], image_sha384=emulator.pcrs[0])
        kms.put_key_policy(KeyId=key_arn, PolicyName="default", Policy=json.dumps(policy))
    return key_arn
