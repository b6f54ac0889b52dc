"""The loopback ceiling: the study's bytes over a plain TCP socket on 127.0.0.1 between two processes.

This is the fastest any HTTP server could hand the same bytes to a client on this machine, so
full-study WADO-RS throughput is reported as a percentage of it.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import time

CHUNK = 1 << 20
TIMEOUT_S = 120.0

SINK = r"""
import socket, sys
sock = socket.socket()
sock.bind(("127.0.0.1", 0))
sock.listen(1)
print(sock.getsockname()[1], flush=True)
conn, _ = sock.accept()
buf = bytearray(1 << 20)
view = memoryview(buf)
total = 0
while True:
    n = conn.recv_into(view)
    if n == 0:
        break
    total += n
conn.sendall(total.to_bytes(8, "big"))
conn.close()
"""


def _send_once(payload: memoryview) -> float:
    """Seconds to push the payload to a fresh receiver process until it confirms every byte."""
    sink = subprocess.Popen([sys.executable, "-c", SINK], stdout=subprocess.PIPE, text=True)
    try:
        assert sink.stdout is not None
        port = int(sink.stdout.readline())
        with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT_S) as conn:
            start = time.perf_counter()
            for offset in range(0, len(payload), CHUNK):
                conn.sendall(payload[offset : offset + CHUNK])
            conn.shutdown(socket.SHUT_WR)
            received = int.from_bytes(_recv_exactly(conn, 8), "big")
            elapsed = time.perf_counter() - start
        if received != len(payload):
            raise RuntimeError(f"loopback sink received {received} of {len(payload)} bytes")
        return elapsed
    finally:
        sink.wait(timeout=TIMEOUT_S)


def _recv_exactly(conn: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = conn.recv(size - len(data))
        if not chunk:
            raise RuntimeError("loopback sink closed early")
        data += chunk
    return data


def ceiling_bytes_per_s(payload: bytes, reps: int = 5) -> float:
    """Best of ``reps`` transfers of ``payload`` (the concatenated study files)."""
    view = memoryview(payload)
    return max(len(payload) / _send_once(view) for _ in range(reps))


HTTP_SOURCE = r"""
import socket, sys
size = int(sys.argv[1])
sock = socket.socket()
sock.bind(("127.0.0.1", 0))
sock.listen(1)
print(sock.getsockname()[1], flush=True)
conn, _ = sock.accept()
request = b""
while b"\r\n\r\n" not in request:
    chunk = conn.recv(65536)
    if not chunk:
        sys.exit(1)
    request += chunk
head = b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nConnection: close\r\n"
conn.sendall(head + b"Content-Length: %d\r\n\r\n" % size)
view = memoryview(bytearray(1 << 20))
sent = 0
while sent < size:
    sent += conn.send(view[: min(len(view), size - sent)])
conn.close()
"""


def _http_once(size: int, raw: bool) -> float:
    from bench import dicomweb, rawhttp

    source = subprocess.Popen(
        [sys.executable, "-c", HTTP_SOURCE, str(size)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert source.stdout is not None
        url = f"http://127.0.0.1:{int(source.stdout.readline())}/"
        start = time.perf_counter()
        if raw:
            received = rawhttp.get(url, {"Accept": "*/*"}).body.size
        else:
            with dicomweb.client() as http:
                received = dicomweb.get_streamed(http, url, "*/*")
        elapsed = time.perf_counter() - start
        if received != size:
            raise RuntimeError(f"HTTP source sent {received} of {size} bytes")
        return elapsed
    finally:
        source.wait(timeout=TIMEOUT_S)


def client_ceiling_bytes_per_s(size: int, reps: int = 5, *, raw: bool = True) -> float:
    """Best of ``reps`` downloads of ``size`` bytes from a bare socket HTTP server with one of the
    bench's readers (the raw-socket one by default, else httpx): the most any server can show in
    the WADO-RS rows read with it."""
    return max(size / _http_once(size, raw) for _ in range(reps))
