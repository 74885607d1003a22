"""Run moto's KMS in a process of its own, on 127.0.0.1 and an ephemeral port.

One moto process per emulator keeps each emulator's keys apart (moto's backends are
process-global). The port is printed on stdout; the process exits when stdin closes, so it never
outlives the emulator that started it.
"""

from __future__ import annotations

import sys


def main() -> None:
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    print(port, flush=True)
    sys.stdin.read()  # until the emulator closes our stdin (or dies)
    server.stop()


if __name__ == "__main__":
    main()
