"""The one batching loop of inference: the CPU side of the next batches (reading DICOM studies, picking slices, the
processor) runs while the device works on the current one. The pipeline and `decoding.decode_batches` both iterate
`prefetched_batches`.

    for batch, encoded in prefetched_batches(studies, 8, prepare=lambda b: prepare_inputs(processor, b)):
        preds = constrained_decode(model, processor, batch, encoded=encoded)

With `workers` > 0 the batches are made in that many forked worker processes (a DICOM study takes a core for a
while, and a thread would also fight the device loop for the GIL); with 0, on one background thread.
"""

from __future__ import annotations

import collections
import itertools
import multiprocessing
import os
import threading
from typing import Any, Callable, Iterable, Iterator


def chunked(items: Iterable, size: int) -> Iterator[list]:
    """Consecutive lists of `size` items (the last may be shorter); lazy, so generators and streams work."""
    it = iter(items)
    size = max(1, int(size))
    while chunk := list(itertools.islice(it, size)):
        yield chunk


def prefetched_batches(items: Iterable, batch_size: int, load: Callable[[Any], Any] | None = None,
                       prepare: Callable[[list], Any] | None = None, depth: int = 1,
                       workers: int = 0) -> Iterator[tuple[list, Any]]:
    """Yield `(batch, prepare(batch))` for consecutive batches of `load(item)`, made ahead of the consumer.

    Args:
        items: any iterable (list, generator, streamed dataset); read lazily.
        load: per item, e.g. reading a DICOM study folder (default: the item itself).
        prepare: per batch, e.g. the processor call (default: None).
        depth: batches made ahead beyond those being made.
        workers: worker processes making batches (0: one background thread). Items and results cross a process
            boundary then, so they must pickle.
    """
    load = load or (lambda x: x)

    def make(chunk: list) -> tuple[list, Any]:
        batch = [load(x) for x in chunk]
        return batch, prepare(batch) if prepare is not None else None

    if workers > 0 and "fork" in multiprocessing.get_all_start_methods():
        return _in_processes(chunked(items, batch_size), make, workers, depth)
    return iter(Prefetch(chunked(items, batch_size), make, depth))


_MAKE: Callable | None = None  # the batch maker a forked worker runs (inherited, so it is never pickled)
_FORK_LOCK = threading.Lock()


def _run_in_worker(chunk: list):
    return _MAKE(chunk)


def _in_processes(chunks: Iterator[list], make: Callable, workers: int, depth: int) -> Iterator[tuple[list, Any]]:
    """`make(chunk)` for each chunk in forked worker processes, results in order, at most `workers + depth` chunks
    in flight (so a long stream is never read ahead of what the device can take). Tensors in the results come
    back through shared memory (torch registers its reductions with multiprocessing)."""
    global _MAKE
    import torch.multiprocessing  # noqa: F401  (tensor reductions: shared memory instead of pickled bytes)

    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")  # fast tokenizers refuse threads after a fork anyway
    with _FORK_LOCK:
        _MAKE = make
        pool = multiprocessing.get_context("fork").Pool(workers)
    pending: collections.deque = collections.deque()
    try:
        for chunk in itertools.islice(chunks, workers + depth):
            pending.append(pool.apply_async(_run_in_worker, (chunk,)))
        while pending:
            result = pending.popleft().get()
            chunk = next(chunks, None)
            if chunk is not None:
                pending.append(pool.apply_async(_run_in_worker, (chunk,)))
            yield result
    finally:
        pool.terminate()
        pool.join()


class Prefetch:
    """Iterate `fn(item)` for `item` in `items`, produced on a background thread up to `depth` results ahead.

    Overlaps the CPU side of a batch (reading a study, the processor's image resize/normalise and tokenisation)
    with the device work on the previous batch; PIL and torch release the GIL in their kernels. Iterating `items`
    happens on the thread too (a DataLoader's reading included). An exception is re-raised in the consumer at the
    item that caused it; `len()` is that of `items` (when it has one); leaving the loop early stops the thread.
    """

    _END = object()

    def __init__(self, items, fn=lambda x: x, depth: int = 1):
        self.items, self.fn, self.depth = items, fn, max(1, int(depth))

    def __len__(self) -> int:
        return len(self.items)

    def __iter__(self):
        import queue
        import threading

        q: queue.Queue = queue.Queue(self.depth)
        stop = threading.Event()

        def put(x) -> bool:
            while not stop.is_set():
                try:
                    q.put(x, timeout=0.1)
                    return True
                except queue.Full:
                    continue
            return False

        def produce():
            try:
                for item in self.items:
                    if not put((True, self.fn(item))):
                        return
            except BaseException as e:  # handed to the consumer, raised there
                put((False, e))
                return
            put((True, self._END))

        t = threading.Thread(target=produce, name="hubkit-prefetch", daemon=True)
        t.start()
        try:
            while True:
                ok, x = q.get()
                if not ok:
                    raise x
                if x is self._END:
                    return
                yield x
        finally:
            stop.set()
            t.join()

