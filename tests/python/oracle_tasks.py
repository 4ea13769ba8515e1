"""Module-level task functions for the future oracle (future_oracle.py) and the stress run.

Interpreter workers import them by name, so this module imports little and holds no state.
Tasks are gated by pipes, not by threading objects: file descriptors belong to the process,
so one mechanism holds a task on a thread worker, on a subinterpreter worker and on a
standard-library worker alike.
"""

import os
import select


class OracleTaskError(Exception):
    """What a task raises when the test asks it to fail."""


def gated(started_w, release_r, tag, kind, hang):
    """Say "started" on one pipe, wait for one byte on the other, then finish as `kind` asks.

    `hang` bounds the wait: a task nobody releases fails instead of holding its worker forever.
    """
    os.write(started_w, b"s")
    ready, _, _ = select.select([release_r], [], [], hang)
    if not ready:
        raise TimeoutError(f"oracle task {tag} was never released")
    os.read(release_r, 1)
    return finish(tag, kind)


def finish(tag, kind):
    if kind == "raise":
        raise OracleTaskError(tag)
    if kind == "inner-std":
        return ("inner", tag, inner_program("std"))
    if kind == "inner-uni":
        return ("inner", tag, inner_program("uni"))
    return ("value", tag, [tag])  # a tuple with a list: it crosses interpreters by pickle


def plain(tag):
    return ("plain", tag)


def _interpreter_id():
    try:
        import _interpreters
    except ImportError:  # Python 3.11 under plain python: one interpreter
        return 0
    return _interpreters.get_current()[0]


def stdlib_thread_pool():
    """The standard ThreadPoolExecutor, also where unirun.compat replaced the public name."""
    import concurrent.futures.thread

    cls = concurrent.futures.thread.ThreadPoolExecutor
    while cls.__module__ != "concurrent.futures.thread":
        cls = cls.__mro__[1]
    return cls


def inner_program(impl):
    """Futures made, watched and finished inside the task (inside the worker's interpreter for
    interpreter workers), with the standard library's classes (impl "std") or unirun's ("uni").
    Returns what it saw; both implementations must see the same."""
    import concurrent.futures as cf
    import threading

    if impl == "uni":
        import _unirun
        from unirun._executors import ThreadExecutor

        make_future, make_executor = _unirun.Future, ThreadExecutor
    else:
        make_future, make_executor = cf.Future, stdlib_thread_pool()
    here = _interpreter_id()
    seen = []

    def watch(name):
        def callback(future):
            seen.append((name, future._state, _interpreter_id() == here))
        return callback

    # A manual future finished by this thread, watched by a callback and a waiter.
    future = make_future()
    future.add_done_callback(watch("set_result"))
    waiter = threading.Thread(target=lambda: seen.append(("waited", len(cf.wait([future], timeout=30)[0]))))
    waiter.start()
    while not future._waiters:  # the waiter is registered
        threading.Event().wait(0.001)
    future.set_result(1)
    waiter.join(30)
    # A manual future cancelled by this thread, then notified as an executor would.
    future = make_future()
    future.add_done_callback(watch("cancel"))
    seen.append(("cancel", future.cancel(), future.set_running_or_notify_cancel()))
    # A nested executor: a queued call cancelled by this thread while the worker is busy.
    release = threading.Event()
    with make_executor(1) as executor:
        busy = executor.submit(release.wait, 30)
        queued = executor.submit(int, "5")
        queued.add_done_callback(watch("nested-cancel"))
        done = executor.submit(int, "7")
        done.add_done_callback(watch("nested-result"))
        cancelled = queued.cancel()
        release.set()
        finished, pending = cf.wait([busy, queued, done], timeout=30)
        value = done.result(timeout=30)
    # After the executor's shutdown: its workers (and the callbacks they ran) are done.
    seen.append(("nested", cancelled, len(finished), len(pending), value))
    # Threads append concurrently: the order says nothing, the contents everything.
    return tuple(sorted(seen, key=repr))
