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
import itertools
from concurrent.futures import _base
import logging
import os
import sys
import threading
import uuid

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
        self._task = None  # the distributed.Future, once submitted

    def cancel(self):
        if not super().cancel():
            return False
        # Nobody dequeues it later to notify its waiters (set_running_or_notify_cancel): do it
        # now, once (the caller's cancel and the cluster's may both get here).
        with self._condition:
            if self._state == _base.CANCELLED:
                self._state = _base.CANCELLED_AND_NOTIFIED
                for waiter in self._waiters:
                    waiter.add_cancelled(self)
        task, self._task = self._task, None
        if task is not None:
            self._executor._cancel_task(task)
        self._executor._forget(self)  # ended: shutdown need not wait for the cluster to say so
        return True


class DistributedExecutor(concurrent.futures.Executor):
    """concurrent.futures over a Dask distributed cluster.

    address: a scheduler to connect to ("tcp://host:8786"); None starts a LocalCluster of
    max_workers single-threaded workers (processes, on this runtime, unless processes=False)
    that lives as long as the executor. client: an existing distributed.Client to use (not
    closed by shutdown).
    """

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
        self._shutdown = False
        self._counts = dict.fromkeys(("submitted", "completed", "failed", "cancelled", "rejected"), 0)
        self._cluster = None
        self._own_client = client is None
        if client is not None:
            self._client = client
        elif address:
            self._client = distributed.Client(address, set_as_default=False)
        else:
            self._cluster = distributed.LocalCluster(
                n_workers=self._max_workers, threads_per_worker=1, processes=processes,
                # No dashboard; the scheduler's own HTTP endpoints on any free port (its default,
                # 8787, is taken by the second cluster on a machine, with a warning).
                dashboard_address=None, scheduler_kwargs={"dashboard_address": ":0"},
                silence_logs=logging.ERROR)
            self._client = distributed.Client(self._cluster, set_as_default=False)
        self.address = self._client.scheduler.address
        if initializer is not None:
            self._client.register_plugin(_initializer_plugin(initializer, tuple(initargs)),
                                         name=f"{self._name}-init-{uuid.uuid4().hex}")

    def __repr__(self):
        where = "LocalCluster" if self._cluster is not None else self.address
        return f"<unirun.DistributedExecutor {where} workers={self._max_workers}>"

    # -- submitting --------------------------------------------------------------------

    def submit(self, fn, /, *args, **kwargs):
        future = _Future(self)
        with self._lock:
            if self._shutdown:
                self._counts["rejected"] += 1
                raise RuntimeError("cannot schedule new futures after shutdown")
            self._counts["submitted"] += 1
            name = getattr(fn, "__name__", type(fn).__name__)
            # fn's own keyword arguments never meet Client.submit's (key=, workers=, ...).
            task = self._client.submit(_call, fn, args, kwargs, key=f"{name}-{uuid.uuid4().hex}", pure=False)
            future._task = task
            self._pending.add(future)
        task.add_done_callback(lambda done, future=future: self._settle(future, done))
        return future

    submit.__doc__ = concurrent.futures.Executor.submit.__doc__

    def map(self, fn, *iterables, timeout=None, chunksize=1, buffersize=None):
        """Executor.map; chunksize > 1 sends the calls in batches, as ProcessPoolExecutor."""
        from ._mapping import map_calls

        if chunksize < 1:
            raise ValueError("chunksize must be >= 1.")
        if chunksize == 1:
            return map_calls(self, fn, iterables, timeout, buffersize)
        chunks = _chunks(zip(*iterables), chunksize)
        results = map_calls(self, _run_chunk, (itertools.repeat(fn), chunks), timeout, buffersize)
        return itertools.chain.from_iterable(results)

    # -- outcomes ------------------------------------------------------------------------

    def _settle(self, future, task):
        """Runs on distributed's callback thread when the cluster's task ended."""
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
                outcome = ("cancelled", None)
            else:  # lost: the data went with a worker and cannot be recomputed
                outcome = ("exception", concurrent.futures.BrokenExecutor(
                    f"the cluster lost this task's result ({status}): a worker died holding it"))
        except BaseException as exc:  # the result could not be fetched or deserialised
            outcome = ("exception", exc)
        kind, value = outcome
        if kind == "cancelled":
            if not future.cancel() and not future.done():
                future.set_exception(concurrent.futures.CancelledError("the cluster cancelled this task"))
        elif not future.done():
            try:
                future.set_result(value) if kind == "result" else future.set_exception(value)
            except concurrent.futures.InvalidStateError:
                pass  # cancelled meanwhile: the caller's cancel() won
        self._forget(future)

    def _cancel_task(self, task):
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

    _close_when_done = None

    def shutdown(self, wait=True, *, cancel_futures=False):
        with self._lock:
            first = not self._shutdown
            self._shutdown = True
            pending = list(self._pending)
            if first:
                self._close_when_done = threading.Event()
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
            closer = threading.Thread(target=self._close_after_work, name=f"{self._name}-shutdown")
            closer.start()  # not a daemon: as the stdlib's workers, it holds interpreter exit
            self._closer = closer
        if wait:
            concurrent.futures.wait(pending)
            closer = getattr(self, "_closer", None)
            if closer is not None and closer is not threading.current_thread():
                closer.join()

    shutdown.__doc__ = concurrent.futures.Executor.shutdown.__doc__

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
        if self._own_client:
            try:
                self._client.close()
            except Exception:
                pass
        if self._cluster is not None:
            try:
                self._cluster.close()
            except Exception:
                pass


def _initializer_plugin(initializer, initargs):
    """A worker plugin that runs the executor's initializer on every worker, present and
    future (ProcessPoolExecutor's initializer, on the cluster)."""
    from distributed.diagnostics.plugin import WorkerPlugin

    class Initializer(WorkerPlugin):
        def setup(self, worker):
            initializer(*initargs)

    return Initializer()


def _chunks(iterable, size):
    iterator = iter(iterable)
    while chunk := tuple(itertools.islice(iterator, size)):
        yield chunk
