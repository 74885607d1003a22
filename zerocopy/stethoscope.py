"""The Stethoscope from inside a bot: what ``zerocopy stethoscope`` checks, callable in the bot's own
process, where the bot's heap and connection are.

Each finding is a dict: ``check``, ``status`` (``PASS``, ``WARN``, ``FAIL``, ``SKIP``), ``measured``,
``cost_us`` (its typical cost on the sign path, or None) and ``fix`` (empty unless WARN or FAIL).

* :func:`gc_pauses` — this process's garbage-collection pauses (the CLI, another process, cannot
  time them: it reports SKIP).
* :func:`sign_path` — the way from this process to the enclave (connect, round trips against an
  echo, Nagle, a connection per request, and this process's GC pauses).
* :func:`host_findings` — the host, read-only from ``/proc`` and ``/sys``.
* :func:`exchange_path` — the way to an exchange URL (DNS, TCP, TLS, keep-alive, clock offset).
"""

from __future__ import annotations

from ._stethoscope import FAIL, PASS, SKIP, WARN, host_findings
from ._stethoscope_paths import exchange_path, gc_pauses, sign_path

__all__ = ["gc_pauses", "sign_path", "host_findings", "exchange_path", "PASS", "WARN", "FAIL", "SKIP"]
