"""The ``zerocopy`` command.

Results go to stdout (``--json``: as JSON), progress, summaries and warnings to stderr, errors are
one line on stderr. Exit codes: 0 success, 1 failure or refusal (KMS, policy, attestation), 2 usage
error, 128 + the signal when SIGINT or SIGTERM interrupted it (one line; the cleanup still runs).
"""

from __future__ import annotations

import argparse
import contextlib
import getpass
import json
import os
import signal
import string
import sys
import threading
from datetime import datetime, timezone
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any, Iterator, NoReturn, Sequence

from . import errors
from ._aws import aws_session, host_credentials

__all__ = ["main"]

PROG = "zerocopy"
COMMANDS_GROUP = "zerocopy.commands"


class _Fatal(Exception):
    pass


def _fatal(message: str) -> NoReturn:
    raise _Fatal(message)


def _say(message: str = "") -> None:
    print(message, file=sys.stderr)


def _given(args: argparse.Namespace, **flags: str) -> list[str]:
    """The flags (``dest="--flag"``) that were given on the command line."""
    return [flag for dest, flag in flags.items() if getattr(args, dest)]


def _check_usage(parser: argparse.ArgumentParser, check: Any) -> None:
    """After parsing, ``check(args)`` judges the combination of flags: a message it returns is a
    usage error of ``parser`` (exit 2, naming the flags) before the command runs."""

    def run(args: argparse.Namespace) -> None:
        problem = check(args)
        if problem:
            parser.error(problem)

    parser.set_defaults(usage_check=run)


def _enclave_address(args: argparse.Namespace) -> str:
    address = args.enclave or os.environ.get("ZEROCOPY_ENCLAVE")
    if not address:
        _fatal("no enclave address: pass --enclave ADDR or set ZEROCOPY_ENCLAVE")
    return address


def _kms_client(args: argparse.Namespace) -> Any:
    endpoint = args.kms_endpoint or os.environ.get("ZEROCOPY_KMS_ENDPOINT")
    ca = args.kms_ca or os.environ.get("ZEROCOPY_KMS_CA")
    session = aws_session(args.region)
    if session.region_name is None:
        _fatal("no AWS region: pass --region or set AWS_REGION")
    return session.client("kms", endpoint_url=endpoint or None, verify=ca or None)


def _write_file(path: str, data: bytes) -> None:
    """Write ``path`` whole or not at all: through a temporary file beside it, renamed into place,
    so an interrupted command leaves neither a half-written file nor the temporary one."""
    import tempfile

    target = Path(path)
    handle, temporary = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".partial", dir=target.parent)
    try:
        umask = os.umask(0o022)
        os.umask(umask)
        os.fchmod(handle, 0o666 & ~umask)  # what open() would have made, not mkstemp's 0600
        with os.fdopen(handle, "wb") as file:
            file.write(data)
        os.replace(temporary, target)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def _read_secret(scheme: str) -> bytes:
    if not sys.stdin.isatty():
        secret = sys.stdin.buffer.read()
        # A trailing newline from `echo` or a file is never part of an API secret.
        secret = secret.rstrip(b"\r\n") if not secret.startswith(b"-----BEGIN") else secret
    else:
        secret = getpass.getpass(f"secret for {scheme} (not echoed): ").encode()
    if not secret:
        _fatal("no secret given on stdin")
    return secret


def _load_policy(path: str | None, scheme: str) -> dict | None:
    from .policy import PolicyError, checked_policy, load_policy

    if path is None:
        return None
    try:
        document = load_policy(Path(path))
        checked_policy(document, scheme)
    except PolicyError as exc:
        _fatal(f"{path}: {exc}")
    return document


def _trusted_roots(args: argparse.Namespace) -> list[Any] | None:
    """``--root`` if given, else the root ``$ZEROCOPY_ATTESTATION_ROOT`` names (said on stderr, so
    trusting a root other than AWS's is never silent), else ``None``: the pinned AWS Nitro root."""
    from cryptography.hazmat.primitives import hashes

    from ._client import ROOT_ENV_VAR, _root_from_env

    if args.root:
        return args.root
    path = os.environ.get(ROOT_ENV_VAR)
    if path is None:
        return None
    try:
        certificate = _root_certificate(_root_from_env(path), path)
    except argparse.ArgumentTypeError as exc:
        _fatal(f"{ROOT_ENV_VAR}: {exc}")
    fingerprint = certificate.fingerprint(hashes.SHA256()).hex()
    _say(f"trusting the attestation root in ${ROOT_ENV_VAR} ({path}): {certificate.subject.rfc4514_string()}, SHA-256 {fingerprint[:32]}…")
    return [certificate]


def _pinned_pcr0(args: argparse.Namespace) -> bytes | None:
    """``--pcr0`` if given, else the PCR0 in ``$ZEROCOPY_EXPECTED_PCR0`` (said on stderr, as the
    root from ``$ZEROCOPY_ATTESTATION_ROOT`` is, so which image was pinned is never a guess), else ``None``."""
    from ._client import PCR_ENV_PREFIX

    if args.pcr0 is not None:
        return args.pcr0
    name = f"{PCR_ENV_PREFIX}0"
    value = os.environ.get(name)
    if value is None:
        return None
    if not value.strip():
        _fatal(f"{name} is set but empty: set it to your image's PCR0 (96 hex digits), or unset it")
    if len(value) > 200:  # quoted whole below, it would fill the screen
        _fatal(f"{name} is {len(value)} characters long: a PCR0 is 96 hex digits")
    try:
        pcr0 = _measurement(value)
    except argparse.ArgumentTypeError as exc:
        _fatal(f"{name}: {exc}")
    _say(f"pinning the image in ${name}: PCR0 {pcr0.hex()}")
    return pcr0


# -- commands ------------------------------------------------------------------------------
def cmd_seal(args: argparse.Namespace) -> int:
    from .sealing import seal

    # What can be checked without the secret is, before anyone types it.
    policy = _load_policy(args.policy, args.scheme)
    if args.output != "-" and not Path(args.output).parent.is_dir():
        _fatal(f"cannot write {args.output}: the directory {Path(args.output).parent} does not exist")
    secret = _read_secret(args.scheme)
    kms = _kms_client(args)
    bundle = seal(kms, key_id=args.kms_key, name=args.name, scheme=args.scheme, secret=secret, api_key=args.api_key, policy=policy)
    del secret
    pinned = _check_key_pins_an_image(kms, bundle.kms_key_id)
    data = bundle.to_json()
    if args.output == "-":
        sys.stdout.buffer.write(data)
    else:
        _write_file(args.output, data)
        _say(f"sealed {args.name!r} ({args.scheme}) under {bundle.kms_key_id} -> {args.output}")
    if args.json:
        # pinned_pcr0 (the first) stays for scripts written before rollovers; pinned_pcr0s names every image.
        summary = {"name": bundle.name, "scheme": bundle.scheme, "api_key": bundle.api_key, "kms_key_id": bundle.kms_key_id, "policy_sha256": bundle.policy_sha256,
                   "pinned_pcr0": pinned[0] if pinned else None, "pinned_pcr0s": pinned, "output": args.output}
        print(json.dumps(summary, indent=2))
    _say(f"policy sha256: {bundle.policy_sha256}" if policy is not None else "policy: none given, so the scheme's safe default (docs/policy.md)")
    return 0


def _check_key_pins_an_image(kms: Any, key_id: str) -> list[str] | None:
    """Every PCR0 the key's policy pins (several during a rollover), ``[]`` for none, ``None`` when
    the policy cannot be read; warns (stderr) in both of the last cases."""
    from botocore.exceptions import BotoCoreError, ClientError

    from .kms_policy import pinned_images

    try:
        policy = json.loads(kms.get_key_policy(KeyId=key_id, PolicyName="default")["Policy"])
    except ClientError as exc:
        code = exc.response.get("Error", {}).get("Code")
        why = "these AWS credentials may not call kms:GetKeyPolicy, as a host role's may not" if code == "AccessDeniedException" else code
        _say(
            f"WARNING: could not read the key policy of {key_id} to check that it pins an enclave image ({why}); "
            f"check it yourself with the operator's credentials: aws kms get-key-policy --key-id {key_id} --policy-name default"
        )
        return None
    except (BotoCoreError, ValueError) as exc:
        _say(f"WARNING: could not read the key policy of {key_id} to check that it pins an enclave image ({exc}); check it yourself")
        return None
    pinned = pinned_images(policy)
    if not pinned:
        _say(
            f"WARNING: the key policy of {key_id} does not deny Decrypt without an enclave's attestation of a pinned PCR0: "
            "whoever may call kms:Decrypt on the key can unseal this bundle outside any enclave. "
            "Put a policy from `zerocopy kms-policy --pcr0 <your image's PCR0> --account <id>` on the key (aws kms put-key-policy)."
        )
    return pinned


def cmd_provision(args: argparse.Namespace) -> int:
    from ._client import Signer

    bundles = [Path(path).read_bytes() for path in args.bundles]
    session = aws_session(args.region)
    credentials = host_credentials(session)
    with Signer(_enclave_address(args)) as signer:
        results = signer.provision(bundles, credentials=credentials, region=session.region_name)
    report = []
    for path, data, result in zip(args.bundles, bundles, results):
        hint = None if result.loaded else _provision_hint(data, result.error or "")
        report.append({"bundle": path, "name": result.name, "loaded": result.loaded, "error": result.error, "hint": hint})
        if result.loaded and not args.json:
            print(f"loaded {result.name} ({path})")
        elif not result.loaded:
            _say(f"refused {path}: {result.error}" + (f" -- {hint}" if hint else ""))
    if args.json:
        print(json.dumps(report, indent=2))
    return 0 if all(result.loaded for result in results) else 1


def _provision_hint(bundle: bytes, error: str) -> str | None:
    """What to do about a refusal whose cause the bundle's own fields explain."""
    from enclave.protocol.bundle import BundleError, SealedBundle

    try:
        key_id = SealedBundle.from_json(bundle).kms_key_id
    except BundleError:
        return "the file is not a sealed bundle (zerocopy seal or generate writes one)"
    if "AccessDeniedException" in error and "does not exist" in error:
        return (
            f"the KMS key it was sealed under, {key_id}, does not exist in this account and region (or this host may not use it): "
            "a bundle sealed while an earlier emulator ran names a key that went with it. Seal the secret again under a key of this KMS"
        )
    return None


def cmd_generate(args: argparse.Namespace) -> int:
    from enclave.protocol.bundle import SealedBundle
    from enclave.protocol.exchanges import exchange_for_scheme

    from ._client import Signer

    session = aws_session(args.region)
    credentials = host_credentials(session)
    policy = _load_policy(args.policy, args.scheme)
    with Signer(_enclave_address(args)) as signer:
        bundle, public_key = signer.generate(args.name, args.scheme, kms_key_id=args.kms_key, credentials=credentials, api_key=args.api_key or "", policy=policy, region=session.region_name)
    _write_file(args.output, bundle)
    sealed_by = SealedBundle.from_json(bundle).kms_key_id
    _say(f"generated {args.name!r} ({args.scheme}) inside the enclave, sealed to {sealed_by}; sealed bundle for the next boot -> {args.output}")
    if not args.api_key and exchange_for_scheme(args.scheme) is not None:
        _say(
            f"no API key id yet: register the public key with the exchange, then, before this enclave restarts, "
            f"{PROG} bind {args.name} --api-key ID -o BUNDLE. The key signs nothing until then, and only the bound bundle loads at the next boot"
        )
    if args.json:
        print(json.dumps({"name": args.name, "scheme": args.scheme, "api_key": args.api_key or "", "sealed_by": sealed_by, "output": args.output, "public_key": public_key}, indent=2))
    else:
        print(public_key, end="")
    return 0


def cmd_bind(args: argparse.Namespace) -> int:
    from enclave.protocol.bundle import SealedBundle

    from ._client import Signer

    session = aws_session(args.region)
    credentials = host_credentials(session)
    with Signer(_enclave_address(args)) as signer:
        bundle = signer.bind(args.key, args.api_key, credentials=credentials, region=session.region_name)
    _write_file(args.output, bundle)
    sealed_by = SealedBundle.from_json(bundle).kms_key_id
    _say(f"bound {args.key!r} to API key id {args.api_key!r}, re-sealed to {sealed_by}; sealed bundle for the next boot -> {args.output} (provision this one from now on)")
    if args.json:
        print(json.dumps({"name": args.key, "api_key": args.api_key, "sealed_by": sealed_by, "output": args.output}, indent=2))
    return 0


def cmd_sign(args: argparse.Namespace) -> int:
    from ._client import Signer

    with Signer(_enclave_address(args)) as signer:
        if args.request:
            method, path = args.request
            signed = signer.sign_request(args.key, method, path, params=args.param, body=args.body)
            print(json.dumps({"method": signed.method, "path": signed.path, "query": signed.query, "body": signed.body, "headers": signed.headers}, indent=2))
            return 0
        payload = args.payload.encode() if args.payload is not None else sys.stdin.buffer.read()
        try:
            signature = signer.sign(args.key, payload)
        except errors.PolicyRefused as refused:
            if refused.rule != "raw_signing":
                raise
            _fatal(f"{refused}: key {args.key!r} signs exchange requests only; sign one with --request METHOD PATH [--param NAME=VALUE ...] [--body BODY]")
    import base64

    print(base64.b64encode(signature).decode() if args.base64 else signature.hex())
    return 0


def cmd_keys(args: argparse.Namespace) -> int:
    from ._client import Signer

    with Signer(_enclave_address(args)) as signer:
        keys = signer.keys()
    if args.json:
        fields = ("name", "scheme", "api_key", "policy_sha256", "sealed_by", "public_key")
        print(json.dumps([{field: getattr(key, field, None) for field in fields} for key in keys], indent=2))
        return 0
    for key in keys:
        print(f"{key.name}\t{key.scheme}\tapi_key={key.api_key or '-'}\tpolicy={key.policy_sha256}\tsealed_by={key.sealed_by or '-'}")
    return 0


def _read_document(path: str) -> bytes:
    import base64
    import binascii

    raw = sys.stdin.buffer.read() if path == "-" else Path(path).read_bytes()
    if raw[:1] in (b"\x84", b"\xd2"):  # CBOR already: an array of four, or tag 18 (COSE_Sign1)
        return raw
    try:
        return base64.b64decode(raw.strip(), validate=True)
    except binascii.Error:
        return raw  # neither: let the verifier say what is wrong with it


def _expected_pcrs(args: argparse.Namespace) -> dict[int, bytes]:
    pcr0 = _pinned_pcr0(args)
    expected = {0: pcr0} if pcr0 is not None else {}
    expected.update(args.pcr)
    return expected


def cmd_attest_verify(args: argparse.Namespace) -> int:
    from .attestation import AttestationDocument, AttestationError, describe, verify

    document = _read_document(args.file)
    expected = _expected_pcrs(args)
    try:
        verified: AttestationDocument = verify(document, roots=_trusted_roots(args), now=args.at, expected_pcrs=expected or None, nonce=args.nonce, allow_debug=args.allow_debug)
    except AttestationError as exc:
        print(json.dumps({"verified": False, "error": type(exc).__name__, "message": str(exc)}, indent=2) if args.json else f"NOT VERIFIED: {type(exc).__name__}: {exc}")
        return 1
    summary = describe(verified)
    if args.json:
        print(json.dumps({"verified": True, "checked": {"chain": True, "pcrs": sorted(expected), "nonce": args.nonce is not None}, "document": summary}, indent=2))
    else:
        print(f"module_id   {verified.module_id}")
        print(f"timestamp   {verified.timestamp.isoformat()}")
        print(f"debug mode  {'yes' if verified.debug else 'no'}")
        for index, value in sorted(verified.pcrs.items()):
            if any(value) or index < 5:
                print(f"PCR{index:<2}       {value.hex()}")
        for field in ("public_key", "user_data", "nonce"):
            value = getattr(verified, field)
            print(f"{field:<11} {value.hex()[:64] + ('…' if len(value) > 32 else '') if value else '-'}")
        print(f"signed by   {verified.certificate.subject.rfc4514_string()}")
        print("VERIFIED" + (f" (PCRs {', '.join(str(i) for i in sorted(expected))} as expected)" if expected else ""))
    if not expected:
        _say(f"only the signature and the certificate chain were checked: any enclave image under the root verifies. Pin the image with --pcr0 or $ZEROCOPY_EXPECTED_PCR0 (your image's PCR0{', this one has ' + verified.pcrs[0].hex() if 0 in verified.pcrs else ''})")
    return 0


def cmd_attest_fetch(args: argparse.Namespace) -> int:
    from ._client import Signer

    nonce = args.nonce or os.urandom(32)
    with Signer(_enclave_address(args)) as signer:
        document = signer.attest(nonce)
    if args.output == "-":
        import base64

        print(base64.b64encode(document).decode())
    else:
        _write_file(args.output, document)
        _say(f"attestation document ({len(document)} bytes) with nonce {nonce.hex()} -> {args.output}")
    return 0


def cmd_kms_policy(args: argparse.Namespace) -> int:
    from .kms_policy import attested_key_policy, locked_key_policy, render

    if args.locked:
        try:
            print(render(locked_key_policy(args.account)))
        except ValueError as exc:
            _fatal(str(exc))
        return 0
    try:
        sealers = [] if args.enclave_only else (args.sealer or None)
        images = [*args.pcr0, *(_pcr0_of_eif(path) for path in args.eif)]
        image_sha384 = images[0] if len(images) == 1 else images
        policy = attested_key_policy(args.account, image_sha384=image_sha384, pcrs=dict(args.pcr), sealers=sealers, role=args.role, operators=args.operator)
    except ValueError as exc:
        _fatal(str(exc))
    print(render(policy))
    return 0


def _pcr0_of_eif(path: str) -> bytes:
    from .eif import read_eif

    image = read_eif(path)
    if not image.crc_ok:
        _fatal(f"{path}: the CRC-32 does not match: the file is damaged or was edited; not pinning it")
    return image.pcrs[0]


def _kms_policy_usage(args: argparse.Namespace) -> str | None:
    if args.locked:
        extra = _given(args, pcr0="--pcr0", eif="--eif", pcr="--pcr", sealer="--sealer", enclave_only="--enclave-only", role="--role", operator="--operator")
        return f"--locked allows no use of the key, so it takes no {' or '.join(extra)}: drop them or --locked" if extra else None
    if not args.pcr0 and not args.eif:
        return "give --eif FILE or --pcr0 HEX (the image to pin; repeat them for a rollover, when either image may decrypt), or --locked (a new seal key, before its image exists)"
    if args.enclave_only and (args.sealer or args.operator):
        return "--enclave-only means no sealers; drop --sealer/--operator or --enclave-only"
    return None


def _policy_and_scheme(args: argparse.Namespace) -> tuple[dict, str]:
    from .policy import PolicyError, load_policy

    try:
        document = load_policy(Path(args.file))
    except PolicyError as exc:
        _fatal(f"{args.file}: {exc}")
    scheme = args.scheme or document.get("scheme")
    if scheme is None:
        _fatal(f"{args.file} does not name its scheme: add scheme = \"...\" to it or pass --scheme")
    return document, scheme


def cmd_policy_check(args: argparse.Namespace) -> int:
    from .policy import PolicyError, checked_policy, digest, explain

    document, scheme = _policy_and_scheme(args)
    try:
        policy = checked_policy(document, scheme)
    except PolicyError as exc:
        _fatal(f"{args.file}: {exc}")
    if args.json:
        print(json.dumps({"file": args.file, "valid": True, "scheme": scheme, "sha256": digest(document), "explanation": explain(policy)}, indent=2))
        return 0
    print(f"{args.file}: a valid policy for {scheme} (sha256 {digest(document)})")
    for line in explain(policy):
        print(f"  - {line}")
    return 0


def cmd_policy_simulate(args: argparse.Namespace) -> int:
    from .policy import PolicyError, simulate

    document, scheme = _policy_and_scheme(args)
    requests = []
    for number, line in enumerate(Path(args.requests).read_text().splitlines(), start=1):
        if line.strip():
            try:
                requests.append(json.loads(line))
            except (ValueError, RecursionError):  # a deeply nested line is not a request either
                _fatal(f"{args.requests}:{number}: not a JSON line")
    try:
        decisions = simulate(document, scheme, requests)
    except PolicyError as exc:
        _fatal(f"{args.file}: {exc}")
    refused = [decision for decision in decisions if not decision.signed]
    if args.json:
        print(json.dumps([decision.__dict__ for decision in decisions], indent=2))
    else:
        for decision in refused:
            print(f"line {decision.line}: REFUSED {decision.request} [{decision.rule}] {decision.reason}")
    by_rule: dict[str, int] = {}
    for decision in refused:
        by_rule[decision.rule] = by_rule.get(decision.rule, 0) + 1
    summary = ", ".join(f"{rule}: {count}" for rule, count in sorted(by_rule.items()))
    _say(f"{len(decisions) - len(refused)} of {len(decisions)} requests would be signed; {len(refused)} refused" + (f" ({summary})" if summary else ""))
    return 1 if refused else 0


def cmd_audit_fetch(args: argparse.Namespace) -> int:
    from ._client import Signer
    from .audit import fetch_into

    with Signer(_enclave_address(args)) as signer:
        count = fetch_into(signer, args.log)
    if args.json:
        print(json.dumps({"log": args.log, "appended": count}, indent=2))
    _say(f"{count} new receipts appended to {args.log}, with a signed checkpoint")
    return 0


def cmd_audit_verify(args: argparse.Namespace) -> int:
    from .audit import verify_log

    roots = _trusted_roots(args)
    expected = _audit_image(args)
    lines = Path(args.log).read_bytes().splitlines()
    options = {
        "roots": roots, "expected_pcrs": expected, "allow_debug": args.allow_debug, "any_image": args.any_image,
        "expect_from": args.expect_from, "expect_chains": args.chains, "expect_boots": _boot_names(args.expect_boots),
    }
    if args.enclave:  # only when asked: comparing needs the enclave, the file alone does not
        from ._client import Signer

        # Attested: a plain connection could be answered by a decoy enclave of the same image.
        with Signer(args.enclave, expected_pcrs=expected, roots=roots, allow_debug=args.allow_debug) as signer:
            report = verify_log(lines, enclave=signer, **options)
    else:
        report = verify_log(lines, **options)
    _print_audit_report(args, report)
    return 0


def _audit_verify_usage(args: argparse.Namespace) -> str | None:
    from ._client import PCR_ENV_PREFIX

    if args.pcr0 and args.any_image:
        return "--pcr0 pins one image and --any-image accepts any: give one of them"
    if args.any_image and args.enclave:
        return "--enclave needs --pcr0: the comparison is only worth something with an attested enclave of the pinned image"
    if not args.pcr0 and not args.any_image and f"{PCR_ENV_PREFIX}0" not in os.environ:
        return "pass --pcr0 HEX (or set $ZEROCOPY_EXPECTED_PCR0), the PCR0 of the image that wrote the log: without it a log signed by any enclave image under the root verifies (--any-image accepts that knowingly)"
    return None


def _audit_image(args: argparse.Namespace) -> dict[int, bytes] | None:
    """The image whose identity keys may sign the log: --pcr0 (else $ZEROCOPY_EXPECTED_PCR0), or --any-image said out loud."""
    if not args.any_image:
        return {0: _pinned_pcr0(args)}
    _say("WARNING: --any-image: the log's identity keys are accepted from ANY enclave image under the root, including one the host built to sign what it likes. This does not show that your enclave wrote the log.")
    return None


def _boot_names(values: list[str] | None) -> list[str] | None:
    if values is None:
        return None
    return [name for value in values for name in value.replace(",", " ").split()]


def _audit_report_json(args: argparse.Namespace, report: Any) -> str:
    import dataclasses

    result = dataclasses.asdict(report)
    result["boots"] = [{**dataclasses.asdict(boot), "attested_at": boot.attested_at.isoformat()} for boot in report.boots]
    return json.dumps({"log": args.log, "verified": True, **result}, indent=2)


def _print_audit_report(args: argparse.Namespace, report: Any) -> None:
    if args.json:
        print(_audit_report_json(args, report))
        return
    print(
        f"{args.log}: VERIFIED {report.receipts} receipts in {report.chains} chain(s), {report.checkpoints} signed checkpoint(s); "
        f"{report.signed} signed, {report.refused} refused"
        + (" (" + ", ".join(f"{rule}: {count}" for rule, count in sorted(report.refusals_by_rule.items())) + ")" if report.refusals_by_rule else "")
        + (f"; {report.bound} key(s) bound, {report.removed} removed" if report.bound or report.removed else "")
    )
    for number, info in enumerate(report.boots, start=1):
        print(f"  chain {number}: {info}")
    for gap in report.expected_gaps:
        print(f"  expected (--expect-from {args.expect_from}): {gap}")
    if report.enclave_seq is not None:
        print(f"  the last chain matches the fresh checkpoint of enclave {report.enclave_module_id} at seq {report.enclave_seq}")
    if report.not_fetched is not None:
        print(f"  the enclave holds receipts {report.not_fetched[0]}..{report.not_fetched[1]} not fetched yet (run zerocopy audit fetch)")
    if report.chains_confirmed:
        print("  the chains are the ones expected (" + (f"--chains {args.chains}" if args.chains is not None else "--expect-boots") + ")")
    else:
        print(
            f"  NOT CONFIRMED that these {report.chains} chain(s) are every boot since the log began: a host can delete a whole chain "
            f"without a trace in the others. Check them against the boots you know of, and pass --chains {report.chains} "
            "or --expect-boots to have verify refuse a log that differs."
        )


def cmd_stethoscope(args: argparse.Namespace) -> int:
    from ._stethoscope import examine, host_findings

    pcr0 = _pinned_pcr0(args)
    expected = {0: pcr0} if pcr0 is not None else None
    context = _exchange_context(args)  # a bad URL or CA file is refused before anything is measured
    report = examine(_enclave_address(args), roots=_trusted_roots(args), expected_pcrs=expected, allow_debug=args.allow_debug, samples=args.samples)
    report["host"] = host_findings(args.host_root)
    report.update(_measure_paths(args, context))
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        attestation = report["attestation"]
        print(f"enclave      {report['address']}")
        if attestation["verified"]:
            print(f"attestation  verified ({attestation['module_id']}{', DEBUG MODE' if attestation['debug'] else ''})")
            if expected is None:  # a genuine document of some image: which one is for the operator to compare
                print("  PCR0 not pinned: any image under the root verifies; compare PCR0 below with your image's, or pass --pcr0 (or set $ZEROCOPY_EXPECTED_PCR0)")
            for index, value in attestation["pcrs"].items():
                print(f"  PCR{index}       {value}")
        else:
            print(f"attestation  NOT VERIFIED: {attestation['error']}")
        print(f"keys         {len(report['keys'])}")
        for key in report["keys"]:
            print(f"  {key['name']} ({key['scheme']}, policy {key['policy_sha256'][:16]})")
        latency = report["latency"]
        print(f"sign path    p50 {latency['sign_path_p50_us']} µs, p99 {latency['sign_path_p99_us']} µs ({latency['ratio_p50']}x a local Unix-socket echo, p50 {latency['local_echo_p50_us']} µs)")
        for finding in report["host"]:
            cost = "" if finding["cost_us"] is None else f" (typically {finding['cost_us']:g} µs)"
            print(f"host {finding['status']:<5} {finding['check']}: {finding['measured']}{cost}" + (f"\n  fix: {finding['fix']}" if finding["fix"] else ""))
        _print_paths(report)
    return 0 if report["attestation"]["verified"] else 1


def _exchange_context(args: argparse.Namespace) -> Any:
    import ssl

    from ._stethoscope_paths import check_url

    if not args.exchange_url:
        return None
    check_url(args.exchange_url)
    try:
        return ssl.create_default_context(cafile=args.exchange_ca)
    except (OSError, ssl.SSLError) as exc:
        _fatal(f"--exchange-ca {args.exchange_ca}: {getattr(exc, 'strerror', None) or exc}")


def _measure_paths(args: argparse.Namespace, context: Any) -> dict:
    from ._stethoscope_paths import exchange_path, sign_path

    def progress(text: str) -> None:
        print(f"stethoscope: {text}", file=sys.stderr, flush=True)

    paths = {"sign_path": sign_path(_enclave_address(args), samples=args.samples, progress=progress, gc_of_this_process=False)}
    if args.exchange_url:
        paths["exchange"] = exchange_path(args.exchange_url, samples=min(args.samples, 50), context=context, progress=progress)
    return paths


def _print_paths(report: dict) -> None:
    from ._stethoscope_paths import finding_lines, histogram_lines

    print("\n".join(finding_lines("sign ", report["sign_path"]["findings"])))
    print("sign path round trips (one connection):")
    print("\n".join(histogram_lines(report["sign_path"]["histogram"])))
    if "exchange" in report:
        print("\n".join(finding_lines("exchange", report["exchange"]["findings"])))
        if report["exchange"]["histogram"]:
            print(f"exchange requests ({report['exchange']['url']}):")
            print("\n".join(histogram_lines(report["exchange"]["histogram"])))


def cmd_vsock_proxy_config(args: argparse.Namespace) -> int:
    from .vsock_proxy import kms_allowlist, kms_host, proxy_command

    region = args.region or aws_session().region_name
    if not region:
        _fatal("no AWS region: pass --region or set AWS_REGION")
    text = kms_allowlist(region)
    if args.output == "-":
        sys.stdout.write(text)
    else:
        _write_file(args.output, text.encode())
        _say(f"allowlist for {kms_host(region)}:443 -> {args.output}")
        _say(f"start the proxy with: {proxy_command(region, args.output)}")
    return 0


# -- values: argparse converters, so a malformed value is a usage error (exit 2) naming its flag --
SHA384_SIZE = 48


def _hex(text: str) -> bytes:
    try:
        return bytes.fromhex(text)
    except ValueError:
        pass
    wrong = next((place for place, char in enumerate(text) if char not in string.hexdigits and not char.isspace()), None)
    if wrong is not None:
        raise argparse.ArgumentTypeError(f"{text!r} is not hex: {text[wrong]!r} at position {wrong + 1}")
    raise argparse.ArgumentTypeError(f"{text!r} is not hex: an odd number of digits")


def _measurement(text: str) -> bytes:
    digits = "".join(text.split())
    if all(char in string.hexdigits for char in digits) and len(digits) != 2 * SHA384_SIZE:
        # The length first: a digit lost or added in pasting is not "not hex".
        raise argparse.ArgumentTypeError(f"{text!r} is not a SHA-384 measurement: 96 hex digits expected, this has {len(digits)}")
    return _hex(text)


def _pcr(text: str) -> tuple[int, bytes]:
    index, sep, value = text.partition("=")
    if not sep or not (index.isascii() and index.isdigit()) or int(index) > 31:
        raise argparse.ArgumentTypeError(f"{text!r} must look like N=HEX, N a PCR index from 0 to 31")
    return int(index), _measurement(value)


def _param(text: str) -> tuple[str, str]:
    name, sep, value = text.partition("=")
    if not sep or not name:
        raise argparse.ArgumentTypeError(f"{text!r} must look like NAME=VALUE")
    return name, value


def _api_key_problem(args: argparse.Namespace) -> str | None:
    """A usage error for an ``--api-key`` the enclave would refuse (the id goes into a header)."""
    from enclave.protocol.exchanges import exchange_for_scheme

    text = args.api_key
    if getattr(args, "scheme", None) is not None and exchange_for_scheme(args.scheme) is None:
        return None  # a raw scheme's API key id is a label the enclave sends nowhere
    if text is None or (0 < len(text) <= 256 and text.isascii() and text.isprintable() and " " not in text):
        return None
    return f"argument --api-key: {text[:64]!r} must be the exchange's API key id: 1 to 256 printable ASCII characters without spaces"


def _moment(text: str) -> datetime:
    try:
        moment = datetime.fromtimestamp(int(text) / 1000, tz=timezone.utc) if text.isascii() and text.isdigit() else datetime.fromisoformat(text)
    except (ValueError, OverflowError, OSError):
        raise argparse.ArgumentTypeError(f"{text!r} must be an ISO 8601 time with a zone or milliseconds since the epoch") from None
    if moment.tzinfo is None:
        raise argparse.ArgumentTypeError(f"{text!r} needs a time zone (e.g. 2024-09-07T14:37:39Z)")
    return moment


def _count(text: str) -> int:
    if not (text.isascii() and text.isdigit()) or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of at least 1")
    return int(text)


def _sequence_number(text: str) -> int:
    if not (text.isascii() and text.isdigit()):
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number")
    return int(text)


def _address(text: str) -> str:
    from enclave.protocol.address import AddressError, parse_address

    try:
        parse_address(text)
    except AddressError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


def _root_certificate(path: str | bytes, name: str | None = None) -> Any:
    """The one root loader: a PEM certificate file (or its bytes, read from ``name``), read when
    the arguments are parsed."""
    from cryptography import x509

    try:
        pem = path if isinstance(path, bytes) else Path(path).read_bytes()
        return x509.load_pem_x509_certificate(pem)
    except OSError as exc:
        raise argparse.ArgumentTypeError(f"cannot read {path}: {exc.strerror}") from None
    except ValueError:
        raise argparse.ArgumentTypeError(f"{name or path} is not a PEM certificate") from None


# -- shared options: parent parsers, as sigstore and pip-audit share theirs ----------------------
def _options(*adders: Any) -> argparse.ArgumentParser:
    parent = argparse.ArgumentParser(add_help=False)
    for add in adders:
        add(parent)
    return parent


def _enclave_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--enclave", metavar="ADDR", type=_address, help="enclave address (default: $ZEROCOPY_ENCLAVE)")


def _region_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--region", help="AWS region (default: from the AWS configuration)")


def _kms_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--kms-endpoint", metavar="URL", help="KMS endpoint (default: $ZEROCOPY_KMS_ENDPOINT, else AWS's)")
    parser.add_argument("--kms-ca", metavar="PEM", help="CA bundle for the KMS endpoint (default: $ZEROCOPY_KMS_CA)")


def _trust_options(parser: argparse.ArgumentParser) -> None:
    """Which enclaves to believe: the attestation root, the pinned image, debug mode."""
    parser.add_argument("--root", action="append", metavar="PEM", type=_root_certificate, help="trusted attestation root certificate (repeat; default: the PEM file $ZEROCOPY_ATTESTATION_ROOT names, else the pinned AWS Nitro root)")
    parser.add_argument("--pcr0", metavar="HEX", type=_measurement, help="expected PCR0 (the enclave image's measurement; default: $ZEROCOPY_EXPECTED_PCR0, if set)")
    parser.add_argument("--allow-debug", action="store_true", help="accept debug-mode enclaves (all-zero PCR0-2)")


def _json_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print JSON")


class _Parents:
    enclave = _options(_enclave_option)
    kms = _options(_region_option, _kms_options)
    region = _options(_region_option)
    trust = _options(_trust_options)
    json = _options(_json_option)


# -- the parser, one function per command group ----------------------------------------------------
def _add_keys_commands(commands: Any) -> None:
    from enclave.protocol.exchanges import ASYMMETRIC_SCHEMES, SCHEME_NAMES

    seal = commands.add_parser("seal", parents=[_Parents.kms, _Parents.json], help="seal a secret with KMS into a bundle file", description="Seal a secret (read from stdin or a prompt, never from the command line) for the enclave.")
    seal.add_argument("--name", required=True, help="key name the bot will use")
    seal.add_argument("--scheme", required=True, choices=SCHEME_NAMES, metavar="SCHEME", help=f"one of: {', '.join(SCHEME_NAMES)}")
    seal.add_argument("--kms-key", required=True, metavar="KEY", help="KMS key id, ARN or alias")
    seal.add_argument("--api-key", default="", help="the exchange API key id that goes with the secret (not secret)")
    seal.add_argument("--policy", metavar="FILE", help="signing policy to seal with the secret")
    seal.add_argument("-o", "--output", default="-", metavar="FILE", help="bundle file to write (default: stdout)")
    seal.set_defaults(handler=cmd_seal)
    _check_usage(seal, lambda args: "--json prints a summary on stdout, where -o - would write the bundle: give -o FILE" if args.json and args.output == "-" else None)

    generate = commands.add_parser("generate", parents=[_Parents.region, _Parents.enclave, _Parents.json], help="have the enclave make a key pair; prints the public key", description="Generate an asymmetric key inside the enclave. Only the public key leaves; the private key is sealed from inside with KMS into a bundle for the next boot.")
    generate.add_argument("--name", required=True, help="key name the bot will use")
    generate.add_argument("--scheme", required=True, choices=sorted(ASYMMETRIC_SCHEMES), metavar="SCHEME", help=f"one of: {', '.join(sorted(ASYMMETRIC_SCHEMES))}")
    generate.add_argument("--kms-key", metavar="ARN", help="which of the enclave's measured seal keys (--seal-key) to seal to (default: its first); the enclave refuses any other key")
    generate.add_argument("--api-key", help="the exchange API key id, if the exchange has already issued one for the public key (else bind it later: zerocopy bind)")
    generate.add_argument("--policy", metavar="FILE", help="signing policy to seal with the key")
    generate.add_argument("-o", "--output", required=True, metavar="FILE", help="where to write the sealed bundle")
    generate.set_defaults(handler=cmd_generate)
    _check_usage(generate, _api_key_problem)

    bind = commands.add_parser("bind", parents=[_Parents.region, _Parents.enclave, _Parents.json], help="bind the exchange's API key id to a generated key", description="Bind the API key id the exchange issued for a generated key's public key. The enclave re-seals the key with it (the private key never leaves) into a new bundle for the next boot. Once only: a bound key cannot be bound again.")
    bind.add_argument("key", help="the generated key's name")
    bind.add_argument("--api-key", required=True, help="the API key id the exchange issued for the key's public key (not secret)")
    bind.add_argument("-o", "--output", required=True, metavar="FILE", help="where to write the re-sealed bundle")
    bind.set_defaults(handler=cmd_bind)
    _check_usage(bind, _api_key_problem)

    provision = commands.add_parser("provision", parents=[_Parents.region, _Parents.enclave, _Parents.json], help="load sealed bundles into the enclave", description="Send bundles to the enclave, which unseals them through KMS with this host's AWS credentials.")
    provision.add_argument("bundles", nargs="+", metavar="BUNDLE")
    provision.set_defaults(handler=cmd_provision)


def _add_signing_commands(commands: Any) -> None:
    sign = commands.add_parser("sign", parents=[_Parents.enclave], help="sign a payload or an exchange request", description="Sign a raw payload (argument or stdin) or, with --request, an exchange request.")
    sign.add_argument("--key", required=True, help="key name")
    sign.add_argument("payload", nargs="?", help="payload to sign (default: stdin)")
    sign.add_argument("--base64", action="store_true", help="print the raw signature as base64 instead of hex")
    sign.add_argument("--request", nargs=2, metavar=("METHOD", "PATH"), help="sign an exchange request instead of a raw payload")
    sign.add_argument("--param", action="append", default=[], type=_param, metavar="NAME=VALUE", help="request parameter, in order (repeat)")
    sign.add_argument("--body", help="request body")
    sign.set_defaults(handler=cmd_sign)

    keys = commands.add_parser("keys", parents=[_Parents.enclave, _Parents.json], help="list the keys loaded in the enclave", description="List loaded keys with their schemes and policy digests.")
    keys.set_defaults(handler=cmd_keys)


def _add_attest_commands(commands: Any) -> None:
    attest = commands.add_parser("attest", help="fetch or verify attestation documents", description="Fetch attestation documents from an enclave, or verify one.")
    actions = attest.add_subparsers(dest="attest_command", metavar="ACTION", required=True)
    verify = actions.add_parser("verify", parents=[_Parents.trust, _Parents.json], help="verify an attestation document", description="Verify a document (raw CBOR or base64) against the AWS Nitro root or --root.")
    verify.add_argument("file", metavar="FILE", help="the document, raw CBOR or base64 ('-' for stdin)")
    verify.add_argument("--pcr", action="append", default=[], type=_pcr, metavar="N=HEX", help="another expected PCR (repeat)")
    verify.add_argument("--at", metavar="TIME", type=_moment, help="verify as of this time (ISO 8601 with zone, or ms since epoch)")
    verify.add_argument("--nonce", metavar="HEX", type=_hex, help="expected nonce")
    verify.set_defaults(handler=cmd_attest_verify)
    fetch = actions.add_parser("fetch", parents=[_Parents.enclave], help="fetch a fresh attestation document from the enclave", description="Ask the enclave for an attestation document over a nonce.")
    fetch.add_argument("--nonce", metavar="HEX", type=_hex, help="nonce (default: 32 random bytes)")
    fetch.add_argument("-o", "--output", default="-", metavar="FILE", help="where to write the raw document (default: base64 on stdout)")
    fetch.set_defaults(handler=cmd_attest_fetch)


def _add_policy_commands(commands: Any) -> None:
    from enclave.protocol.exchanges import SCHEME_NAMES

    policy = commands.add_parser("policy", help="check or simulate a signing policy", description="Signing policies (TOML or JSON), judged by the enclave's own rules.")
    actions = policy.add_subparsers(dest="policy_command", metavar="ACTION", required=True)
    scheme = _options(lambda parser: parser.add_argument("--scheme", choices=SCHEME_NAMES, metavar="SCHEME", help="the key's scheme (default: the policy's own 'scheme' field)"))
    check = actions.add_parser("check", parents=[scheme, _Parents.json], help="validate a policy and explain it in plain words", description="Validate a policy file and explain what it allows.")
    check.add_argument("file", metavar="FILE")
    check.set_defaults(handler=cmd_policy_check)
    simulate = actions.add_parser("simulate", parents=[scheme, _Parents.json], help="replay recorded requests against a policy", description="Replay a bot's recorded requests (JSON lines with time_ms, method, path, params, body) and report what would be refused and why.")
    simulate.add_argument("file", metavar="FILE")
    simulate.add_argument("--requests", required=True, metavar="LOG", help="JSON lines, one request each")
    simulate.set_defaults(handler=cmd_policy_simulate)


def _add_audit_commands(commands: Any) -> None:
    audit = commands.add_parser("audit", help="fetch or verify the enclave's audit log", description="The enclave's hash-chained receipts of every signing decision.")
    actions = audit.add_subparsers(dest="audit_command", metavar="ACTION", required=True)
    fetch = actions.add_parser("fetch", parents=[_Parents.enclave, _Parents.json], help="append new receipts and a signed checkpoint to a log file", description="Fetch receipts the log file does not have yet.")
    fetch.add_argument("--log", required=True, metavar="FILE")
    fetch.set_defaults(handler=cmd_audit_fetch)
    verify = actions.add_parser(
        "verify", parents=[_Parents.trust, _Parents.json], help="verify a log file's chain and checkpoints",
        description="Verify the hash chain, and the checkpoints and chain starts against the attested identity key of the --pcr0 image (else $ZEROCOPY_EXPECTED_PCR0's; required, unless --any-image). "
        "Every gap is reported; a log that does not start at the enclave's first receipt is refused unless --expect-from says where it starts. "
        "Every chain (enclave boot) is listed: a host can remove a whole chain, so confirm them with --chains or --expect-boots.",
    )  # fmt: skip
    verify.add_argument("log", metavar="FILE")
    verify.add_argument("--any-image", action="store_true", help="accept identity keys from any enclave image under the root (prints a warning: this does not show your enclave wrote the log)")
    verify.add_argument("--expect-from", type=_sequence_number, metavar="SEQ", help="the log's first chain is expected to start at receipt SEQ (an older part was archived, or the enclave dropped receipts nobody fetched); missing receipts before it are reported, not refused")
    verify.add_argument("--chains", type=_count, metavar="N", help="the log must hold exactly N chains (enclave boots): a whole chain removed, or one not expected, is refused")
    verify.add_argument("--expect-boots", action="append", metavar="ID", help="the log's chains must be exactly these boots: boot ids (or their first 16+ hex digits) or enclave module ids, as verify lists them (repeat, or comma-separated)")
    verify.add_argument("--enclave", metavar="ADDR", type=_address, help="also compare the log's last chain with a fresh checkpoint the enclave signs over a nonce, so a cut tail shows; the connection is attested (--pcr0, --root) and must be the enclave that wrote that chain (not taken from $ZEROCOPY_ENCLAVE)")
    verify.set_defaults(handler=cmd_audit_verify)
    _check_usage(verify, _audit_verify_usage)


def _add_operator_commands(commands: Any) -> None:
    stethoscope = commands.add_parser("stethoscope", parents=[_Parents.trust, _Parents.json, _Parents.enclave], help="check a running enclave: attestation, keys, sign-path latency", description="Examine a running enclave without using its keys: verify a fresh attestation, list keys, time the sign path with a probe.")
    stethoscope.add_argument("--samples", type=_count, default=500, help="probe round trips to time (default: %(default)s)")
    stethoscope.add_argument("--host-root", default="/", metavar="DIR", help="where the host's /proc and /sys are read from, read-only (default: %(default)s; a copy of them, for another host)")
    stethoscope.add_argument("--exchange-url", metavar="URL", help="also measure the path to this exchange URL (a light GET endpoint): DNS, TCP connect, TLS handshake and resumption, keep-alive, clock offset")
    stethoscope.add_argument("--exchange-ca", metavar="FILE", help="PEM CAs to trust for --exchange-url (default: the system's)")
    stethoscope.set_defaults(handler=cmd_stethoscope)

    from ._eif_cli import add_eif_commands

    add_eif_commands(commands, json_parent=_Parents.json, check_usage=_check_usage)

    kms_policy = commands.add_parser(
        "kms-policy", help="print a KMS key policy pinning an enclave image",
        description="Print a key policy that lets only an enclave with these measurements decrypt, and only it and the sealers seal. "
        "For a seal key (the enclave's --seal-key): create it with --locked, build the image naming it, then put the policy for the image's PCR0.",
    )  # fmt: skip
    kms_policy.add_argument("--pcr0", action="append", default=[], metavar="HEX", type=_measurement, help="PCR0 (ImageSha384) of the enclave image (repeat, or add --eif, for a rollover: an attested enclave of any image given may decrypt)")
    kms_policy.add_argument("--eif", action="append", default=[], metavar="FILE", help="the enclave image file, whose PCR0 is pinned (instead of or besides --pcr0; repeat)")
    kms_policy.add_argument("--role", metavar="ARN", help="the parent instance's role: allowed Decrypt and GenerateDataKey(Pair) only with the image's attestation, no IAM grant needed")
    kms_policy.add_argument("--operator", action="append", default=[], metavar="ARN", help="who seals: allowed Encrypt and GenerateDataKey without attestation, never Decrypt (repeat; replaces the account root as sealer)")
    kms_policy.add_argument("--locked", action="store_true", help="instead: administration only, every use denied (create a seal key with it, before its image exists)")
    kms_policy.add_argument("--sealer", action="append", default=[], metavar="ARN", help="IAM role, user or root ARN that may seal bundles (zerocopy seal) without attestation (repeat; default: the account root)")
    kms_policy.add_argument("--enclave-only", action="store_true", help="no sealers: only the attested enclave may seal under the key (a key only GENERATE uses)")
    kms_policy.add_argument("--pcr", action="append", default=[], type=_pcr, metavar="N=HEX", help="another PCR to pin (repeat)")
    kms_policy.add_argument("--account", required=True, help="AWS account id that administers the key")
    kms_policy.set_defaults(handler=cmd_kms_policy)
    _check_usage(kms_policy, _kms_policy_usage)

    vsock_proxy = commands.add_parser("vsock-proxy-config", help="write the parent's vsock-proxy allowlist for KMS", description="Write the allowlist file AWS's vsock-proxy checks at start (YAML, as /etc/nitro_enclaves/vsock-proxy.yaml): only the region's KMS endpoint, the one service the enclave reaches.")
    vsock_proxy.add_argument("--region", help="AWS region of KMS (default: from the AWS configuration)")
    vsock_proxy.add_argument("-o", "--output", default="-", metavar="FILE", help="file to write, e.g. /etc/nitro_enclaves/vsock-proxy.yaml (default: stdout)")
    vsock_proxy.set_defaults(handler=cmd_vsock_proxy_config)


def _add_plugin_commands(commands: Any) -> None:
    """Commands installed packages add (the emulator's ``demo`` and ``emulator up``), found as
    pytest finds its plugins: each entry point is called with the subparsers."""
    # By name, once: a source tree on the path can show the same distribution's metadata twice.
    by_name = {entry.name: entry for entry in reversed(list(entry_points(group=COMMANDS_GROUP)))}
    for name in sorted(by_name):
        by_name[name].load()(commands)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description="Keep exchange API secrets in a Nitro Enclave and sign over vsock.")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    from .host.command import add_host

    for add in (_add_plugin_commands, _add_keys_commands, _add_signing_commands, _add_attest_commands, _add_policy_commands, _add_audit_commands, _add_operator_commands, add_host):
        add(commands)
    _name_leaf_parsers(parser)
    return parser


def _name_leaf_parsers(parser: argparse.ArgumentParser) -> None:
    """Each (sub)command's parser as its ``leaf_parser`` default: a subcommand's default wins over
    its parent's, so after parsing it is the parser of the command that was run."""
    parser.set_defaults(leaf_parser=parser)
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for subparser in {id(each): each for each in action.choices.values()}.values():
                _name_leaf_parsers(subparser)


@contextlib.contextmanager
def _interruptible() -> Iterator[list[int]]:
    """SIGINT and SIGTERM interrupt the command (``KeyboardInterrupt``) once; the signals that
    follow are ignored, so the cleanup the first one set off (processes, run directories) runs to
    its end. Yields the signals received; the previous handlers are back afterwards."""
    received: list[int] = []
    if threading.current_thread() is not threading.main_thread():
        yield received  # only the main thread may set handlers; it gets the signals anyway
        return

    def interrupt(signum: int, frame: object) -> None:
        received.append(signum)
        for each in watched:
            signal.signal(each, signal.SIG_IGN)
        raise KeyboardInterrupt

    watched = (signal.SIGINT, signal.SIGTERM)
    previous = {each: signal.getsignal(each) for each in watched}
    for each in watched:
        signal.signal(each, interrupt)
    try:
        yield received
    finally:
        for each, handler in previous.items():
            signal.signal(each, handler)


def main(argv: Sequence[str] | None = None) -> int:
    with _interruptible() as received:
        try:
            return _run(argv)
        except KeyboardInterrupt:
            _say(f"{PROG}: interrupted")
            return 128 + (received[0] if received else signal.SIGINT)


def _run(argv: Sequence[str] | None) -> int:
    parser = build_parser()
    args, unrecognized = parser.parse_known_args(argv)
    if unrecognized:  # with the usage of the command they were given to, not the top level's
        args.leaf_parser.error(f"unrecognized arguments: {' '.join(unrecognized)}")
    getattr(args, "usage_check", lambda args: None)(args)
    try:
        return int(args.handler(args) or 0)
    except _Fatal as exc:
        _say(f"{PROG}: error: {exc}")
        return 1
    except errors.ZeroCopyError as exc:
        _say(f"{PROG}: error: {exc}")
        return 1
    except OSError as exc:
        _say(f"{PROG}: error: {_os_error_message(exc)}")
        return 1
    except ValueError as exc:
        _say(f"{PROG}: error: {exc}")
        return 1


def _os_error_message(exc: OSError) -> str:
    """``nothere.toml: no such file or directory``, not Python's ``[Errno 2] No such file…``."""
    if exc.filename is None or not exc.strerror:
        return str(exc)
    return f"{exc.filename}: {exc.strerror[0].lower()}{exc.strerror[1:]}"


if __name__ == "__main__":
    sys.exit(main())
