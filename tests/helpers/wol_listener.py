"""The "NIC" of a simulated sleeping host: run inside its namespace, it listens for Wake-on-LAN magic packets (UDP
port 9, broadcasts included) and, on a valid one for its MAC, resumes the frozen agent (SIGCONT) RESUME_SECONDS
later, as a real NIC powers the machine up and it takes a moment to resume (an instant resume let a woken agent's
job run within ~20 ms of the packet: too soon for anyone to see it waiting for the wake-up). Every packet is logged
as one JSON line on stdout: {"mac": ..., "woke": bool}.

    python tests/helpers/wol_listener.py MAC PID [PORT]
"""

from __future__ import annotations

import json
import os
import signal
import socket
import sys
import time

from tensorfleet_agent.runtime.wake_on_lan import WAKE_PORT, format_mac, magic_packet_target, parse_mac

RESUME_SECONDS = 0.3


def main() -> None:
    mac, pid = format_mac(parse_mac(sys.argv[1])), int(sys.argv[2])
    port = int(sys.argv[3]) if len(sys.argv) > 3 else WAKE_PORT
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
        sock.bind(("0.0.0.0", port))
        print(json.dumps({"listening": port, "mac": mac}), flush=True)
        while True:
            data, sender = sock.recvfrom(4096)
            target = magic_packet_target(data)
            woke = target == mac
            if woke:
                time.sleep(RESUME_SECONDS)
                os.kill(pid, signal.SIGCONT)
            print(json.dumps({"from": sender[0], "mac": target, "woke": woke}), flush=True)


if __name__ == "__main__":
    main()
