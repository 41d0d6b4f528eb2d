"""Overlap the CPU side of inference (reading studies, the processor) with the device work on the previous batch."""

from __future__ import annotations


class Prefetch:
    """Iterate `fn(item)` for `item` in `items`, produced on a background thread up to `depth` results ahead.

    Overlaps the CPU side of a batch (reading a study, the processor's image resize/normalise and tokenisation)
    with the device work on the previous batch; PIL and torch release the GIL in their kernels. Iterating `items`
    happens on the thread too (a DataLoader's reading included). An exception is re-raised in the consumer at the
    item that caused it; `len()` is that of `items`; leaving the loop early stops the thread.
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

