"""The simulated LAN's fair link (`Lan.limit_rate(..., fair=True)`, used by benchmarks/dataset_bench.py): a small
flow to one host does not queue behind bulk streams to another on the same link, as with a real NIC's fq_codel,
and one flow alone still gets the link's whole rate."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest

from helpers.lan import Lan

pytestmark = [pytest.mark.slow, pytest.mark.lan]

LAN_HOSTS = ["a", "b", "c"]
RATE_BITS = 10e6

SINK = """
import socket, sys, threading, time
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); s.bind(("0.0.0.0", 5001)); s.listen(16)
def take(c):
    first, got = 0.0, 0
    while data := c.recv(1 << 20):
        first = first or time.monotonic()
        got += len(data)
    print(got * 8 / (time.monotonic() - first), flush=True)  # this connection's bits per second
while True:
    c, _ = s.accept(); threading.Thread(target=take, args=(c,), daemon=True).start()
"""
ECHO = """
import socket, threading
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); s.bind(("0.0.0.0", 5002)); s.listen(4)
def echo(c):
    while data := c.recv(100):
        c.sendall(data)
while True:
    c, _ = s.accept(); threading.Thread(target=echo, args=(c,), daemon=True).start()
"""
BULK = """
import socket, sys, threading, time
def go():
    s = socket.create_connection((sys.argv[1], 5001)); data = b"x" * (1 << 16); end = time.time() + float(sys.argv[3])
    while time.time() < end:
        s.sendall(data)
threads = [threading.Thread(target=go) for _ in range(int(sys.argv[2]))]
[t.start() for t in threads]; [t.join() for t in threads]
"""
PROBE = """
import json, socket, sys, time
s = socket.create_connection((sys.argv[1], 5002)); s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
times = []
for _ in range(15):
    t = time.perf_counter(); s.sendall(b"p" * 50); s.recv(100); times.append(time.perf_counter() - t); time.sleep(0.05)
print(json.dumps(sorted(times)))
"""


def test_a_small_flow_does_not_wait_behind_bulk_streams_and_one_flow_gets_the_whole_rate(lan: Lan) -> None:
    for name in LAN_HOSTS:
        lan.limit_rate(name, f"{int(RATE_BITS)}bit", fair=True)
    a, b, c = (lan.hosts[n] for n in LAN_HOSTS)
    servers = [
        subprocess.Popen(b.command(sys.executable, "-c", SINK), stdout=subprocess.PIPE, text=True),
        subprocess.Popen(c.command(sys.executable, "-c", ECHO)),
    ]
    try:
        time.sleep(0.5)
        subprocess.run(a.command(sys.executable, "-c", BULK, b.address, "1", "2.5"), timeout=30, check=True)
        assert servers[0].stdout is not None
        alone = float(servers[0].stdout.readline())
        assert alone > 0.75 * RATE_BITS, f"one flow got {alone / 1e6:.1f} Mbit/s of {RATE_BITS / 1e6:.0f}"

        bulk = subprocess.Popen(a.command(sys.executable, "-c", BULK, b.address, "7", "4"))
        time.sleep(1.5)  # seven streams fill a's uplink
        probe = subprocess.run(
            a.command(sys.executable, "-c", PROBE, c.address), capture_output=True, text=True, timeout=30
        )
        bulk.wait(timeout=30)
        times = json.loads(probe.stdout)
        # behind one FIFO the probe waits for the queued bulk bytes (tens of ms at this rate, more with drops)
        assert times[len(times) // 2] < 0.015, f"median round trip {times[len(times) // 2] * 1000:.1f} ms"
    finally:
        for server in servers:
            server.kill()
            server.wait()
