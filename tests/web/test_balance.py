"""`serve --workers N` hands each new connection to the worker with the fewest open ones.

uvicorn on a shared socket let whichever worker woke first take every pending connection: four
clients often all landed in one process, which runs Python on one core while the other idles.
The test opens keep-alive connections one after another against two real forked workers and
finds, through /proc, which worker holds each: after every new connection the two must differ by
at most one (a worker left to chance would get it wrong with probability 1/2 at each odd step)."""

from __future__ import annotations

import http.client
import os
import re
import time
from pathlib import Path

import pytest

from imagebridge.web.balance import Loads, should_accept
from tests.cli.test_serve import _workers_of, serving


@pytest.mark.parametrize(
    ("mine", "others", "waited", "expected"),
    [
        (0, [0], False, True),  # equally busy: either may take it
        (1, [0], False, False),  # a worker with fewer connections takes it
        (1, [0], True, True),  # ... unless it has not within DEFER_S
        (3, [4, 2], False, False),
        (2, [4, 2], False, True),
        (5, [], False, True),  # a single worker takes everything
    ],
)
def test_who_accepts(mine: int, others: list[int], waited: bool, expected: bool) -> None:
    assert should_accept(mine, others, waited) is expected


def test_loads_are_shared_with_forked_processes() -> None:
    loads = Loads(2)
    pid = os.fork()
    if pid == 0:
        loads.set(1, 7)
        os._exit(0)
    os.waitpid(pid, 0)
    assert loads.others(0) == [7]


def _sockets_of(pid: int) -> set[int]:
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            if match := re.fullmatch(r"socket:\[(\d+)\]", os.readlink(fd)):
                inodes.add(int(match.group(1)))
        except OSError:
            continue
    return inodes


def _established_on(port: int) -> set[int]:
    """Socket inodes of the server side of connections established on ``port``."""
    inodes = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        local_port = int(fields[1].split(":")[1], 16)
        if local_port == port and fields[3] == "01":  # ESTABLISHED
            inodes.add(int(fields[9]))
    return inodes


def test_connections_are_spread_evenly_over_the_workers(tmp_path: Path) -> None:
    with serving(tmp_path / "data", "--no-dicom", "--workers", "2") as (url, process):
        port = int(url.rsplit(":", 1)[1])
        workers = _workers_of(process.pid)
        assert len(workers) == 2
        time.sleep(0.5)  # the readiness probes' connections are closed and counted out
        clients = []
        try:
            for n in range(1, 11):
                client = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
                client.request("GET", "/healthz")
                response = client.getresponse()
                assert response.read() == b"ok"
                clients.append(client)
                held = _established_on(port)
                per_worker = [len(_sockets_of(pid) & held) for pid in workers]
                assert sum(per_worker) == n
                assert max(per_worker) - min(per_worker) <= 1, per_worker
        finally:
            for client in clients:
                client.close()
