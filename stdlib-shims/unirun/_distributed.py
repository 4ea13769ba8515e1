"""The distributed flavor: a concurrent.futures executor on a Dask distributed cluster.

DistributedExecutor connects to a scheduler (an address) or starts a LocalCluster for its own
lifetime, and gives the standard library's semantics over Dask's: submit() returns a plain
concurrent.futures.Future; cancel() reaches the cluster; shutdown(wait, cancel_futures) does
what the stdlib documents (Dask's own executor cancels running tasks on wait=False and has no
cancel_futures); map(chunksize=) batches calls; an exception arrives with its traceback; a
lost worker fails the futures it held (Dask retries them elsewhere first), never hangs them.

Dask and distributed are optional: without them, asking for the flavor raises ImportError
naming what to install. A remote cluster's workers need the callables importable (as any Dask
task does); unirun's own helpers travel by value, so the workers need not have unirun.
"""

from __future__ import annotations

import concurrent.futures
from concurrent.futures import _base
import logging
import os
import sys
import threading
import uuid
import weakref

__all__ = ["DistributedExecutor", "require"]

INSTALL_HINT = "pip install 'dask[distributed]'"


def require():
    """The distributed module, or ImportError saying what to install."""
    try:
        import distributed
    except ImportError as exc:
        raise ImportError(f"the distributed flavor needs Dask's distributed scheduler: {INSTALL_HINT} "
                          f"(the unirun package itself needs only the standard library)") from exc
    return distributed


# What runs on the workers. By value (cloudpickle), so a cluster without unirun runs them.
def _call(fn, args, kwargs):
    return fn(*args, **kwargs)


def _run_chunk(fn, chunk):
    return [fn(*args) for args in chunk]


def _executing_keys(dask_worker):
    return [task.key for task in dask_worker.state.executing]


def _by_value():
    try:
        import cloudpickle

        cloudpickle.register_pickle_by_value(sys.modules[__name__])
    except (ImportError, ValueError, AttributeError):
        pass  # an older cloudpickle: workers then need unirun importable


class _Future(concurrent.futures.Future):
    """A stdlib Future whose cancel() also cancels the cluster's task. It stays PENDING while
    the task waits or runs on the cluster (the scheduler does not say when it starts), so
    cancel() succeeds until the outcome has arrived, as Dask's own."""

    def __init__(self, executor):
        super().__init__()
        self._executor = executor
        self._task = None  # the distributed.Future until the outcome arrives

    def cancel(self):
        # As Future.cancel, but nobody dequeues it later to notify its waiters
        # (set_running_or_notify_cancel): they are notified here, before the callbacks run.
        with self._condition:
            if self._state in (_base.RUNNING, _base.FINISHED):
                return False
            if self._state in (_base.CANCELLED, _base.CANCELLED_AND_NOTIFIED):
                return True
            self._state = _base.CANCELLED_AND_NOTIFIED
            for waiter in self._waiters:
                waiter.add_cancelled(self)
            self._condition.notify_all()
        self._invoke_callbacks()
        task, self._task = self._task, None
        if task is not None:
            self._executor._cancel_task(task)
        self._executor._forget(self)  # ended: shutdown need not wait for the cluster to say so
        return True


_live = weakref.WeakSet()  # executors, for the wait at interpreter exit
_live_lock = threading.Lock()
_exit_registered = False


def _register_exit():
    """At interpreter exit, before threads are joined, wait for every executor's submitted
    work, as the stdlib's pools do (their workers finish the queue before the program ends)."""
    global _exit_registered
    with _live_lock:
        if _exit_registered:
            return
        _exit_registered = True
    # threading runs these hooks last-registered first, and ours must run before the ones that
    # stop thread pools: an in-process Dask scheduler still needs its pools to finish the work.
    # So theirs are registered first: the stdlib pools' (at import) and unirun's native pools'
    # (else registered at their first worker, which may come later).
    import concurrent.futures.thread  # noqa: F401

    try:
        from . import _native
    except ImportError:  # plain python: no native pools
        pass
    else:
        _native._register_exit()
    threading._register_atexit(_wait_for_all)


def _wait_for_all():
    for executor in list(_live):
        with executor._lock:
            pending = list(executor._pending)
        concurrent.futures.wait(pending)


def cluster_config():
    """Dask settings for a cluster started here. On a free-threaded CPython, Dask's statistical
    profiler is off: its thread walks every other thread's frames (sys._current_frames) while
    they run and free them, which crashes 3.13t (seen here: SEGV in PyFrame_GetCode from the
    profiler thread, in a test's LocalCluster). Dask turns it off on 3.11 for a like reason. The
    settings reach worker processes too (a nanny passes its config on)."""
    import contextlib
    import sysconfig

    if not sysconfig.get_config_var("Py_GIL_DISABLED"):
        return contextlib.nullcontext()
    import dask

    return dask.config.set({"distributed.worker.profile.enabled": False})


def _close(client, cluster):
    """Close what an executor started (on shutdown, or when it is collected unshut)."""
    for closing in (client, cluster):
        if closing is not None:
            try:
                closing.close()
            except Exception:
                pass


class DistributedExecutor(concurrent.futures.Executor):
    """concurrent.futures over a Dask distributed cluster.

    address: a scheduler to connect to ("tcp://host:8786"); None starts a LocalCluster of
    max_workers single-threaded workers (processes, on this runtime, unless processes=False)
    that lives as long as the executor. client: an existing distributed.Client to use (not
    closed by shutdown). initializer(*initargs) runs on every worker as it starts; if it fails
    the executor is broken (submit raises broken_error), as a process pool whose initializer
    failed.
    """

    broken_error = concurrent.futures.BrokenExecutor

    def __init__(self, max_workers=None, address=None, *, processes=True, client=None,
                 thread_name_prefix="", initializer=None, initargs=()):
        distributed = require()
        if max_workers is not None and max_workers <= 0:
            raise ValueError("max_workers must be greater than 0")
        if initializer is not None and not callable(initializer):
            raise TypeError("initializer must be a callable")
        _by_value()
        self._max_workers = max_workers or (os.process_cpu_count() if hasattr(os, "process_cpu_count")
                                            else os.cpu_count()) or 1
        self._name = thread_name_prefix or "unirun-distributed"
        self._lock = threading.Lock()
        self._pending = set()  # our futures whose outcome has not arrived
        self._by_key = {}  # the cluster's task key -> our future, while in flight
        self._shutdown = False
        self._broken = None
        self._settler = None  # the thread that delivers outcomes, while any are awaited
        self._closer = None
        self._close_when_done = threading.Event()
        self._counts = dict.fromkeys(("submitted", "completed", "failed", "cancelled", "rejected"), 0)
        self._cluster = None
        self._own_client = client is None
        try:
            if client is not None:
                self._client = client
            elif address:
                self._client = distributed.Client(address, set_as_default=False)
            else:
                with cluster_config():
                    self._cluster = distributed.LocalCluster(
                        n_workers=self._max_workers, threads_per_worker=1, processes=processes,
                        # No dashboard; the scheduler's own HTTP endpoints on any free port (its
                        # default, 8787, is taken by the second cluster on a machine, with a
                        # warning).
                        dashboard_address=None, scheduler_kwargs={"dashboard_address": ":0"},
                        silence_logs=logging.ERROR)
                self._client = distributed.Client(self._cluster, set_as_default=False)
            self.address = self._client.scheduler.address
            # Outcomes are collected by a thread of ours, not delivered on Dask's callback
            # pool: that pool refuses work once the interpreter starts to exit, and a callback
            # that waits on another future there would wait forever.
            self._completed = distributed.as_completed([], loop=self._client.loop, with_results=False)
        except BaseException:
            _close(self._client if self._own_client and hasattr(self, "_client") else None, self._cluster)
            raise
        self._finalizer = weakref.finalize(self, _close, self._client if self._own_client else None,
                                           self._cluster)
        if initializer is not None:
            try:
                self._client.register_plugin(_initializer_plugin(initializer, tuple(initargs)),
                                             name=f"{self._name}-init-{uuid.uuid4().hex}")
            except Exception as exc:
                self._broken = f"A worker initializer failed, the executor is not usable anymore: {exc!r}"
        _register_exit()
        _live.add(self)

    def __repr__(self):
        where = "LocalCluster" if self._cluster is not None else self.address
        return f"<unirun.DistributedExecutor {where} workers={self._max_workers}>"

    # -- submitting --------------------------------------------------------------------

    def submit(self, fn, /, *args, **kwargs):
        future = _Future(self)
        with self._lock:
            if self._broken or self._shutdown:
                self._counts["rejected"] += 1
                if self._broken:
                    raise self.broken_error(self._broken)
                raise RuntimeError("cannot schedule new futures after shutdown")
            name = getattr(fn, "__name__", type(fn).__name__)
            try:
                # fn's own keyword arguments never meet Client.submit's (key=, workers=, ...).
                task = self._client.submit(_call, fn, args, kwargs, key=f"{name}-{uuid.uuid4().hex}",
                                           pure=False)
            except Exception as exc:
                # What cannot be sent fails its future, as the stdlib's process pool does.
                self._counts["submitted"] += 1
                self._counts["failed"] += 1
                future.set_exception(exc)
                return future
            self._counts["submitted"] += 1
            future._task = task
            self._pending.add(future)
            self._by_key[task.key] = future
            self._completed.add(task)
            if self._settler is None:
                self._settler = threading.Thread(target=self._settle_all, name=f"{self._name}-settler",
                                                 daemon=True)
                self._settler.start()
        return future

    submit.__doc__ = concurrent.futures.Executor.submit.__doc__

    def map(self, fn, *iterables, timeout=None, chunksize=1, buffersize=None):
        """Executor.map; chunksize > 1 sends the calls in batches, as ProcessPoolExecutor."""
        from ._mapping import map_chunked

        return map_chunked(self, fn, iterables, timeout, chunksize, buffersize, _run_chunk)

    # -- outcomes ------------------------------------------------------------------------

    def _settle_all(self):
        """The settler thread: deliver each task's outcome as the cluster reports it; leave
        when nothing is awaited (a later submit starts another), so an idle executor holds no
        thread and can be collected."""
        while True:
            try:
                task = next(self._completed)
            except StopIteration:
                with self._lock:
                    if self._by_key:
                        continue  # a submit raced the check: its task is in the iterator now
                    self._settler = None
                    return
            except Exception:  # the client is gone: what is still awaited cannot arrive
                self._fail_all_pending("the connection to the Dask cluster was lost")
                with self._lock:
                    self._settler = None
                return
            with self._lock:
                future = self._by_key.pop(task.key, None)
            if future is None:
                continue
            if future._done_callbacks:
                # Its callbacks run where its outcome is set (as on a stdlib worker): not on
                # this thread, where one that waits for another future would wait forever.
                threading.Thread(target=self._settle, args=(future, task), daemon=True,
                                 name=f"{self._name}-callbacks").start()
            else:
                self._settle(future, task)

    def _settle(self, future, task):
        future._task = None  # the cluster may drop the result once we have it
        try:
            status = task.status
            if status == "finished":
                outcome = ("result", task.result())
            elif status == "error":
                error = task.exception()
                traceback = task.traceback()
                if traceback is not None and error.__traceback__ is None:
                    error = error.with_traceback(traceback)
                outcome = ("exception", error)
            elif status == "cancelled":
                # Not our cancel() (that one forgot the key first): the client closed or the
                # scheduler dropped the task.
                outcome = ("exception", self.broken_error(
                    "the Dask cluster cancelled this task (its client closed, or the scheduler restarted)"))
            else:  # lost: the data went with a worker and cannot be recomputed
                outcome = ("exception", self.broken_error(
                    f"the cluster lost this task's result ({status}): a worker died holding it"))
        except BaseException as exc:  # the result could not be fetched or deserialised
            outcome = ("exception", exc)
        kind, value = outcome
        try:
            if kind == "result":
                future.set_result(value)
            else:
                future.set_exception(value)
        except concurrent.futures.InvalidStateError:
            pass  # cancelled meanwhile: the caller's cancel() won
        self._forget(future)

    def _fail_all_pending(self, why):
        with self._lock:
            pending = list(self._pending)
            self._by_key.clear()
        for future in pending:
            try:
                future.set_exception(self.broken_error(why))
            except concurrent.futures.InvalidStateError:
                pass
            self._forget(future)

    def _cancel_task(self, task):
        with self._lock:
            self._by_key.pop(task.key, None)
        try:
            task.cancel()  # asynchronous: the scheduler drops it, or ignores its result
        except Exception:
            pass

    def _forget(self, future):
        with self._lock:
            if future in self._pending:
                self._counts["cancelled" if future.cancelled() else
                             "failed" if future.exception() is not None else "completed"] += 1
            self._pending.discard(future)
            done = self._shutdown and not self._pending
        if done:
            self._close_when_done.set()

    def _metrics_fields(self):
        """unirun.metrics()'s entry for this executor: counters, no timers (the cluster keeps
        those; its dashboard shows them)."""
        with self._lock:
            counts = dict(self._counts)
            in_flight = len(self._pending)
        fields = {f"executor.{name}": value for name, value in counts.items()}
        fields["executor.pool.max"] = self._max_workers
        fields["executor.queued"] = in_flight  # waiting or running on the cluster
        fields["address"] = self.address
        return fields

    # -- shutting down --------------------------------------------------------------------

    def shutdown(self, wait=True, *, cancel_futures=False):
        with self._lock:
            first = not self._shutdown
            self._shutdown = True
            pending = list(self._pending)
            if not self._pending:
                self._close_when_done.set()
        if cancel_futures:
            # As the stdlib: calls not yet started are cancelled; running ones finish.
            running = self._running_keys()
            for future in pending:
                task = future._task
                if task is not None and task.key not in running:
                    future.cancel()
        if first:
            # Not a daemon: as the stdlib's workers, it holds interpreter exit until the work
            # submitted before shutdown(wait=False) has ended.
            self._closer = threading.Thread(target=self._close_after_work, name=f"{self._name}-shutdown")
            self._closer.start()
        if wait:
            concurrent.futures.wait(pending)
            closer = self._closer
            if closer is not None and closer is not threading.current_thread():
                closer.join()

    shutdown.__doc__ = concurrent.futures.Executor.shutdown.__doc__

    def _terminate(self, why):
        """Stop at once (3.14's terminate_workers() for a pool on the cluster): cancel what is
        queued and fail what runs with broken_error(why)."""
        with self._lock:
            self._shutdown = True
            pending = list(self._pending)
        for future in pending:
            task = future._task
            if task is not None:
                self._cancel_task(task)
            try:
                future.set_exception(self.broken_error(why))
            except concurrent.futures.InvalidStateError:
                pass
            self._forget(future)
        self.shutdown(wait=False)

    def _running_keys(self):
        """The keys the workers are executing now (what the scheduler calls processing also
        counts tasks queued at a worker)."""
        try:
            executing = self._client.run(_executing_keys)
            return {key for keys in executing.values() for key in keys}
        except Exception:
            pass
        try:
            processing = self._client.processing()
        except Exception:
            return set()
        return {key for keys in processing.values() for key in keys}

    def _close_after_work(self):
        self._close_when_done.wait()
        _live.discard(self)
        self._finalizer()  # closes the client (if ours) and the cluster (if ours), once


def _initializer_plugin(initializer, initargs):
    """A worker plugin that runs the executor's initializer on every worker, present and
    future (ProcessPoolExecutor's initializer, on the cluster)."""
    from distributed.diagnostics.plugin import WorkerPlugin

    class Initializer(WorkerPlugin):
        def setup(self, worker):
            initializer(*initargs)

    return Initializer()
