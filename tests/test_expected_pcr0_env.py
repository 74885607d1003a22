"""``$ZEROCOPY_EXPECTED_PCR0`` in the CLI (issue 11): ``emulator up`` exports it and
``Signer.from_env()`` pins it; ``attest verify``, ``audit verify`` and ``stethoscope`` pin it too
when no ``--pcr0`` is given, and say so on stderr (which image was pinned is never a guess). A bad
value is a one-line error naming the variable, before anything is read or connected to.
"""

from __future__ import annotations

import contextlib
import io
import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from zerocopy._cli import main

ENV = "ZEROCOPY_EXPECTED_PCR0"
PINNING = f"pinning the image in ${ENV}"
NOWHERE = "unix:///nonexistent/zc-never-connected.sock"
OTHER_IMAGE = "ab" * 48


@pytest.fixture
def root(zerocopy_emulator, tmp_path, monkeypatch) -> str:
    path = tmp_path / "attestation-root.pem"
    path.write_bytes(zerocopy_emulator.root_certificate)
    monkeypatch.delenv("ZEROCOPY_ATTESTATION_ROOT", raising=False)
    return str(path)


@pytest.fixture
def document(zerocopy_emulator, tmp_path, capsys) -> str:
    path = tmp_path / "doc.cbor"
    assert main(["attest", "fetch", "--enclave", zerocopy_emulator.address, "-o", str(path)]) == 0
    capsys.readouterr()
    return str(path)


@pytest.mark.zerocopy
def test_attest_verify_pins_the_variables_pcr0_and_says_so(zerocopy_emulator, root, document, monkeypatch, capsys):
    pcr0 = zerocopy_emulator.pcrs[0].hex()
    monkeypatch.setenv(ENV, pcr0.upper())
    assert main(["attest", "verify", document, "--root", root, "--json"]) == 0
    captured = capsys.readouterr()
    assert '"pcrs": [\n      0\n    ]' in captured.out and f"{PINNING}: PCR0 {pcr0}" in captured.err
    monkeypatch.setenv(ENV, OTHER_IMAGE)
    assert main(["attest", "verify", document, "--root", root]) == 1
    assert f"PCRMismatch: PCR0 does not match the expected value: expected {OTHER_IMAGE}" in capsys.readouterr().out
    assert main(["attest", "verify", document, "--root", root, "--pcr0", pcr0]) == 0  # --pcr0 wins over the variable
    assert PINNING not in capsys.readouterr().err


@pytest.mark.zerocopy
def test_stethoscope_pins_the_variables_pcr0(zerocopy_emulator, root, monkeypatch, capsys):
    argv = ["stethoscope", "--enclave", zerocopy_emulator.address, "--root", root, "--samples", "20", "--json"]
    monkeypatch.setenv(ENV, OTHER_IMAGE)
    assert main(argv) == 1
    captured = capsys.readouterr()
    assert PINNING in captured.err and "PCRMismatch" in captured.out
    monkeypatch.setenv(ENV, zerocopy_emulator.pcrs[0].hex())
    assert main(argv) == 0
    assert PINNING in capsys.readouterr().err


@pytest.mark.zerocopy
def test_audit_verify_pins_the_variables_pcr0_and_needs_a_pin_without_it(zerocopy_emulator, root, tmp_path, monkeypatch, capsys):
    log = str(tmp_path / "audit.jsonl")
    assert main(["audit", "fetch", "--enclave", zerocopy_emulator.address, "--log", log]) == 0
    capsys.readouterr()
    monkeypatch.delenv(ENV, raising=False)
    with pytest.raises(SystemExit) as usage:
        main(["audit", "verify", log, "--root", root])
    assert usage.value.code == 2 and "pass --pcr0 HEX (or set $ZEROCOPY_EXPECTED_PCR0)" in capsys.readouterr().err
    monkeypatch.setenv(ENV, zerocopy_emulator.pcrs[0].hex())
    assert main(["audit", "verify", log, "--root", root]) == 0
    captured = capsys.readouterr()
    assert PINNING in captured.err and "VERIFIED" in captured.out
    monkeypatch.setenv(ENV, OTHER_IMAGE)
    assert main(["audit", "verify", log, "--root", root]) == 1  # the log's identity keys are another image's
    assert PINNING in capsys.readouterr().err
    assert main(["audit", "verify", log, "--root", root, "--any-image"]) == 0  # said out loud: the variable is not read
    err = capsys.readouterr().err
    assert PINNING not in err and "WARNING: --any-image" in err


COMMANDS = {
    "attest verify": lambda tmp: ["attest", "verify", str(tmp / "doc.cbor")],
    "audit verify": lambda tmp: ["audit", "verify", str(tmp / "audit.jsonl")],
    "stethoscope": lambda tmp: ["stethoscope", "--enclave", NOWHERE],
}


@pytest.mark.parametrize("command", sorted(COMMANDS))
@pytest.mark.parametrize(
    ("value", "says"),
    [("", "set but empty"), ("  ", "set but empty"), ("zz" * 48, "is not hex"), ("ab" * 47, "96 hex digits expected, this has 94"), ("x" * 10_000, "10000 characters long")],
    ids=["empty", "blank", "not-hex", "short", "long"],
)
def test_a_bad_variable_is_one_line_naming_it(command, value, says, tmp_path, monkeypatch, capsys):
    (tmp_path / "doc.cbor").write_bytes(b"\x84")
    (tmp_path / "audit.jsonl").write_bytes(b"")
    monkeypatch.delenv("ZEROCOPY_ATTESTATION_ROOT", raising=False)
    monkeypatch.setenv(ENV, value)
    assert main(COMMANDS[command](tmp_path)) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and ENV in err and says in err and len(err) < 400, err


@settings(max_examples=200, deadline=None)
@given(value=st.text(alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=200))
def test_any_variable_value_pins_or_is_refused_in_one_line(value, tmp_path_factory):
    document = tmp_path_factory.mktemp("doc") / "doc.cbor"
    document.write_bytes(b"\x84")  # not a document: a good pin gets as far as verifying it
    saved = {name: os.environ.pop(name, None) for name in (ENV, "ZEROCOPY_ATTESTATION_ROOT")}
    os.environ[ENV] = value
    try:
        err = io.StringIO()
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()) as out:
            code = main(["attest", "verify", str(document)])
    finally:
        for name, previous in saved.items():
            os.environ.pop(name, None)
            if previous is not None:
                os.environ[name] = previous
    assert code == 1
    if PINNING in err.getvalue():
        assert "NOT VERIFIED" in out.getvalue()
    else:
        assert err.getvalue().count("\n") == 1 and ENV in err.getvalue()
