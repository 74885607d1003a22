"""Review of 79d9eef (BIND leaves a ``bound`` receipt): the receipt was recorded after the bound key
was published in the keyring, on the provisioning lane's thread, while the loop's thread signs.
A SIGN for that key served in between (the lane's ``log.info`` writes to stderr, releasing the GIL)
was signed with the bound key and its ``signed`` receipt preceded the ``bound`` one: the audit
chain showed a key signing as bound before it was bound.

The test runs the enclave's service in this process on an emulator's NSM, KMS and proxy, and
signs from a logging handler at the lane's "bound key" log line, as the loop's thread can."""

from __future__ import annotations

import json
import logging
import socket
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from emulator import Emulator
from emulator.nsm import EmulatedNsm, NsmDeviceServer
from enclave.clock import Clock
from enclave.kms import AttestedKms, KmsSettings
from enclave.nsm import Nsm, SocketDevice
from enclave.protocol import ControlRequest, ControlResponse, MessageType, SignRequest
from enclave.protocol.address import parse_address
from enclave.service import EnclaveService


@pytest.fixture(scope="module")
def emulator():
    with Emulator() as running:
        yield running


@contextmanager
def _service(emulator) -> Iterator[EnclaveService]:
    """The enclave's service (``enclave.service``) in this process, on the emulator's NSM, KMS proxy and seal key."""
    server_end, client_end = socket.socketpair()
    nsm = EmulatedNsm(emulator.pki, module_id=emulator.enclave.module_id, pcrs=emulator.pcrs)
    device = NsmDeviceServer(nsm, server_end).start()
    settings = KmsSettings(emulator.region, parse_address(f"unix://{emulator.vsock_proxy.listen_path}"), str(emulator.tls_ca_path), seal_keys=emulator.seal_keys)
    enclave_nsm = Nsm(SocketDevice(client_end))
    kms = AttestedKms(settings, enclave_nsm)
    try:
        yield EnclaveService(nsm=enclave_nsm, kms=kms, clock=Clock())
    finally:
        kms.close()
        client_end.close()
        device.stop()


class _SignWhenBound(logging.Handler):
    """At the lane's "bound key" line, a SIGN for that key, as the loop's thread may serve one then."""

    def __init__(self, service: EnclaveService, name: str) -> None:
        super().__init__()
        self.service, self.name, self.answers = service, name, []

    def emit(self, record: logging.LogRecord) -> None:
        if record.getMessage().startswith(f"bound key {self.name!r}"):
            self.answers.append(self.service.handle(SignRequest(7, self.name, b"in the window")))


def test_no_receipt_of_a_bound_key_precedes_its_bound_receipt(emulator):
    credentials = emulator.credentials
    with _service(emulator) as service:
        generated = service.handle(ControlRequest(1, MessageType.GENERATE, {"name": "window", "scheme": "binance-ed25519", "credentials": credentials}))
        assert isinstance(generated, ControlResponse), generated
        watcher = _SignWhenBound(service, "window")
        service_log = logging.getLogger("enclave.service")
        level = service_log.level
        service_log.addHandler(watcher)
        service_log.setLevel(logging.INFO)
        try:
            bound = service.handle(ControlRequest(2, MessageType.BIND, {"name": "window", "api_key": "AK-WINDOW", "credentials": credentials}))
        finally:
            service_log.removeHandler(watcher)
            service_log.setLevel(level)
        receipts = [json.loads(line) for line in service.audit.fetch()["receipts"]]
    assert isinstance(bound, ControlResponse) and bound.kind is MessageType.BOUND, bound
    assert len(watcher.answers) == 1  # signed in the window, with the bound key
    decisions = [(receipt["decision"], receipt["rule"]) for receipt in receipts if receipt["key"] == "window"]
    assert decisions[0] == ("bound", ""), decisions
    assert len(decisions) == 2 and decisions[1][1] != "api-key"  # the window's SIGN saw the key bound
