"""An unmodified program: many small tasks on concurrent.futures.ThreadPoolExecutor.

Nothing here knows about unirun. Under unirun-python the executor is served by unirun's native
scheduler (unirun.compat); under plain python it is the standard library's.
"""

import concurrent.futures
import time


def checksum(n):
    return (n * 2654435761) % 2**32


def main():
    tasks = 50_000
    start = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(max_workers=4) as pool:
        futures = [pool.submit(checksum, n) for n in range(tasks)]
        total = sum(f.result() for f in futures)
    elapsed = time.perf_counter() - start
    print(f"  {type(pool).__module__}.{type(pool).__name__}: {tasks} tasks, "
          f"{elapsed / tasks * 1e6:.1f} us per task (checksum {total % 1000})")


if __name__ == "__main__":
    main()
