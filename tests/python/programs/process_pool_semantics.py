"""ProcessPoolExecutor semantics a program relies on: running/cancel, a dying worker (os._exit)
breaking the pool. The output must be the same under python and under unirun-python with
--process-pool=interpreters (tests/python/test_compat.py)."""
import concurrent.futures as cf, os, time, sys
def nap(s):
    time.sleep(s); return s
def die(code):
    # A moment first: the stdlib's own pool raises BrokenProcessPool from the next submit if
    # the worker is already dead (a race of python's own, seen on a loaded machine).
    time.sleep(0.3); os._exit(code)
def square(x): return x * x
if __name__ == "__main__":
    with cf.ProcessPoolExecutor(1) as ex:
        f = ex.submit(nap, 0.5)
        deadline = time.monotonic() + 30
        while not f.running() and time.monotonic() < deadline: time.sleep(0.01)
        print("running", f.running(), "cancel", f.cancel(), "result", f.result())
        # The stdlib moves up to max_workers + 1 calls to its workers' queue (they are running
        # then); the last of several queued ones is always still cancellable.
        g = ex.submit(nap, 0.2); queued = [ex.submit(square, i) for i in range(5)]
        print("queued cancel", queued[-1].cancel(), g.result(), queued[-1].cancelled())
    ex = cf.ProcessPoolExecutor(1)
    f = ex.submit(die, 3); q = ex.submit(square, 2)
    for x in (f, q):
        try: print("result", x.result(timeout=60))
        except Exception as e: print(type(e).__name__, e)
    try: ex.submit(square, 1)
    except Exception as e: print("submit:", type(e).__name__, e)
    ex.shutdown()
    print("end")
