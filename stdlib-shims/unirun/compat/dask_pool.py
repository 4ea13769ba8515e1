"""--process-pool=dask[:ADDRESS]: unmodified ProcessPoolExecutors served by a Dask cluster.

ProcessPoolExecutor(...) then makes a DaskProcessPool (still a ProcessPoolExecutor, for code
that checks), whose work runs on unirun.DistributedExecutor: the scheduler at ADDRESS (or
UNIRUN_DASK_ADDRESS), else a LocalCluster of max_workers worker processes on this runtime that
lives as long as the pool. The standard API and semantics hold (unirun/_distributed.py);
initializer/initargs run on every worker as it starts. mp_context and max_tasks_per_child have
no meaning on a cluster: they are checked as the stdlib checks them, then left unused (traced).
"""

from __future__ import annotations

import os

from .. import _trace
from .._capabilities import capabilities
from .._config import RuntimeConfig
from .._decide import Request, decide
from .._distributed import DistributedExecutor
from . import _state
from .process_pool import ProcessPoolExecutor, _stdlib, check_arguments

__all__ = ["DaskProcessPool", "address"]


def address() -> str | None:
    """The scheduler --process-pool=dask:ADDRESS names, else UNIRUN_DASK_ADDRESS, else None (a
    LocalCluster)."""
    named = _state["process_pool"].partition(":")[2]
    return named or os.environ.get("UNIRUN_DASK_ADDRESS") or None


class DaskProcessPool(ProcessPoolExecutor):
    """A ProcessPoolExecutor whose calls run on a Dask cluster."""

    def __init__(self, max_workers=None, mp_context=None, initializer=None, initargs=(), *,
                 max_tasks_per_child=None):
        check_arguments(max_workers, mp_context, initializer, max_tasks_per_child)
        # What the compat class's own methods (and code reading the stdlib's internals) look
        # at: no local workers of any kind.
        self._on_workers = self._stdlib_self = False
        self._workers = self._interpreters = self._fallback = None
        self._processes = {}
        self._executor_manager_thread = self._call_queue = None
        self._shutdown_thread = False
        self._broken = False
        where = address()
        self._dask = DistributedExecutor(max_workers, where, initializer=initializer, initargs=initargs,
                                         thread_name_prefix="ProcessPoolExecutor")
        self._dask.broken_error = _stdlib.BrokenProcessPool
        self._max_workers = self._dask._max_workers
        config = RuntimeConfig.from_env()
        trace = decide(Request(flavor="distributed", max_workers=self._max_workers, name="ProcessPoolExecutor"),
                       config, capabilities())
        trace.kind, trace.reason_code = "compat", "dask-process-pool"
        trace.reason = (f"--process-pool=dask: this ProcessPoolExecutor runs on the Dask cluster at "
                        f"{self._dask.address}" + ("" if where else " (a LocalCluster started for it)"))
        trace.backend = repr(self._dask)
        _trace.record(trace, path=config.trace_path)

    def submit(self, fn, /, *args, **kwargs):
        return self._dask.submit(fn, *args, **kwargs)

    submit.__doc__ = ProcessPoolExecutor.submit.__doc__

    def map(self, fn, *iterables, timeout=None, chunksize=1, buffersize=None):
        return self._dask.map(fn, *iterables, timeout=timeout, chunksize=chunksize, buffersize=buffersize)

    def shutdown(self, wait=True, *, cancel_futures=False):
        self._shutdown_thread = True
        self._dask.shutdown(wait, cancel_futures=cancel_futures)

    def _force_shutdown(self, operation):
        """3.14's terminate_workers() and kill_workers(): the cluster's workers are not ours to
        signal; what is queued is cancelled and what runs fails with BrokenProcessPool."""
        if operation not in ("terminate", "kill"):
            raise ValueError(f"Unsupported operation: {operation!r}")
        self._shutdown_thread = True
        self._dask._terminate(f"the pool's workers were {operation}ed ({operation}_workers())")

    def __repr__(self):
        return f"<ProcessPoolExecutor on {self._dask!r}>"
