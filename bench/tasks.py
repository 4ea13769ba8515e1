"""Work items for the benchmarks: importable by name from every worker (threads,
subinterpreters, processes), since bench/ is on PYTHONPATH when they run."""

import time


def noop():
    return None


def echo(value):
    return value


def square(x):
    return x * x


def spin(iterations):
    """Pure-Python CPU work: no I/O, nothing that releases the GIL."""
    total = 0
    for i in range(iterations):
        total += i * i % 7
    return total


def calibrate(target_seconds=0.020):
    """Iterations of spin() that take about target_seconds on this machine, now."""
    iterations = 10_000
    while True:
        start = time.perf_counter()
        spin(iterations)
        elapsed = time.perf_counter() - start
        if elapsed > 0.005:
            return max(1, int(iterations * target_seconds / elapsed))
        iterations *= 2


def sleep(seconds):
    time.sleep(seconds)


def timed_spins(iterations, count):
    """Runs spin() count times; returns the seconds it took, measured where it ran."""
    start = time.perf_counter()
    for _ in range(count):
        spin(iterations)
    return time.perf_counter() - start
