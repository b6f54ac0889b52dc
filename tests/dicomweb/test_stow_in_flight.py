"""STOW-RS parts in flight (dicomweb/stow.py ``_InFlight``): never more than IN_FLIGHT at once,
every part finished before the request answers, and the event loop woken by a finishing part
only when the request is waiting for one."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable

import pytest

from imagebridge.dicomweb import stow


def _on_own_loop(main: Callable[[], object]) -> None:
    """A browser test may have left an event loop running in this thread: use another."""
    errors: list[BaseException] = []

    def run() -> None:
        try:
            asyncio.run(main())  # type: ignore[arg-type]
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    thread.join(30)
    assert not thread.is_alive() and not errors, errors


def test_parts_in_flight(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(stow, "IN_FLIGHT", 4)  # the script below counts on four slots
    running, most, done = [0], [0], []
    lock = threading.Lock()
    gates = [threading.Event() for _ in range(10)]
    wakes: list[int] = []

    def part(n: int) -> Callable[[], None]:
        def work() -> None:
            with lock:
                running[0] += 1
                most[0] = max(most[0], running[0])
            gates[n].wait(10)
            with lock:
                running[0] -= 1
                done.append(n)

        return work

    async def main() -> None:
        loop = asyncio.get_running_loop()
        real = loop.call_soon_threadsafe

        def counted(callback: Callable[..., object], *args: object) -> asyncio.Handle:
            wakes.append(1)
            return real(callback, *args)

        monkeypatch.setattr(loop, "call_soon_threadsafe", counted)
        in_flight = stow._InFlight()
        for n in range(stow.IN_FLIGHT):
            await in_flight.start(part(n))
        for gate in gates[:2]:
            gate.set()
        time.sleep(0.2)  # the loop is busy elsewhere (not waiting) while two parts finish
        assert sorted(done) == [0, 1] and wakes == []
        await in_flight.start(part(4))  # slots are free: no wait, no wake
        await in_flight.start(part(5))
        assert wakes == []
        starting = asyncio.ensure_future(in_flight.start(part(6)))  # all slots busy: waits
        await asyncio.sleep(0.05)
        assert not starting.done()
        gates[2].set()
        await asyncio.wait_for(starting, 5)
        assert len(wakes) == 1
        for gate in gates:
            gate.set()
        await asyncio.wait_for(in_flight.wait(), 5)
        assert sorted(done) == [0, 1, 2, 3, 4, 5, 6]

    _on_own_loop(main)
    assert most[0] == stow.IN_FLIGHT
    assert 1 <= len(wakes) <= 1 + stow.IN_FLIGHT


def test_a_failing_part_still_frees_its_slot() -> None:
    async def main() -> None:
        in_flight = stow._InFlight()

        def fails() -> None:
            raise RuntimeError("boom")

        for _ in range(stow.IN_FLIGHT * 3):
            await asyncio.wait_for(in_flight.start(fails), 5)
        await asyncio.wait_for(in_flight.wait(), 5)
        assert in_flight._running == 0

    _on_own_loop(main)
