"""decide(): a pure function from (request, config, capabilities) to a DecisionTrace.

Every choice unirun makes goes through here, and every choice carries a stable reason code
(the REASONS table) with its text, so a user can see why a flavor was picked.
"""

from __future__ import annotations

import dataclasses
import json
import time
from typing import Optional

from ._capabilities import Capabilities
from ._config import FLAVORS, RuntimeConfig

__all__ = ["Request", "DecisionTrace", "decide", "REASONS", "DecisionError"]

# Stable reason codes and what they mean. Codes never change meaning; new ones may be added.
REASONS = {
    "explicit": "the flavor was asked for by name",
    "config-default": "flavor auto, and RuntimeConfig.flavor names the default",
    "inherited": "flavor auto with no hints inside another scope: the enclosing scope's flavor",
    "executor-provided": "an executor was passed in and is used as it is",
    "io-bound": "io_bound work: threads overlap waiting without copying data",
    "no-hints": "flavor auto with no hints: threads, as concurrent.futures' default executor",
    "cpu-free-threaded": "cpu_bound work on a free-threaded runtime with the GIL off: threads run in parallel",
    "cpu-gil-interpreters": "cpu_bound work with the GIL on: subinterpreter workers, each with its own GIL",
    "cpu-gil-processes": "cpu_bound work with the GIL on and no subinterpreter workers here: processes",
    "gil-reenabled-interpreters": "cpu_bound work on a free-threaded runtime whose GIL an extension module's import re-enabled (unirun.ledger()): subinterpreter workers, each with its own GIL, not threads that would take turns",
    "gil-reenabled-processes": "cpu_bound work on a free-threaded runtime whose GIL an extension module's import re-enabled (unirun.ledger()), and no subinterpreter workers here: processes",
    "nogil-unavailable-interpreters": "thread_mode nogil, but this runtime has the GIL on: cpu_bound work goes to subinterpreter workers instead",
    "nogil-unavailable-processes": "thread_mode nogil, but this runtime has the GIL on and no subinterpreter workers: cpu_bound work goes to processes",
    "nogil-unavailable-threads": "thread_mode nogil, but this runtime has the GIL on: work that is not cpu_bound stays on threads",
    "gil-unavailable-interpreters": "thread_mode gil, but this runtime runs without the GIL: cpu_bound work goes to isolated subinterpreter workers rather than shared-memory threads",
    "gil-unavailable-threads": "thread_mode gil, but this runtime runs without the GIL: threads here run in parallel",
    "interpreters-fallback-threads": "subinterpreter workers are not available here; RuntimeConfig.interpreter_fallback says threads",
    "interpreters-fallback-processes": "subinterpreter workers are not available here; RuntimeConfig.interpreter_fallback says processes",
    "interpreters-unavailable": "subinterpreter workers are not available here and RuntimeConfig.interpreter_fallback is error",
    "subinterpreter-refused-processes": "--process-pool=interpreters: this task cannot run in a subinterpreter, so it runs in a real process pool",
    "mp-context-processes": "--process-pool=interpreters: the pool was given an explicit mp_context, which only real processes started that way honour, so the whole pool runs on real processes",
    "no-subinterpreters-processes": "--process-pool=interpreters on a runtime without usable own-GIL subinterpreters (Python 3.11, 3.12 before 3.12.4): the whole pool runs on real processes",
    "process-worker-replaced": "a worker process of a unirun process executor died: its task failed with BrokenProcessPool, and the worker starts a new process for its next task",
    "fork-processes": "the process pool asks for the fork start method, whose workers inherit the parent's state: the standard library's ProcessPoolExecutor serves it",
    "distributed-unavailable": "the distributed flavor was asked for, but Dask's distributed scheduler is not installed: pip install 'dask[distributed]'",
    "dask-process-pool": "--process-pool=dask: an unmodified ProcessPoolExecutor runs on a Dask cluster (the address, or a LocalCluster started for it)",
    "initargs-processes": "--process-pool=interpreters: the pool's initializer or initargs cannot be sent to a subinterpreter (they must be inherited by a process), so the whole pool runs on real processes",
}


class DecisionError(ValueError):
    """A request that cannot be honoured under the config; the trace says why."""

    def __init__(self, message: str, trace: "DecisionTrace"):
        super().__init__(message)
        self.trace = trace


@dataclasses.dataclass(frozen=True)
class Request:
    """What a scope or helper asks for."""

    flavor: str = "auto"
    max_workers: Optional[int] = None
    cpu_bound: Optional[bool] = None
    io_bound: Optional[bool] = None
    name: Optional[str] = None
    inherited_flavor: Optional[str] = None  # the enclosing scope's resolved flavor, if any
    # With an executor passed in: the flavor it serves ("threads" for an Executor unirun does
    # not know), which is then the decision.
    executor_flavor: Optional[str] = None

    @property
    def executor_provided(self) -> bool:
        return self.executor_flavor is not None

    def __post_init__(self) -> None:
        if self.flavor not in FLAVORS:
            raise ValueError(f"flavor={self.flavor!r} is not valid; use one of: {', '.join(FLAVORS)}")
        if self.max_workers is not None and (
            not isinstance(self.max_workers, int) or isinstance(self.max_workers, bool) or self.max_workers <= 0
        ):
            raise ValueError(f"max_workers={self.max_workers!r} is not valid; use a positive integer")
        if self.executor_flavor is not None and self.executor_flavor not in FLAVORS[1:]:
            raise ValueError(f"executor_flavor={self.executor_flavor!r} is not a flavor")
        if self.cpu_bound and self.io_bound:
            raise ValueError("cpu_bound and io_bound cannot both be true; give the one that dominates")


@dataclasses.dataclass
class DecisionTrace:
    """Why a scope or helper runs where it runs. Plain data: as_dict() and to_json() give it
    to logs; the scope fills in the lifecycle fields (timings, workers started) as it goes."""

    name: Optional[str]
    requested_flavor: str
    resolved_flavor: Optional[str]  # None when the decision is an error
    reason_code: str
    reason: str
    worker_count: int
    thread_mode: str
    cpu_bound: Optional[bool]
    io_bound: Optional[bool]
    capabilities: dict
    config: dict
    backend: str = ""  # the executor class that serves the flavor
    decided_at: float = dataclasses.field(default_factory=time.time)
    timings: dict = dataclasses.field(default_factory=dict)  # seconds: decide, scope
    workers: dict = dataclasses.field(default_factory=dict)  # counters at the end, when known
    kind: str = "scope"  # scope | helper

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.as_dict(), sort_keys=True, default=str)


def _default_workers(flavor: str, config: RuntimeConfig, caps: Capabilities) -> int:
    if flavor == "none":
        return 1
    if config.worker_policy == "cpus" or flavor in ("processes", "interpreters", "distributed"):
        return caps.cpu_count
    return min(32, caps.cpu_count + 4)  # ThreadPoolExecutor's default


def _auto(request: Request, config: RuntimeConfig, caps: Capabilities) -> tuple[str, str]:
    """(flavor, reason code) for flavor auto, before interpreter availability is applied."""
    gil_off = caps.free_threaded_build and not caps.gil_enabled
    if request.cpu_bound and not request.io_bound and caps.free_threaded_build and caps.gil_enabled \
            and caps.gil_enabled_by:
        if caps.own_gil_interpreters:
            return "interpreters", "gil-reenabled-interpreters"
        return "processes", "gil-reenabled-processes"
    if config.thread_mode == "nogil" and not gil_off:
        if request.cpu_bound:
            if caps.own_gil_interpreters:
                return "interpreters", "nogil-unavailable-interpreters"
            return "processes", "nogil-unavailable-processes"
        return "threads", "nogil-unavailable-threads"
    if config.thread_mode == "gil" and gil_off:
        if request.cpu_bound:
            return "interpreters", "gil-unavailable-interpreters"
        return "threads", "gil-unavailable-threads"
    if request.io_bound:
        return "threads", "io-bound"
    if request.cpu_bound:
        if gil_off:
            return "threads", "cpu-free-threaded"
        if caps.own_gil_interpreters:
            return "interpreters", "cpu-gil-interpreters"
        return "processes", "cpu-gil-processes"
    return "threads", "no-hints"


def decide(request: Request, config: RuntimeConfig, caps: Capabilities) -> DecisionTrace:
    """The flavor and worker count for `request`. Pure: the same inputs give the same trace
    (but for decided_at). Raises DecisionError when interpreters are required but unavailable
    and the config says error; the error carries the trace."""
    started = time.perf_counter()
    requested = request.flavor
    if request.executor_provided:
        flavor, code = request.executor_flavor, "executor-provided"
    elif requested != "auto":
        flavor, code = requested, "explicit"
    elif config.flavor != "auto":
        flavor, code = config.flavor, "config-default"
    elif request.inherited_flavor and request.cpu_bound is None and request.io_bound is None:
        flavor, code = request.inherited_flavor, "inherited"
    else:
        flavor, code = _auto(request, config, caps)

    error = None
    if flavor == "interpreters" and not caps.own_gil_interpreters and not request.executor_provided:
        if config.interpreter_fallback == "threads":
            flavor, code = "threads", "interpreters-fallback-threads"
        elif config.interpreter_fallback == "processes":
            flavor, code = "processes", "interpreters-fallback-processes"
        else:
            code = "interpreters-unavailable"
            error = (
                "the interpreters flavor needs subinterpreter workers, which this process does not "
                f"have (Python {caps.python_version}, "
                f"{'under' if caps.under_launcher else 'not under'} unirun-python); run under "
                "unirun-python or Python 3.14+, or set RuntimeConfig.interpreter_fallback "
                "(UNIRUN_INTERPRETER_FALLBACK) to threads or processes"
            )

    if flavor == "distributed" and not caps.distributed and not request.executor_provided:
        code = "distributed-unavailable"
        error = ("the distributed flavor needs Dask's distributed scheduler, which is not installed "
                 "here: pip install 'dask[distributed]' (unirun itself needs only the standard library)")

    workers = request.max_workers or config.max_workers or _default_workers(flavor, config, caps)
    if flavor == "none":
        workers = 1
    reason = REASONS[code]
    if code.startswith("gil-reenabled-"):
        reason += f"; the GIL was enabled by importing {caps.gil_enabled_by}"
    trace = DecisionTrace(
        name=request.name,
        requested_flavor=requested,
        resolved_flavor=None if error else flavor,
        reason_code=code,
        reason=reason,
        worker_count=workers,
        thread_mode=config.thread_mode,
        cpu_bound=request.cpu_bound,
        io_bound=request.io_bound,
        capabilities=caps.as_dict(),
        config=config.as_dict(),
    )
    trace.timings["decide"] = time.perf_counter() - started
    if error:
        raise DecisionError(error, trace)
    return trace
