"""Module-level callables for the native executor tests: interpreter workers import them."""

import os
import sys
import threading


def square(x):
    return x * x


def add(a, b=0, *, c=0):
    return a + b + c


def fail(message):
    raise ValueError(message)


def nested_failure(message):
    def inner():
        fail(message)

    inner()


def identity(value):
    return value


def set_env(name, value):
    os.environ[name] = value


def get_env(name):
    return os.environ.get(name)


def big_bytes(n):
    return bytes(n)


def length(data):
    return len(data)


def thread_name():
    return threading.current_thread().name


def interpreter_id():
    return _interpreter_id()


def gil_enabled():
    return getattr(sys, "_is_gil_enabled", lambda: True)()  # 3.13+; before, always on


def wait_at(barrier_or_event, timeout=60):
    if hasattr(barrier_or_event, "wait"):
        return barrier_or_event.wait(timeout)
    return None


def block_until(event):
    event.wait(60)
    return "released"


def import_module(name):
    __import__(name)
    return name


def unpicklable_result():
    return threading.Lock()  # neither pickle nor any other way crosses a lock


class Unpicklable(Exception):
    def __init__(self, a, b):  # pickle rebuilds with one argument: this cannot be restored
        super().__init__(f"{a}-{b}")


def raise_unpicklable():
    raise Unpicklable(1, 2)


def nested_executor(flavor, n):
    from unirun._executors import InterpreterExecutor, ThreadExecutor

    cls = ThreadExecutor if flavor == "threads" else InterpreterExecutor
    with cls(2) as executor:
        return sum(executor.map(square, range(n)))


def pid():
    return os.getpid()


def stdlib_pool_inside(n):
    import concurrent.futures

    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        return sum(pool.map(square, range(n)))


def nap(seconds):
    import time

    time.sleep(seconds)
    return seconds


def fresh_list(n):
    return list(range(n))


def _interpreter_id():
    try:
        import _interpreters  # 3.13+
    except ImportError:
        try:
            import _xxsubinterpreters  # 3.12: the same module, under its provisional name
        except ImportError:  # 3.11 has no subinterpreters to tell apart
            return 0
        return int(_xxsubinterpreters.get_current())
    return _interpreters.get_current()[0]


def callback_interpreters(how):
    """Inside a task: make a future here, watch it, complete it from this same thread, and
    report in which interpreter its callbacks and waiters ran (with this task's own)."""
    import concurrent.futures as cf

    seen = []
    here = _interpreter_id()
    if how == "manual":
        future = cf.Future() if "_unirun" not in sys.modules else __import__("_unirun").Future()
        future.add_done_callback(lambda f: seen.append(_interpreter_id()))
        future.set_result(1)
    elif how == "cancel":
        future = cf.Future() if "_unirun" not in sys.modules else __import__("_unirun").Future()
        future.add_done_callback(lambda f: seen.append(_interpreter_id()))
        future.cancel()
        future.set_running_or_notify_cancel()
    else:  # a thread pool made inside the task
        with cf.ThreadPoolExecutor(1) as pool:
            future = pool.submit(square, 3)
            future.add_done_callback(lambda f: seen.append(_interpreter_id()))
            done, _ = cf.wait([future], timeout=60)
            assert future in done
            future.result()
    return here, seen


class SlowToDecode:
    """Its unpickling runs Python code that lets other threads in (the GIL is released)."""

    def __init__(self):
        self.payload = list(range(10))

    def __setstate__(self, state):
        import time

        time.sleep(0.001)
        self.__dict__.update(state)


def slow_to_decode():
    return SlowToDecode()
