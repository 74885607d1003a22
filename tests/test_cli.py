"""The ``zerocopy`` command, called in-process through ``main(argv)``."""

from __future__ import annotations

import base64
import io
import json
import socket
import sys
from pathlib import Path

import pytest

from zerocopy._cli import build_parser, main

DATA = Path(__file__).parent / "data" / "attestation"
REAL_DOCUMENT_TIME = "1725719859545"  # the sample's own timestamp (ms)


def _subcommands(parser) -> list[list[str]]:
    paths = []
    for action in parser._subparsers._group_actions:
        for name, child in action.choices.items():
            paths.append([name])
            if child._subparsers is not None:
                paths += [[name, *rest] for rest in _subcommands(child)]
    return paths


@pytest.mark.parametrize("command", _subcommands(build_parser()), ids=" ".join)
def test_every_command_has_help(command, capsys):
    with pytest.raises(SystemExit) as exited:
        main([*command, "--help"])
    assert exited.value.code == 0
    assert "usage: zerocopy" in capsys.readouterr().out


def test_attest_verify_accepts_the_real_document_as_of_its_time(capsys):
    code = main(["attest", "verify", str(DATA / "nitro-2024-09-07.b64"), "--at", REAL_DOCUMENT_TIME, "--pcr", "4=" + "00" * 48])
    out = capsys.readouterr().out
    assert code == 1 and "PCRMismatch" in out  # PCR4 of the sample is not zero
    code = main(["attest", "verify", str(DATA / "nitro-2024-09-07.b64"), "--at", REAL_DOCUMENT_TIME, "--json"])
    result = json.loads(capsys.readouterr().out)
    assert code == 0 and result["verified"] is True
    assert result["document"]["module_id"] == "i-0a22e5c5f24d22174-enc0191cceb4289903f"


def test_attest_verify_accepts_a_document_with_an_indefinite_length_payload(capsys):
    # Nitro's encoding since about September 2025; the 2025 sample's own time is 1758057949422 ms.
    document = str(DATA / "nitro-2025-09-16-indefinite-map.b64")
    code = main(["attest", "verify", document, "--at", "1758057949422", "--json"])
    result = json.loads(capsys.readouterr().out)
    assert code == 0 and result["verified"] is True
    assert result["document"]["module_id"] == "i-02447a481344e9ec0-enc0199546b533fd5d0"
    assert result["document"]["nonce"] is None and len(bytes.fromhex(result["document"]["user_data"])) == 32


def test_attest_verify_refuses_expired_and_debug_documents(capsys):
    assert main(["attest", "verify", str(DATA / "nitro-2024-09-07.b64")]) == 1
    assert "CertificateExpired" in capsys.readouterr().out
    debug = str(DATA / "nitro-debug-2024-09-07.b64")
    assert main(["attest", "verify", debug, "--at", "1725719886508"]) == 1
    assert "DebugModeRefused" in capsys.readouterr().out
    assert main(["attest", "verify", debug, "--at", "1725719886508", "--allow-debug"]) == 0


def test_errors_are_one_line_on_stderr(capsys, monkeypatch):
    monkeypatch.delenv("ZEROCOPY_ENCLAVE", raising=False)
    assert main(["keys"]) == 1
    captured = capsys.readouterr()
    assert captured.err.count("\n") == 1 and captured.err.startswith("zerocopy: error: no enclave address")
    assert main(["keys", "--enclave", "unix:///nonexistent/zc.sock"]) == 1
    assert "cannot connect" in capsys.readouterr().err


def test_usage_errors_exit_2(capsys):
    with pytest.raises(SystemExit) as exited:
        main(["seal", "--name", "x"])
    assert exited.value.code == 2


def test_kms_policy_refuses_a_debug_measurement(capsys):
    assert main(["kms-policy", "--pcr0", "00" * 48, "--account", "123456789012"]) == 1
    assert "debug-mode" in capsys.readouterr().err
    assert main(["kms-policy", "--pcr0", "ab" * 48, "--account", "123456789012"]) == 0
    policy = json.loads(capsys.readouterr().out)
    assert policy["Statement"][1]["Condition"]["StringNotEqualsIgnoreCase"]["kms:RecipientAttestation:ImageSha384"] == "ab" * 48


@pytest.mark.zerocopy
def test_seal_provision_sign_and_keys_against_the_emulator(zerocopy_emulator, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("ZEROCOPY_KMS_ENDPOINT", zerocopy_emulator.kms_endpoint_url)
    monkeypatch.setenv("ZEROCOPY_KMS_CA", str(zerocopy_emulator.tls_ca_path))
    monkeypatch.setenv("AWS_REGION", zerocopy_emulator.region)
    host = zerocopy_emulator.credentials  # the host role's session, as `zerocopy emulator up` exports it
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", host["access_key_id"])
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", host["secret_access_key"])
    monkeypatch.setenv("AWS_SESSION_TOKEN", host["session_token"])
    key_arn = zerocopy_emulator.kms.create_key()["KeyMetadata"]["Arn"]
    bundle_path = tmp_path / "cli.sealed.json"
    secret = b"NhqPtmdSJYdKjVHjA7PZj4Mge3R5YNiP1e3UZjInClVN65XAbvqqM6A7H5fATj0j"
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(secret + b"\n")))
    policy_path = tmp_path / "policy.toml"
    policy_path.write_text('scheme = "binance-hmac"\n[freshness]\nenabled = false  # the 2017 documentation example\n')
    assert main(["seal", "--name", "cli-key", "--scheme", "binance-hmac", "--kms-key", key_arn, "--api-key", "AK", "--policy", str(policy_path), "-o", str(bundle_path)]) == 0
    assert "policy sha256: " in capsys.readouterr().err
    assert secret not in bundle_path.read_bytes()
    assert main(["provision", str(bundle_path)]) == 0
    assert "loaded cli-key" in capsys.readouterr().out
    assert main(["keys"]) == 0
    assert "cli-key\tbinance-hmac" in capsys.readouterr().out
    params = ["symbol=LTCBTC", "side=BUY", "type=LIMIT", "timeInForce=GTC", "quantity=1", "price=0.1", "recvWindow=5000", "timestamp=1499827319559"]
    argv = ["sign", "--key", "cli-key", "--request", "POST", "/api/v3/order"] + [item for param in params for item in ("--param", param)]
    assert main(argv) == 0
    signed = json.loads(capsys.readouterr().out)
    assert signed["query"].endswith("signature=c8db56825ae71d6d79447849e617115f4a920fa2acdcab2b053c4b2838bd6b71")


@pytest.mark.zerocopy
def test_generate_seals_to_the_measured_seal_key_and_keys_names_it(zerocopy_emulator, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("AWS_REGION", zerocopy_emulator.region)
    host = zerocopy_emulator.credentials
    for name, field in (("AWS_ACCESS_KEY_ID", "access_key_id"), ("AWS_SECRET_ACCESS_KEY", "secret_access_key"), ("AWS_SESSION_TOKEN", "session_token")):
        monkeypatch.setenv(name, host[field])
    enclave, bundle_path = ["--enclave", zerocopy_emulator.address], tmp_path / "generated.sealed.json"
    assert main(["generate", "--name", "cli-generated", "--scheme", "ed25519", "-o", str(bundle_path), *enclave]) == 0
    captured = capsys.readouterr()
    assert captured.out.startswith("-----BEGIN PUBLIC KEY-----") and f"sealed to {zerocopy_emulator.seal_key}" in captured.err
    assert json.loads(bundle_path.read_text())["kms_key_id"] == zerocopy_emulator.seal_key
    assert main(["keys", *enclave]) == 0
    assert f"cli-generated\ted25519\tapi_key=-\tpolicy=default\tsealed_by={zerocopy_emulator.seal_key}" in capsys.readouterr().out
    other = zerocopy_emulator.kms.create_key()["KeyMetadata"]["Arn"]
    assert main(["generate", "--name", "cli-elsewhere", "--scheme", "ed25519", "--kms-key", other, "-o", str(tmp_path / "x.json"), *enclave]) == 1
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "--seal-key" in error and not (tmp_path / "x.json").exists()


@pytest.mark.zerocopy
def test_attest_fetch_then_verify_with_the_emulator_root(zerocopy_emulator, tmp_path, capsys):
    document_path, root_path = tmp_path / "doc.cbor", tmp_path / "root.pem"
    root_path.write_bytes(zerocopy_emulator.root_certificate)
    assert main(["attest", "fetch", "--enclave", zerocopy_emulator.address, "--nonce", "00ff", "-o", str(document_path)]) == 0
    capsys.readouterr()
    pcr0 = zerocopy_emulator.pcrs[0].hex()
    assert main(["attest", "verify", str(document_path), "--root", str(root_path), "--pcr0", pcr0, "--nonce", "00ff"]) == 0
    assert "VERIFIED" in capsys.readouterr().out
    assert main(["attest", "verify", str(document_path)]) == 1  # the AWS root does not sign emulator documents
    assert "CertificateChainInvalid" in capsys.readouterr().out
    base64_path = tmp_path / "doc.b64"
    base64_path.write_bytes(base64.b64encode(document_path.read_bytes()))
    assert main(["attest", "verify", str(base64_path), "--root", str(root_path)]) == 0


def test_demo_runs_end_to_end(capsys):
    assert main(["demo", "--samples", "200"]) == 0
    out = capsys.readouterr().out
    assert "signature c8db56825ae71d6d79447849e617115f4a920fa2acdcab2b053c4b2838bd6b71" in out
    assert "= the signature in Binance's documentation" in out
    assert "refused: bundle 'binance-demo': KMS refused Decrypt: AccessDeniedException" in out
    assert "in the symbol's quote currency: BTC for LTCBTC" in out  # the notional's unit
    assert "ratio (p50)" in out and "lower is better" in out and out.rstrip().splitlines()[-2].startswith("Next: `zerocopy emulator up`")


@pytest.mark.zerocopy
def test_stethoscope_examines_a_running_enclave(zerocopy_emulator, zerocopy_key, tmp_path, capsys):
    key = zerocopy_key("hmac-sha256")
    root = tmp_path / "root.pem"
    root.write_bytes(zerocopy_emulator.root_certificate)
    code = main(["stethoscope", "--enclave", zerocopy_emulator.address, "--root", str(root), "--pcr0", zerocopy_emulator.pcrs[0].hex(), "--samples", "50", "--json"])
    report = json.loads(capsys.readouterr().out)
    assert code == 0 and report["attestation"]["verified"] is True
    assert key.name in [entry["name"] for entry in report["keys"]]
    assert report["latency"]["sign_path_p50_us"] > 0
    assert main(["stethoscope", "--enclave", zerocopy_emulator.address, "--samples", "20"]) == 1  # AWS root: not verified
    assert "NOT VERIFIED" in capsys.readouterr().out


POLICIES = Path(__file__).parent / "data" / "policies"


def test_policy_check_explains_a_policy_and_its_hash(capsys):
    assert main(["policy", "check", str(POLICIES / "binance-spot.toml")]) == 0
    out = capsys.readouterr().out
    assert "a valid policy for binance-hmac (sha256 " in out
    assert "Withdrawals, transfers" in out and "Requests that may be signed" in out


def test_policy_check_refuses_a_float_in_one_line(tmp_path, capsys):
    bad = tmp_path / "bad.toml"
    bad.write_text('scheme = "binance-hmac"\nmax_quantity = 0.5\n')
    assert main(["policy", "check", str(bad)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "as a string" in err


def test_policy_simulate_reports_each_refusal_and_exits_1(tmp_path, capsys):
    policy = tmp_path / "policy.toml"
    policy.write_text('scheme = "binance-hmac"\nsymbols = ["BTCUSDT"]\nmax_quantity = "1"\n[freshness]\nenabled = false\n[rate]\nper_second = "1"\nburst = 1\n')
    order = {"method": "POST", "path": "/api/v3/order", "params": {"symbol": "BTCUSDT", "side": "BUY", "type": "LIMIT", "timeInForce": "GTC", "quantity": "0.5", "price": "10", "timestamp": "1"}}
    lines = [
        {**order, "time_ms": 1000},
        {**order, "time_ms": 1001},  # the bucket is empty a millisecond later
        {**order, "time_ms": 3000},
        {**order, "time_ms": 5000, "params": {**order["params"], "quantity": "2"}},
        {"time_ms": 6000, "method": "POST", "path": "/sapi/v1/capital/withdraw/apply", "params": {"coin": "BTC", "address": "x", "amount": "1", "timestamp": "1"}},
        "not an object",
    ]
    log = tmp_path / "requests.jsonl"
    log.write_text("\n".join(json.dumps(line) for line in lines))
    assert main(["policy", "simulate", str(policy), "--requests", str(log), "--json"]) == 1
    decisions = json.loads(capsys.readouterr().out)
    assert [(d["line"], d["signed"], d["rule"]) for d in decisions] == [
        (1, True, ""), (2, False, "rate"), (3, True, ""), (4, False, "max_quantity"), (5, False, "funds"), (6, False, "malformed"),
    ]


@pytest.mark.zerocopy
def test_audit_fetch_and_verify_from_the_command_line(zerocopy_emulator, zerocopy_key, zerocopy_signer, tmp_path, capsys):
    key = zerocopy_key("hmac-sha256")
    zerocopy_signer.sign(key.name, b"audited")
    log, root = tmp_path / "audit.jsonl", tmp_path / "root.pem"
    root.write_bytes(zerocopy_emulator.root_certificate)
    assert main(["audit", "fetch", "--enclave", zerocopy_emulator.address, "--log", str(log)]) == 0
    assert main(["audit", "verify", str(log), "--root", str(root), "--pcr0", zerocopy_emulator.pcrs[0].hex()]) == 0
    assert "VERIFIED" in capsys.readouterr().out
    lines = log.read_bytes().splitlines()
    receipt = next(i for i, line in enumerate(lines) if b'"decision"' in line)
    log.write_bytes(b"\n".join(lines[:receipt] + lines[receipt + 1 :]) + b"\n")
    assert main(["audit", "verify", str(log), "--root", str(root), "--pcr0", zerocopy_emulator.pcrs[0].hex()]) == 1
    assert "removed" in capsys.readouterr().err


# -- usage errors: a malformed value exits 2, naming its flag, before anything is done ---------------
def _usage_error(argv: list[str], capsys) -> str:
    with pytest.raises(SystemExit) as exited:
        main(argv)
    err = capsys.readouterr().err
    assert exited.value.code == 2 and "Traceback" not in err
    return err


def test_a_pcr_without_its_index_is_a_usage_error(capsys):
    err = _usage_error(["attest", "verify", "/dev/null", "--pcr", "5"], capsys)
    assert "argument --pcr: '5' must look like N=HEX" in err


def test_a_pcr0_that_is_not_hex_is_a_usage_error(capsys):
    err = _usage_error(["kms-policy", "--pcr0", "zz"], capsys)
    assert "argument --pcr0: 'zz' is not hex" in err


def test_a_malformed_param_is_refused_before_connecting(tmp_path, capsys, monkeypatch):
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    with listener:
        listener.bind(str(tmp_path / "enclave.sock"))
        listener.listen(1)
        monkeypatch.setenv("ZEROCOPY_ENCLAVE", f"unix://{tmp_path / 'enclave.sock'}")
        err = _usage_error(["sign", "--key", "k", "--request", "POST", "/api/v3/order", "--param", "bad"], capsys)
        listener.settimeout(0.2)
        with pytest.raises(TimeoutError):
            listener.accept()  # nobody connected
    assert "argument --param: 'bad' must look like NAME=VALUE" in err


def _parser_at(parser, command):
    for name in command:
        parser = parser._subparsers._group_actions[0].choices[name]
    return parser


def _minimal_argv(parser) -> list[str]:
    """Values for the required arguments of a command, so only the option under test is wrong."""
    argv = []
    for action in parser._actions:
        if action.required or (not action.option_strings and action.nargs != "?" and action.dest != "help"):
            value = sorted(action.choices)[0] if action.choices else "x"
            argv += [action.option_strings[0], value] if action.option_strings else [value]
    return argv


CONVERTED_OPTIONS = [
    (command, action.option_strings[-1])
    for command in _subcommands(build_parser())
    for action in _parser_at(build_parser(), command)._actions
    if action.option_strings and action.type is not None and action.type is not str
]


def test_the_sweep_covers_the_converted_options():
    options = {option for _, option in CONVERTED_OPTIONS}
    assert {"--pcr0", "--pcr", "--param", "--root", "--nonce", "--at", "--enclave", "--samples", "--chains", "--expect-from"} <= options


@pytest.mark.parametrize(("command", "option"), CONVERTED_OPTIONS, ids=lambda value: " ".join(value) if isinstance(value, list) else value)
def test_every_malformed_value_exits_2_naming_its_flag(command, option, capsys):
    argv = [*command, *_minimal_argv(_parser_at(build_parser(), command)), option, "zz"]
    err = _usage_error(argv, capsys)
    assert f"argument {option}" in err.splitlines()[-1]


# -- usage errors: flags that contradict each other exit 2, naming them, before anything is done ------
PCR0 = ["--pcr0", "ab" * 48]
CONFLICTING_FLAGS = [
    (["kms-policy", "--account", "123456789012", "--locked", *PCR0], ["--locked", "--pcr0"]),
    (["kms-policy", "--account", "123456789012", "--locked", "--pcr", "4=" + "cd" * 48], ["--locked", "--pcr"]),
    (["kms-policy", "--account", "123456789012", "--locked", "--sealer", "arn:aws:iam::123456789012:role/op"], ["--locked", "--sealer"]),
    (["kms-policy", "--account", "123456789012", "--locked", "--enclave-only"], ["--locked", "--enclave-only"]),
    (["kms-policy", "--account", "123456789012"], ["--pcr0", "--locked"]),
    (["kms-policy", "--account", "123456789012", *PCR0, "--enclave-only", "--sealer", "arn:aws:iam::123456789012:role/op"], ["--enclave-only", "--sealer"]),
    (["kms-policy", "--account", "123456789012", "--locked", "--role", "arn:aws:iam::123456789012:role/host"], ["--locked", "--role"]),
    (["kms-policy", "--account", "123456789012", *PCR0, "--enclave-only", "--operator", "arn:aws:iam::123456789012:role/op"], ["--enclave-only", "--operator"]),
    (["eif", "build", "--ramdisk", "init.cpio"], ["--ramdisk", "--kernel"]),
    (["eif", "build", "--kernel", "bzImage"], ["--kernel", "--ramdisk"]),
    (["eif", "build", "--kernel", "bzImage", "--ramdisk", "init.cpio", "--seal-key", "arn:aws:kms:us-east-1:123456789012:key/k"], ["--seal-key", "--kernel"]),
    (["audit", "verify", "LOG"], ["--pcr0", "--any-image"]),
    (["audit", "verify", "LOG", "--any-image", "--enclave", "unix:///nonexistent/zc.sock"], ["--enclave", "--pcr0"]),
    (["audit", "verify", "LOG", "--any-image", *PCR0], ["--pcr0", "--any-image"]),
    (["seal", "--name", "k", "--scheme", "hmac-sha256", "--kms-key", "k", "--json"], ["--json", "-o FILE"]),
    (["generate", "--name", "k", "--scheme", "bybit-rsa", "--api-key", "has space", "-o", "x.json"], ["--api-key"]),
    (["bind", "k", "--api-key", "has space", "-o", "x.json"], ["--api-key"]),
]


@pytest.mark.parametrize(("argv", "flags"), CONFLICTING_FLAGS, ids=lambda value: " ".join(value))
def test_every_contradicting_flag_combination_exits_2_naming_the_flags(argv, flags, tmp_path, capsys, monkeypatch):
    log = tmp_path / "audit.jsonl"
    log.write_bytes(b"")  # never read: the usage error comes first
    monkeypatch.setattr(Path, "read_bytes", lambda self: pytest.fail(f"read {self} before the usage check"))
    err = _usage_error([str(log) if value == "LOG" else value for value in argv], capsys)
    message = err.splitlines()[-1]
    assert message.startswith(f"zerocopy {argv[0]}") and ": error: " in message
    assert all(flag in message for flag in flags), message


def test_the_flag_combination_sweep_covers_each_command_with_combination_rules():
    checked = {tuple(command) for command in _subcommands(build_parser()) if _parser_at(build_parser(), command).get_default("usage_check")}
    assert checked == {tuple(argv[: 2 if argv[0] in ("audit", "eif") else 1]) for argv, _ in CONFLICTING_FLAGS}


# -- the emulator's commands without its dependencies ------------------------------------------------
@pytest.mark.parametrize(("argv", "hidden", "named"), [
    (["demo"], "moto", "moto"),
    (["emulator", "up"], "moto", "moto"),
    (["demo", "--samples", "10"], "yaml", "PyYAML"),
], ids=["demo-moto", "emulator-up-moto", "demo-yaml"])  # fmt: skip
def test_the_emulator_commands_say_what_to_install_without_its_dependencies(argv, hidden, named, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, hidden, None)  # as if not installed: import and find_spec see nothing
    assert main(argv) == 1  # still a command (not "invalid choice"), refused before anything starts
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err.count("\n") == 1
    assert named in captured.err and "pip install -e '.[emulator]' in ZeroCopy's checkout" in captured.err and f"error: {' '.join(argv[: len(argv) if argv[0] == 'emulator' else 1])} needs" in captured.err


def test_the_emulator_commands_are_there_in_a_fresh_interpreter_without_moto(tmp_path):
    import os
    import subprocess

    hide_moto = "import sys; sys.modules['moto'] = None; from zerocopy._cli import main; sys.exit(main(['demo']))"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).resolve().parent.parent), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run([sys.executable, "-c", hide_moto], capture_output=True, text=True, timeout=60, cwd=tmp_path, env=env)
    assert done.returncode == 1 and "invalid choice" not in done.stderr, done.stderr
    assert done.stderr.splitlines() == ["zerocopy: error: demo needs the emulator's dependencies (moto missing): pip install -e '.[emulator]' in ZeroCopy's checkout"]
