"""concurrent.futures.ProcessPoolExecutor under compat.

--process-pool=processes (the default): the native scheduler's process workers (one child
process per worker thread, started by exec; unirun._executors.ProcessExecutor is the core), with
the stdlib's semantics: a child that dies breaks the pool (BrokenProcessPool for its task, the
queued ones and new submits), an initializer that fails is logged and breaks it, what cannot be
pickled fails its future. A pool that asks for the fork start method (mp_context=get_context("fork")) wants workers
that inherit the parent's state: the standard class serves it, traced (fork-processes).

--process-pool=interpreters: subinterpreter workers, falling back to a real process pool, task
by task for tasks a subinterpreter cannot run, and whole for a pool whose configuration only
processes can honour."""

from __future__ import annotations

import functools
import itertools
import pickle
import threading
import weakref
import warnings
from concurrent.futures import _base
from concurrent.futures import process as _stdlib

import _unirun

from .. import _executors, _native, _trace
from .._capabilities import capabilities
from .._config import RuntimeConfig
from .._decide import Request, decide
from .._mapping import map_calls, map_chunked
from . import _process_worker, interpreter_pool

__all__ = ["ProcessPoolExecutor"]

# The standard class, taken before the hook replaces the module's attribute with ours.
_STDLIB_PROCESS_POOL = _stdlib.ProcessPoolExecutor

_warn_lock = threading.Lock()


def needs_a_process(exc):
    """True for a task that failed only because it ran in a subinterpreter: an extension
    refused to load there, or the call itself could not be loaded there."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, ImportError) and "subinterpreter" in str(exc):
            return True
        if getattr(exc, "_unirun_stage", None) == "load":
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def _record(reason_code, reason):
    trace = decide(Request(flavor="processes", name="process-pool-fallback"),
                   RuntimeConfig.from_env(), capabilities())
    trace.kind, trace.reason_code, trace.reason = "fallback", reason_code, reason
    trace.backend = "concurrent.futures.ProcessPoolExecutor"
    _trace.record(trace, path=RuntimeConfig.from_env().trace_path)


_warned_for = set()  # reason codes already warned about


def _warn_once(reason_code, message, stacklevel):
    with _warn_lock:
        if reason_code in _warned_for:
            return
        _warned_for.add(reason_code)
    warnings.warn(f"{message} (warned once)", RuntimeWarning, stacklevel=stacklevel + 1)


def _announce_fallback(fn, exc):
    name = getattr(fn, "__qualname__", fn)
    _record("subinterpreter-refused-processes", f"{name!s}: {exc}")
    _warn_once("subinterpreter-refused-processes",
               f"unirun: {name!s} cannot run in a subinterpreter ({exc}); such tasks run in a "
               "real process pool", stacklevel=3)


def _needs_real_processes(mp_context, initializer, initargs):
    """(reason code, text) when only real processes can honour the pool's configuration."""
    if not getattr(_unirun, "OWN_GIL_INTERPRETERS", True):
        return ("no-subinterpreters-processes", _unirun.OWN_GIL_INTERPRETERS_MISSING)
    if mp_context is not None:
        method = getattr(mp_context, "get_start_method", lambda: "?")()
        return ("mp-context-processes",
                f"ProcessPoolExecutor(mp_context={method!r} context) asks for worker processes "
                "started that way (forked workers inherit the parent's state)")
    if initializer is not None:
        try:
            pickle.dumps((initializer, initargs), protocol=5)
        except Exception as exc:
            return ("initargs-processes",
                    f"ProcessPoolExecutor's initializer or initargs cannot be sent to a "
                    f"subinterpreter ({exc}); they must be inherited by a process")
    return None


def _relay(source, target):
    """Copy a finished future's outcome to a running one."""
    if source.cancelled():
        target.set_exception(_base.CancelledError())
    elif source.exception() is not None:
        target.set_exception(source.exception())
    else:
        target.set_result(source.result())


def _fork_requested(mp_context):
    """(reason code, text) when the pool asks for forked workers. Without an mp_context the
    workers start by forkserver (3.14's default; spawn where there is none), whatever
    multiprocessing's default: its own machinery fixes that default as a side effect, so it
    cannot tell what the program chose."""
    method = getattr(mp_context, "get_start_method", lambda: None)() if mp_context else None
    if method == "fork":
        return ("fork-processes", "ProcessPoolExecutor asks for the fork start method, whose "
                "workers inherit the parent's state")
    return None


def _fork_objects(mp_context, initargs):
    """(reason code, text) when, with no mp_context, the initargs hold multiprocessing locks
    or semaphores made by multiprocessing's default context while that is fork (3.13 and
    before on Linux; tqdm's process_map passes one): only forked workers can share them."""
    if mp_context is not None:
        return None
    import multiprocessing

    # (Not multiprocessing.get_context(): it would fix the default start method as it reads it.)
    method = (multiprocessing.get_start_method(allow_none=True)
              or multiprocessing.context._default_context._default_context.get_start_method())
    if method != "fork":
        return None
    if any(hasattr(arg, "_semlock") for arg in initargs or ()):
        return ("fork-processes", "ProcessPoolExecutor's initargs hold multiprocessing locks made "
                "for forked processes (the default context here is fork)")
    return None


_BROKEN_POOL = "A child process terminated abruptly, the process pool is not usable anymore"
_BROKEN_TASK = ("A process in the process pool was terminated abruptly while the future was "
                "running or pending.")


def check_arguments(max_workers, mp_context, initializer, max_tasks_per_child):
    """ProcessPoolExecutor's own checks of its arguments, with its messages."""
    if max_workers is not None and max_workers <= 0:
        raise ValueError("max_workers must be greater than 0")
    if initializer is not None and not callable(initializer):
        raise TypeError("initializer must be a callable")
    if max_tasks_per_child is not None:
        if not isinstance(max_tasks_per_child, int):
            raise TypeError("max_tasks_per_child must be an integer")
        if max_tasks_per_child <= 0:
            raise ValueError("max_tasks_per_child must be >= 1")
        if mp_context is not None and mp_context.get_start_method() == "fork":
            raise ValueError("max_tasks_per_child is incompatible with the 'fork' "
                             "multiprocessing start method; supply a different mp_context.")


class ProcessPoolExecutor(_STDLIB_PROCESS_POOL):
    """The ProcessPoolExecutor API on unirun's process workers (or its subinterpreter workers,
    with a per-task fallback, under --process-pool=interpreters).

    A returned future goes running exactly when its task starts on a worker (so cancel()
    succeeds only before that); shutdown(cancel_futures=True) cancels exactly what has not
    started, and every future ends. A worker process that dies (or, on interpreter workers, a
    task that calls os._exit()) breaks the pool as a dying worker process breaks the stdlib's.
    """

    def __new__(cls, *args, **kwargs):
        from . import _state

        # --process-pool=dask: the pool is a Dask cluster's (compat/dask_pool.py). A program's
        # own subclass keeps its class, served by process workers.
        if cls is ProcessPoolExecutor and _state["process_pool"].startswith("dask"):
            from .dask_pool import DaskProcessPool

            return object.__new__(DaskProcessPool)
        return object.__new__(cls)

    def __init__(self, max_workers=None, mp_context=None, initializer=None, initargs=(), *,
                 max_tasks_per_child=None):
        check_arguments(max_workers, mp_context, initializer, max_tasks_per_child)
        self._max_workers = max_workers or interpreter_pool.thread_pool._cpu_count()
        self._process_args = (self._max_workers, mp_context, initializer, initargs)
        self._max_tasks_per_child = max_tasks_per_child
        self._fallback = None  # interpreters mode: the stdlib pool tasks fall back to
        self._interpreters = None
        self._workers = None
        self._on_workers = False  # served by unirun's process workers
        self._stdlib_self = False  # the whole pool is the standard class's (this instance)
        self._lock = threading.Lock()
        self._shutdown_thread = False
        self._broken = False
        from . import _state

        if _state["process_pool"] != "interpreters":
            reason = _fork_requested(mp_context) or _fork_objects(mp_context, initargs)
            if reason is None:
                if mp_context is None and max_tasks_per_child is not None:
                    import multiprocessing

                    mp_context = multiprocessing.get_context("spawn")  # as the stdlib's
                self._mp_context = mp_context
                self._workers = self._start_workers(initializer, initargs)
                self._on_workers = True
                self._processes = self._workers._settings.children  # {pid: Process}, live
                # What code reaching into the stdlib's internals joins: the workers.
                self._executor_manager_thread = self._call_queue = _WorkerThreads(self._workers._pool)
            else:
                _record(*reason)
                self._become_stdlib(mp_context, initializer, initargs)
            return
        reason = _needs_real_processes(mp_context, initializer, initargs)
        if reason is None:
            self._interpreters = interpreter_pool.InterpreterPoolExecutor(
                self._max_workers, initializer=_process_worker.guard,
                initargs=(initializer, initargs))
        else:
            _record(*reason)
            _warn_once(reason[0], f"unirun: {reason[1]}; this pool runs on real processes",
                       stacklevel=2)  # the program's ProcessPoolExecutor(...) line
            self._become_stdlib(mp_context, initializer, initargs)

    def _become_stdlib(self, mp_context, initializer, initargs):
        """The whole pool is the standard class's: this instance, initialized as one (so code
        that reaches into its internals finds them)."""
        self._stdlib_self = True
        _STDLIB_PROCESS_POOL.__init__(self, self._max_workers, mp_context, initializer, initargs,
                                      max_tasks_per_child=self._max_tasks_per_child)

    def _start_workers(self, initializer, initargs):
        workers = _executors.ProcessExecutor(
            self._max_workers, initializer, initargs, max_tasks_per_child=self._max_tasks_per_child,
            thread_name_prefix=f"ProcessPoolExecutor-{next(_counter)}", _strict=True,
            _context=self._mp_context)
        this = weakref.ref(self)
        _native.on_child_death(workers._pool, functools.partial(_child_died, this))
        _native.on_worker_start_failure(workers._pool, functools.partial(_start_failed, this))
        return workers

    def _break_workers(self, reason):
        """The stdlib's reaction to a dead worker process: the pool is unusable; what is queued
        fails with BrokenProcessPool, and so does every later submit; the other workers'
        processes are terminated, so the tasks they run fail with it too."""
        with self._lock:
            if self._broken:
                return
            self._broken = reason
        workers, processes = self._workers, self._processes
        if workers is not None:
            workers._pool.fail_pending(_stdlib.BrokenProcessPool(_BROKEN_TASK))
        for process in list((processes or {}).values()):
            try:
                if process.is_alive():
                    process.terminate()
            except (ValueError, ProcessLookupError):
                pass  # already gone

    def _process_pool(self):
        with self._lock:
            if self._fallback is None:
                # With mp_context None this is multiprocessing's default, as the stdlib's; but a
                # pool that falls back task by task runs beside subinterpreter workers, and a
                # fork there cannot give the child what the parent has: forkserver, as 3.14's
                # default. (A whole-pool fallback has no interpreter workers: any default works.)
                max_workers, mp_context, initializer, initargs = self._process_args
                if mp_context is None and self._interpreters is not None:
                    import multiprocessing

                    if multiprocessing.get_start_method() == "fork":
                        mp_context = multiprocessing.get_context("forkserver")
                self._fallback = _STDLIB_PROCESS_POOL(
                    max_workers, mp_context, initializer, initargs,
                    max_tasks_per_child=self._max_tasks_per_child)
            return self._fallback

    def submit(self, fn, /, *args, **kwargs):
        if self._stdlib_self:
            return _STDLIB_PROCESS_POOL.submit(self, fn, *args, **kwargs)
        if (self._broken or self._shutdown_thread or _stdlib._global_shutdown) and self._on_workers:
            self._workers._pool.note_rejected()  # counted in unirun.metrics(): executor.rejected
        if self._broken:
            raise _stdlib.BrokenProcessPool(self._broken)
        if self._shutdown_thread:
            raise RuntimeError("cannot schedule new futures after shutdown")
        if _stdlib._global_shutdown:
            raise RuntimeError("cannot schedule new futures after interpreter shutdown")
        if self._on_workers:
            workers = self._workers
            try:
                return workers._pool.submit(fn, args, kwargs or None)
            except _native.CannotSendError as exc:
                # As the stdlib's: what cannot be pickled fails its future with pickle's own
                # error, after a worker took it (so workers start, as the stdlib's do for it).
                error = exc.__cause__ or exc
                try:
                    return workers._pool.submit(_native.raise_error, (error,), None)
                except _native.CannotSendError:
                    future = _base.Future()
                    future.set_exception(error)
                    return future
        outer = _unirun.Future()
        # outer goes running when the worker starts inner; if outer was cancelled first, the
        # worker does not run inner at all.
        try:
            inner = self._interpreters._submit_call(_process_worker.run_task, (fn, args, kwargs or None),
                                                    None, start_with=outer)
        except _native.CannotSendError as exc:
            # What cannot reach a subinterpreter goes to a process, whose pool reports what
            # cannot be pickled as the stdlib's does.
            _announce_fallback(fn, exc)
            return self._process_pool().submit(fn, *args, **kwargs)

        def on_inner_done(done):
            if done.cancelled():
                outer.cancel()
                outer.set_running_or_notify_cancel()
                return
            exc = done.exception()
            if isinstance(exc, _process_worker.ProcessExit):
                outer.set_exception(self._break(fn, exc.code))
                return
            if exc is not None and needs_a_process(exc):
                _announce_fallback(fn, exc)
                try:
                    retry = self._process_pool().submit(fn, *args, **kwargs)
                except BaseException as error:
                    outer.set_exception(error)
                    return
                retry.add_done_callback(lambda finished: _relay(finished, outer))
                return
            _relay(done, outer)

        outer.add_done_callback(lambda f: f.cancelled() and inner.cancel())
        inner.add_done_callback(on_inner_done)
        return outer

    def _break(self, fn, code):
        """A task called os._exit(): the pool is broken, as the stdlib's is when a worker
        process dies. Queued tasks fail with BrokenProcessPool; new submits raise it."""
        with self._lock:
            first = not self._broken
            if first:
                self._broken = ("A child process terminated abruptly, the process pool is not "
                                "usable anymore")
        error = _stdlib.BrokenProcessPool(
            "A process in the process pool was terminated abruptly while the future was "
            "running or pending.")
        error.__cause__ = _process_worker.ProcessExit(code)
        error.add_note(f"unirun: {getattr(fn, '__qualname__', fn)!s} called os._exit({code}) on "
                       "an interpreter worker (--process-pool=interpreters)")
        if first:
            self._interpreters._pool.fail_pending(_stdlib.BrokenProcessPool(
                "A process in the process pool was terminated abruptly while the future was "
                "running or pending."))
        return error

    def map(self, fn, *iterables, timeout=None, chunksize=1, buffersize=None):
        """As ProcessPoolExecutor.map; every item is its own task, so each can fall back."""
        if chunksize < 1:
            raise ValueError("chunksize must be >= 1.")
        if self._on_workers:
            # Batches, as the stdlib's: one task per chunk, through this instance's submit.
            return map_chunked(self, fn, iterables, timeout, chunksize, buffersize, _executors._run_chunk)
        if self._stdlib_self:
            # The stdlib's map, through this instance's submit (code that wraps submit on the
            # instance, as tqdm's process_map does, sees every chunk).
            extra = {} if buffersize is None else {"buffersize": buffersize}
            return _STDLIB_PROCESS_POOL.map(self, fn, *iterables, timeout=timeout,
                                            chunksize=chunksize, **extra)
        return map_calls(self, fn, iterables, timeout, buffersize)

    def _force_shutdown(self, operation):
        """3.14's terminate_workers() and kill_workers(): shut down, cancelling what is queued,
        and signal every live child; a running task then fails with BrokenProcessPool."""
        if not self._on_workers:
            return super()._force_shutdown(operation)
        if operation not in ("terminate", "kill"):
            raise ValueError(f"Unsupported operation: {operation!r}")
        processes = dict(self._processes or {})
        self.shutdown(wait=False, cancel_futures=True)
        for process in processes.values():
            try:
                if process.is_alive():
                    getattr(process, operation)()
            except (ValueError, ProcessLookupError):
                pass  # already gone

    def shutdown(self, wait=True, *, cancel_futures=False):
        if self._stdlib_self:
            return _STDLIB_PROCESS_POOL.shutdown(self, wait, cancel_futures=cancel_futures)
        self._shutdown_thread = True
        if self._workers is not None:
            # (Its worker threads leave the pool's list as they end: a shut-down pool keeps
            # no handle on threads that are gone, as the stdlib's keeps none on its helpers.)
            self._workers.shutdown(wait=wait, cancel_futures=cancel_futures)
        if self._interpreters is not None:
            self._interpreters.shutdown(wait=wait, cancel_futures=cancel_futures)
        with self._lock:
            processes = self._fallback
        if processes is not None:
            processes.shutdown(wait=wait, cancel_futures=cancel_futures)


_counter = itertools.count()


class _WorkerThreads:
    """Stands for the stdlib pool's manager thread and call queue, which code (CPython's own
    tests among it) joins after shutdown: joining it joins the worker threads, each of which
    reaps its child as it leaves."""

    def __init__(self, pool):
        self._pool = pool

    def join(self, timeout=None):
        current = threading.current_thread()
        for thread in self._pool.threads:
            if thread is not current:
                thread.join(timeout)

    join_thread = join

    def is_alive(self):
        return any(thread.is_alive() for thread in self._pool.threads)


def _child_died(executor_ref, error):
    executor = executor_ref()
    if executor is not None:
        executor._break_workers(_BROKEN_POOL)


def _start_failed(executor_ref, exc):
    # A failing initializer was logged by the child, as the stdlib's workers log it; a worker
    # that could not even be started is logged here.
    if not isinstance(exc.__cause__, _stdlib._RemoteTraceback):
        _base.LOGGER.critical("Exception in initializer:", exc_info=exc)
    executor = executor_ref()
    if executor is not None:
        executor._break_workers(_BROKEN_POOL)


_ready = True
# If importing this module is what loaded concurrent.futures.process, the hook deferred adjusting it.
from . import _adjusted  # noqa: E402

_adjusted("concurrent.futures.process")
