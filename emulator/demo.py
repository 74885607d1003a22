"""``zerocopy demo``: the whole flow on the embedded emulator, narrated.

The demo is a sequence of named steps over one emulator. A step that sees what the demo exists to
show cannot happen (the host decrypting, a withdrawal signed, a modified image unsealing) raises
:class:`DemoFailed`; ``run_demo`` says so in one line and exits 1.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path
from typing import Any

__all__ = ["run_demo", "DemoFailed", "BINANCE_EXAMPLE"]

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
LATENCY_KEY_NAME = "binance-latency"
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
# The demo key's rate limit (10/s) would refuse a benchmark: the latency step times a twin with a wide one.
LATENCY_POLICY = DEMO_POLICY.replace('scheme = "binance-hmac"', 'scheme = "binance-hmac"\nrate = { per_second = "100000", burst = 100000 }')
TIMESTAMP = "1499827319559"
ATTACKS = (
    ("withdrawal", "/sapi/v1/capital/withdraw/apply", [("coin", "BTC"), ("address", "1HackerAddress"), ("amount", "3"), ("timestamp", TIMESTAMP)]),
    ("oversized order", "/api/v3/order", [*BINANCE_EXAMPLE["params"][:4], ("quantity", "500"), ("price", "0.1"), ("timestamp", TIMESTAMP)]),
)


class DemoFailed(Exception):
    """The demo saw something it exists to show cannot happen."""


def _out(text: str = "") -> None:
    print(text, flush=True)


class _Demo:
    """The demo's state between steps; each method is one numbered step."""

    def __init__(self, emulator: Any, resources: ExitStack, samples: int) -> None:
        self.emulator, self.resources, self.samples = emulator, resources, samples
        self.key_arn = ""
        self.bundle: Any = None
        self.signer: Any = None
        self.signature_matches = False

    def steps(self) -> list[tuple[str, Callable[[], None]]]:
        return [
            ("Asking the enclave to prove what it runs: a fresh attestation document over a random nonce", self.attest),
            ("Creating a KMS key whose policy releases its data only to an enclave with that PCR0", self.create_key),
            ("Sealing the Binance documentation's example secret with a signing policy (the secret is never written to disk)", self.seal),
            ("Provisioning: the enclave attests to KMS itself and unwraps the secret inside its own memory", self.provision),
            ("Signing the documentation's example order (the enclave builds the string to sign)", self.sign_example),
            ("A compromised host asks for a withdrawal, and for a bigger order", self.refuse_attacks),
            ("An enclave with modified code asks KMS for the same secret", self.refuse_modified_image),
            (f"Sign round trip over emulated vsock (a Unix socket), {self.samples} requests, against a bare echo", self.time_sign_path),
        ]

    def started(self) -> None:
        _out(f"   enclave listening on {self.emulator.address}")
        _out(f"   PCR0 (measurement of the enclave image): {self.emulator.pcrs[0].hex()}")

    def attest(self) -> None:
        from zerocopy import Signer
        from zerocopy.attestation import verify

        with Signer(self.emulator.address) as signer:
            nonce = os.urandom(32)
            document = verify(signer.attest(nonce), roots=[self.emulator.root_certificate], expected_pcrs={0: self.emulator.pcrs[0]}, nonce=nonce)
        _out(f"   verified against the emulator's root: module {document.module_id}, PCR0 as expected, nonce matches,")
        _out(f"   signed {document.timestamp.isoformat(timespec='seconds')} by a leaf certificate valid until {document.certificate.not_valid_after_utc:%H:%M} UTC")

    def create_key(self) -> None:
        from zerocopy.kms_policy import attested_key_policy

        policy = attested_key_policy(self.emulator.account_id, image_sha384=self.emulator.pcrs[0])
        self.key_arn = self.emulator.kms.create_key(Policy=json.dumps(policy), Description="zerocopy demo")["KeyMetadata"]["Arn"]
        _out(f"   {self.key_arn}")
        _out("   Decrypt, ReEncrypt and CreateGrant are denied unless kms:RecipientAttestation:ImageSha384 matches")

    def seal(self) -> None:
        from zerocopy.policy import checked_policy, explain, load_policy

        policy = load_policy(DEMO_POLICY)
        for line in explain(checked_policy(policy, "binance-hmac")):
            _out(f"   policy: {line}")
        self.bundle = self._sealed(KEY_NAME, policy)
        _out(f"   bundle {self.bundle.name!r}: scheme {self.bundle.scheme}, {len(self.bundle.to_json())} bytes of JSON, policy sha256 {self.bundle.policy_sha256[:16]}…")
        _out(f"   encryption context (derived again inside the enclave): {json.dumps(self.bundle.encryption_context())}")

    def _sealed(self, name: str, policy: dict) -> Any:
        from zerocopy.sealing import seal

        return seal(
            self.emulator.kms, key_id=self.key_arn, name=name, scheme="binance-hmac",
            secret=BINANCE_EXAMPLE["secret"], api_key=BINANCE_EXAMPLE["api_key"], policy=policy,
        )

    def provision(self) -> None:
        self.signer = self.resources.enter_context(self.emulator.signer())
        (result,) = self.signer.provision([self.bundle.to_json()], credentials=self.emulator.credentials)
        if not result.loaded:
            raise DemoFailed(f"FAILED: {result.error}")
        _out(f"   loaded {result.name!r}; the host relayed only TLS records")
        _out(f"   the host's own credentials calling Decrypt on the same bundle: {self._host_decrypt_refusal()}")

    def _host_decrypt_refusal(self) -> str:
        from botocore.exceptions import ClientError

        host_kms = self.emulator.host_kms()  # the host role's session: what the parent instance holds
        try:
            host_kms.decrypt(CiphertextBlob=self.bundle.encrypted_data_key, EncryptionContext=self.bundle.encryption_context())
        except ClientError as exc:
            return exc.response["Error"]["Code"]
        finally:
            host_kms.close()
        raise DemoFailed("UNEXPECTED: the host's own credentials decrypted the data key")

    def sign_example(self) -> None:
        signed = self.signer.sign_request(KEY_NAME, "POST", "/api/v3/order", params=BINANCE_EXAMPLE["params"])
        signature = signed.query.rsplit("signature=", 1)[1]
        _out(f"   POST /api/v3/order?{signed.query}")
        _out(f"   X-MBX-APIKEY: {signed.headers['X-MBX-APIKEY'][:12]}…")
        _out(f"   signature {signature}")
        self.signature_matches = signature == BINANCE_EXAMPLE["signature"]
        _out("   = the signature in Binance's documentation" if self.signature_matches else "   DIFFERS from Binance's documentation")

    def refuse_attacks(self) -> None:
        from zerocopy import PolicyRefused

        for label, path, params in ATTACKS:
            try:
                self.signer.sign_request(KEY_NAME, "POST", path, params=params)
            except PolicyRefused as refused:
                _out(f"   {label}: refused by rule {refused.rule!r}: {str(refused).split(': ', 1)[1]}")
                continue
            raise DemoFailed(f"UNEXPECTED: the {label} was signed")

    def refuse_modified_image(self) -> None:
        from zerocopy import Signer

        modified = Path(tempfile.mkdtemp(prefix="zc-modified-"))
        try:
            shutil.copytree(self.emulator.enclave.enclave_source, modified / "enclave", ignore=shutil.ignore_patterns("__pycache__"))
            (modified / "enclave" / "exfiltrate.py").write_text("# a one-line change is a different image\n")
            with self.emulator.launch(enclave_dir=modified / "enclave") as other:
                _out(f"   PCR0 of the modified image: {other.pcrs[0].hex()}")
                with Signer(other.address) as other_signer:
                    (refused,) = other_signer.provision([self.bundle.to_json()], credentials=self.emulator.credentials)
        finally:
            shutil.rmtree(modified, ignore_errors=True)
        if refused.loaded:
            raise DemoFailed("UNEXPECTED: the modified enclave got the secret")
        _out(f"   refused: {refused.error}")

    def time_sign_path(self) -> None:
        from zerocopy._latency import EchoServer, pinned_apart, time_calls
        from zerocopy.policy import load_policy

        self.signer.provision([self._sealed(LATENCY_KEY_NAME, load_policy(LATENCY_POLICY)).to_json()], credentials=self.emulator.credentials)
        params = BINANCE_EXAMPLE["params"]
        with EchoServer() as echo, pinned_apart(self.emulator.enclave.pid, echo.pid):  # see zerocopy._latency
            frame = b"x" * 160
            baseline = time_calls(lambda: echo.roundtrip(frame), self.samples)
            measured = time_calls(lambda: self.signer.sign_request(LATENCY_KEY_NAME, "POST", "/api/v3/order", params=params), self.samples)
        _out(f"   sign_request  {measured}")
        _out(f"   bare echo     {baseline}")
        _out(f"   ratio (p50)   {measured.p50_us / baseline.p50_us:.1f}x the echo")
        _out("   The echo is the floor: the same bytes over the same kind of socket, answered by a process that does nothing.")
        _out("   The ratio is what the enclave adds (policy check, signature, receipt); lower is better, 1x would be free.")
        _out("   Under about 10x is as expected here. Absolute times on this shared machine say little, and emulator timings are not")
        _out("   Nitro's: there a sign round trip is about 100 µs, mostly vsock. benchmarks/bench_sign.py measures more (--busy-poll-us).")


def run_demo(*, samples: int = 2000) -> int:
    """Run every step; 0 when each showed what it should, 1 (after one line saying why) otherwise."""
    from emulator import Emulator

    _out("ZeroCopy demo: a Binance API secret sealed with KMS, released only to an attested enclave,")
    _out("used to sign an order. Everything runs here, on the emulator (its timings are not Nitro's).")
    _out("\n1. Starting the emulator: attesting KMS (on moto), vsock-proxy, NSM device, and the enclave code as its own process")
    with Emulator() as emulator, ExitStack() as resources:
        demo = _Demo(emulator, resources, samples)
        demo.started()
        try:
            for number, (title, step) in enumerate(demo.steps(), start=2):
                _out(f"\n{number}. {title}")
                step()
        except DemoFailed as failed:
            _out(f"   {failed}")
            return 1
    _out("\nDone. The emulator, the enclaves and their files are gone.")
    _out("Next: `zerocopy emulator up` runs an emulator until Ctrl-C and prints the exports for another shell, where the")
    _out("README's operator commands (seal, provision, sign, keys, audit) run against it. `zerocopy --help` lists every command.")
    return 0 if demo.signature_matches else 1


if __name__ == "__main__":
    sys.exit(run_demo())
