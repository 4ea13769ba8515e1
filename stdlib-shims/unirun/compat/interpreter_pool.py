"""concurrent.futures.InterpreterPoolExecutor with Python 3.14's API, on the native scheduler's
subinterpreter workers (each with its own GIL).

On 3.14+ it derives from the standard class (isinstance checks hold) and reports as it does:
what cannot cross to a worker fails the task's future with NotShareableError, a task's
exception is caused by concurrent.interpreters.ExecutionFailed, and an initializer that fails
or cannot cross is logged and breaks the pool (BrokenInterpreterPool). On 3.13 it is a backport
that behaves the same way.
"""

from __future__ import annotations

import functools
import weakref

from concurrent.futures import _base

import _unirun

from .. import _native
from .._mapping import map_calls
from . import thread_pool

__all__ = ["InterpreterPoolExecutor", "BrokenInterpreterPool"]

try:  # 3.14+: the standard class, taken before the hook replaces the module's attribute
    from concurrent.futures import interpreter as _stdlib
except ImportError:  # 3.13, or a runtime without _interpreters
    _stdlib = None
_STDLIB_INTERPRETER_POOL = getattr(_stdlib, "InterpreterPoolExecutor", None)

if _stdlib is not None:
    BrokenInterpreterPool = _stdlib.BrokenInterpreterPool
else:
    class BrokenInterpreterPool(thread_pool.BrokenThreadPool):
        """An interpreter worker could not start (3.14: concurrent.futures.interpreter)."""

if _STDLIB_INTERPRETER_POOL is None:
    _BASES = (thread_pool.ThreadPoolExecutor,)
elif issubclass(_STDLIB_INTERPRETER_POOL, thread_pool.ThreadPoolExecutor):
    # The stdlib module was loaded after the hook replaced its ThreadPoolExecutor with ours.
    _BASES = (_STDLIB_INTERPRETER_POOL,)
else:
    _BASES = (thread_pool.ThreadPoolExecutor, _STDLIB_INTERPRETER_POOL)


class InterpreterPoolExecutor(*_BASES):
    """Like 3.14's InterpreterPoolExecutor: a ThreadPoolExecutor whose workers each run in
    their own subinterpreter. The callable, its arguments and its result cross by pickle
    (marshal for simple built-in values; functions without closures, defaults or globals by
    their code, as 3.14 shares them).
    """

    _counter = __import__("itertools").count().__next__
    _broken_error = BrokenInterpreterPool
    BROKEN = BrokenInterpreterPool

    def __init__(self, max_workers=None, thread_name_prefix="", initializer=None, initargs=()):
        if max_workers is None:
            max_workers = thread_pool._cpu_count()
        # Not the stdlib class's __init__: it prepares contexts for its own workers.
        thread_pool.ThreadPoolExecutor.__init__(
            self, max_workers, thread_name_prefix or f"InterpreterPoolExecutor-{self._counter()}",
            initializer, initargs)

    def _make_pool(self, initializer):
        # The initializer runs in each worker's own subinterpreter, before its first task: it
        # travels with the worker's start-up data. If it fails, or cannot be sent, the worker
        # reports it here: logged, and the pool is broken, as the stdlib's.
        if self._initializer is not None:
            initializer = functools.partial(self._initializer, *self._initargs)
        pool = _unirun.Pool("interpreters", self._max_workers, self._thread_name_prefix, initializer)
        _native.on_worker_start_failure(pool, functools.partial(_start_failed, weakref.ref(self)))
        return pool

    def submit(self, fn, /, *args, **kwargs):
        try:
            return self._submit_call(fn, args, kwargs)
        except _native.CannotSendError as exc:
            # As the stdlib's: the future fails, the executor goes on.
            return _not_shareable_future(exc)

    submit.__doc__ = _base.Executor.submit.__doc__

    def map(self, fn, *iterables, timeout=None, chunksize=1, buffersize=None):
        return map_calls(self, fn, iterables, timeout, buffersize)

    map.__doc__ = _base.Executor.map.__doc__


def _start_failed(executor_ref, exc):
    _base.LOGGER.critical("Exception in initializer:", exc_info=exc)
    executor = executor_ref()
    if executor is not None:
        executor._initializer_failed()


def _not_shareable_future(cause):
    middle = _native.NotShareableError("object could not be pickled")
    middle.__cause__ = cause
    error = _native.NotShareableError("args not shareable")
    error.__cause__ = middle
    future = _base.Future()
    future.set_exception(error)
    return future


_ready = True
# If importing this module is what loaded concurrent.futures.interpreter, the hook deferred
# adjusting it.
from . import _adjusted  # noqa: E402

if _stdlib is not None:
    _adjusted("concurrent.futures.interpreter")
