"""The Python-backend model gives freed memory back to the OS once an instance idles: once at
load, then after each quiet spell, never while a request runs; MKL's kept work buffers go too."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch

from generator.runtime.model import IdleRelease, _malloc_trim, _mkl_free_buffers, release_memory

ROOT = Path(__file__).resolve().parents[2]


class Calls:
    def __init__(self, takes_s: float = 0.0):
        self.at = []
        self.takes_s = takes_s

    def __call__(self):
        self.at.append(time.monotonic())
        time.sleep(self.takes_s)


def _wait_for(cond, timeout=5.0):
    end = time.monotonic() + timeout
    while not cond() and time.monotonic() < end:
        time.sleep(0.01)
    return cond()


def test_memory_is_released_at_load_and_after_each_quiet_spell_only():
    release = Calls()
    idle = IdleRelease(0.3, release)
    try:
        assert len(release.at) == 1  # what loading left
        time.sleep(0.5)
        assert len(release.at) == 1  # no request yet: nothing new to release
        idle.busy()
        time.sleep(0.7)  # a long request: never released under it
        assert len(release.at) == 1
        idle.done()
        ended = time.monotonic()
        assert _wait_for(lambda: len(release.at) == 2)
        assert release.at[1] - ended >= 0.29  # after the quiet spell, not before
        time.sleep(0.6)
        assert len(release.at) == 2  # once per quiet spell
        for _ in range(5):  # requests closer together than the spell: none in between
            idle.busy()
            time.sleep(0.05)
            idle.done()
        assert len(release.at) == 2
        assert _wait_for(lambda: len(release.at) == 3)
    finally:
        idle.stop()


def test_a_request_that_arrives_during_a_release_waits_for_it():
    release = Calls(takes_s=0.4)
    idle = IdleRelease(0.05, release)  # the first release runs in the constructor
    try:
        idle.busy()
        idle.done()
        assert _wait_for(lambda: len(release.at) == 2)  # the release after the quiet spell
        asked = time.monotonic()
        idle.busy()  # arrives while that release runs
        started = time.monotonic()
        idle.done()
        assert started - asked >= 0.2
        assert started >= release.at[1] + 0.39  # began once the release had ended
    finally:
        idle.stop()


def test_a_release_never_starts_under_a_running_request():
    release = Calls()
    idle = IdleRelease(0.05, release)
    overlaps = []
    try:
        running = threading.Event()

        def track():
            overlaps.append(running.is_set())
        idle._release = lambda: (track(), release())
        for _ in range(20):
            idle.busy()
            running.set()
            time.sleep(0.08)  # longer than the quiet spell
            running.clear()
            idle.done()
            time.sleep(0.07)
        assert len(release.at) > 5  # releases did run between the requests
        assert not any(overlaps)
    finally:
        idle.stop()


def test_a_stopped_or_disabled_release_never_runs():
    release = Calls()
    idle = IdleRelease(0.1, release)
    idle.stop()
    idle.busy()
    idle.done()
    time.sleep(0.3)
    assert len(release.at) == 1
    off = Calls()
    disabled = IdleRelease(0, off)
    disabled.busy()
    disabled.done()
    time.sleep(0.2)
    assert off.at == []


def test_this_c_library_has_malloc_trim():
    trim = _malloc_trim()
    assert trim is not None and trim(0) in (0, 1)
    assert release_memory() is not None


@pytest.mark.skipif(not torch.backends.mkl.is_available(), reason="this torch is built without MKL")
def test_the_release_frees_what_mkl_keeps_after_a_forward_pass():
    """resnet50 with channels_last weights on one thread: MKL keeps ~25 MiB of work buffers
    after its first forward pass, which malloc_trim alone cannot give back."""
    assert _mkl_free_buffers() is not None
    script = """
import ctypes, torch, torchvision
from generator.runtime.model import _malloc_trim, release_memory
class Info(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in ("arena", "ordblks", "smblks", "hblks", "hblkhd",
                "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]
info = ctypes.CDLL(None).mallinfo2
info.restype = Info
def held():
    m = info()
    return (m.uordblks + m.hblkhd) / 2**20
torch.set_num_threads(1)
model = torchvision.models.resnet50().eval().to(memory_format=torch.channels_last)
x = torch.randn(2, 3, 224, 224)
with torch.inference_mode():
    before = model(x)
    _malloc_trim()(0)
    trimmed = held()
    release_memory()()
    released = held()
    after = model(x)
print(trimmed - released, torch.equal(before, after))
"""
    out = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True,
                         text=True, timeout=300, check=True).stdout.split()
    freed_mib, same = float(out[0]), out[1]
    assert freed_mib > 10, f"the release freed {freed_mib:.1f} MiB more than malloc_trim alone"
    assert same == "True"  # the next forward pass answers the same
