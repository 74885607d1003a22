"""Fixture factories: an emulator process, a no-process twin for a running enclave, signers, keys.

Like pytest-postgresql's ``factories.postgresql_proc`` / ``postgresql_noproc``: the plugin builds
its default fixtures with these, and a test suite can build more (e.g. a second emulator in debug
mode) by calling them in its ``conftest.py``.
"""

from __future__ import annotations

import os
from typing import Any, Callable

import pytest

from .config import get_config

__all__ = ["emulator_proc", "emulator_noproc", "signer", "key_maker", "RunningEnclave"]

ENV_VAR = "ZEROCOPY_ENCLAVE"
ENABLE_HINT = "needs the ZeroCopy emulator: run pytest with --zerocopy (or --zerocopy-enclave=ADDR for a running enclave)"


class RunningEnclave:
    """An enclave that was started elsewhere (``zerocopy emulator up``). KMS details come from
    ``ZEROCOPY_KMS_ENDPOINT`` / ``ZEROCOPY_KMS_CA`` and AWS credentials from the environment: the
    host's (``AWS_*``) provision; the test key is created with the operator's
    (``ZEROCOPY_KMS_OPERATOR_ACCESS_KEY_ID`` / ``..._SECRET_ACCESS_KEY``) when set, else the host's."""

    def __init__(self, address: str) -> None:
        self.address = address
        self.debug = False
        self.region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"
        self.kms_endpoint_url = os.environ.get("ZEROCOPY_KMS_ENDPOINT")
        self.kms_ca = os.environ.get("ZEROCOPY_KMS_CA")

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
        from zerocopy import Signer

        return Signer(self.address, **kwargs)

    def check(self) -> None:
        pass


def _with_env(address: str):
    previous = os.environ.get(ENV_VAR)
    os.environ[ENV_VAR] = address

    def restore() -> None:
        if previous is None:
            os.environ.pop(ENV_VAR, None)
        else:
            os.environ[ENV_VAR] = previous

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
    whose policy pins the enclave's PCR0 (so the test path is the production path)."""

    @pytest.fixture(scope=scope)
    def zerocopy_key_fixture(request: pytest.FixtureRequest) -> Any:
        import json

        from zerocopy.kms_policy import attested_key_policy

        from .keys import KeyMaker

        emulator = request.getfixturevalue(emulator_fixture_name)
        connected = request.getfixturevalue(signer_fixture_name)
        kms = emulator.kms
        if getattr(emulator, "pcrs", None) and not emulator.debug:
            policy = attested_key_policy(emulator.account_id, image_sha384=emulator.pcrs[0])
            key_id = kms.create_key(Policy=json.dumps(policy), Description="zerocopy test keys")["KeyMetadata"]["Arn"]
        else:
            key_id = kms.create_key(Description="zerocopy test keys")["KeyMetadata"]["Arn"]
        return KeyMaker(kms=kms, kms_key_id=key_id, signer=connected, credentials=lambda: emulator.credentials, region=emulator.region)

    return zerocopy_key_fixture
