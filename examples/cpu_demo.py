"""A small CPU-bound program, unmodified python: how much do two threads help?

Run it under unirun-python in each thread mode (examples/run-demo does) and compare.
"""

import concurrent.futures
import sys
import sysconfig
import threading
import time


def count_primes(limit):
    """Pure-Python CPU work: no I/O, no C extension that could drop the GIL."""
    found = 0
    for n in range(2, limit):
        for d in range(2, int(n**0.5) + 1):
            if n % d == 0:
                break
        else:
            found += 1
    return found, threading.current_thread().name


def describe_runtime():
    build = "free-threaded" if sysconfig.get_config_var("Py_GIL_DISABLED") else "GIL"
    gil = "on" if sys._is_gil_enabled() else "off"
    line = f"Python {sys.version.split()[0]} ({build} build, GIL {gil} now)"
    try:
        import _unirun  # present only under unirun-python
    except ImportError:
        return line + ", plain python"
    info = _unirun.runtime_info()
    return f"{line}, unirun runtime {info['tag']}: {info['decision']}"


def main():
    tasks, limit, workers = 8, 100_000, 2
    print(describe_runtime())

    start = time.perf_counter()
    expected = [count_primes(limit)[0] for _ in range(tasks)]
    sequential = time.perf_counter() - start

    start = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(workers) as pool:
        results = list(pool.map(count_primes, [limit] * tasks))
    threaded = time.perf_counter() - start

    assert [count for count, _ in results] == expected
    where = sorted({thread for _, thread in results})
    print(f"  {tasks} tasks of count_primes({limit}) ran on {', '.join(where)}")
    print(f"  speedup of ThreadPoolExecutor({workers}) over one thread: {sequential / threaded:.2f}x")

    try:
        from unirun import Run
    except ImportError:
        return
    # The same work where unirun decides: cpu_bound picks threads on a free-threaded runtime
    # and subinterpreter workers (one GIL each) on a GIL runtime.
    start = time.perf_counter()
    with Run(cpu_bound=True, max_workers=workers, name="cpu_demo") as executor:
        counts = list(executor.map(count_primes_only, [limit] * tasks))
    decided = time.perf_counter() - start
    assert counts == expected
    print(f"  Run(cpu_bound=True) chose {executor.__class__.__name__}: speedup {sequential / decided:.2f}x")


def count_primes_only(limit):
    return count_primes(limit)[0]


if __name__ == "__main__":
    main()
