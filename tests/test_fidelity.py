"""The emulated NSM's documents, structure by structure, against every real document we hold.

For each real document in ``tests/data/attestation`` the emulator makes the document the same
enclave would get from it — same era of encoding (definite payload before September 2025,
indefinite since), production or debug, an IAM role or none, the same optional fields — and both
are reduced to *facts*: how each CBOR item is encoded, the payload's keys, order and types, the id
formats, which PCRs are zero, and for each certificate level its extensions in order with their
criticality, key usage, basic constraints, CRL distribution points, validity period and subject
layout. Every fact that differs must be listed as intended in ``docs/fidelity.md`` (with the reason
it is safe), and every listed difference must still occur, so the list cannot go stale.

The facts are read with cbor2 and cryptography, not with the verifier under test.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
import re
from pathlib import Path
from urllib.parse import urlsplit

import cbor2
import pytest
from attestation_builder import load_vector
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from emulator import Emulator
from emulator.measure import measure
from emulator.nsm import EmulatedNsm
from emulator.pki import AttestationPki, new_module_id
from zerocopy.attestation import verify
from zerocopy.kms_policy import attested_key_policy
from zerocopy.sealing import seal

ROOT = Path(__file__).resolve().parent.parent
LEVELS = ("root", "regional", "zonal", "instance", "leaf")
EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)
# Facts that already differ between real documents: an emulated value must equal one of them.
VARIES_ACROSS_REAL_DOCUMENTS = {"zonal.validity"}
_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


# --- reducing a document to facts ----------------------------------------------------------------


def document_facts(document: bytes) -> dict[str, object]:
    outer = cbor2.loads(document)
    protected, unprotected, payload, signature = outer
    fields = cbor2.loads(payload)
    facts: dict[str, object] = {
        "cose.head": document[:1].hex(),  # 84: an untagged array of four, definite
        "cose.protected": protected.hex(),
        "cose.unprotected": unprotected,
        "cose.signature_length": len(signature),
        "payload.map": "indefinite" if payload[:1] == b"\xbf" else f"definite, head {payload[:1].hex()}",
        "payload.keys": list(fields),
        "payload.types": {key: type(value).__name__ for key, value in fields.items()},
        # Inside the payload map every key and value is in preferred, definite encoding.
        "payload.items_definite": all(cbor2.dumps(k) + cbor2.dumps(v) in payload for k, v in fields.items()),
        "digest": fields["digest"],
    }
    facts.update(_id_facts(fields))
    facts.update(_pcr_facts(fields))
    for name in ("public_key", "user_data", "nonce"):
        value = fields[name]
        facts[f"payload.{name}"] = None if value is None else len(value)
    certificates = [x509.load_der_x509_certificate(der) for der in [*fields["cabundle"], fields["certificate"]]]
    facts["cabundle.length"] = len(fields["cabundle"])
    facts.update(_chain_facts(certificates, fields))
    return facts


def _id_facts(fields: dict) -> dict[str, object]:
    module_id, timestamp = fields["module_id"], fields["timestamp"]
    match = re.fullmatch(r"(i-[0-9a-f]{17})-enc([0-9a-f]{16})", module_id)
    launched = int(match.group(2)[:12], 16) if match else None
    return {
        "module_id.format": bool(match),
        # The enclave part starts with the launch time in milliseconds, shortly before the document.
        "module_id.launch_time_before_document": launched is not None and 0 <= timestamp - launched < 86_400_000,
        "timestamp.milliseconds": isinstance(timestamp, int) and 1_500_000_000_000 < timestamp < 4_000_000_000_000,
    }


def _pcr_facts(fields: dict) -> dict[str, object]:
    pcrs = fields["pcrs"]
    instance_id = fields["module_id"].split("-enc")[0]
    return {
        "pcrs.indexes": list(pcrs),
        "pcrs.lengths": sorted({len(value) for value in pcrs.values()}),
        "pcrs.zero": [index for index, value in pcrs.items() if value == bytes(48)],
        # Nitro measures the instance id contiguously from zero: SHA-384(0^48 || id), no inner hash.
        "pcr4.is_the_instance_id": pcrs[4] == hashlib.sha384(bytes(48) + instance_id.encode()).digest(),
    }


def _chain_facts(certificates: list[x509.Certificate], fields: dict) -> dict[str, object]:
    root_cn = _attribute(certificates[0], NameOID.COMMON_NAME)
    domain = root_cn.split(".")[0]  # "aws" on Nitro, "zc-emu" on the emulator
    facts: dict[str, object] = {
        "chain.domain": domain,
        "chain.organization": sorted({(_attribute(c, NameOID.ORGANIZATION_NAME), _attribute(c, NameOID.ORGANIZATIONAL_UNIT_NAME)) for c in certificates}),
    }
    for index, (level, cert) in enumerate(zip(LEVELS, certificates)):
        parent = certificates[index - 1] if index else cert
        facts.update(_certificate_facts(level, cert, parent, domain, fields))
    leaf = certificates[-1]
    document_time = EPOCH + dt.timedelta(milliseconds=fields["timestamp"])
    facts["leaf.valid_at_document_time"] = leaf.not_valid_before_utc <= document_time <= leaf.not_valid_after_utc
    # No certificate outlives the one that issued it (AWS renews its short-lived CAs ahead).
    facts["chain.nested_validity"] = all(
        child.not_valid_after_utc <= parent.not_valid_after_utc for parent, child in zip(certificates, certificates[1:])
    )
    return facts


def _certificate_facts(level: str, cert: x509.Certificate, parent: x509.Certificate, domain: str, fields: dict) -> dict[str, object]:
    key = cert.public_key()
    facts: dict[str, object] = {
        "version": cert.version.name,
        "signature_algorithm": cert.signature_algorithm_oid.dotted_string,
        "key": f"ec {key.curve.name}" if isinstance(key, ec.EllipticCurvePublicKey) else type(key).__name__,
        "extensions": [(ext.oid._name, ext.critical) for ext in cert.extensions],
        "validity": cert.not_valid_after_utc - cert.not_valid_before_utc,
        "subject.layout": [attribute.oid._name for attribute in cert.subject],
        "subject.place": [attribute.value for attribute in cert.subject if attribute.oid in (NameOID.COUNTRY_NAME, NameOID.STATE_OR_PROVINCE_NAME, NameOID.LOCALITY_NAME)],
        "subject.common_name": _common_name_shape(_attribute(cert, NameOID.COMMON_NAME), domain, fields),
        "issuer_is_parent": cert.issuer == parent.subject,
        "serial.bytes": (cert.serial_number.bit_length() + 7) // 8,
    }
    for ext in cert.extensions:
        value = ext.value
        if isinstance(value, x509.BasicConstraints):
            facts["basic_constraints"] = (value.ca, value.path_length)
        elif isinstance(value, x509.KeyUsage):
            facts["key_usage"] = _key_usage(value)
        elif isinstance(value, x509.SubjectKeyIdentifier):
            facts["ski.is_sha1_of_key"] = value.digest == x509.SubjectKeyIdentifier.from_public_key(key).digest
        elif isinstance(value, x509.AuthorityKeyIdentifier):
            parent_ski = parent.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value.digest
            facts["aki.is_parent_ski"] = (value.key_identifier == parent_ski, value.authority_cert_issuer)
        elif isinstance(value, x509.CRLDistributionPoints):
            urls = [urlsplit(name.value) for point in value for name in point.full_name]
            facts["crl.shape"] = [(url.scheme, _UUID.sub("<uuid>", url.path)) for url in urls]
            facts["crl.host"] = [url.hostname for url in urls]
    return {f"{level}.{name}": value for name, value in facts.items()}


def _key_usage(usage: x509.KeyUsage) -> list[str]:
    names = ["digital_signature", "content_commitment", "key_encipherment", "data_encipherment", "key_agreement", "key_cert_sign", "crl_sign"]
    return [name for name in names if getattr(usage, name)]


def _attribute(cert: x509.Certificate, oid: x509.ObjectIdentifier) -> str:
    values = cert.subject.get_attributes_for_oid(oid)
    return str(values[0].value) if values else ""


def _common_name_shape(common_name: str, domain: str, fields: dict) -> str:
    module_id = fields["module_id"]
    shape = common_name.replace(module_id, "<module id>").replace(module_id.split("-enc")[0], "<instance id>")
    shape = re.sub(r"\b[0-9a-f]{16}\b", "<16 hex>", shape)
    return re.sub(rf"(^|\.){re.escape(domain)}(\.|$)", r"\1<domain>\2", shape)


# --- the emulated counterpart of each real document ----------------------------------------------


REAL_DOCUMENTS = {
    # name: (payload encoding of that era, debug, the parent had an IAM role)
    "nitro-2025-09-16-indefinite-map": ("indefinite", False, True),
    "nitro-2024-09-07": ("definite", False, False),
    "nitro-debug-2024-09-07": ("definite", True, False),
}


@pytest.fixture(scope="module")
def pki() -> AttestationPki:
    return AttestationPki()


@pytest.fixture(scope="module")
def image(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("image")
    (root / "__main__.py").write_text("print('an enclave')\n")
    return root


def counterpart(name: str, pki: AttestationPki, image: Path) -> bytes:
    """The document the emulator gives an enclave launched as the real one was."""
    encoding, debug, has_role = REAL_DOCUMENTS[name]
    real = cbor2.loads(cbor2.loads(load_vector(f"attestation/{name}.b64"))[2])
    role = "arn:aws:iam::123456789012:role/zerocopy-emulator" if has_role else None
    pcrs = measure(image, ["python", "<image>"], {}, role_arn=role, instance_id=pki.instance_id, debug=debug)
    nsm = EmulatedNsm(pki, module_id=new_module_id(pki.instance_id), pcrs=pcrs, document_encoding=encoding)
    optional = {key: None if real[key] is None else bytes(len(real[key])) for key in ("public_key", "user_data", "nonce")}
    return nsm.attestation_document(**optional)


def differences(emulated: dict[str, object], real_facts: list[dict[str, object]], real: dict[str, object]) -> set[str]:
    found = set()
    for aspect in sorted(set(emulated) | set(real)):
        if aspect in VARIES_ACROSS_REAL_DOCUMENTS:
            if emulated.get(aspect) not in [facts.get(aspect) for facts in real_facts]:
                found.add(aspect)
        elif emulated.get(aspect, "<absent>") != real.get(aspect, "<absent>"):
            found.add(aspect)
    return found


def intended_differences() -> set[str]:
    """The aspects listed in docs/fidelity.md's table of intended differences in documents."""
    text = (ROOT / "docs" / "fidelity.md").read_text()
    section = text.split("## Intended differences in attestation documents", 1)[1].split("\n## ", 1)[0]
    return set(re.findall(r"^\| `([\w.]+)` \|", section, flags=re.MULTILINE))


@pytest.fixture(scope="module")
def all_differences(pki, image) -> dict[str, set[str]]:
    real_facts = [document_facts(load_vector(f"attestation/{name}.b64")) for name in REAL_DOCUMENTS]
    return {
        name: differences(document_facts(counterpart(name, pki, image)), real_facts, facts)
        for name, facts in zip(REAL_DOCUMENTS, real_facts)
    }


@pytest.mark.parametrize("name", list(REAL_DOCUMENTS))
def test_every_difference_from_a_real_document_is_listed_as_intended(all_differences, name):
    unexplained = all_differences[name] - intended_differences()
    assert not unexplained, f"the emulator differs from {name} in {sorted(unexplained)}; fix it or list it in docs/fidelity.md"


def test_every_listed_difference_still_occurs(all_differences):
    occurring = set().union(*all_differences.values())
    assert intended_differences() <= occurring, f"docs/fidelity.md lists differences that no longer occur: {sorted(intended_differences() - occurring)}"


@pytest.mark.parametrize("name", list(REAL_DOCUMENTS))
def test_the_comparison_can_fail(pki, image, name):
    # A check that cannot fail is no check: an emulated document from the other era must differ.
    encoding, debug, has_role = REAL_DOCUMENTS[name]
    other = "definite" if encoding == "indefinite" else "indefinite"
    pcrs = measure(image, ["python"], {}, role_arn=None, instance_id=pki.instance_id, debug=not debug)
    document = EmulatedNsm(pki, module_id="i-1-enc1", pcrs=pcrs, document_encoding=other).attestation_document()
    real_facts = document_facts(load_vector(f"attestation/{name}.b64"))
    found = differences(document_facts(document), [real_facts], real_facts)
    assert {"payload.map", "pcrs.zero", "module_id.format"} <= found
    assert found - intended_differences()  # and the list of intended differences does not hide them


def test_the_real_documents_share_the_facts_the_emulator_copies():
    # The facts compared above are stable across AWS's own documents (apart from the listed ones).
    facts = [document_facts(load_vector(f"attestation/{name}.b64")) for name in REAL_DOCUMENTS]
    varying = {aspect for aspect in facts[0] if len({repr(f[aspect]) for f in facts}) > 1}
    by_design = {"payload.map", "pcrs.zero", "payload.public_key", "payload.user_data", "payload.nonce", "payload.types"}
    assert varying <= by_design | VARIES_ACROSS_REAL_DOCUMENTS, sorted(varying - by_design)


# --- the running emulator, end to end ------------------------------------------------------------


@pytest.fixture(scope="module")
def definite_emulator():
    with Emulator(document_encoding="definite") as emulator:
        yield emulator


def test_the_emulator_defaults_to_what_nitro_emits_now(zerocopy_emulator):
    with zerocopy_emulator.signer() as signer:
        document = signer.attest(b"nonce")
    assert cbor2.loads(document)[2][:1] == b"\xbf"
    facts = document_facts(document)
    real = document_facts(load_vector("attestation/nitro-2025-09-16-indefinite-map.b64"))
    structural = {aspect for aspect in real if not aspect.startswith("payload.") or aspect in ("payload.map", "payload.keys", "payload.items_definite")}
    assert {aspect for aspect in structural if facts[aspect] != real[aspect]} <= intended_differences() | {"pcrs.zero"}


@pytest.mark.parametrize("encoding", ["definite", "indefinite"])
def test_both_encodings_attest_and_provision_through_the_emulated_kms(encoding, definite_emulator, zerocopy_emulator):
    emulator = definite_emulator if encoding == "definite" else zerocopy_emulator
    with emulator.signer() as signer:  # the Signer verifies a fresh document before anything else
        document = signer.attest(b"n" * 32)
        assert (cbor2.loads(document)[2][:1] == b"\xbf") is (encoding == "indefinite")
        doc = verify(document, roots=[emulator.root_certificate], nonce=b"n" * 32, expected_pcrs={0: emulator.pcrs[0]})
        assert doc.module_id.startswith(emulator.pki.instance_id + "-enc")
        # KMS verifies the enclave's Recipient document (same encoding) before releasing the data key.
        policy = attested_key_policy(emulator.account_id, image_sha384=emulator.pcrs[0])
        key_arn = emulator.kms.create_key(Policy=json.dumps(policy))["KeyMetadata"]["Arn"]
        name = f"fidelity-{encoding}"
        bundle = seal(emulator.kms, key_id=key_arn, name=name, scheme="hmac-sha256", secret=b"fidelity-secret", api_key="")
        (result,) = signer.provision([bundle.to_json()], credentials=emulator.credentials)
        assert result.loaded, result.error
        assert signer.sign(name, b"payload") == hmac.new(b"fidelity-secret", b"payload", hashlib.sha256).digest()


def test_an_unknown_document_encoding_is_refused():
    with pytest.raises(ValueError, match="document_encoding"):
        Emulator(document_encoding="canonical")
