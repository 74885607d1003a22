"""``$ZEROCOPY_ATTESTATION_ROOT`` in the CLI, and the forms ``Signer`` takes its pins and roots in.

The CLI's ``attest verify``, ``audit verify`` and ``stethoscope`` trust the root the variable names
when no ``--root`` is given, and say so on stderr (a root other than AWS's is never trusted
silently). ``Signer(...)`` reads no environment — only ``Signer.from_env()`` does — and takes a
PCR as 48 bytes or 96 hex digits, a root as PEM bytes, PEM text, a certificate or a PEM file's path.
"""

from __future__ import annotations

import asyncio
import tempfile
from pathlib import Path

import pytest
from cryptography import x509
from hypothesis import given, settings
from hypothesis import strategies as st

from zerocopy import AsyncSigner, ConnectionFailed, Signer
from zerocopy._cli import main
from zerocopy.attestation import CertificateChainInvalid

ENV = "ZEROCOPY_ATTESTATION_ROOT"
TRUSTING = f"trusting the attestation root in ${ENV}"
NOWHERE = "unix:///nonexistent/zc-never-connected.sock"


@pytest.fixture
def root_file(zerocopy_emulator, tmp_path) -> Path:
    path = tmp_path / "attestation-root.pem"
    path.write_bytes(zerocopy_emulator.root_certificate)
    return path


@pytest.fixture
def document(zerocopy_emulator, tmp_path, capsys) -> Path:
    path = tmp_path / "doc.cbor"
    assert main(["attest", "fetch", "--enclave", zerocopy_emulator.address, "-o", str(path)]) == 0
    capsys.readouterr()
    return path


@pytest.mark.zerocopy
def test_attest_verify_trusts_the_root_the_variable_names_and_says_so(zerocopy_emulator, root_file, document, monkeypatch, capsys):
    pcr0 = zerocopy_emulator.pcrs[0].hex()
    monkeypatch.delenv(ENV, raising=False)
    assert main(["attest", "verify", str(document), "--pcr0", pcr0]) == 1  # the AWS root: not this document's
    assert TRUSTING not in capsys.readouterr().err
    monkeypatch.setenv(ENV, str(root_file))
    assert main(["attest", "verify", str(document), "--pcr0", pcr0, "--json"]) == 0
    captured = capsys.readouterr()
    assert '"verified": true' in captured.out and f"{TRUSTING} ({root_file}): CN=zc-emu.nitro-enclaves" in captured.err
    other = root_file.with_name("other.pem")
    other.write_bytes((Path(__file__).parent.parent / "zerocopy" / "data" / "aws-nitro-root-g1.pem").read_bytes())
    assert main(["attest", "verify", str(document), "--root", str(other)]) == 1  # --root wins over the variable
    assert TRUSTING not in capsys.readouterr().err


@pytest.mark.zerocopy
def test_stethoscope_and_audit_verify_trust_the_variables_root(zerocopy_emulator, root_file, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv(ENV, str(root_file))
    pcr0 = zerocopy_emulator.pcrs[0].hex()
    assert main(["stethoscope", "--enclave", zerocopy_emulator.address, "--pcr0", pcr0, "--samples", "20", "--json"]) == 0
    assert TRUSTING in capsys.readouterr().err
    log = tmp_path / "audit.jsonl"
    assert main(["audit", "fetch", "--enclave", zerocopy_emulator.address, "--log", str(log)]) == 0
    capsys.readouterr()
    code = main(["audit", "verify", str(log), "--pcr0", pcr0])
    captured = capsys.readouterr()
    assert TRUSTING in captured.err and "VERIFIED" in captured.out, captured
    assert code == 0


@pytest.mark.parametrize(
    ("value", "says"),
    [("", "set but empty"), ("/nonexistent/root.pem", "No such file"), (__file__, "is not a PEM certificate")],
    ids=["empty", "missing", "not-pem"],
)
def test_a_bad_root_variable_is_one_line_naming_it(value, says, tmp_path, monkeypatch, capsys):
    (tmp_path / "doc.cbor").write_bytes(b"\x84")
    monkeypatch.setenv(ENV, value)
    assert main(["attest", "verify", str(tmp_path / "doc.cbor")]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and ENV in err and says in err, err


# -- Signer: natural forms of pins and roots ---------------------------------------------------------
@pytest.mark.zerocopy
@pytest.mark.parametrize("form", ["hex and str path", "hex and Path", "bytes and PEM text", "hex and certificate"])
def test_signer_attests_with_a_hex_pcr0_and_a_root_in_any_natural_form(form, zerocopy_emulator, root_file):
    pcr0 = zerocopy_emulator.pcrs[0]
    pem = zerocopy_emulator.root_certificate
    pin, root = {
        "hex and str path": (pcr0.hex(), str(root_file)),
        "hex and Path": (pcr0.hex().upper(), root_file),
        "bytes and PEM text": (pcr0, pem.decode()),
        "hex and certificate": (pcr0.hex(), x509.load_pem_x509_certificate(pem)),
    }[form]
    with Signer(zerocopy_emulator.address, expected_pcrs={0: pin}, roots=[root]) as signer:
        assert signer.attested and signer.attestation.pcrs[0] == pcr0


@pytest.mark.zerocopy
def test_async_signer_takes_the_same_forms(zerocopy_emulator, root_file):
    async def attest() -> bool:
        async with AsyncSigner(zerocopy_emulator.address, expected_pcrs={0: zerocopy_emulator.pcrs[0].hex()}, roots=[root_file]) as signer:
            await signer.keys()
            return signer.attested

    assert asyncio.run(attest())


@pytest.mark.zerocopy
def test_the_signer_constructor_reads_no_root_from_the_environment(zerocopy_emulator, root_file, monkeypatch):
    """An explicit ``Signer(address, expected_pcrs=…)`` trusts the AWS root, whatever the
    environment says: a variable cannot widen what the code pinned."""
    monkeypatch.setenv(ENV, str(root_file))
    with pytest.raises(CertificateChainInvalid, match=r"zc-emu.nitro-enclaves\) is not a trusted root \(trusted: aws.nitro-enclaves\); .*roots=\[\.\.\.\]"):
        Signer(zerocopy_emulator.address, expected_pcrs={0: zerocopy_emulator.pcrs[0]})


@pytest.mark.parametrize(
    ("arguments", "error", "says"),
    [
        ({"expected_pcrs": {0: "zz" * 48}}, ValueError, "96 hex digits (a SHA-384 measurement); the string given is not hex"),
        ({"expected_pcrs": {0: "ab" * 47}}, ValueError, "not 94 hex digits"),
        ({"expected_pcrs": {0: 7}}, TypeError, "expected_pcrs[0] must be 48 bytes or 96 hex digits"),
        ({"expected_pcrs": ["ab" * 48]}, TypeError, "expected_pcrs must be a mapping"),
        ({"expected_pcrs": {0: "ab" * 48}, "roots": "root.pem"}, TypeError, "not a single str: roots=[...]"),
        ({"expected_pcrs": {0: "ab" * 48}, "roots": ["/nonexistent/root.pem"]}, ValueError, "roots[0]: cannot read the PEM file"),
        ({"expected_pcrs": {0: "ab" * 48}, "roots": [Path(__file__)]}, ValueError, "is not a PEM certificate"),
        ({"expected_pcrs": {0: "ab" * 48}, "roots": [3]}, TypeError, "roots[0] must be PEM bytes, an x509.Certificate or a path"),
    ],
    ids=["not-hex", "short-hex", "int", "list", "single-path", "missing-file", "not-pem-file", "int-root"],
)
def test_malformed_pins_and_roots_say_what_form_is_expected_before_connecting(arguments, error, says):
    with pytest.raises(error) as raised:
        Signer(NOWHERE, **arguments)
    assert says in str(raised.value)



@settings(max_examples=300, deadline=None)
@given(pin=st.one_of(st.text(max_size=200), st.binary(max_size=100), st.integers(), st.none(), st.lists(st.integers(), max_size=3)))
def test_any_pin_is_accepted_or_refused_with_a_typed_error(pin):
    try:
        Signer(NOWHERE, expected_pcrs={0: pin})
    except ConnectionFailed:  # a well-formed pin: the connection is what failed
        assert isinstance(pin, (str, bytes)) and len(bytes.fromhex(pin) if isinstance(pin, str) else pin) == 48
    except (TypeError, ValueError) as refused:
        assert "expected_pcrs[0]" in str(refused)


@settings(max_examples=200, deadline=None)
@given(content=st.one_of(st.binary(max_size=2000), st.text(max_size=500).map(lambda text: ("-----BEGIN CERTIFICATE-----\n" + text).encode())))
def test_any_root_file_is_refused_with_a_value_error_naming_it(content):
    with tempfile.NamedTemporaryFile(suffix=".pem") as file:
        file.write(content)
        file.flush()
        with pytest.raises(ValueError, match=r"roots\[0\]: .* is not a PEM certificate"):
            Signer(NOWHERE, expected_pcrs={0: "ab" * 48}, roots=[file.name])
