"""The benchmarks' measuring helpers (zerocopy._latency): pinning client and servers apart."""

from __future__ import annotations

import os
import subprocess
import sys
import threading

import pytest

from zerocopy._latency import pinned_apart, process_threads

# A server-like process: a thread that already runs when it is pinned, and one more started on
# request (as a server starts a connection thread for each client after the benchmark pinned it).
_SERVER = """\
import sys, threading
stop = threading.Event()
def start():
    thread = threading.Thread(target=stop.wait)
    thread.start()
    return thread
start()
print("ready", flush=True)
for line in sys.stdin:
    if line.strip() == "start":
        print(start().native_id, flush=True)
    else:
        break
stop.set()
"""

CPUS = sorted(os.sched_getaffinity(0))


@pytest.fixture
def server():
    process = subprocess.Popen([sys.executable, "-I", "-c", _SERVER], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout.readline() == "ready\n"
        yield process
    finally:
        process.kill()
        process.wait()
        process.stdin.close()
        process.stdout.close()


@pytest.mark.skipif(len(CPUS) < 2, reason="pinning apart needs two CPUs")
def test_every_thread_of_the_servers_and_of_this_process_is_pinned_and_restored(server):
    """It pinned only each process's main thread: a server's connection threads, and this
    process's other threads, floated to any CPU."""
    stop = threading.Event()
    own_thread = threading.Thread(target=stop.wait)
    own_thread.start()
    try:
        assert len(process_threads(server.pid)) == 2
        with pinned_apart(server.pid) as pinned:
            assert pinned
            assert {tid: os.sched_getaffinity(tid) for tid in process_threads(server.pid)} == dict.fromkeys(process_threads(server.pid), {CPUS[1]})
            server.stdin.write("start\n")
            server.stdin.flush()
            later = int(server.stdout.readline())
            assert later in process_threads(server.pid) and os.sched_getaffinity(later) == {CPUS[1]}
            assert os.sched_getaffinity(own_thread.native_id) == {CPUS[0]} == os.sched_getaffinity(0)
        everywhere = set(CPUS)
        assert all(os.sched_getaffinity(tid) == everywhere for tid in process_threads(server.pid) if tid != later)
        assert os.sched_getaffinity(own_thread.native_id) == everywhere == os.sched_getaffinity(0)
    finally:
        stop.set()
        own_thread.join()


def test_a_process_that_is_gone_has_no_threads():
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    assert process_threads(process.pid) == []
