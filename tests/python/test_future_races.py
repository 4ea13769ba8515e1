"""Futures under races and odd sequences: each test is a scenario where the standard library's
behaviour is the oracle. Under plain python these run against the stdlib itself (and must
pass there); under unirun-python against compat's ThreadPoolExecutor and the native executors.
"""

import concurrent.futures as cf
import os
import pathlib
import subprocess
import sys
import textwrap
import threading

import pytest

import native_tasks as tasks
from runtime_support import needs_native_interpreters

try:
    import _unirun
except ImportError:
    _unirun = None


def _executor_factories():
    factories = {"ThreadPoolExecutor": cf.ThreadPoolExecutor}
    if _unirun is not None:
        from unirun._executors import InterpreterExecutor, ThreadExecutor

        factories["threads"] = ThreadExecutor
        factories["interpreters"] = InterpreterExecutor
    return factories


EXECUTORS = _executor_factories()


@pytest.fixture(params=[pytest.param(name, marks=needs_native_interpreters)
                        if name == "interpreters" else name for name in sorted(EXECUTORS)])
def make_executor(request):
    return EXECUTORS[request.param]


def _future_types():
    types = {"stdlib": cf.Future}
    if _unirun is not None:
        types["unirun"] = _unirun.Future
    return types


FUTURES = _future_types()


@pytest.fixture(params=sorted(FUTURES))
def future_type(request):
    return FUTURES[request.param]


def run_python(source, tmp_path):
    """Runs `source` as a script with this interpreter (the launcher, in its thread mode)."""
    path = tmp_path / "scenario.py"
    path.write_text(textwrap.dedent(source))
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST")}
    env["PYTHONPATH"] = os.pathsep.join([str(pathlib.Path(__file__).parent), *sys.path])
    return subprocess.run([sys.executable, str(path)], capture_output=True, text=True,
                          timeout=300, cwd=tmp_path, env=env)


def started(future):
    """Waits (up to a minute, a hang guard) until `future` runs or is done."""
    import time

    deadline = time.monotonic() + 60
    while not (future.running() or future.done()) and time.monotonic() < deadline:
        time.sleep(0.005)
    return future


# --- 1. a future cancelled while queued still ends every waiter ------------------------------

@pytest.mark.parametrize("how", ["wait", "as_completed"])
def test_waiting_on_a_future_cancelled_while_queued_returns(make_executor, how):
    with make_executor(1) as executor:
        first = executor.submit(tasks.nap, 0.3)
        second = executor.submit(tasks.square, 2)
        assert second.cancel()
        # The 60 s timeout only guards against a hang: the stdlib returns after the nap.
        if how == "wait":
            done, not_done = cf.wait([first, second], timeout=60)
            assert done == {first, second} and not not_done
        else:
            seen = set(cf.as_completed([first, second], timeout=60))
            assert seen == {first, second}
    assert second.cancelled() and first.result() == 0.3


def test_wait_sees_futures_cancelled_by_shutdown(make_executor):
    if _unirun is None:
        pytest.skip("the stdlib's shutdown(cancel_futures=True) cancels without notifying "
                    "waiters, so its wait() never counts those futures; unirun ends them")
    executor = make_executor(1)
    first = started(executor.submit(tasks.nap, 0.3))
    queued = [executor.submit(tasks.square, i) for i in range(20)]
    watcher_done = []
    watcher = threading.Thread(target=lambda: watcher_done.append(cf.wait(queued, timeout=60)))
    watcher.start()
    executor.shutdown(wait=True, cancel_futures=True)
    watcher.join()
    done, not_done = watcher_done[0]
    assert not not_done and done == set(queued)
    assert all(f.cancelled() for f in queued) and first.result() == 0.3


# --- 2. callbacks and waiters of a future run in the interpreter that owns it ----------------

@needs_native_interpreters
@pytest.mark.parametrize("how", ["manual", "cancel", "thread-pool"])
def test_callbacks_run_in_the_owner_interpreter(tmp_path, how):
    if _unirun is None:
        pytest.skip("interpreter workers need unirun-python")
    # In a child process: before the fix this corrupted memory (double free, exit 134).
    result = run_python(f"""
        import native_tasks as tasks
        from unirun._executors import InterpreterExecutor
        if __name__ == "__main__":
            with InterpreterExecutor(1) as executor:
                for _ in range(5):
                    here, seen = executor.submit(tasks.callback_interpreters, {how!r}).result()
                    assert here != 0 and seen == [here], (here, seen)
            print("ok")
    """, tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


# --- 3. a done-callback may submit follow-up work and wait for it ----------------------------

def test_callback_that_submits_and_waits(make_executor):
    gate = threading.Event()
    results = []
    with make_executor(4) as executor:
        first = executor.submit(gate.wait, 60) if make_executor is not EXECUTORS.get(
            "interpreters") else executor.submit(tasks.nap, 0.2)
        called_back = threading.Event()

        def follow_up(_):
            try:
                results.append(executor.submit(tasks.square, 5).result(timeout=60))
            finally:
                called_back.set()

        first.add_done_callback(follow_up)
        gate.set()
        called_back.wait(120)  # result() may return before callbacks ran: wait for ours
    assert results == [25]


# --- 4. cancel, then set_running_or_notify_cancel, then the worker reaches the task ----------

def test_cancelled_and_notified_before_the_worker_gets_there(tmp_path):
    result = run_python("""
        import concurrent.futures as cf, threading
        import native_tasks as tasks
        gate = threading.Event()
        with cf.ThreadPoolExecutor(1) as executor:
            first = executor.submit(gate.wait, 60)
            second = executor.submit(tasks.square, 3)
            waiter = threading.Thread(target=cf.wait, args=([second],), kwargs={"timeout": 60})
            waiter.start()
            assert second.cancel()
            assert second.set_running_or_notify_cancel() is False
            gate.set()
            waiter.join()
        assert second.cancelled() and first.result() is True
        print("ok")
    """, tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


# --- 5. one future, one result object -------------------------------------------------------

@pytest.mark.parametrize("task", ["fresh_list", "slow_to_decode"])
def test_result_is_one_object_whoever_asks(make_executor, task):
    make = (lambda: tasks.fresh_list(100)) if task == "fresh_list" else tasks.slow_to_decode
    with make_executor(2) as executor:
        futures = [executor.submit(getattr(tasks, task), *([100] if task == "fresh_list" else []))
                   for _ in range(20)]
        cf.wait(futures, timeout=60)
        seen = [[] for _ in futures]
        barrier = threading.Barrier(4)

        def read():
            barrier.wait()
            for i, future in enumerate(futures):
                seen[i].append(future.result())

        readers = [threading.Thread(target=read) for _ in range(4)]
        for reader in readers:
            reader.start()
        for reader in readers:
            reader.join()
    expected = make()
    for future, objects in zip(futures, seen):
        assert all(obj is objects[0] for obj in objects)
        assert future.result() is objects[0]
        assert type(objects[0]) is type(expected) and vars_or_self(objects[0]) == vars_or_self(expected)


def vars_or_self(value):
    return getattr(value, "__dict__", value)


# --- 6. racing set_result: the published value is the winner's ------------------------------

def test_set_result_race_publishes_the_winners_value(future_type):
    rounds, per_round = 2000, 4
    futures = [future_type() for _ in range(rounds * per_round)]
    wins = {"a": [], "b": []}
    barrier = threading.Barrier(2)

    def racer(tag):
        mine = wins[tag]
        for r in range(rounds):
            barrier.wait()  # both threads race for the same few futures, round after round
            for i in range(r * per_round, (r + 1) * per_round):
                try:
                    futures[i].set_result(tag)
                    mine.append(i)
                except cf.InvalidStateError:
                    pass

    threads = [threading.Thread(target=racer, args=(tag,)) for tag in wins]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(wins["a"] + wins["b"]) == list(range(len(futures)))  # one winner each
    for tag, indices in wins.items():
        wrong = [i for i in indices if futures[i].result() != tag]
        assert not wrong, f"{len(wrong)} futures show the loser's value"


# --- 7. timeouts as Condition.wait takes them ------------------------------------------------

@pytest.mark.parametrize("timeout", [1e10, sys.maxsize, 2.0 ** 63])
@pytest.mark.parametrize("method", ["result", "exception"])
def test_huge_timeout_overflows_as_python_does(future_type, timeout, method):
    future = future_type()
    with pytest.raises(OverflowError):
        getattr(future, method)(timeout=timeout)
    future.set_result(7)  # done: the timeout is never looked at
    assert future.result(timeout=timeout) == 7
    assert future.exception(timeout=timeout) is None


@pytest.mark.parametrize("timeout", [0, -1, float("nan"), 1e-9])
def test_tiny_timeouts_only_look(future_type, timeout):
    future = future_type()
    if timeout != timeout and sys.version_info >= (3, 14):
        # 3.14's Condition.wait hands NaN to the lock, which rejects it
        with pytest.raises(ValueError, match="NaN"):
            future.result(timeout=timeout)
        return
    with pytest.raises(TimeoutError):
        future.result(timeout=timeout)
    with pytest.raises(TimeoutError):
        future.exception(timeout=timeout)


# --- a callback's BaseException (Ctrl-C) and odd exceptions, as the stdlib treats them ------

def _interrupt(_future):
    raise KeyboardInterrupt


@pytest.mark.parametrize("how", ["cancel", "set_result", "set_exception"])
def test_a_callbacks_interrupt_propagates_and_the_future_stays_usable(future_type, how):
    future = future_type()
    future.add_done_callback(_interrupt)
    cf.wait([future], timeout=0)  # observed by a waiter too: the condition is in use
    with pytest.raises(KeyboardInterrupt):
        if how == "cancel":
            future.cancel()
        elif how == "set_result":
            future.set_result(1)
        else:
            future.set_exception(ValueError("x"))
    assert future.done()
    if how == "cancel":  # a cancelled future is done for waiters once notified
        assert future.set_running_or_notify_cancel() is False
    # Nothing is left locked: another thread's wait() and repr() go through.
    seen = []
    waiter = threading.Thread(target=lambda: seen.append(cf.wait([future], timeout=60)))
    waiter.start()
    waiter.join()
    assert seen[0].done == {future}
    assert "at 0x" in repr(future)


def test_shutdown_lets_a_callbacks_interrupt_out(make_executor):
    executor = make_executor(1)
    running = started(executor.submit(tasks.nap, 0.3))
    queued = executor.submit(tasks.square, 2)
    queued.add_done_callback(_interrupt)
    with pytest.raises(KeyboardInterrupt):
        executor.shutdown(wait=False, cancel_futures=True)
    assert queued.cancelled()
    executor.shutdown(wait=True)
    assert running.result() == 0.3


class FalseyError(Exception):
    def __bool__(self):
        return False


@pytest.mark.parametrize("stored, raised", [(ValueError, ValueError), ("text", TypeError),
                                            (ValueError("v"), ValueError), (None, None),
                                            (FalseyError(), FalseyError), ("", TypeError)])
def test_result_raises_what_set_exception_stored(future_type, stored, raised):
    if sys.version_info < (3, 13) and stored is not None and not stored:
        pytest.skip("before 3.13 the stdlib's result() skips a false exception "
                    "(`if self._exception:`); 3.13 raises it, as unirun does")
    future = future_type()
    future.set_exception(stored)
    if raised is None:  # None is no exception: result() returns None
        assert future.result() is None
    else:
        with pytest.raises(raised):
            future.result()
    assert future.exception() is stored


def test_snapshot_as_python_3_15_takes_it(future_type):
    # asyncio (3.15+) copies a concurrent future's outcome through Future._get_snapshot().
    if not hasattr(future_type, "_get_snapshot"):
        pytest.skip("the stdlib's Future has _get_snapshot from 3.15 on")
    pending, cancelled, valued, failed = (future_type() for _ in range(4))
    cancelled.cancel()
    valued.set_result([1])
    error = KeyError("k")
    failed.set_exception(error)
    assert pending._get_snapshot() == (False, False, None, None)
    assert cancelled._get_snapshot() == (True, True, None, None)
    assert valued._get_snapshot() == (True, False, [1], None)
    assert failed._get_snapshot() == (True, False, None, error)
    assert failed._get_snapshot()[3] is error
