"""Executor.map for unirun's executors: Python 3.14's semantics (buffersize) on every version.

One implementation serves the package's executors and compat's, so `buffersize=` behaves the
same wherever unirun runs, also on 3.11-3.13 whose Executor.map lacks it.
"""

import collections
import itertools
import time
import weakref

__all__ = ["map_calls", "map_chunked", "check_buffersize"]


def check_buffersize(buffersize):
    if buffersize is not None and not isinstance(buffersize, int):
        raise TypeError("buffersize must be an integer or None")
    if buffersize is not None and buffersize < 1:
        raise ValueError("buffersize must be None or > 0")


def map_chunked(executor, fn, iterables, timeout, chunksize, buffersize, run_chunk):
    """Executor.map where calls cross to another interpreter, process or machine: chunksize > 1
    sends them in batches, as ProcessPoolExecutor does. run_chunk(fn, chunk) runs one batch
    where the executor runs calls (each executor names one its workers can load)."""
    if chunksize < 1:
        raise ValueError("chunksize must be >= 1.")
    if chunksize == 1:
        return map_calls(executor, fn, iterables, timeout, buffersize)
    chunks = _chunks(zip(*iterables), chunksize)
    results = map_calls(executor, run_chunk, (itertools.repeat(fn), chunks), timeout, buffersize)
    return itertools.chain.from_iterable(results)


def _chunks(iterable, size):
    iterator = iter(iterable)
    while chunk := tuple(itertools.islice(iterator, size)):
        yield chunk


def map_calls(executor, fn, iterables, timeout=None, buffersize=None):
    """The iterator Executor.map returns: calls submitted now (all of them, or the first
    `buffersize`, then one more each time a result is taken), results in input order, each
    awaited until `timeout` seconds from now; what is left is cancelled when the iterator is
    closed or fails."""
    check_buffersize(buffersize)
    deadline = None if timeout is None else time.monotonic() + timeout
    arguments = zip(*iterables)
    first = itertools.islice(arguments, buffersize) if buffersize else arguments
    pending = collections.deque(executor.submit(fn, *args) for args in first)
    # Weak: the iterator must not keep the executor alive (its finalizer shuts it down).
    owner = weakref.ref(executor)
    del executor

    def results():
        try:
            while pending:
                if buffersize:
                    executor = owner()
                    args = next(arguments, None) if executor is not None else None
                    if args is not None:
                        pending.append(executor.submit(fn, *args))
                    del executor
                if deadline is None:
                    yield _result_or_cancel(pending.popleft(), None)
                else:
                    yield _result_or_cancel(pending.popleft(), deadline - time.monotonic())
        finally:
            for future in pending:
                future.cancel()

    return results()


def _result_or_cancel(future, timeout):
    try:
        return future.result(timeout)
    finally:
        future.cancel()  # only takes effect if result() timed out or was interrupted
