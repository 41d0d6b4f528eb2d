"""The one batching loop of inference: the CPU side of the next batches (reading DICOM studies, picking slices, the
processor) runs while the device works on the current one. The pipeline and `decoding.decode_batches` both iterate
`prefetched_batches`.

    for batch, encoded in prefetched_batches(studies, 8, prepare=lambda b: prepare_inputs(processor, b)):
        preds = constrained_decode(model, processor, batch, encoded=encoded)

With a `WorkerPool` the batches are made in worker processes (a DICOM study takes a core for a while, and a thread
would also fight the device loop for the GIL); without, on one background thread.
"""

from __future__ import annotations

import collections
import itertools
import multiprocessing
import os
from typing import Any, Callable, Iterable, Iterator


def chunked(items: Iterable, size: int) -> Iterator[list]:
    """Consecutive lists of `size` items (the last may be shorter); lazy, so generators and streams work."""
    it = iter(items)
    size = max(1, int(size))
    while chunk := list(itertools.islice(it, size)):
        yield chunk


def prefetched_batches(items: Iterable, batch_size: int, load: Callable[[Any], Any] | None = None,
                       prepare: Callable[[list], Any] | None = None, depth: int = 1,
                       pool: "WorkerPool | None" = None) -> Iterator[tuple[list, Any]]:
    """Yield `(batch, prepare(batch))` for consecutive batches of `load(item)`, made ahead of the consumer.

    Args:
        items: any iterable (list, generator, streamed dataset); read lazily.
        load: per item, e.g. reading a DICOM study folder (default: the item itself).
        prepare: per batch, e.g. the processor call (default: None).
        depth: batches made ahead beyond those being made.
        pool: worker processes that make each batch instead (`WorkerPool`; `load`/`prepare` are then its own).
    """
    if pool is not None:
        return pool.batches(chunked(items, batch_size), depth)
    load = load or (lambda x: x)

    def make(chunk: list) -> tuple[list, Any]:
        batch = [load(x) for x in chunk]
        return batch, prepare(batch) if prepare is not None else None

    return iter(Prefetch(chunked(items, batch_size), make, depth))


class WorkerPool:
    """Processes that make batches: `make(state, chunk)` in each, with `state = init(*init_args)` built once per
    process. They are started by forkserver (or spawn), never forked from the caller: a process that holds a GPU
    context or OpenMP threads cannot be forked safely. `init` and `make` must be module-level functions, and what
    crosses between processes must pickle; tensors come back as plain arrays (no shared memory, which small
    container /dev/shm sizes make fail), exactly as they were (bf16 included).
    """

    def __init__(self, workers: int, init: Callable, init_args: tuple, make: Callable) -> None:
        from concurrent.futures import ProcessPoolExecutor

        methods = multiprocessing.get_all_start_methods()
        ctx = multiprocessing.get_context("forkserver" if "forkserver" in methods else "spawn")
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
        self.workers = workers
        self.executor = ProcessPoolExecutor(workers, mp_context=ctx, initializer=_init_worker,
                                            initargs=(init, init_args, make))

    def batches(self, chunks: Iterator[list], depth: int = 1) -> Iterator[tuple[list, Any]]:
        """`make(chunk)` for each chunk, in order, at most `workers + depth` chunks in flight (a long stream is never
        read ahead of what the device takes)."""
        pending: collections.deque = collections.deque()
        for chunk in itertools.islice(chunks, self.workers + depth):
            pending.append(self.executor.submit(_run_in_worker, chunk))
        while pending:
            result = unpack(pending.popleft().result())
            chunk = next(chunks, None)
            if chunk is not None:
                pending.append(self.executor.submit(_run_in_worker, chunk))
            yield result

    def close(self) -> None:
        self.executor.shutdown(wait=False, cancel_futures=True)


_WORKER: dict = {}


def _init_worker(init: Callable, init_args: tuple, make: Callable) -> None:
    import torch

    torch.set_num_threads(1)  # one core per worker: the workers together take the CPU, not each of them
    _WORKER.update(state=init(*init_args), make=make)


def _run_in_worker(chunk: list):
    return pack(_WORKER["make"](_WORKER["state"], chunk))


def pack(obj: Any) -> Any:
    """Tensors inside dicts / lists / tuples as ("tensor", dtype, raw numpy) so that they pickle as bytes."""
    import torch

    if isinstance(obj, torch.Tensor):
        t = obj.detach().cpu().contiguous()
        raw = t.view(torch.int16) if t.dtype == torch.bfloat16 else t  # numpy has no bfloat16: keep its bits
        return ("__tensor__", str(t.dtype), raw.numpy())
    if isinstance(obj, dict) or hasattr(obj, "data") and isinstance(getattr(obj, "data"), dict):
        d = obj if isinstance(obj, dict) else obj.data
        return {"__mapping__": type(obj).__module__ + ":" + type(obj).__qualname__,
                "items": {k: pack(v) for k, v in d.items()}}
    if isinstance(obj, (list, tuple)):
        return type(obj)(pack(v) for v in obj)
    return obj


def unpack(obj: Any) -> Any:
    """The inverse of `pack`."""
    import torch

    if isinstance(obj, tuple) and len(obj) == 3 and obj[0] == "__tensor__":
        dtype = getattr(torch, obj[1].replace("torch.", ""))
        t = torch.from_numpy(obj[2])
        return t.view(dtype) if dtype == torch.bfloat16 else t
    if isinstance(obj, dict) and "__mapping__" in obj:
        items = {k: unpack(v) for k, v in obj["items"].items()}
        if obj["__mapping__"] == "builtins:dict":
            return items
        import importlib

        module, name = obj["__mapping__"].split(":")
        return getattr(importlib.import_module(module), name)(items)
    if isinstance(obj, (list, tuple)):
        return type(obj)(unpack(v) for v in obj)
    return obj


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

