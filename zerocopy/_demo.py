"""``zerocopy demo``: the whole flow on the embedded emulator, narrated."""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

__all__ = ["run_demo", "BINANCE_EXAMPLE"]

# The example from Binance's API documentation ("SIGNED endpoint examples for POST /api/v3/order").
BINANCE_EXAMPLE = {
    "api_key": "vmPUZE6mv9SD5VNHk4HlWFsOr6aKE2zvsw0MuIgwCIPy6utIco14y7Ju91duEh8A",
    "secret": b"NhqPtmdSJYdKjVHjA7PZj4Mge3R5YNiP1e3UZjInClVN65XAbvqqM6A7H5fATj0j",
    "params": [
        ("symbol", "LTCBTC"), ("side", "BUY"), ("type", "LIMIT"), ("timeInForce", "GTC"),
        ("quantity", "1"), ("price", "0.1"), ("recvWindow", "5000"), ("timestamp", "1499827319559"),
    ],
    "signature": "c8db56825ae71d6d79447849e617115f4a920fa2acdcab2b053c4b2838bd6b71",
}
KEY_NAME = "binance-demo"
# The documentation's example is from 2017: the demo policy switches the freshness rule off (the
# only way to sign an old timestamp) and allows order placement only.
DEMO_POLICY = """
version = 1
scheme = "binance-hmac"
allow = ["POST /api/v3/order", "POST /api/v3/order/test", "POST /sapi/v1/margin/order"]
symbols = ["LTCBTC"]
max_quantity = "10"
max_notional = "5"

[freshness]
enabled = false
"""


def _out(text: str = "") -> None:
    print(text, flush=True)


def _step(number: int, text: str) -> None:
    _out(f"\n{number}. {text}")


def run_demo(*, samples: int = 2000) -> int:
    from emulator import Emulator

    from . import PolicyRefused, Signer
    from ._latency import EchoServer, pinned_apart, time_calls
    from .attestation import verify
    from .kms_policy import attested_key_policy
    from .policy import checked_policy, explain, load_policy
    from .sealing import seal

    _out("ZeroCopy demo: a Binance API secret sealed with KMS, released only to an attested enclave,")
    _out("used to sign an order. Everything runs here, on the emulator (its timings are not Nitro's).")

    _step(1, "Starting the emulator: attesting KMS (on moto), vsock-proxy, NSM device, and the enclave code as its own process")
    with Emulator() as emulator:
        _out(f"   enclave listening on {emulator.address}")
        _out(f"   PCR0 (measurement of the enclave image): {emulator.pcrs[0].hex()}")

        _step(2, "Asking the enclave to prove what it runs: a fresh attestation document over a random nonce")
        with Signer(emulator.address) as signer:
            nonce = os.urandom(32)
            document = verify(signer.attest(nonce), roots=[emulator.root_certificate], expected_pcrs={0: emulator.pcrs[0]}, nonce=nonce)
        _out(f"   verified against the emulator's root: module {document.module_id}, PCR0 as expected, nonce matches,")
        _out(f"   signed {document.timestamp.isoformat(timespec='seconds')} by a leaf certificate valid until {document.certificate.not_valid_after_utc:%H:%M} UTC")

        _step(3, "Creating a KMS key whose policy releases its data only to an enclave with that PCR0")
        policy = attested_key_policy(emulator.account_id, image_sha384=emulator.pcrs[0])
        key_arn = emulator.kms.create_key(Policy=json.dumps(policy), Description="zerocopy demo")["KeyMetadata"]["Arn"]
        _out(f"   {key_arn}")
        _out("   Decrypt, ReEncrypt and CreateGrant are denied unless kms:RecipientAttestation:ImageSha384 matches")

        _step(4, "Sealing the Binance documentation's example secret with a signing policy (the secret is never written to disk)")
        policy = load_policy(DEMO_POLICY)
        for line in explain(checked_policy(policy, "binance-hmac")):
            _out(f"   policy: {line}")
        bundle = seal(
            emulator.kms, key_id=key_arn, name=KEY_NAME, scheme="binance-hmac",
            secret=BINANCE_EXAMPLE["secret"], api_key=BINANCE_EXAMPLE["api_key"], policy=policy,
        )
        bundle_json = bundle.to_json()
        _out(f"   bundle {bundle.name!r}: scheme {bundle.scheme}, {len(bundle_json)} bytes of JSON, policy sha256 {bundle.policy_sha256[:16]}…")
        _out(f"   encryption context (derived again inside the enclave): {json.dumps(bundle.encryption_context())}")

        _step(5, "Provisioning: the enclave attests to KMS itself and unwraps the secret inside its own memory")
        with emulator.signer() as signer:
            (result,) = signer.provision([bundle_json], credentials=emulator.credentials)
            if not result.loaded:
                _out(f"   FAILED: {result.error}")
                return 1
            _out(f"   loaded {result.name!r}; the host relayed only TLS records")
            from botocore.exceptions import ClientError

            host_kms = emulator.host_kms()  # the host role's session: what the parent instance holds
            try:
                host_kms.decrypt(CiphertextBlob=bundle.encrypted_data_key, EncryptionContext=bundle.encryption_context())
                _out("   UNEXPECTED: the host's own credentials decrypted the data key")
                return 1
            except ClientError as exc:
                _out(f"   the host's own credentials calling Decrypt on the same bundle: {exc.response['Error']['Code']}")
            finally:
                host_kms.close()

            _step(6, "Signing the documentation's example order (the enclave builds the string to sign)")
            signed = signer.sign_request(KEY_NAME, "POST", "/api/v3/order", params=BINANCE_EXAMPLE["params"])
            signature = signed.query.rsplit("signature=", 1)[1]
            _out(f"   POST /api/v3/order?{signed.query}")
            _out(f"   X-MBX-APIKEY: {signed.headers['X-MBX-APIKEY'][:12]}…")
            _out(f"   signature {signature}")
            matches = signature == BINANCE_EXAMPLE["signature"]
            _out("   = the signature in Binance's documentation" if matches else "   DIFFERS from Binance's documentation")

            _step(7, "A compromised host asks for a withdrawal, and for a bigger order")
            for label, params in (
                ("withdrawal", [("coin", "BTC"), ("address", "1HackerAddress"), ("amount", "3"), ("timestamp", "1499827319559")]),
                ("oversized order", [*BINANCE_EXAMPLE["params"][:4], ("quantity", "500"), ("price", "0.1"), ("timestamp", "1499827319559")]),
            ):
                try:
                    signer.sign_request(KEY_NAME, "POST", "/sapi/v1/capital/withdraw/apply" if label == "withdrawal" else "/api/v3/order", params=params)
                    _out(f"   UNEXPECTED: the {label} was signed")
                    return 1
                except PolicyRefused as refused:
                    _out(f"   {label}: refused by rule {refused.rule!r}: {str(refused).split(': ', 1)[1]}")

            _step(8, "An enclave with modified code asks KMS for the same secret")
            modified = Path(tempfile.mkdtemp(prefix="zc-modified-"))
            try:
                source = emulator.enclave.enclave_source  # type: ignore[union-attr]
                shutil.copytree(source, modified / "enclave", ignore=shutil.ignore_patterns("__pycache__"))
                (modified / "enclave" / "exfiltrate.py").write_text("# a one-line change is a different image\n")
                with emulator.launch(enclave_dir=modified / "enclave") as other:
                    _out(f"   PCR0 of the modified image: {other.pcrs[0].hex()}")
                    with Signer(other.address) as other_signer:
                        (refused,) = other_signer.provision([bundle_json], credentials=emulator.credentials)
            finally:
                shutil.rmtree(modified, ignore_errors=True)
            if refused.loaded:
                _out("   UNEXPECTED: the modified enclave got the secret")
                return 1
            _out(f"   refused: {refused.error}")

            _step(9, f"Sign round trip over emulated vsock (a Unix socket), {samples} requests, against a bare echo")
            # The demo key's rate limit (10/s) would refuse a benchmark: time a twin with a wide one.
            fast = seal(
                emulator.kms, key_id=key_arn, name="binance-latency", scheme="binance-hmac", secret=BINANCE_EXAMPLE["secret"],
                api_key=BINANCE_EXAMPLE["api_key"], policy=load_policy(DEMO_POLICY.replace('scheme = "binance-hmac"', 'scheme = "binance-hmac"\nrate = { per_second = "100000", burst = 100000 }')),
            )
            signer.provision([fast.to_json()], credentials=emulator.credentials)
            params = BINANCE_EXAMPLE["params"]
            with EchoServer() as echo, pinned_apart(emulator.enclave.pid, echo.pid):  # see zerocopy._latency
                frame = b"x" * 160
                baseline = time_calls(lambda: echo.roundtrip(frame), samples)
                measured = time_calls(lambda: signer.sign_request("binance-latency", "POST", "/api/v3/order", params=params), samples)
            _out(f"   sign_request  {measured}")
            _out(f"   bare echo     {baseline}")
            _out(f"   ratio (p50)   {measured.p50_us / baseline.p50_us:.1f}x the echo (benchmarks/bench_sign.py measures more, e.g. --busy-poll-us)")

    _out("\nDone. The emulator, the enclaves and their files are gone.")
    return 0 if matches else 1


if __name__ == "__main__":
    sys.exit(run_demo())
