#!/usr/bin/env python3
"""A WebSocket client that sends and never reads: the relay's memory under it is what `make bench` reports.

    ws-flood.py PORT TOKEN [FRAMES] [FRAME_BYTES]

Connects to ws://127.0.0.1:PORT/ws?token=TOKEN, then sends FRAMES (default 3000) text frames of about
FRAME_BYTES (default 60000) each, `{"type":"zzz…"}` (an unknown type: each is answered with an error the
client never reads). It stops when everything is sent, when the relay has not taken a byte for 3 seconds
(throttled), or when the connection ends (closed, e.g. 4008). Prints one JSON line:
{"sent_bytes": N, "frames": F, "throttled": bool, "closed": bool, "seconds": S}.
"""
import base64
import json
import os
import socket
import struct
import sys
import time


def frame(payload: bytes) -> bytes:
    mask = os.urandom(4)
    header = bytes([0x81])
    n = len(payload)
    if n <= 125:
        header += bytes([0x80 | n])
    elif n <= 0xFFFF:
        header += bytes([0x80 | 126]) + struct.pack("!H", n)
    else:
        header += bytes([0x80 | 127]) + struct.pack("!Q", n)
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return header + mask + masked


def main() -> int:
    port, token = int(sys.argv[1]), sys.argv[2]
    frames = int(sys.argv[3]) if len(sys.argv) > 3 else 3000
    size = int(sys.argv[4]) if len(sys.argv) > 4 else 60000
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall(
        (
            f"GET /ws?token={token} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
    )
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = sock.recv(1)
        if not chunk:
            print(json.dumps({"error": "closed during the handshake"}))
            return 1
        head += chunk
    if not head.startswith(b"HTTP/1.1 101"):
        print(json.dumps({"error": head.decode(errors="replace").splitlines()[0]}))
        return 1
    one = frame(json.dumps({"type": "z" * (size - 12)}).encode())
    sock.setblocking(False)
    sent, throttled, closed = 0, False, False
    total = frames * len(one)
    start = time.monotonic()
    stalled_since = None
    deadline = start + 300
    while sent < total and time.monotonic() < deadline:
        offset = sent % len(one)
        try:
            count = sock.send(one[offset:])
        except BlockingIOError:
            count = 0
        except OSError:
            closed = True
            break
        if count > 0:
            sent += count
            stalled_since = None
            continue
        now = time.monotonic()
        if stalled_since is None:
            stalled_since = now
        elif now - stalled_since > 3:
            throttled = True
            break
        time.sleep(0.005)
    print(json.dumps({"sent_bytes": sent, "frames": sent // len(one), "throttled": throttled, "closed": closed,
                      "seconds": round(time.monotonic() - start, 1)}))
    sock.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
