"""What a program sees of ProcessPoolExecutor's workers: functions of the main script, errors
and their remote tracebacks, what cannot be pickled either way, initializers, max_tasks_per_child,
BaseExceptions in tasks, a worker killed by a signal, map with chunks, a failing initializer.
The output must be the same under python and under unirun-python, whatever serves the pool
(tests/python/test_compat.py runs it with each --process-pool)."""
import concurrent.futures as cf
import multiprocessing as mp
import os
import signal
import sys
import threading

VALUE = "parent"


def square(x):
    return x * x


def fail(text):
    raise ValueError(text)


def pid(_=None):
    return os.getpid()


def value():
    return VALUE


def set_value(text):
    global VALUE
    VALUE = text


def give_lock():
    return threading.Lock()


def leave(kind):
    raise {"exit": SystemExit(3), "interrupt": KeyboardInterrupt()}[kind]


def kill_self():
    os.kill(os.getpid(), signal.SIGKILL)


def take_lock(lock):
    with lock:
        pass


def bad_initializer():
    raise RuntimeError("initializer fails")


def outcome(future):
    try:
        return f"ok {future.result(timeout=120)!r}"
    except BaseException as e:
        return f"{type(e).__name__}"


if __name__ == "__main__":
    spawn = mp.get_context("spawn")
    with cf.ProcessPoolExecutor(2) as ex:
        print("square", ex.submit(square, 7).result())
        print("elsewhere", ex.submit(pid).result() != os.getpid())
        f = ex.submit(fail, "boom")
        try:
            f.result()
        except ValueError as e:
            print("error", e, type(e.__cause__).__name__, "fail" in str(e.__cause__))
        print("lock argument", outcome(ex.submit(square, threading.Lock())))
        print("lambda", outcome(ex.submit(lambda: 1)))
        print("lock result", outcome(ex.submit(give_lock)))
        print("exit", outcome(ex.submit(leave, "exit")))
        print("interrupt", outcome(ex.submit(leave, "interrupt")))
        print("map", list(ex.map(square, range(10), chunksize=3)))
        print("map timeout none", list(ex.map(square, [1, 2], timeout=None)))
        print("still usable", ex.submit(square, 3).result())
    with cf.ProcessPoolExecutor(1, mp_context=spawn, initializer=set_value, initargs=("child",)) as ex:
        print("initializer", ex.submit(value).result())
    with cf.ProcessPoolExecutor(1, mp_context=spawn, max_tasks_per_child=2) as ex:
        pids = [ex.submit(pid, i).result() for i in range(6)]
        print("children for 6 tasks at 2 each", len(set(pids)))
    ex = cf.ProcessPoolExecutor(1, mp_context=spawn)
    print("warm", ex.submit(square, 2).result())
    print("killed", outcome(ex.submit(kill_self)))
    try:
        ex.submit(square, 1)
    except Exception as e:
        print("submit after", type(e).__name__)
    ex.shutdown()
    # A lock of multiprocessing's default context in initargs (tqdm's process_map passes one).
    with cf.ProcessPoolExecutor(2, initializer=take_lock, initargs=(mp.RLock(),)) as ex:
        print("default-context lock", list(ex.map(square, range(4))))
    ex = cf.ProcessPoolExecutor(1, mp_context=spawn, initializer=bad_initializer)
    print("bad initializer", outcome(ex.submit(square, 2)))
    ex.shutdown()
    sys.stdout.flush()
    print("end")
