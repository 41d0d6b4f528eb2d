"""hubkit.training.cpu: CPU training takes the cores other processes leave free."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from hubkit.training.cpu import OthersMeter, cores, fair_threads, threads_for


@pytest.mark.parametrize("n,others,want", [(2, None, 2), (2, 0.0, 2), (2, 0.1, 2), (2, 0.9, 1), (2, 2.0, 1),
                                           (16, 3.2, 13), (4, 0.7, 3)])
def test_threads_for(n, others, want):
    assert threads_for(n, others) == want


def test_fair_threads_never_exceed_what_the_process_was_given():
    assert fair_threads(cap=1, sample_s=0.05) == 1  # OMP_NUM_THREADS=1 stays 1 on an idle many-core machine
    assert 1 <= fair_threads(sample_s=0.05) <= cores()


@pytest.mark.skipif(sys.platform != "linux", reason="reads /proc/stat")
def test_meter_sees_a_busy_neighbour_and_not_itself():
    """Relative to what else the machine runs meanwhile (a shared CI box has neighbours of its own)."""
    meter = OthersMeter()
    time.sleep(0.6)
    idle = meter.read()
    if idle > cores() - 1:
        pytest.skip(f"other processes already keep {idle:.1f} of {cores()} cores busy: nothing left to measure")
    end = time.monotonic() + 0.6
    while time.monotonic() < end:  # this process busy: not counted as "others"
        pass
    assert meter.read() < idle + 0.5
    hog = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(0.3)
        meter.read()
        time.sleep(1.0)
        others = meter.read()
    finally:
        hog.kill()
    assert others > idle + 0.4
