"""The native scheduler behind _unirun: ThreadExecutor and InterpreterExecutor.

Runs under unirun-python (make test does, in both thread modes); under plain python the
_unirun module does not exist and these tests are skipped.
"""

import asyncio
import concurrent.futures as cf
import logging
import os
import pathlib
import subprocess
import sys
import textwrap
import threading
import traceback

import pytest

_unirun = pytest.importorskip("_unirun", reason="needs unirun-python (the _unirun built-in module)")

import native_tasks as tasks  # noqa: E402
from runtime_support import needs_native_interpreters  # noqa: E402
from unirun._executors import InterpreterExecutor, ProcessExecutor, ThreadExecutor  # noqa: E402

FLAVORS = {"threads": ThreadExecutor, "interpreters": InterpreterExecutor, "processes": ProcessExecutor}


def _flavor_params(names):
    return [pytest.param(name, marks=needs_native_interpreters) if name == "interpreters" else name
            for name in names]


@pytest.fixture(scope="module", params=_flavor_params(sorted(FLAVORS)))
def flavor(request):
    return request.param


@pytest.fixture(scope="module")
def executor(flavor):
    with FLAVORS[flavor](2) as executor:
        yield executor


def run_program(source, *args, tmp_path, name="program.py"):
    path = tmp_path / name
    path.write_text(textwrap.dedent(source))
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST")}
    env["PYTHONPATH"] = str(pathlib.Path(__file__).parent)
    return subprocess.run([sys.executable, *args, str(path)], capture_output=True, text=True,
                          timeout=300, cwd=tmp_path, env=env)


# --- the Executor protocol ------------------------------------------------------------------

def test_futures_are_standard_futures(executor):
    future = executor.submit(tasks.square, 7)
    assert isinstance(future, cf.Future)
    assert future.result() == 49
    assert future.done() and not future.running() and not future.cancelled()
    assert future.exception() is None
    assert "finished" in repr(future)


def test_arguments_and_keywords(executor):
    assert executor.submit(tasks.add, 1, 2, c=3).result() == 6
    assert executor.submit(tasks.add, a=5).result() == 5


def test_map_keeps_order_and_takes_several_iterables(executor):
    assert list(executor.map(tasks.square, range(50))) == [i * i for i in range(50)]
    assert list(executor.map(tasks.add, [1, 2, 3], [10, 20, 30])) == [11, 22, 33]
    assert list(executor.map(tasks.square, range(23), chunksize=5)) == [i * i for i in range(23)]
    if isinstance(executor, (InterpreterExecutor, ProcessExecutor)):  # as ProcessPoolExecutor: checked
        with pytest.raises(ValueError, match="chunksize"):
            executor.map(tasks.square, range(3), chunksize=0)
    else:  # as ThreadPoolExecutor: chunksize is ignored
        assert list(executor.map(tasks.square, range(3), chunksize=0)) == [0, 1, 4]


def started(future):
    """Waits (a minute at most: a hang guard) until `future` runs or is done."""
    import time

    deadline = time.monotonic() + 60
    while not (future.running() or future.done()) and time.monotonic() < deadline:
        time.sleep(0.005)
    return future


def test_map_timeout_raises(flavor):
    with FLAVORS[flavor](1) as ex:
        results = ex.map(tasks.nap, [1.0], timeout=0.05)  # cannot be done within the timeout
        with pytest.raises(TimeoutError):
            list(results)


def test_exception_reraises_with_the_workers_traceback(executor, flavor):
    future = executor.submit(tasks.nested_failure, "bad input")
    with pytest.raises(ValueError, match="bad input") as info:
        future.result()
    assert isinstance(future.exception(), ValueError)
    if flavor == "threads":
        names = [frame.f_code.co_name for frame, _ in traceback.walk_tb(info.value.__traceback__)]
        assert "inner" in names and "fail" in names
    else:
        remote = str(info.value.__cause__)
        assert "in inner" in remote and "in fail" in remote and "ValueError: bad input" in remote


def test_wait_and_as_completed(executor):
    futures = [executor.submit(tasks.square, i) for i in range(200)]
    done, not_done = cf.wait(futures)
    assert len(done) == 200 and not not_done
    futures = [executor.submit(tasks.square, i) for i in range(100)]
    assert sorted(f.result() for f in cf.as_completed(futures)) == sorted(i * i for i in range(100))
    futures = [executor.submit(tasks.fail, "x"), executor.submit(tasks.square, 3)]
    done, _ = cf.wait(futures, return_when=cf.FIRST_EXCEPTION)
    assert any(f.exception() for f in done)
    done, _ = cf.wait([executor.submit(tasks.square, 2)], return_when=cf.FIRST_COMPLETED)
    assert [f.result() for f in done] == [4]


def test_asyncio_wrap_future_and_run_in_executor(executor):
    async def main():
        loop = asyncio.get_running_loop()
        a = await asyncio.wrap_future(executor.submit(tasks.square, 12))
        b = await loop.run_in_executor(executor, tasks.square, 5)
        c = await asyncio.gather(*(loop.run_in_executor(executor, tasks.square, i) for i in range(20)))
        return a, b, c

    assert asyncio.run(main()) == (144, 25, [i * i for i in range(20)])


def test_done_callbacks_before_and_after(executor):
    seen = []
    release = threading.Event()
    blocker = FLAVORS["threads"](1)
    future = blocker.submit(tasks.block_until, release)
    future.add_done_callback(lambda f: seen.append(("before", f.result())))
    release.set()
    future.result()
    blocker.shutdown()
    future.add_done_callback(lambda f: seen.append(("after", f.result())))
    assert seen == [("before", "released"), ("after", "released")]
    # a callback on a future nobody keeps still runs
    got = threading.Event()
    executor.submit(tasks.square, 2).add_done_callback(lambda f: got.set())
    assert got.wait(60)


def test_callback_errors_are_logged_not_raised(executor, caplog):
    future = executor.submit(tasks.square, 3)
    future.result()
    with caplog.at_level(logging.ERROR, logger="concurrent.futures"):
        future.add_done_callback(lambda f: 1 / 0)
    assert "exception calling callback" in caplog.text


def test_cancel_queued_not_running(flavor):
    with FLAVORS[flavor](1) as ex:
        running = started(ex.submit(tasks.nap, 0.5))  # the only worker is busy from here on
        queued = ex.submit(tasks.square, 4)
        seen = []
        queued.add_done_callback(lambda f: seen.append(f.cancelled()))
        assert queued.cancel()
        assert queued.cancelled() and queued.done()
        with pytest.raises(cf.CancelledError):
            queued.result()
        assert seen == [True]
        assert not running.cancel() and running.running()
        assert running.result() == 0.5
    stats = ex.stats()
    assert stats["cancelled"] == 1 and stats["completed"] == 1


def test_shutdown_cancel_futures_ends_every_future(flavor):
    ex = FLAVORS[flavor](1)
    running = started(ex.submit(tasks.nap, 0.3))  # the only worker is busy: nothing else starts
    futures = [ex.submit(tasks.square, i) for i in range(50)]
    ex.shutdown(wait=False, cancel_futures=True)
    assert all(f.cancelled() for f in futures)
    ex.shutdown(wait=True)
    assert running.result() == 0.3
    done, not_done = cf.wait(futures, timeout=60)  # cancelled futures count as done for waiters
    assert not not_done
    with pytest.raises(RuntimeError, match="after shutdown"):
        ex.submit(tasks.square, 1)


def test_workers_are_named_threads(flavor):
    with FLAVORS[flavor](2, thread_name_prefix="crunch") as ex:
        assert ex.stats()["workers_started"] == 0  # no work: no workers yet
        assert not [t for t in threading.enumerate() if t.name.startswith("crunch")]
        names = {ex.submit(tasks.thread_name).result() for _ in range(10)}
        visible = {t.name for t in threading.enumerate()}
        if flavor == "processes":  # the task runs on its child's main thread; the worker is here
            assert names == {"MainThread"}
            names = {t.name for t in ex._pool.threads}
        assert names and all(n.startswith("crunch_") for n in names)
        assert names <= visible
        assert ex.stats()["workers_started"] <= 2


def test_at_most_max_workers(flavor):
    with FLAVORS[flavor](3) as ex:
        list(ex.map(tasks.square, range(300)))
    stats = ex.stats()  # after shutdown(wait=True): every worker has counted its last task
    assert stats["workers_started"] <= 3
    assert stats["submitted"] == stats["completed"] == 300


def test_bad_max_workers():
    for cls in FLAVORS.values():
        with pytest.raises(ValueError, match="greater than 0"):
            cls(0)
        with pytest.raises(TypeError):
            cls("2")


def test_threads_share_memory_and_run_concurrently():
    barrier = threading.Barrier(2)
    with ThreadExecutor(2) as ex:
        results = [ex.submit(tasks.wait_at, barrier) for _ in range(2)]
        assert sorted(r.result() for r in results) == [0, 1]


def test_thread_workers_keep_the_gil_state_of_the_runtime():
    with ThreadExecutor(2) as ex:
        assert ex.submit(tasks.gil_enabled).result() == tasks.gil_enabled()


# --- interpreter workers -------------------------------------------------------------------

@needs_native_interpreters
def test_interpreter_workers_are_other_interpreters():
    with InterpreterExecutor(2) as ex:
        ids = {ex.submit(tasks.interpreter_id).result() for _ in range(20)}
    assert ids and tasks.interpreter_id() not in ids
    assert len(ids) <= 2


@needs_native_interpreters
def test_large_results_and_arguments():
    size = 64 * 1024 * 1024
    with InterpreterExecutor(1) as ex:
        assert len(ex.submit(tasks.big_bytes, size).result()) == size
        assert ex.submit(tasks.length, b"x" * size).result() == size


@needs_native_interpreters
def test_values_round_trip_exactly():
    values = [None, True, 0, -(2**100), 1.5, 2j, "text", b"bytes", (1, "a"), [1, [2]], {"k": {1, 2}},
              frozenset({3}), cf.TimeoutError("t").args]
    with InterpreterExecutor(1) as ex:
        for value in values:
            result = ex.submit(tasks.identity, value).result()
            assert result == value and type(result) is type(value)


@needs_native_interpreters
def test_unpicklable_callable_or_argument_fails_at_submit():
    captured = 1
    with InterpreterExecutor(1) as ex:
        with pytest.raises(TypeError, match="callable <function .*<lambda>.* closure.* threads flavor"):
            ex.submit(lambda: captured)
        with pytest.raises(TypeError, match="argument 0 .*lock"):
            ex.submit(tasks.identity, threading.Lock())
        with pytest.raises(TypeError, match="keyword argument 'value'"):
            ex.submit(tasks.identity, value=threading.Lock())

        def reads_a_global():
            return tasks

        with pytest.raises(TypeError, match="uses the global 'tasks'"):
            ex.submit(reads_a_global)
        assert ex.stats()["submitted"] == 0


@needs_native_interpreters
def test_self_contained_functions_cross_by_their_code():
    # As CPython 3.14's interpreters share them: no closure, no defaults, only builtins.
    def local(a, b):
        return sorted([b, a]) + [len("abc")]

    with InterpreterExecutor(1) as ex:
        assert ex.submit(lambda: sum(range(10))).result() == 45
        assert ex.submit(local, 2, 1).result() == [1, 2, 3]
        assert list(ex.map(lambda x: -x, range(4))) == [0, -1, -2, -3]
        # a memoryview (which pickle refuses) arrives as a copy of its bytes
        assert ex.submit(bytes, memoryview(b"abc")).result() == b"abc"
        assert ex.submit(tasks.identity, [local]).result()[0](1, 0) == [0, 1, 3]
        # a result that only crosses that way, in a tuple (one argument, not unpacked)
        pair = ex.submit(tasks.identity, (local, 4)).result()
        assert pair[0](2, 1) == [1, 2, 3] and pair[1] == 4


@needs_native_interpreters
def test_a_module_that_shadows_a_builtin_keeps_its_own():
    # The same code with other globals: the decision is cached per code object, but a module
    # whose globals shadow a builtin the function reads makes it cross by name (here: refused).
    import builtins
    import types

    source = compile("def f(x):\n    return sorted(x)\n", "<shadow>", "exec")
    code = next(c for c in source.co_consts if isinstance(c, types.CodeType))
    plain = types.FunctionType(code, {"__builtins__": builtins, "__name__": "plain"})
    shadowing = types.FunctionType(code, {"__builtins__": builtins, "__name__": "mine",
                                          "sorted": lambda x: "mine"})
    with InterpreterExecutor(1) as ex:
        assert ex.submit(plain, [2, 1]).result() == [1, 2]
        with pytest.raises(TypeError, match="uses the global 'sorted'"):
            ex.submit(shadowing, [2, 1])


@needs_native_interpreters
def test_the_worker_loads_the_main_script_only_when_a_task_needs_it(tmp_path):
    script = tmp_path / "main_script.py"
    script.write_text(textwrap.dedent("""
        import math
        import sys
        print("script body runs as", __name__, file=sys.stderr)
        if "refuse" in sys.argv:
            import faulthandler  # a module subinterpreters cannot load
        from unirun._executors import InterpreterExecutor
        FACTOR = 3

        def scaled(x):
            return x * FACTOR  # reads a global: crosses by name, so the worker needs the script

        if __name__ == "__main__":
            def local(x):
                return x + 1

            with InterpreterExecutor(1) as ex:
                print(ex.submit(math.factorial, 5).result(), ex.submit(local, 1).result())
                try:
                    print(ex.submit(scaled, 2).result(), ex.submit(scaled, 3).result())
                except Exception as exc:
                    chain, cause = [], exc
                    while cause is not None:
                        chain.append(type(cause).__name__)
                        cause = cause.__cause__
                    print(" <- ".join(chain), "faulthandler" in "".join(
                        traceback_text for traceback_text in map(str, exc.__cause__.__cause__.__notes__)))
        """))
    loaded = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120)
    assert loaded.returncode == 0, loaded.stderr
    assert loaded.stdout.splitlines() == ["120 2", "6 9"]
    # once in the program, once in the worker (for scaled), under the name multiprocessing uses
    assert loaded.stderr.splitlines() == ["script body runs as __main__", "script body runs as __mp_main__"]
    refused = subprocess.run([sys.executable, str(script), "refuse"], capture_output=True, text=True,
                             timeout=120)
    assert refused.returncode == 0, refused.stderr
    # factorial and the local function ran without the script; scaled could not be loaded
    assert refused.stdout.splitlines()[0] == "120 2"
    assert refused.stdout.splitlines()[1].startswith("NotShareableError <- NotShareableError <- AttributeError")
    assert refused.stdout.splitlines()[1].endswith("True")


@needs_native_interpreters
def test_unpicklable_result_and_exception():
    with InterpreterExecutor(1) as ex:
        with pytest.raises(TypeError, match="cannot be sent back"):
            ex.submit(tasks.unpicklable_result).result()
        with pytest.raises(Exception) as info:
            ex.submit(tasks.raise_unpicklable).result()
        assert type(info.value).__name__ == "WorkerError"
        assert "Unpicklable: 1-2" in str(info.value)
        assert "raise_unpicklable" in str(info.value.__cause__)


@needs_native_interpreters
def test_module_that_refuses_subinterpreters():
    pytest.importorskip("_testsinglephase", reason="the runtime was built without test modules")
    with InterpreterExecutor(1) as ex:
        with pytest.raises(ImportError) as info:
            ex.submit(tasks.import_module, "_testsinglephase").result()
    message = str(info.value)
    assert "_testsinglephase" in message and "threads or processes flavor" in message


@pytest.mark.parametrize("outer", _flavor_params(["threads", "interpreters"]))
@pytest.mark.parametrize("inner", _flavor_params(["threads", "interpreters"]))
def test_executors_inside_tasks_and_side_by_side(outer, inner):
    with FLAVORS[outer](2) as ex, ThreadExecutor(2) as other:
        futures = [ex.submit(tasks.nested_executor, inner, 20) for _ in range(3)]
        side = other.submit(tasks.square, 9)
        assert [f.result() for f in futures] == [sum(i * i for i in range(20))] * 3
        assert side.result() == 81


MAIN_PROGRAM = """
    import sys
    from unirun._executors import InterpreterExecutor

    sys.stderr.write(f"top level ran as {__name__}\\n")  # one write: workers print at once

    def triple(x):
        return 3 * x

    class Point:
        def __init__(self, x):
            self.x = x

    def make_point(x):
        return Point(x)

    if __name__ == "__main__":
        with InterpreterExecutor(2) as ex:
            print(list(ex.map(triple, range(5))))
            point = ex.submit(make_point, 4).result()
            print(type(point).__name__, point.x)
"""


@needs_native_interpreters
def test_functions_defined_in_main_script(tmp_path):
    proc = run_program(MAIN_PROGRAM, tmp_path=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == ["[0, 3, 6, 9, 12]", "Point 4"]
    # the workers load the script under another name, so its main block stays asleep
    assert proc.stderr.count("as __main__") == 1
    assert 1 <= proc.stderr.count("as __mp_main__") <= 2


@needs_native_interpreters
def test_functions_defined_in_a_main_module(tmp_path):
    (tmp_path / "mainmod.py").write_text(textwrap.dedent(MAIN_PROGRAM))
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST")}
    proc = subprocess.run([sys.executable, "-m", "mainmod"], capture_output=True, text=True,
                          timeout=300, cwd=tmp_path, env=env)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == ["[0, 3, 6, 9, 12]", "Point 4"]


def test_pending_work_finishes_at_exit(tmp_path, flavor):
    program = f"""
        import sys
        sys.path.insert(0, {str(pathlib.Path(__file__).parent)!r})
        import native_tasks
        from unirun._executors import {FLAVORS[flavor].__name__} as Executor

        if __name__ == "__main__":
            ex = Executor(2)
            futures = [ex.submit(native_tasks.square, i) for i in range(100)]
            futures[-1].add_done_callback(lambda f: print("last", f.result(), flush=True))
            # no shutdown: interpreter exit must still finish the queue and end the workers
    """
    proc = run_program(program, tmp_path=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "last 9801\n"
    assert proc.stderr == ""


@needs_native_interpreters
def test_threading_inside_interpreter_workers_exits_cleanly(tmp_path):
    program = f"""
        import sys
        sys.path.insert(0, {str(pathlib.Path(__file__).parent)!r})
        import native_tasks
        from unirun._executors import InterpreterExecutor

        if __name__ == "__main__":
            with InterpreterExecutor(2, thread_name_prefix="sub") as ex:
                print(ex.submit(native_tasks.stdlib_pool_inside, 10).result())
                print(ex.submit(native_tasks.thread_name).result().startswith("sub_"))
    """
    proc = run_program(program, tmp_path=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "285\nTrue\n"
    assert proc.stderr == ""  # nothing "ignored" while the subinterpreters are torn down


@needs_native_interpreters
def test_interpreter_workers_on_the_free_threaded_build_keep_the_gil_off():
    with InterpreterExecutor(1) as ex:
        assert ex.submit(tasks.gil_enabled).result() == tasks.gil_enabled()


# --- the Future type itself -------------------------------------------------------------

def test_manual_future_protocol():
    future = _unirun.Future()
    assert isinstance(future, cf.Future) and future._state == "PENDING"
    assert future.set_running_or_notify_cancel()
    assert future.running() and not future.cancel()
    future.set_result(5)
    assert future.result(timeout=0) == 5 and future._state == "FINISHED"
    with pytest.raises(cf.InvalidStateError):
        future.set_result(6)
    future = _unirun.Future()
    with pytest.raises(TimeoutError):
        future.result(timeout=0.01)
    assert future.cancel()
    assert future._state == "CANCELLED"
    assert not future.set_running_or_notify_cancel()
    assert future._state == "CANCELLED_AND_NOTIFIED"
    with pytest.raises(TypeError):
        _unirun.Future(1)


def test_pool_rejects_bad_arguments():
    with pytest.raises(ValueError, match="kind"):
        _unirun.Pool("fibers", 1, "x")
    with pytest.raises(ValueError, match="max_tasks_per_child"):
        _unirun.Pool("processes", 1, "x", max_tasks_per_child=-1)
    with pytest.raises(ValueError, match="max_workers"):
        _unirun.Pool("threads", 0, "x")
    pool = _unirun.Pool("threads", 1, "x")
    with pytest.raises(TypeError):
        pool.submit(tasks.square, [1], None)
    pool.shutdown(False)


def test_map_buffersize_as_python_3_14_defines_it(executor):
    import itertools

    with pytest.raises(TypeError, match="buffersize must be an integer or None"):
        executor.map(tasks.square, [1], buffersize=1.5)
    with pytest.raises(ValueError, match="buffersize must be None or > 0"):
        executor.map(tasks.square, [1], buffersize=0)
    before = executor.stats()["submitted"]
    results = executor.map(tasks.square, itertools.count(), buffersize=4)
    assert executor.stats()["submitted"] - before == 4  # an infinite input is not drained
    assert [next(results) for _ in range(6)] == [0, 1, 4, 9, 16, 25]
    # one more call is submitted each time a result is taken
    assert executor.stats()["submitted"] - before == 4 + 6
    results.close()
    assert list(executor.map(tasks.add, [1, 2, 3], [10, 20], buffersize=2)) == [11, 22]
    assert list(executor.map(tasks.square, [], buffersize=2)) == []
