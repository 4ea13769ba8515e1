"""Prints timings, object addresses and worker thread ids, which change from run to run: the
canary learns that from the two control runs and still says `same`."""
import concurrent.futures as cf
import threading
import time


def work(n):
    return sum(i * i for i in range(n)), threading.get_ident()


if __name__ == "__main__":
    started = time.perf_counter()
    with cf.ThreadPoolExecutor(2) as executor:
        results = list(executor.map(work, [20000] * 8))
    print("total", sum(r[0] for r in results))
    print("first worker", results[0][1], "executor at", hex(id(executor)))
    print(f"took {time.perf_counter() - started:.6f} s")
