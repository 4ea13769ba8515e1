"""ProcessPoolExecutor configurations and tasks that only real processes serve as python does:
initargs inherited by the workers (tqdm's process_map passes a multiprocessing.RLock), an
explicit fork context (workers inherit the parent's state), and a task that catches a module's
refusal to load and returns normally. The output must be the same under python and under
unirun-python --process-pool=interpreters (tests/python/test_compat.py)."""
import concurrent.futures as cf
import multiprocessing as mp
import os

_lock = None
STATE = {"value": 0}


def remember(lock):
    global _lock
    _lock = lock


def locked_pid(_):
    with _lock:
        return os.getpid()


def read_state():
    return STATE["value"], os.getpid()


def try_import(name):
    try:
        __import__(name)
        return "imported", os.getpid()
    except ImportError:
        return "refused", os.getpid()


if __name__ == "__main__":
    parent = os.getpid()
    with cf.ProcessPoolExecutor(2, initializer=remember, initargs=(mp.RLock(),)) as executor:
        submitted = []
        submit = executor.submit
        executor.submit = lambda *a, **k: submitted.append(1) or submit(*a, **k)  # as tqdm does
        pids = set(executor.map(locked_pid, range(4), chunksize=2))
        print("rlock pool: ran in children:", parent not in pids, "submits seen:", len(submitted))
    STATE["value"] = 42
    with cf.ProcessPoolExecutor(2, mp_context=mp.get_context("fork")) as executor:
        value, pid = executor.submit(read_state).result()
        print("fork pool: inherited", value, "in a child:", pid != parent)
    with cf.ProcessPoolExecutor(2) as executor:
        status, pid = executor.submit(try_import, "_testsinglephase").result()
        print("caught refusal:", status, "in a child:", pid != parent)
