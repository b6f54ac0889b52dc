"""Several HTTP worker processes on one listening socket (``serve --workers N``).

The parent imports everything, then forks the workers and only supervises them: each
worker opens its own Archive from the parent's Settings and serves the shared socket.
Forked workers share the parent's imported code and data pages (copy-on-write; the
garbage collector is told to leave those objects alone, so they stay shared), so a
second worker costs the memory it touches, not another ~150 MB of imports. Forking is
only safe while the parent runs no other thread: the caller closes its Archive first
(``run`` refuses otherwise), and the DICOM listener, which must run once, is started
inside worker 0 by ``first_worker``.

Nothing correct depends on two requests reaching the same process: the index and the
blob store are shared, every cache is per-process and rebuildable. A worker that dies
is started again, unless it dies within ``STARTUP_S`` of its start (it cannot start:
then every worker is stopped and the reason is in the log).
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import logging
import os
import signal
import socket
import threading
import time
from collections.abc import Callable
from types import FrameType

from imagebridge.config import Settings
from imagebridge.services.archive import Archive, open_archive
from imagebridge.web.app import create_app
from imagebridge.web.balance import BalancedServer, Loads
from imagebridge.web.server import make_config

log = logging.getLogger(__name__)

STARTUP_S = 5.0
"""A worker that exits sooner than this after being started could not start."""

Stopper = Callable[[], None]
FirstWorker = Callable[[Archive], Stopper | None]

_PR_SET_PDEATHSIG = 1


class CannotFork(RuntimeError):
    """A thread runs beside the parent: forking now could copy a lock it holds into a worker."""


def run(
    settings: Settings,
    sock: socket.socket,
    *,
    first_worker: FirstWorker | None = None,
    log_level: str = "warning",
) -> int:
    """Serve with ``settings.http_workers`` forked processes until SIGINT or SIGTERM;
    returns the exit status for the command (0, or 1 when a worker could not start)."""
    others = [t.name for t in threading.enumerate() if t is not threading.current_thread()]
    if others:
        raise CannotFork(f"cannot fork HTTP workers while other threads run: {', '.join(others)}")
    gc.collect()
    gc.freeze()
    supervisor = _Supervisor(settings, sock, first_worker, log_level)
    return supervisor.run()


class _Supervisor:
    def __init__(
        self, settings: Settings, sock: socket.socket, first_worker: FirstWorker | None, log_level: str
    ) -> None:
        self.settings, self.sock, self.first_worker, self.log_level = settings, sock, first_worker, log_level
        self.loads = Loads(settings.http_workers)
        """Each worker's open connections, so that new ones go to the least busy (web/balance.py)."""
        self.workers: dict[int, tuple[int, float]] = {}
        """pid → (worker number, when it started)."""
        self.stopping = False
        self.status = 0

    def run(self) -> int:
        previous = {sig: signal.signal(sig, self._stop) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            for number in range(self.settings.http_workers):
                self._start(number)
            while self.workers:
                try:
                    pid, wait_status = os.wait()
                except ChildProcessError:
                    break
                self._reap(pid, wait_status)
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        return self.status

    def _start(self, number: int) -> None:
        pid = os.fork()
        if pid == 0:
            first = self.first_worker if number == 0 else None
            _worker_main(self.settings, self.sock, first, self.log_level, (self.loads, number))
        self.workers[pid] = (number, time.monotonic())

    def _reap(self, pid: int, wait_status: int) -> None:
        if pid not in self.workers:
            return
        number, started = self.workers.pop(pid)
        if self.stopping:
            return
        how = _describe(wait_status)
        if time.monotonic() - started < STARTUP_S:
            log.error("HTTP worker %d %s during start-up; stopping the server", number, how)
            self.status = 1
            self._stop(signal.SIGTERM, None)
            return
        log.error("HTTP worker %d %s; starting it again", number, how)
        self._start(number)

    def _stop(self, signum: int, _frame: FrameType | None) -> None:
        self.stopping = True
        for pid in list(self.workers):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)


def _worker_main(
    settings: Settings,
    sock: socket.socket,
    first_worker: FirstWorker | None,
    log_level: str,
    slot: tuple[Loads, int],
) -> None:
    """The forked worker: serve until told to stop, then leave without running the parent's
    clean-up (``os._exit``)."""
    status = 0
    parent = os.getppid()
    try:
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, signal.SIG_DFL)
        _die_with_parent()
        if os.getppid() != parent:
            return  # the supervisor ended before the request to end with it was made
        archive = open_archive(settings, upgrade=False)
        stopper = first_worker(archive) if first_worker is not None else None
        try:
            config = make_config(create_app(archive), log_level=log_level)
            BalancedServer(config, sock, *slot).run()
        finally:
            if stopper is not None:
                stopper()
            archive.close()
    except SystemExit as exc:  # whoever raised it has said why
        status = exc.code if isinstance(exc.code, int) else 1
    except BaseException:
        log.exception("HTTP worker failed")
        status = 1
    finally:
        logging.shutdown()
        os._exit(status)


def _die_with_parent() -> None:
    """Ask Linux to end this worker when the supervisor ends, however it ends."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):
        pass  # not Linux: workers then outlive a killed supervisor, as with most servers


def _describe(wait_status: int) -> str:
    if os.WIFSIGNALED(wait_status):
        return f"was killed by signal {signal.Signals(os.WTERMSIG(wait_status)).name}"
    return f"exited with status {os.waitstatus_to_exitcode(wait_status)}"
