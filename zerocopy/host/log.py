"""What ``zerocopy host`` says: one line per event, plain or JSON (``--json``), on stdout.

A plain line is ``<UTC time> <event>: <message> key=value …``; a JSON line is one object with
``time``, ``event``, ``message`` and the same fields. Fields are names, ids, counts and times:
never a secret (credentials are reported by their expiry only).
"""

from __future__ import annotations

import json
import sys
import threading
from datetime import datetime, timezone
from typing import Any, TextIO

__all__ = ["AgentLog"]


class AgentLog:
    def __init__(self, *, as_json: bool = False, stream: TextIO | None = None) -> None:
        self.as_json = as_json
        self.stream = stream or sys.stdout
        self._lock = threading.Lock()

    def event(self, event: str, message: str, **fields: Any) -> None:
        now = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
        if self.as_json:
            line = json.dumps({"time": now, "event": event, "message": message, **fields}, default=str)
        else:
            details = " ".join(f"{key}={value}" for key, value in fields.items())
            line = f"{now} {event}: {message}" + (f" {details}" if details else "")
        with self._lock:
            self.stream.write(line + "\n")
            self.stream.flush()
