"""The one batching loop of inference: the CPU side of batch k+1 (reading studies, the processor) runs while the
device works on batch k. The pipeline and `decoding.decode_batches` both iterate `prefetched_batches`.

    for batch, encoded in prefetched_batches(studies, 8, prepare=lambda b: prepare_inputs(processor, b)):
        preds = constrained_decode(model, processor, batch, encoded=encoded)
"""

from __future__ import annotations

import itertools
from typing import Any, Callable, Iterable, Iterator


def chunked(items: Iterable, size: int) -> Iterator[list]:
    """Consecutive lists of `size` items (the last may be shorter); lazy, so generators and streams work."""
    it = iter(items)
    size = max(1, int(size))
    while chunk := list(itertools.islice(it, size)):
        yield chunk


def prefetched_batches(items: Iterable, batch_size: int, load: Callable[[Any], Any] | None = None,
                       prepare: Callable[[list], Any] | None = None, depth: int = 1) -> Iterator[tuple[list, Any]]:
    """Yield `(batch, prepare(batch))` for consecutive batches of `load(item)`, made up to `depth` batches ahead on
    a background thread.

    Args:
        items: any iterable (list, generator, streamed dataset); read lazily, on the thread.
        load: per item, e.g. reading a DICOM study folder (default: the item itself).
        prepare: per batch, e.g. the processor call (default: None).
    """
    load = load or (lambda x: x)

    def make(chunk: list) -> tuple[list, Any]:
        batch = [load(x) for x in chunk]
        return batch, prepare(batch) if prepare is not None else None

    return iter(Prefetch(chunked(items, batch_size), make, depth))


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

