"""An unmodified program: CPU-bound work on concurrent.futures.ProcessPoolExecutor.

Under `unirun-python --process-pool=interpreters` the pool is served by subinterpreter workers
(own GIL each, no processes), with a per-task fallback to real processes.
"""

import concurrent.futures
import time


def count_primes(limit):
    found = 0
    for n in range(2, limit):
        for d in range(2, int(n**0.5) + 1):
            if n % d == 0:
                break
        else:
            found += 1
    return found


def main():
    limits = [80_000] * 8
    start = time.perf_counter()
    with concurrent.futures.ProcessPoolExecutor(max_workers=2) as pool:
        results = list(pool.map(count_primes, limits))
    elapsed = time.perf_counter() - start
    print(f"  {type(pool).__module__}.{type(pool).__name__}: {len(limits)} tasks in "
          f"{elapsed:.2f} s (found {results[0]} primes each)")


if __name__ == "__main__":
    main()
