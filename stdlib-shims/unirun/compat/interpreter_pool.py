"""concurrent.futures.InterpreterPoolExecutor with Python 3.14's API, on the native scheduler's
subinterpreter workers (each with its own GIL)."""

from __future__ import annotations

import functools
import pickle

from concurrent.futures import _base

import _unirun

from . import thread_pool

__all__ = ["InterpreterPoolExecutor", "BrokenInterpreterPool"]


class BrokenInterpreterPool(thread_pool.BrokenThreadPool):
    """An interpreter worker could not start (3.14: concurrent.futures.interpreter)."""


class InterpreterPoolExecutor(thread_pool.ThreadPoolExecutor):
    """Like 3.14's InterpreterPoolExecutor: a ThreadPoolExecutor whose workers each run in
    their own subinterpreter. The callable, its arguments and its result cross by pickle
    (marshal for simple built-in values); an unpicklable callable or argument fails at submit.
    """

    _counter = __import__("itertools").count().__next__
    _broken_error = BrokenInterpreterPool

    def __init__(self, max_workers=None, thread_name_prefix="", initializer=None, initargs=(),
                 *, shared=None):
        if shared:
            raise ValueError("shared= is not supported by unirun's interpreter workers; pass the "
                             "values as arguments instead")
        if initializer is not None:
            try:
                pickle.dumps((initializer, initargs))
            except Exception as exc:
                raise TypeError(f"the initializer and initargs must be picklable: {exc}") from exc
        if max_workers is None:
            max_workers = thread_pool._cpu_count()
        super().__init__(max_workers, thread_name_prefix or f"InterpreterPoolExecutor-{self._counter()}",
                         initializer, initargs)

    def _make_pool(self, initializer):
        # The initializer runs in each worker's own subinterpreter, before its first task: it
        # travels pickled with the worker's start-up data. If it fails, the worker's tasks end
        # with BrokenInterpreterPool.
        if self._initializer is not None:
            initializer = functools.partial(self._initializer, *self._initargs)
        return _unirun.Pool("interpreters", self._max_workers, self._thread_name_prefix, initializer)

    def map(self, fn, *iterables, timeout=None, chunksize=1):
        return super().map(fn, *iterables, timeout=timeout, chunksize=chunksize)

    map.__doc__ = _base.Executor.map.__doc__
