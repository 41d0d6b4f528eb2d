"""CPU training that shares the machine fairly: size torch's threads to the cores other processes leave free.

PyTorch's CPU kernels run one OpenMP thread per core and wait for the slowest at every barrier, so when another
process holds one of two cores, two threads do not get half the speed: they get far less, spinning at barriers
behind a preempted sibling (BENCHMARKS.md 6). One thread per *free* core keeps every barrier short. The count is
set before training and re-checked while it runs, since neighbours come and go.

    from hubkit.training.cpu import fair_threads
    torch.set_num_threads(fair_threads(cap=torch.get_num_threads()))
"""

from __future__ import annotations

import logging
import math
import os
import time

log = logging.getLogger("hubkit.train")

_PROC_STAT = "/proc/stat"


def _busy_seconds() -> float | None:
    """CPU seconds all processes have spent busy since boot (Linux /proc/stat), or None where there is none."""
    try:
        with open(_PROC_STAT) as f:
            fields = [int(v) for v in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def cores() -> int:
    """The cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


class OthersMeter:
    """Cores used by *other* processes between two readings: all busy CPU time minus this process's own."""

    def __init__(self) -> None:
        self._last = (_busy_seconds(), time.process_time(), time.monotonic())

    def read(self) -> float | None:
        busy, own, now = _busy_seconds(), time.process_time(), time.monotonic()
        last_busy, last_own, last_now = self._last
        self._last = (busy, own, now)
        if busy is None or last_busy is None or now - last_now <= 0:
            return None
        return max(0.0, ((busy - last_busy) - (own - last_own)) / (now - last_now))


def threads_for(n_cores: int, others: float | None) -> int:
    """Threads for `n_cores` when other processes keep `others` cores busy: one per free core, at least one.
    A neighbour counts once it holds half a core or more (short blips do not take a thread away)."""
    if others is None:
        return n_cores
    return max(1, min(n_cores, n_cores - math.floor(others + 0.5)))


def fair_threads(cap: int | None = None, sample_s: float = 0.5) -> int:
    """Threads to use now: sample what other processes use for `sample_s` seconds. Never more than `cap` (the
    threads the process was given: OMP_NUM_THREADS or an explicit `torch.set_num_threads`), nor than its cores."""
    meter = OthersMeter()
    time.sleep(sample_s)
    return threads_for(_usable(cap), meter.read())


def _usable(cap: int | None) -> int:
    return max(1, min(cores(), cap)) if cap else cores()


def balancer(cap: int | None = None, every_s: float = 15.0):
    """A `TrainerCallback` that re-sizes torch's CPU threads every `every_s` seconds to the cores left free (at most
    `cap`, as `fair_threads`)."""
    import torch
    from transformers import TrainerCallback

    class ThreadBalancer(TrainerCallback):
        def __init__(self) -> None:
            self.meter, self.next = OthersMeter(), time.monotonic() + every_s

        def on_step_end(self, args, state, control, **kwargs):
            if time.monotonic() < self.next:
                return
            self.next = time.monotonic() + every_s
            want = threads_for(_usable(cap), self.meter.read())
            if want != torch.get_num_threads():
                log.info("cpu: %d thread(s) (other processes now use the rest of %d cores)", want, _usable(cap))
                torch.set_num_threads(want)

    return ThreadBalancer()
