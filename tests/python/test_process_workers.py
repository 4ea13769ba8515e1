"""Process workers (issue 11): unirun._executors.ProcessExecutor, the processes flavor.

Each worker thread of the native scheduler drives one child process. These tests check what the
protocol tests of test_native_executors.py (which run on every flavor) do not: children that
die, max_tasks_per_child, initializers, large buffers both ways, reaping, and the trace.
"""

import multiprocessing
import os
import signal
from concurrent.futures.process import BrokenProcessPool

import pytest

_unirun = pytest.importorskip("_unirun", reason="needs unirun-python (the _unirun built-in module)")

import native_tasks as tasks  # noqa: E402
from runtime_support import needs_native_interpreters  # noqa: E402
from unirun import _trace  # noqa: E402
from unirun._executors import InterpreterExecutor, ProcessExecutor  # noqa: E402

DIED = "A process in the process pool was terminated abruptly"


def test_tasks_run_in_child_processes_of_this_runtime():
    with ProcessExecutor(2) as ex:
        pids = {ex.submit(tasks.pid).result() for _ in range(20)}
        assert os.getpid() not in pids and 1 <= len(pids) <= 2
        assert ex.submit(tasks.gil_enabled).result() == tasks.gil_enabled()


def test_functions_without_state_cross_by_code():
    with ProcessExecutor(1) as ex:
        assert ex.submit(lambda: 6 * 7).result() == 42


def test_unpicklable_argument_fails_at_submit_naming_it():
    import threading

    with ProcessExecutor(1) as ex:
        with pytest.raises(TypeError, match="argument 0"):
            ex.submit(tasks.identity, threading.Lock())
        assert ex.submit(tasks.square, 3).result() == 9


@pytest.mark.parametrize("how, note", [("exit", "exited with code 3"), ("kill", "killed by SIGKILL")])
def test_a_dying_child_fails_its_task_and_is_replaced(how, note):
    seen = []
    _trace.add_listener(seen.append)
    try:
        with ProcessExecutor(1) as ex:
            first = ex.submit(tasks.pid).result()
            doomed = ex.submit(os._exit, 3) if how == "exit" else ex.submit(os.kill, first, signal.SIGKILL)
            with pytest.raises(BrokenProcessPool, match=DIED) as info:
                doomed.result(timeout=60)
            assert any(note in n for n in info.value.__notes__), info.value.__notes__
            # The worker starts a new child: the executor goes on.
            assert ex.submit(tasks.square, 5).result() == 25
            assert ex.submit(tasks.pid).result() != first
    finally:
        _trace.remove_listener(seen.append)
    assert [t.reason_code for t in seen if t.reason_code == "process-worker-replaced"]


def test_max_tasks_per_child_replaces_children():
    with ProcessExecutor(1, max_tasks_per_child=2) as ex:
        pids = [ex.submit(tasks.pid).result() for _ in range(6)]
    assert len(set(pids)) == 3 and pids[0] == pids[1] and pids[2] == pids[3]
    with pytest.raises(ValueError, match="max_tasks_per_child"):
        ProcessExecutor(1, max_tasks_per_child=0)
    with pytest.raises(TypeError, match="max_tasks_per_child"):
        ProcessExecutor(1, max_tasks_per_child=1.5)


def test_initializer_runs_in_each_child_and_a_failing_one_breaks_its_tasks():
    with ProcessExecutor(1, initializer=tasks.set_env, initargs=("UNIRUN_T", "set")) as ex:
        assert ex.submit(tasks.get_env, "UNIRUN_T").result() == "set"
    assert "UNIRUN_T" not in os.environ  # it ran there, not here
    with ProcessExecutor(1, initializer=tasks.fail, initargs=("no start",)) as ex:
        with pytest.raises(BrokenProcessPool, match="could not start.*no start"):
            ex.submit(tasks.square, 2).result(timeout=60)


def test_shutdown_cancels_exactly_the_queued_calls_and_reaps_every_child():
    ex = ProcessExecutor(2)
    futures = [ex.submit(tasks.nap, 0.01) for _ in range(200)]
    ex.shutdown(wait=True, cancel_futures=True)
    assert all(f.done() for f in futures)
    ran = [f for f in futures if not f.cancelled()]
    assert all(f.exception() is None for f in ran)
    assert ran and len(ran) < len(futures)
    pids = list(ex._settings.children)
    assert pids == []  # each worker reaped its child as it left
    assert not [p for p in multiprocessing.active_children() if p.name.startswith("ForkServerProcess")
                and p.pid in pids]


SIZE = 1 << 20  # above the out-of-band threshold (64 KiB)


def _executor_params():
    return ["processes", pytest.param("interpreters", marks=needs_native_interpreters)]


@pytest.mark.parametrize("kind", _executor_params())
def test_large_buffers_cross_whole_and_keep_their_types(kind):
    data = os.urandom(SIZE)
    make = ProcessExecutor if kind == "processes" else InterpreterExecutor
    with make(1) as ex:
        back = ex.submit(tasks.identity, data).result()
        assert type(back) is bytes and back == data
        back = ex.submit(tasks.identity, bytearray(data)).result()
        assert type(back) is bytearray and back == data
        view = memoryview(bytearray(data)).cast("I")
        back = ex.submit(tasks.identity, view).result()
        assert type(back) is memoryview and back.format == "I" and back.tobytes() == data
        # keywords too, several at once, beside small arguments
        assert ex.submit(tasks.add, SIZE, c=len(data)).result() == 2 * SIZE
        assert ex.submit(tasks.length, data).result() == SIZE
        assert len(ex.submit(tasks.big_bytes, 3 * SIZE).result()) == 3 * SIZE


@pytest.mark.parametrize("kind", _executor_params())
def test_a_large_argument_is_released_once_sent(kind):
    make = ProcessExecutor if kind == "processes" else InterpreterExecutor
    with make(1) as ex:
        data = bytearray(os.urandom(SIZE))
        assert ex.submit(tasks.length, data).result() == SIZE
        data.extend(b"x")  # BufferError if the call still held a view of it
        assert len(data) == SIZE + 1


def _shutdown_race(pool_class):
    """The stdlib pool's measured failure (issue 11): 2,000 tiny tasks, shutdown(wait=False,
    cancel_futures=True) from another thread, then shutdown(wait=True), which the documentation
    says returns once every pending future is done. Returns the futures not done when it
    returns (python 3.13's own pool: nearly all 2,000, in most runs)."""
    import threading

    ex = pool_class(2)
    futures = [ex.submit(tasks.square, i) for i in range(2000)]
    other = threading.Thread(target=ex.shutdown, kwargs={"wait": False, "cancel_futures": True})
    other.start()
    ex.shutdown(wait=True)
    other.join()
    return [f for f in futures if not f.done()]


def test_compat_process_pool_ends_every_future_in_a_shutdown_race():
    from unirun.compat.process_pool import ProcessPoolExecutor

    for _ in range(3):
        assert not _shutdown_race(ProcessPoolExecutor)


def _interrupted_run(command):
    """Runs `command` in a session of its own (SIGINT at its default), sends SIGINT to the
    whole group once it printed its workers' pids, and returns (exit status, output, pids)."""
    import subprocess
    import sys
    import time

    def default_sigint():
        signal.signal(signal.SIGINT, signal.SIG_DFL)

    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST")}
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True, preexec_fn=default_sigint, env=env)
    try:
        first = proc.stdout.readline()
        assert first.startswith("pids"), (first, proc.stderr.read() if proc.poll() is not None else "")
        pids = [int(p) for p in first.split()[1:]]
        os.killpg(proc.pid, signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    time.sleep(0.5)
    return proc.returncode, first + out + err, pids


def _alive(pid):
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_ctrl_c_ends_the_program_and_its_worker_processes():
    import sys

    program = os.path.join(os.path.dirname(os.path.abspath(__file__)), "programs",
                           "interrupt_process_pool.py")
    code, out, pids = _interrupted_run([sys.executable, program])
    # It ends by the interrupt (raised in the parent, or the tasks' own coming back first and
    # then the parent's), within the minute, and its workers are gone.
    assert code in (130, -signal.SIGINT) and "KeyboardInterrupt" in out, (code, out)
    assert len(pids) == 2 and not [p for p in pids if _alive(p)]
