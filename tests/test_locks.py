"""The one lock helper (``harness/locks.py``): exclusive between threads of one process
too (each acquire opens the file anew), waiting or not, released on leaving the block."""

from __future__ import annotations

import threading
from pathlib import Path

from harness import locks


def test_a_lock_excludes_another_thread_until_released(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "folder" / "x.lock"  # the folder is created
    order: list[str] = []
    holding, leave = threading.Event(), threading.Event()

    def holder() -> None:
        with locks.held(path):
            order.append("first in")
            holding.set()
            leave.wait(30)
            order.append("first out")

    def waiter() -> None:
        with locks.held(path):  # blocks until the holder leaves its block
            order.append("second in")

    first = threading.Thread(target=holder)
    first.start()
    assert holding.wait(30)
    assert locks.acquire(path, wait=False) is None  # held: no wait, no lock
    second = threading.Thread(target=waiter)
    second.start()
    second.join(0.3)
    assert second.is_alive() and order == ["first in"]
    leave.set()
    first.join(30)
    second.join(30)
    assert order == ["first in", "first out", "second in"]
    again = locks.acquire(path, wait=False)
    assert again is not None
    again.release()
    again.release()  # twice is harmless
