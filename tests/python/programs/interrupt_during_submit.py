"""Ctrl-C (SIGINT) sent by a task while the main thread is still submitting: python raises
KeyboardInterrupt in the main thread every time (dask's threaded scheduler relies on it).
tests/python/test_compat.py compares the output with plain python's."""
import concurrent.futures as cf, os, signal, time
# A shell's background job starts with SIGINT ignored, and python keeps that: ask for
# KeyboardInterrupt whatever started us.
signal.signal(signal.SIGINT, signal.default_int_handler)
def noop(): pass
caught = 0
for _ in range(20):
    executor = cf.ThreadPoolExecutor(8)
    try:
        executor.submit(os.kill, os.getpid(), signal.SIGINT)
        for _ in range(7):
            executor.submit(noop)
        deadline = time.monotonic() + 2  # the interrupt arrives well within this window
        while time.monotonic() < deadline:
            time.sleep(0.005)
    except KeyboardInterrupt:
        caught += 1
    executor.shutdown()
print("interrupts seen:", caught)
