"""The ``zerocopy`` command (``python -m zerocopy``, and the installed script).

Importing the CLI (boto3, cryptography, the commands) takes a while; a Ctrl-C or SIGTERM in that
time would print an import traceback. Nothing has started yet then, so the signal prints the one
line any interrupted command prints and exits at once; the CLI installs its own handling (which
cleans up what it started) before it starts anything.
"""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Sequence

PROG = "zerocopy"


def _interrupted_while_starting(signum: int, frame: object) -> None:
    os.write(2, f"{PROG}: interrupted\n".encode())
    os._exit(128 + signum)  # nothing to clean up: no process or file exists yet


def main(argv: Sequence[str] | None = None) -> int:
    # Kept, not restored after the import: the CLI's own handling replaces it while a command runs
    # and puts it back after, so no moment is left where Python's default handler would end the
    # process with an uncaught KeyboardInterrupt.
    for each in (signal.SIGINT, signal.SIGTERM):
        signal.signal(each, _interrupted_while_starting)
    from ._cli import main as run_command

    return run_command(argv)


if __name__ == "__main__":
    sys.exit(main())
