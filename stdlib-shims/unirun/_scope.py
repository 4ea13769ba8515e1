"""Run: a scope that decides a flavor, owns an executor for its duration, and records why."""

from __future__ import annotations

import asyncio
import contextvars
import os
import time
from typing import Callable, Optional, Union

from . import _trace
from ._backends import flavor_of, make_executor
from ._capabilities import capabilities
from ._config import FLAVORS, RuntimeConfig
from ._decide import DecisionError, DecisionTrace, Request, decide

__all__ = ["Run", "current_scope"]

_current: contextvars.ContextVar[Optional["Run"]] = contextvars.ContextVar("unirun_scope", default=None)

TraceOption = Union[None, bool, str, "os.PathLike[str]", Callable[[DecisionTrace], None]]


def current_scope() -> Optional["Run"]:
    """The innermost Run scope entered in this context (thread or task), or None."""
    return _current.get()


class Run:
    """A scope with an executor:

        with Run("interpreters", cpu_bound=True) as executor:
            results = list(executor.map(work, items))

    The scope decides the flavor (see decide()), creates the executor on entry and shuts it
    down on exit: a normal exit waits for every submitted call; an exit by exception cancels
    calls that have not started, waits for running ones, and lets the exception go on. An
    executor passed in is used as it is and never shut down. `async with` works the same and
    never blocks the event loop on exit.

    Nesting: an inner Run with flavor "auto" and no hints uses the flavor its innermost
    enclosing Run resolved to (reason code "inherited"); anything explicit decides for itself.
    Each Run owns its own executor.

    trace: None follows RuntimeConfig.trace_path (UNIRUN_TRACE); False writes no JSON Lines for
    this scope; a path writes them there; a callable is called with the trace on entry and exit.
    The trace is also at Run.trace, unirun.last_decision(), listeners and the "unirun" logger.
    """

    def __init__(
        self,
        flavor: str = "auto",
        *,
        max_workers: Optional[int] = None,
        name: Optional[str] = None,
        config: Optional[RuntimeConfig] = None,
        cpu_bound: Optional[bool] = None,
        io_bound: Optional[bool] = None,
        trace: TraceOption = None,
        executor=None,
    ) -> None:
        if flavor not in FLAVORS:
            raise ValueError(f"flavor={flavor!r} is not valid; use one of: {', '.join(FLAVORS)}")
        if config is not None and not isinstance(config, RuntimeConfig):
            raise TypeError(f"config must be a unirun.RuntimeConfig, not {type(config).__name__}")
        # Validate the rest now, so a bad Run fails where it is written, not where it is entered.
        Request(flavor=flavor, max_workers=max_workers, cpu_bound=cpu_bound, io_bound=io_bound)
        if executor is not None and not hasattr(executor, "submit"):
            raise TypeError(f"executor must be a concurrent.futures.Executor, not {type(executor).__name__}")
        self.flavor = flavor
        self.name = name
        self._max_workers = max_workers
        self._config = config
        self._cpu_bound = cpu_bound
        self._io_bound = io_bound
        self._trace_option = trace
        self._provided = executor
        self.executor = None
        self.trace: Optional[DecisionTrace] = None
        self._state = "new"  # new -> entered -> exited
        self._token = None
        self._trace_path: Optional[str] = None
        self._started = 0.0

    def __repr__(self) -> str:
        resolved = self.trace.resolved_flavor if self.trace else None
        return f"<unirun.Run {self.name or ''!s} flavor={self.flavor!r} resolved={resolved!r} {self._state}>"

    # -- entering ----------------------------------------------------------------------------

    def _listener(self):
        option = self._trace_option
        return option if callable(option) else None

    def _enter(self):
        if self._state != "new":
            raise RuntimeError(
                "this Run scope was entered already; a Run is used once: write a new "
                "Run(...) for each with-block"
            )
        self._state = "entered"
        config = self._config if self._config is not None else RuntimeConfig.from_env()
        option = self._trace_option
        if option is False:
            self._trace_path = None
        elif isinstance(option, (str, os.PathLike)):
            self._trace_path = os.fspath(option)
        else:
            self._trace_path = config.trace_path
        parent = _current.get()
        inherited = parent.trace.resolved_flavor if parent is not None and parent.trace else None
        request = Request(
            flavor=self.flavor,
            max_workers=self._max_workers,
            cpu_bound=self._cpu_bound,
            io_bound=self._io_bound,
            name=self.name,
            inherited_flavor=inherited,
            executor_flavor=None if self._provided is None else flavor_of(self._provided),
        )
        caps = capabilities()
        try:
            trace = decide(request, config, caps)
        except DecisionError as error:
            self._state = "exited"
            _trace.record(error.trace, path=self._trace_path, listener=self._listener(), event="refused")
            raise
        if self._provided is not None:
            self.executor = self._provided
            trace.backend = f"{type(self._provided).__module__}.{type(self._provided).__qualname__}"
            trace.worker_count = getattr(self._provided, "_max_workers", trace.worker_count)
        else:
            self.executor, trace.backend = make_executor(trace.resolved_flavor, trace.worker_count,
                                                         self.name, caps, config.distributed_address)
        self.trace = trace
        self._token = _current.set(self)
        self._started = time.perf_counter()
        _trace.record(trace, path=self._trace_path, listener=self._listener())
        return self.executor

    # -- leaving -----------------------------------------------------------------------------

    def _shutdown(self, failed: bool) -> None:
        if self._provided is None and self.executor is not None:
            self.executor.shutdown(wait=True, cancel_futures=failed)

    def _leave(self) -> None:
        self._state = "exited"
        trace = self.trace
        trace.timings["scope"] = time.perf_counter() - self._started
        stats = getattr(self.executor, "stats", None)
        if callable(stats):
            trace.workers = stats()
        if self._token is not None:
            try:
                _current.reset(self._token)
            except ValueError:  # left in another context than entered: nothing to restore
                pass
            self._token = None
        _trace.record(trace, path=self._trace_path, listener=self._listener(), event="ended")

    def __enter__(self):
        return self._enter()

    def __exit__(self, exc_type, exc, tb):
        try:
            self._shutdown(exc_type is not None)
        finally:
            self._leave()
        return False

    async def __aenter__(self):
        return self._enter()

    async def __aexit__(self, exc_type, exc, tb):
        try:
            # Waiting for the executor happens on a helper thread: the loop keeps running.
            if self._provided is None and self.executor is not None:
                await asyncio.to_thread(self._shutdown, exc_type is not None)
        finally:
            self._leave()
        return False
