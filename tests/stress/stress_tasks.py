"""Task functions of the stress run (stress.py). Interpreter workers import them by name, so
this module imports little at the top."""

import threading
import time

# Calls that ran in this interpreter (thread flavors: the test's own interpreter).
RAN = set()
_ran_lock = threading.Lock()


class StressError(Exception):
    """What a failing task raises: its args say which task published it."""


def _mark(key):
    with _ran_lock:
        RAN.add(key)


def value(key, nonce):
    _mark(key)
    return ("v", key, nonce, [nonce])  # the list: the value crosses interpreters by pickle


def fail(key, nonce):
    _mark(key)
    raise StressError(key, nonce)


def nap(key, nonce, seconds):
    _mark(key)
    time.sleep(seconds)
    return ("v", key, nonce, [nonce])


DIED = ("A process in the process pool was terminated abruptly while the future was running "
        "or pending.",)


def die(key, nonce):
    """A worker process that dies mid-task (process flavors only)."""
    import os

    os._exit(3)


def expected(kind, key, nonce):
    """What the task of `kind` publishes: ("value", v) or ("raise", type, args)."""
    if kind == "fail":
        return ("raise", StressError, (key, nonce))
    if kind == "die":
        from concurrent.futures.process import BrokenProcessPool

        return ("raise", BrokenProcessPool, DIED)
    return ("value", ("v", key, nonce, [nonce]))


def futures_inside(seed, n):
    """Inside an interpreter task: futures made, watched and finished in the worker's own
    interpreter (a ThreadExecutor, manual _unirun futures, a Run scope that cancels at exit).
    Returns what went wrong (empty when nothing did) and how much was checked."""
    import concurrent.futures as cf
    import random

    import _unirun
    from unirun import Run
    from unirun._executors import ThreadExecutor

    rng = random.Random(seed)
    lock = threading.Lock()
    calls = {}
    problems = []
    registered = []

    def watch(future, key):
        registered.append(key)

        def callback(f):
            with lock:
                calls[key] = calls.get(key, 0) + 1
            if not f.done():
                problems.append(f"callback of {key} saw a future that is not done")

        future.add_done_callback(callback)

    def check_outcome(future, want, key):
        if future.cancelled():
            return
        kind = want[0]
        try:
            got = ("value", future.result())
        except StressError as exc:
            got = ("raise", StressError, exc.args)
        except BaseException as exc:  # noqa: BLE001
            got = ("raise", type(exc), exc.args)
        if got != want:
            problems.append(f"{key}: read {got!r}, published {want!r} ({kind})")

    # A ThreadExecutor made here: calls cancelled by this very thread while queued.
    with ThreadExecutor(2) as executor:
        futures = []
        for i in range(n):
            kind = "fail" if rng.random() < 0.2 else "value"
            f = executor.submit(fail if kind == "fail" else value, ("inner", seed, i), seed)
            watch(f, ("executor", i))
            futures.append((f, expected(kind, ("inner", seed, i), seed), ("executor", i)))
            if rng.random() < 0.3:
                f.cancel()
        # Manual futures finished here, on another thread, or cancelled and notified here.
        manual, finishers = [], []
        for i in range(n):
            m = _unirun.Future()
            watch(m, ("manual", i))
            how = rng.choice(["here", "thread", "cancel", "exception"])
            want = ("value", ("m", i))
            if how == "here":
                m.set_result(("m", i))
            elif how == "exception":
                want = ("raise", StressError, (i,))
                m.set_exception(StressError(i))
            elif how == "cancel":
                m.cancel()
                m.set_running_or_notify_cancel()
            else:
                finisher = threading.Thread(target=m.set_result, args=(("m", i),))
                finisher.start()
                finishers.append(finisher)
            manual.append((m, want, ("manual", i)))
        every = [f for f, _, _ in futures + manual]
        done, not_done = cf.wait(every)  # no timeout: the stress run's watchdog guards it
        if not_done:
            problems.append(f"wait() returned {len(not_done)} futures not done")
        yielded = list(cf.as_completed(every))
        if len(yielded) != len(every) or len({id(f) for f in yielded}) != len(every):
            problems.append(f"as_completed() yielded {len(yielded)} of {len(every)}")
    for finisher in finishers:  # its callbacks ran on it
        finisher.join()
    for f, want, key in futures + manual:
        check_outcome(f, want, key)

    # A Run scope left by an exception: calls that have not started are cancelled at exit.
    class Leave(Exception):
        pass

    scoped = []
    try:
        with Run("threads", max_workers=1, trace=False) as executor:
            for i in range(4):
                f = executor.submit(value, ("scope", seed, i), seed)
                watch(f, ("scope", i))
                scoped.append((f, expected("value", ("scope", seed, i), seed), ("scope", i)))
            raise Leave
    except Leave:
        pass
    for f, want, key in scoped:
        if not f.done():
            problems.append(f"{key} did not end when its Run scope exited")
        check_outcome(f, want, key)

    for key in registered:
        if calls.get(key, 0) != 1:
            problems.append(f"the callback of {key} ran {calls.get(key, 0)} times")
    return {"checked": len(registered), "problems": problems}
