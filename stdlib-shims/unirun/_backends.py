"""The executor that serves each flavor, under unirun-python or under plain python."""

from __future__ import annotations

import concurrent.futures
from typing import Optional

from ._capabilities import Capabilities

__all__ = ["InlineExecutor", "make_executor", "flavor_of"]


class InlineExecutor(concurrent.futures.Executor):
    """The none flavor: every call runs at submit, in the caller's thread, in order. For
    deterministic debugging; futures come back already done."""

    def __init__(self) -> None:
        self._shutdown = False

    def submit(self, fn, /, *args, **kwargs):
        if self._shutdown:
            raise RuntimeError("cannot schedule new futures after shutdown")
        future: concurrent.futures.Future = concurrent.futures.Future()
        future.set_running_or_notify_cancel()
        try:
            result = fn(*args, **kwargs)
        except BaseException as exc:
            future.set_exception(exc)
        else:
            future.set_result(result)
        return future

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        self._shutdown = True


def flavor_of(executor) -> str:
    """The flavor an existing executor serves; "threads" for one unirun does not know."""
    names = {cls.__name__ for cls in type(executor).__mro__}
    if isinstance(executor, InlineExecutor):
        return "none"
    if names & {"InterpreterPoolExecutor", "InterpreterExecutor"}:
        return "interpreters"
    if names & {"ProcessPoolExecutor", "ProcessExecutor"} and "DistributedExecutor" not in names:
        return "processes"
    if "DistributedExecutor" in names:
        return "distributed"
    return "threads"


def make_executor(flavor: str, workers: int, name: Optional[str], caps: Capabilities,
                  address: Optional[str] = None):
    """A new executor for a resolved flavor (address: the distributed flavor's scheduler).
    Returns (executor, backend name)."""
    if flavor == "distributed":
        from ._distributed import DistributedExecutor

        executor = DistributedExecutor(workers, address, thread_name_prefix=name or "")
        from ._metrics import note_fallback

        note_fallback(executor, name or "DistributedExecutor", flavor)
        where = address or f"LocalCluster({workers} worker processes)"
        return executor, f"unirun.DistributedExecutor({where})"
    executor, backend = _make_executor(flavor, workers, name, caps)
    if not caps.under_launcher and flavor != "none":
        # The standard library's executors: unirun.metrics() lists them, partially.
        from ._metrics import note_fallback

        note_fallback(executor, name or backend.rpartition(".")[2], flavor)
    return executor, backend


def _make_executor(flavor: str, workers: int, name: Optional[str], caps: Capabilities):
    prefix = name or ""
    if flavor == "none":
        return InlineExecutor(), "unirun.InlineExecutor"
    if flavor == "processes" and caps.under_launcher:
        from ._executors import ProcessExecutor

        return ProcessExecutor(workers, thread_name_prefix=prefix), "unirun.ProcessExecutor"
    if flavor == "processes":
        # Not fork: forking a process that runs worker threads or subinterpreters is unsafe
        # (CPython clears the other interpreters in the child without their thread states).
        # forkserver (3.14's default on POSIX) forks from a clean server started through
        # sys.executable, i.e. unirun-python under the launcher.
        import multiprocessing

        method = "forkserver" if "forkserver" in multiprocessing.get_all_start_methods() else "spawn"
        return (concurrent.futures.ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context(method)),
                f"concurrent.futures.ProcessPoolExecutor({method})")
    if caps.under_launcher:
        from ._executors import InterpreterExecutor, ThreadExecutor

        if flavor == "threads":
            return ThreadExecutor(workers, thread_name_prefix=prefix), "unirun.ThreadExecutor"
        return InterpreterExecutor(workers, thread_name_prefix=prefix), "unirun.InterpreterExecutor"
    if flavor == "threads":
        return (concurrent.futures.ThreadPoolExecutor(workers, thread_name_prefix=prefix),
                "concurrent.futures.ThreadPoolExecutor")
    pool = getattr(concurrent.futures, "InterpreterPoolExecutor")  # 3.14+: decide() checked
    return pool(workers, thread_name_prefix=prefix), "concurrent.futures.InterpreterPoolExecutor"
