"""concurrent.futures.ThreadPoolExecutor, served by the native scheduler's thread workers."""

from __future__ import annotations

import functools
import itertools
import os
import threading
import weakref
from concurrent.futures import _base
from concurrent.futures import thread as _stdlib

import _unirun

__all__ = ["ThreadPoolExecutor", "BrokenThreadPool"]

BrokenThreadPool = _stdlib.BrokenThreadPool
_STDLIB_THREAD_POOL = _stdlib.ThreadPoolExecutor


def _cpu_count():
    return (getattr(os, "process_cpu_count", os.cpu_count)() or 1)


def _run_initializer(executor_ref, initializer, initargs):
    """In each new worker, before its first task; False breaks the pool, as the stdlib does."""
    try:
        initializer(*initargs)
        return True
    except BaseException:
        _base.LOGGER.critical("Exception in initializer:", exc_info=True)
        executor = executor_ref()
        if executor is not None:
            executor._initializer_failed()
        return False


class ThreadPoolExecutor(_STDLIB_THREAD_POOL):
    """The standard ThreadPoolExecutor's API and semantics, on native worker threads.

    Workers are threading.Thread objects named PREFIX_N, started as work arrives up to
    max_workers and reused; futures are native concurrent.futures.Future subclasses.
    """

    # Its own counter, so default names continue the stdlib's pattern without sharing it.
    _counter = itertools.count().__next__

    def __init__(self, max_workers=None, thread_name_prefix="", initializer=None, initargs=()):
        if max_workers is None:
            max_workers = min(32, _cpu_count() + 4)
        if max_workers <= 0:
            raise ValueError("max_workers must be greater than 0")
        if initializer is not None and not callable(initializer):
            raise TypeError("initializer must be a callable")
        self._max_workers = max_workers
        self._thread_name_prefix = thread_name_prefix or f"ThreadPoolExecutor-{self._counter()}"
        self._initializer = initializer
        self._initargs = initargs
        self._broken = False
        self._shutdown = False
        self._shutdown_lock = threading.Lock()
        init = None
        if initializer is not None:
            init = functools.partial(_run_initializer, weakref.ref(self), initializer, initargs)
        self._pool = self._make_pool(init)
        # Dropped without shutdown: idle workers leave once the queue is empty, as the stdlib's do.
        weakref.finalize(self, self._pool.shutdown, False)

    def _make_pool(self, initializer):
        return _unirun.Pool("threads", self._max_workers, self._thread_name_prefix, initializer)

    @property
    def _threads(self):
        return set(self._pool.threads)

    def submit(self, fn, /, *args, **kwargs):
        return self._submit_call(fn, args, kwargs)

    def _submit_call(self, fn, args, kwargs, start_with=None):
        """submit(), with a future to start together with the call (see _unirun.Pool)."""
        if self._broken or self._shutdown or _stdlib._shutdown:
            self._pool.note_rejected()  # counted in unirun.metrics(): executor.rejected
            if self._broken:
                raise self._broken_error(self._broken)
            if self._shutdown:
                raise RuntimeError("cannot schedule new futures after shutdown")
            raise RuntimeError("cannot schedule new futures after interpreter shutdown")
        return self._pool.submit(fn, args, kwargs or None, start_with)

    submit.__doc__ = _base.Executor.submit.__doc__

    _broken_error = BrokenThreadPool

    def _initializer_failed(self):
        with self._shutdown_lock:
            self._broken = ("A thread initializer failed, the thread pool is not usable anymore")
        self._pool.fail_pending(self._broken_error(self._broken))

    def _adjust_thread_count(self):
        """Workers start on demand inside the scheduler: nothing to adjust here."""

    def shutdown(self, wait=True, *, cancel_futures=False):
        with self._shutdown_lock:
            self._shutdown = True
        self._pool.shutdown(cancel_futures)
        if wait:
            current = threading.current_thread()
            for thread in self._pool.threads:
                if thread is not current:
                    thread.join()

    shutdown.__doc__ = _base.Executor.shutdown.__doc__


_ready = True
# If importing this module is what loaded concurrent.futures.thread, the hook deferred adjusting it.
from . import _adjusted  # noqa: E402

_adjusted("concurrent.futures.thread")
