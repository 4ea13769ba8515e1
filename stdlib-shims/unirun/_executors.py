"""concurrent.futures executors served by unirun's native scheduler (the _unirun module).

ThreadExecutor runs calls on native worker threads of this interpreter; InterpreterExecutor
runs them on native workers that each own a subinterpreter with its own GIL; ProcessExecutor on
native workers that each drive one child process. All return
concurrent.futures.Future objects (a native subclass), so wait(), as_completed() and
asyncio.wrap_future() work unchanged.
"""

import concurrent.futures
import itertools
import os
import threading
import weakref

import _unirun

from ._mapping import map_calls, map_chunked

__all__ = ["ThreadExecutor", "InterpreterExecutor", "ProcessExecutor"]

_counter = itertools.count()


def _cpu_count():
    count = getattr(os, "process_cpu_count", os.cpu_count)()
    return count or 1


class _NativeExecutor(concurrent.futures.Executor):
    _kind = None
    _chunks_calls = False  # whether map(chunksize=) batches calls

    def __init__(self, max_workers=None, thread_name_prefix="", **pool_options):
        if max_workers is None:
            max_workers = self._default_workers()
        if not isinstance(max_workers, int) or isinstance(max_workers, bool):
            raise TypeError(f"max_workers must be an int, not {type(max_workers).__name__}")
        if max_workers <= 0:
            raise ValueError("max_workers must be greater than 0")
        prefix = thread_name_prefix or f"{type(self).__name__}-{next(_counter)}"
        self._pool = _unirun.Pool(self._kind, max_workers, prefix, **pool_options)
        self._max_workers = max_workers
        # When the executor is dropped without shutdown, its idle workers leave (as
        # ThreadPoolExecutor's do); queued work still runs.
        weakref.finalize(self, self._pool.shutdown, False)

    @staticmethod
    def _default_workers():
        raise NotImplementedError

    def submit(self, fn, /, *args, **kwargs):
        return self._pool.submit(fn, args, kwargs or None)

    def map(self, fn, *iterables, timeout=None, chunksize=1, buffersize=None):
        """Like Executor.map (with 3.14's buffersize on every Python); chunksize > 1 sends
        calls in batches, as ProcessPoolExecutor, where the executor sends calls to another
        interpreter (ThreadPoolExecutor ignores chunksize; so do thread workers)."""
        if not self._chunks_calls:
            return map_calls(self, fn, iterables, timeout, buffersize)
        return map_chunked(self, fn, iterables, timeout, chunksize, buffersize, _run_chunk)

    def shutdown(self, wait=True, *, cancel_futures=False):
        self._pool.shutdown(cancel_futures)
        if wait:
            current = threading.current_thread()
            for thread in self._pool.threads:
                if thread is not current:  # shutdown from inside one of our own tasks
                    thread.join()

    def stats(self):
        """The scheduler's counters: submitted, started, completed, failed, cancelled,
        queue_depth, workers_alive, workers_busy, workers_started."""
        return self._pool.counters()


class ThreadExecutor(_NativeExecutor):
    """Native worker threads in this interpreter (parallel on a free-threaded build)."""

    _kind = "threads"

    @staticmethod
    def _default_workers():
        return min(32, _cpu_count() + 4)  # ThreadPoolExecutor's default


def _run_chunk(fn, chunk):
    return [fn(*args) for args in chunk]


class InterpreterExecutor(_NativeExecutor):
    """Native workers that each own a subinterpreter with its own GIL.

    The callable and its arguments travel by pickle, so they must be importable by name
    (module-level functions, including those of the main script) and picklable; functions
    without closures, defaults or globals (local ones, lambdas) travel by their code.
    """

    _kind = "interpreters"
    _chunks_calls = True

    @staticmethod
    def _default_workers():
        return _cpu_count()


class ProcessExecutor(_NativeExecutor):
    """Native workers that each drive one child process: unirun-python on this runtime, started
    by exec (never fork), fed one call at a time over a pipe.

    Calls travel as to interpreter workers: by pickle (functions of the main script included;
    the child loads it as __mp_main__ when a call needs it), and functions without closures,
    defaults or globals by their code. Large bytes, bytearray and buffer arguments and results
    travel beside the pickle, without its copies. A child that dies (a crash, os._exit, a
    signal) fails its running task with BrokenProcessPool naming how it ended; the worker starts
    a new child for its next task (traced as process-worker-replaced). max_tasks_per_child
    replaces a child after that many tasks.
    """

    _kind = "processes"
    _chunks_calls = True

    def __init__(self, max_workers=None, initializer=None, initargs=(), *, max_tasks_per_child=None,
                 thread_name_prefix="", _strict=False, _context=None):
        if initializer is not None and not callable(initializer):
            raise TypeError("initializer must be a callable")
        if max_tasks_per_child is not None:
            if not isinstance(max_tasks_per_child, int) or isinstance(max_tasks_per_child, bool):
                raise TypeError("max_tasks_per_child must be an integer")
            if max_tasks_per_child <= 0:
                raise ValueError("max_tasks_per_child must be >= 1")
        if initializer is not None and initargs:
            import functools

            initializer = functools.partial(initializer, *initargs)
        # (_strict: the stdlib's process pool rules, for compat's ProcessPoolExecutor: see
        # unirun._native.set_process_settings; _context: its mp_context.)
        super().__init__(max_workers, thread_name_prefix, initializer=initializer,
                         max_tasks_per_child=max_tasks_per_child or 0, strict=_strict)
        from . import _native

        self._settings = _native.set_process_settings(self._pool, _context, _strict)

    @staticmethod
    def _default_workers():
        return _cpu_count()
