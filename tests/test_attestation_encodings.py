"""Any valid CBOR encoding: the verdict follows the signed bytes, not the encoding.

AWS encoded the attestation payload as a definite-length map until about September 2025 and as an
indefinite-length one since; both real documents are in ``tests/data/attestation``. RFC 8949 gives
every array, map and string both forms, and lets any head be wider than it needs to be. These tests re-encode real documents, documents from the
emulated NSM and documents from a chain of our own, with an encoder written independently of the
verifier (``tests/cbor_encodings.py``), and check two properties:

* re-encoding changes nothing: whatever the encoding of each part, a document gets the same
  verdict (the same fields, or the same error) — for real documents by re-encoding everything
  outside the signed bytes, for documents we can sign by re-encoding everything and re-signing;
* an attacker who re-encodes without the key gets the same verdict exactly when the signed bytes
  (protected header and payload) are unchanged, and ``SignatureInvalid`` otherwise.
"""

from __future__ import annotations

import datetime as dt
import random

import cbor2
import pytest
from attestation_builder import ES384_PROTECTED, document_timestamp, load_vector, make_chain, timestamp_ms
from cbor_encodings import DEFINITE, INDEFINITE, NARROW, encode, top_level_map_indefinite
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.hazmat.primitives.serialization import Encoding
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from emulator.nsm import EmulatedNsm
from emulator.pki import AttestationPki, new_module_id
from zerocopy.attestation import AttestationError, SignatureInvalid, verify

FUZZ = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
NOW = dt.datetime(2025, 6, 1, 12, 0, tzinfo=dt.timezone.utc)
CHAIN = make_chain(NOW, intermediates=2)


def _real(name: str) -> tuple[bytes, dict]:
    document = load_vector(f"attestation/{name}")
    return document, {"now": document_timestamp(document)}


REAL_2024 = _real("nitro-2024-09-07.b64")
REAL_2025 = _real("nitro-2025-09-16-indefinite-map.b64")
REAL_DEBUG = _real("nitro-debug-2024-09-07.b64")


def verdict(document: bytes, **kwargs) -> tuple:
    """What ``verify`` decides: the decoded fields, or the exact error class."""
    try:
        doc = verify(document, **kwargs)
    except AttestationError as error:
        return ("refused", type(error).__name__)
    return (
        "verified", doc.module_id, doc.digest, doc.timestamp, dict(doc.pcrs), doc.public_key, doc.user_data,
        doc.nonce, doc.debug, doc.certificate.public_bytes(Encoding.DER),
        tuple(cert.public_bytes(Encoding.DER) for cert in doc.cabundle),
    )


def parts(document: bytes) -> list:
    outer = cbor2.loads(document)
    return outer.value if isinstance(outer, cbor2.CBORTag) else outer


def resign(payload: bytes, key: ec.EllipticCurvePrivateKey, protected: bytes) -> bytes:
    """The raw r||s ES384 signature over Sig_structure, as the NSM makes it."""
    to_sign = cbor2.dumps(["Signature1", protected, b"", payload])
    r, s = decode_dss_signature(key.sign(to_sign, ec.ECDSA(hashes.SHA384())))
    return r.to_bytes(48, "big") + s.to_bytes(48, "big")


def random_choice(rnd):
    return lambda kind, depth: rnd.random() < 0.5


def random_width(rnd):
    return lambda: rnd.random() < 0.2


# --- documents we can sign: emulated NSM and our own chain -------------------------------------


class Signable:
    """A document whose signer the test can ask again, with verify() arguments for a verdict.

    ``sign(payload)`` returns the signature over a new payload, made as the document's own signer
    makes it: the emulated NSM's ``sign`` or our chain's leaf key.
    """

    def __init__(self, name: str, document: bytes, sign, **kwargs) -> None:
        self.name, self.document, self.sign, self.kwargs = name, document, sign, kwargs

    def __repr__(self) -> str:
        return self.name

    def reencoded(self, choose_payload, choose_outer, chunk: int, wide=NARROW) -> bytes:
        protected, unprotected, payload, _ = parts(self.document)
        new_payload = encode(cbor2.loads(payload), choose_payload, wide=wide, chunk=chunk)
        return encode([protected, unprotected, new_payload, self.sign(new_payload)], choose_outer, wide=wide, chunk=chunk)


def nsm_signer(nsm: EmulatedNsm):
    return lambda payload: parts(nsm.sign(payload))[3]


def key_signer(key: ec.EllipticCurvePrivateKey):
    return lambda payload: resign(payload, key, ES384_PROTECTED)


def _emulated_sources() -> list[Signable]:
    pki = AttestationPki()
    pcrs = {index: bytes([index + 1]) * 48 for index in range(16)}
    sources = []
    for encoding in ("indefinite", "definite"):
        nsm = EmulatedNsm(pki, module_id=new_module_id(pki.instance_id), pcrs=pcrs, document_encoding=encoding)
        document = nsm.attestation_document(public_key=b"k" * 300, user_data=b"u", nonce=b"fresh")
        sign, roots = nsm_signer(nsm), [pki.root_pem]  # only the NSM itself could re-sign on Nitro
        sources += [
            Signable(f"emulated-{encoding}", document, sign, roots=roots, nonce=b"fresh", expected_pcrs={0: pcrs[0]}),
            Signable(f"emulated-{encoding}-wrong-pcr", document, sign, roots=roots, expected_pcrs={0: bytes(48)}),
            Signable(f"emulated-{encoding}-wrong-nonce", document, sign, roots=roots, nonce=b"stale"),
            Signable(f"emulated-{encoding}-foreign-root", document, sign, roots=[AttestationPki().root_pem]),
        ]
    debug = EmulatedNsm(pki, module_id=new_module_id(pki.instance_id), pcrs={**pcrs, 0: bytes(48), 1: bytes(48), 2: bytes(48)})
    sources.append(Signable("emulated-debug", debug.attestation_document(), nsm_signer(debug), roots=[pki.root_pem]))
    own = CHAIN.document(timestamp_ms=timestamp_ms(NOW), nonce=b"n")
    sign = key_signer(CHAIN.leaf_key)
    sources.append(Signable("own-chain", own, sign, roots=[CHAIN.root_cert], now=NOW))
    sources.append(Signable("own-chain-expired", own, sign, roots=[CHAIN.root_cert], now=NOW + dt.timedelta(days=400)))
    return sources


SIGNABLE = _emulated_sources()


def test_the_signable_sources_cover_acceptance_and_each_refusal():
    verdicts = {source.name: verdict(source.document, **source.kwargs) for source in SIGNABLE}
    assert verdicts["emulated-indefinite"][0] == verdicts["emulated-definite"][0] == "verified"
    assert verdicts["own-chain"][0] == "verified"
    assert {v for v in verdicts.values() if v[0] == "refused"} == {
        ("refused", "PCRMismatch"), ("refused", "NonceMismatch"), ("refused", "CertificateChainInvalid"),
        ("refused", "DebugModeRefused"), ("refused", "CertificateExpired"),
    }


@FUZZ
@given(st.sampled_from(SIGNABLE), st.integers(0, 2**32), st.integers(1, 64))
def test_reencoding_and_resigning_never_changes_the_verdict(source, seed, chunk):
    rnd = random.Random(seed)  # one draw per head is too much data for hypothesis to shrink
    reencoded = source.reencoded(random_choice(rnd), random_choice(rnd), chunk, random_width(rnd))
    assert verdict(reencoded, **source.kwargs) == verdict(source.document, **source.kwargs)


@pytest.mark.parametrize("source", SIGNABLE, ids=repr)
@pytest.mark.parametrize("choose", [DEFINITE, top_level_map_indefinite, INDEFINITE], ids=["definite", "as-nitro-2025", "all-indefinite"])
def test_each_whole_encoding_gets_the_same_verdict(source, choose):
    reencoded = source.reencoded(choose, choose, 16)
    assert verdict(reencoded, **source.kwargs) == verdict(source.document, **source.kwargs)


# --- real documents: only what the signature does not cover can be re-encoded ---------------------

REAL = [
    pytest.param(REAL_2024, {}, id="2024-definite"),
    pytest.param(REAL_2025, {}, id="2025-indefinite"),
    pytest.param(REAL_DEBUG, {}, id="2024-debug-refused"),
    pytest.param(REAL_DEBUG, {"allow_debug": True}, id="2024-debug-allowed"),
    pytest.param(REAL_2025, {"nonce": b"asked"}, id="2025-nonce-asked"),
]
REAL_CASES = [(r.values[0][0], {**r.values[0][1], **r.values[1]}) for r in REAL]


def test_the_real_documents_decode_as_their_encodings_say():
    assert parts(REAL_2024[0])[2][0] == 0xA9  # definite map of nine
    assert parts(REAL_2025[0])[2][:1] == b"\xbf" and parts(REAL_2025[0])[2][-1:] == b"\xff"
    assert verdict(REAL_2025[0], **REAL_2025[1])[0] == "verified"


@pytest.mark.parametrize(("real", "extra"), REAL)
@pytest.mark.parametrize("choose", [DEFINITE, INDEFINITE], ids=["definite", "indefinite"])
def test_real_documents_keep_their_verdict_when_the_unsigned_structure_is_reencoded(real, extra, choose):
    document, kwargs = real
    protected, unprotected, payload, signature = parts(document)
    reencoded = encode([protected, unprotected, payload, signature], choose, chunk=100)
    assert verdict(reencoded, **kwargs, **extra) == verdict(document, **kwargs, **extra)


# --- the attacker: re-encodes without the key -------------------------------------------------------


def _attacker_reencoding(document: bytes, rnd, chunk: int, *, payload: bool, protected: bool) -> tuple[bytes, bool]:
    """(re-encoded document, whether the signed bytes changed)."""
    old_protected, unprotected, old_payload, signature = parts(document)
    wide = random_width(rnd)
    new_protected = encode(cbor2.loads(old_protected), random_choice(rnd), wide=wide) if protected else old_protected
    new_payload = encode(cbor2.loads(old_payload), random_choice(rnd), wide=wide, chunk=chunk) if payload else old_payload
    outer = encode([new_protected, unprotected, new_payload, signature], random_choice(rnd), wide=wide, chunk=chunk)
    return outer, (new_protected, new_payload) != (old_protected, old_payload)


ATTACKED = [*REAL_CASES, *((source.document, source.kwargs) for source in SIGNABLE)]


@FUZZ
@given(st.sampled_from(ATTACKED), st.integers(0, 2**32), st.integers(1, 64), st.booleans(), st.booleans())
def test_an_attackers_reencoding_is_refused_exactly_when_the_signed_bytes_change(case, seed, chunk, payload, protected):
    rnd = random.Random(seed)
    document, kwargs = case
    tampered, signed_bytes_changed = _attacker_reencoding(document, rnd, chunk, payload=payload, protected=protected)
    if signed_bytes_changed:
        assert verdict(tampered, **kwargs) == ("refused", "SignatureInvalid")
    else:
        assert verdict(tampered, **kwargs) == verdict(document, **kwargs)


@pytest.mark.parametrize(
    ("real", "choose"),
    [(REAL_2025, DEFINITE), (REAL_2024, top_level_map_indefinite), (REAL_2024, INDEFINITE)],
    ids=["2025-made-definite", "2024-made-indefinite", "2024-all-indefinite"],
)
def test_reencoding_a_real_payload_breaks_its_signature(real, choose):
    document, kwargs = real
    protected, unprotected, payload, signature = parts(document)
    tampered = cbor2.dumps([protected, unprotected, encode(cbor2.loads(payload), choose), signature])
    with pytest.raises(SignatureInvalid):
        verify(tampered, **kwargs)


def test_reencoding_a_real_payload_the_same_way_keeps_it_valid():
    # The other branch of the property above: the 2024 payload is exactly its preferred encoding.
    document, kwargs = REAL_2024
    protected, unprotected, payload, signature = parts(document)
    assert encode(cbor2.loads(payload), DEFINITE) == payload
    assert encode(cbor2.loads(parts(REAL_2025[0])[2]), top_level_map_indefinite) == parts(REAL_2025[0])[2]
    rebuilt = encode([protected, unprotected, encode(cbor2.loads(payload)), signature], INDEFINITE)
    assert verdict(rebuilt, **kwargs) == verdict(document, **kwargs)
