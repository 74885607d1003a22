"""``zerocopy stethoscope``: listen to a running enclave without touching its keys.

It connects, fetches and verifies a fresh attestation document, lists the loaded keys and their
policy digests, and times the sign path with a probe key name that is never loaded (the enclave
decodes the frame, looks the key up and answers UNKNOWN_KEY: the whole hot path but the
signature, with no receipt and no rate token spent), next to a bare echo over a local Unix socket.
"""

from __future__ import annotations

import os
from typing import Any

__all__ = ["examine"]

PROBE_KEY = "zerocopy-stethoscope-probe"


def examine(address: str, *, roots: list[Any] | None = None, expected_pcrs: dict[int, bytes] | None = None, allow_debug: bool = False, samples: int = 500) -> dict[str, Any]:
    from . import Signer, UnknownKey
    from ._latency import EchoServer, time_calls
    from .attestation import AttestationError, verify

    report: dict[str, Any] = {"address": address}
    with Signer(address) as signer:
        nonce = os.urandom(32)
        document = signer.attest(nonce)
        try:
            verified = verify(document, roots=roots, expected_pcrs=expected_pcrs, nonce=nonce, allow_debug=allow_debug)
            report["attestation"] = {"verified": True, "module_id": verified.module_id, "debug": verified.debug,
                                     "pcrs": {str(i): verified.pcrs[i].hex() for i in (0, 1, 2) if i in verified.pcrs}}
        except AttestationError as exc:
            report["attestation"] = {"verified": False, "error": f"{type(exc).__name__}: {exc}"}
        report["keys"] = [{"name": key.name, "scheme": key.scheme, "policy_sha256": key.policy_sha256} for key in signer.keys()]

        def probe() -> None:
            try:
                signer.sign(PROBE_KEY, b"probe")
            except UnknownKey:
                pass

        sign_path = time_calls(probe, samples, warmup=50)
    with EchoServer() as echo:
        baseline = time_calls(lambda: echo.roundtrip(b"x" * 48), samples, warmup=50)
    report["latency"] = {
        "sign_path_p50_us": round(sign_path.p50_us, 1), "sign_path_p99_us": round(sign_path.p99_us, 1),
        "local_echo_p50_us": round(baseline.p50_us, 1), "ratio_p50": round(sign_path.p50_us / baseline.p50_us, 2),
    }
    return report
