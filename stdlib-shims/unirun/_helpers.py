"""Shared executors and coroutine helpers, decided through the same path as Run."""

from __future__ import annotations

import asyncio
import contextvars
import functools
import threading
from typing import Optional

from . import _trace
from ._backends import make_executor
from ._capabilities import capabilities
from ._config import RuntimeConfig
from ._decide import DecisionError, Request, decide

__all__ = ["thread_executor", "process_executor", "interpreter_executor",
           "to_thread", "to_interpreter", "to_process"]

_lock = threading.Lock()
_shared: dict = {}  # (flavor, workers) -> executor, for the life of the process


def _is_shut_down(executor) -> bool:
    pool = getattr(executor, "_pool", None)  # unirun's native executors
    if pool is not None and hasattr(pool, "is_shut_down"):
        return pool.is_shut_down
    # ThreadPoolExecutor and InlineExecutor say _shutdown; ProcessPoolExecutor _shutdown_thread
    return bool(getattr(executor, "_shutdown", False) or getattr(executor, "_shutdown_thread", False))


def _shared_executor(flavor: str, max_workers: Optional[int], config: Optional[RuntimeConfig]):
    config = config if config is not None else RuntimeConfig.from_env()
    request = Request(flavor=flavor, max_workers=max_workers, name=f"shared-{flavor}")
    try:
        trace = decide(request, config, capabilities())
    except DecisionError as error:
        error.trace.kind = "helper"
        _trace.record(error.trace, path=config.trace_path, event="refused")
        raise
    trace.kind = "helper"
    # One executor per (flavor, size): asking for another size makes another executor and
    # never shuts down (or cancels the work of) the one other callers use.
    key = (trace.resolved_flavor, trace.worker_count)
    with _lock:
        entry = _shared.get(key)
        if entry is None or _is_shut_down(entry[0]):  # someone shut it down: make a new one
            entry = make_executor(trace.resolved_flavor, trace.worker_count,
                                  f"unirun-shared-{trace.resolved_flavor}", capabilities(),
                                  config.distributed_address)
            _shared[key] = entry
    executor, trace.backend = entry
    _trace.record(trace, path=config.trace_path)
    return executor


def thread_executor(max_workers: Optional[int] = None, *, config: Optional[RuntimeConfig] = None):
    """The process-wide thread executor of that size, created on first use."""
    return _shared_executor("threads", max_workers, config)


def interpreter_executor(max_workers: Optional[int] = None, *, config: Optional[RuntimeConfig] = None):
    """The process-wide subinterpreter executor of that size; where subinterpreter workers are
    not available, what RuntimeConfig.interpreter_fallback says (traced)."""
    return _shared_executor("interpreters", max_workers, config)


def process_executor(max_workers: Optional[int] = None, *, config: Optional[RuntimeConfig] = None):
    """The process-wide process pool of that size, created on first use."""
    return _shared_executor("processes", max_workers, config)


async def to_thread(func, /, *args, **kwargs):
    """Like asyncio.to_thread, on unirun's shared thread executor: the call sees a copy of
    the caller's contextvars."""
    loop = asyncio.get_running_loop()
    context = contextvars.copy_context()
    call = functools.partial(context.run, func, *args, **kwargs)
    return await loop.run_in_executor(thread_executor(), call)


async def to_interpreter(func, /, *args, **kwargs):
    """Run func in a subinterpreter worker. The call crosses by pickle, so contextvars (which
    cannot be pickled) do not follow it: it runs in the worker's own context."""
    return await asyncio.wrap_future(interpreter_executor().submit(func, *args, **kwargs))


async def to_process(func, /, *args, **kwargs):
    """Run func in a worker process; like to_interpreter, without the caller's contextvars."""
    return await asyncio.wrap_future(process_executor().submit(func, *args, **kwargs))
