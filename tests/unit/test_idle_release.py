"""The Python-backend model gives freed memory back to the OS once an instance idles: once at
load, then after each quiet spell, never while a request runs."""

from __future__ import annotations

import time

from generator.runtime.model import IdleRelease, _malloc_trim


class Calls:
    def __init__(self):
        self.at = []

    def __call__(self, pad):
        assert pad == 0
        self.at.append(time.monotonic())
        return 1


def _wait_for(cond, timeout=5.0):
    end = time.monotonic() + timeout
    while not cond() and time.monotonic() < end:
        time.sleep(0.01)
    return cond()


def test_memory_is_released_at_load_and_after_each_quiet_spell_only():
    trim = Calls()
    idle = IdleRelease(0.3, trim)
    try:
        assert len(trim.at) == 1  # what loading left
        time.sleep(0.5)
        assert len(trim.at) == 1  # no request yet: nothing new to release
        idle.busy()
        time.sleep(0.7)  # a long request: never released under it
        assert len(trim.at) == 1
        idle.done()
        ended = time.monotonic()
        assert _wait_for(lambda: len(trim.at) == 2)
        assert trim.at[1] - ended >= 0.29  # after the quiet spell, not before
        time.sleep(0.6)
        assert len(trim.at) == 2  # once per quiet spell
        for _ in range(5):  # requests closer together than the spell: none in between
            idle.busy()
            time.sleep(0.05)
            idle.done()
        assert len(trim.at) == 2
        assert _wait_for(lambda: len(trim.at) == 3)
    finally:
        idle.stop()


def test_a_stopped_or_disabled_release_never_runs():
    trim = Calls()
    idle = IdleRelease(0.1, trim)
    idle.stop()
    idle.busy()
    idle.done()
    time.sleep(0.3)
    assert len(trim.at) == 1
    off = Calls()
    IdleRelease(0, off).done()
    time.sleep(0.2)
    assert off.at == []


def test_this_c_library_has_malloc_trim():
    trim = _malloc_trim()
    assert trim is not None and trim(0) in (0, 1)
