"""Ctrl-C while a process pool's workers run long tasks: the program must end (with
KeyboardInterrupt) and leave no worker process behind, under python and under unirun-python
(tests/python/test_process_workers.py sends SIGINT to the whole process group, as a terminal
does)."""
import concurrent.futures as cf
import multiprocessing
import sys
import time


def long_task():
    time.sleep(120)
    return 1


if __name__ == "__main__":
    context = multiprocessing.get_context("forkserver")
    ex = cf.ProcessPoolExecutor(2, mp_context=context)
    futures = [ex.submit(long_task) for _ in range(2)]
    while len(ex._processes) < 2 or not all(f.running() for f in futures):
        time.sleep(0.05)
    time.sleep(0.5)  # the children are inside their tasks
    print("pids", " ".join(str(p) for p in sorted(ex._processes)), flush=True)
    try:
        futures[0].result()
    except KeyboardInterrupt:
        print("interrupted", flush=True)
        sys.exit(130)
