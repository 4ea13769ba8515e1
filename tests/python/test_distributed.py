"""Issue 14: the distributed flavor (unirun/_distributed.py) against Dask's LocalCluster, in
threads (processes=False) and in worker processes, with the standard library's executors as the
oracle for what the API does. Runs under unirun-python (both thread modes) and plain python."""

import concurrent.futures as cf
import os
import subprocess
import sys
import textwrap
import time

import pytest

pytest.importorskip("distributed", reason="Dask's distributed is an optional dependency (scripts/bootstrap "
                    "installs it for the tests)")

import unirun  # noqa: E402
from unirun import Run  # noqa: E402
from unirun._capabilities import capabilities  # noqa: E402
from unirun._config import RuntimeConfig  # noqa: E402
from unirun._decide import DecisionError, Request, decide  # noqa: E402
from unirun._distributed import DistributedExecutor, cluster_config  # noqa: E402

import native_tasks as tasks  # noqa: E402


def keywords(a, key=None, priority=None, workers=None):
    return a, key, priority, workers


def nested_raise():
    def inner_frame():
        raise KeyError("deep")

    inner_frame()


def die(code):
    os._exit(code)


@pytest.fixture(scope="module", params=[False, True], ids=["threads-cluster", "process-cluster"])
def executor(request):
    ex = DistributedExecutor(2, processes=request.param)
    yield ex
    ex.shutdown()


def probe(ex):
    """What the API does on ex, as plain data: compared with the standard library's."""
    seen = {}
    seen["result"] = ex.submit(tasks.square, 7).result(timeout=120)
    seen["kwargs"] = ex.submit(keywords, 1, key="k", priority=3, workers="w").result(timeout=120)
    error = ex.submit(tasks.fail, "nope").exception(timeout=120)
    seen["exception"] = (type(error).__name__, error.args)
    seen["map"] = list(ex.map(tasks.square, range(23), timeout=120))
    seen["map_chunked"] = list(ex.map(tasks.add, range(23), range(23), chunksize=5))
    futures = [ex.submit(tasks.square, i) for i in range(10)]
    seen["as_completed"] = sorted(f.result() for f in cf.as_completed(futures, timeout=120))
    done, not_done = cf.wait(futures, timeout=120)
    seen["wait"] = (len(done), len(not_done))
    with pytest.raises(ValueError):
        list(ex.map(tasks.fail, ["in map"]))
    return seen


def test_the_api_behaves_as_the_standard_librarys(executor):
    with cf.ThreadPoolExecutor(2) as stdlib:
        expected = probe(stdlib)
    assert probe(executor) == expected


def test_exceptions_arrive_with_their_traceback(executor):
    error = executor.submit(nested_raise).exception(timeout=120)
    assert isinstance(error, KeyError)
    frames = []
    tb = error.__traceback__
    while tb is not None:
        frames.append(tb.tb_frame.f_code.co_name)
        tb = tb.tb_next
    assert "inner_frame" in frames and "nested_raise" in frames


def test_cancel_reaches_a_queued_task_and_waiters_see_it(executor):
    blockers = [executor.submit(tasks.nap, 0.5) for _ in range(2)]
    queued = executor.submit(tasks.square, 5)
    assert queued.cancel() and queued.cancelled()
    done, _ = cf.wait([queued], timeout=5)
    assert done == {queued}
    assert list(cf.as_completed([queued], timeout=5)) == [queued]
    with pytest.raises(cf.CancelledError):
        queued.result()
    assert [b.result(timeout=120) for b in blockers] == [0.5, 0.5]


@pytest.mark.parametrize("processes", [False, True])
def test_shutdown_variants_end_every_future(processes):
    # wait=True: everything submitted ran.
    ex = DistributedExecutor(2, processes=processes)
    futures = [ex.submit(tasks.nap, 0.05) for _ in range(6)]
    ex.shutdown(wait=True)
    assert all(f.done() and not f.cancelled() for f in futures)
    with pytest.raises(RuntimeError, match="cannot schedule new futures after shutdown"):
        ex.submit(tasks.square, 1)
    # wait=False: returns at once, and (unlike Dask's own executor) cancels nothing.
    ex = DistributedExecutor(2, processes=processes)
    futures = [ex.submit(tasks.nap, 0.2) for _ in range(4)]
    ex.shutdown(wait=False)
    assert [f.result(timeout=120) for f in futures] == [0.2] * 4
    # cancel_futures=True: what has not started is cancelled, what runs finishes.
    ex = DistributedExecutor(2, processes=processes)
    ex.submit(tasks.square, 1).result(timeout=120)  # the workers are up
    running = [ex.submit(tasks.nap, 1.0) for _ in range(2)]
    deadline = time.monotonic() + 60
    while len(ex._running_keys()) < 2 and time.monotonic() < deadline:
        time.sleep(0.02)
    queued = [ex.submit(tasks.nap, 1.0) for _ in range(4)]
    ex.shutdown(wait=True, cancel_futures=True)
    assert all(f.done() for f in running + queued)
    assert not any(f.cancelled() for f in running)
    assert all(f.cancelled() for f in queued)


def test_a_lost_worker_fails_its_future_and_never_hangs():
    with DistributedExecutor(1, processes=True) as ex:
        doomed = ex.submit(die, 7)
        error = doomed.exception(timeout=300)  # Dask retries it on a new worker, then gives up
        assert error is not None
        assert "KilledWorker" in type(error).__name__ or "died" in str(error) or "lost" in str(error)
        assert ex.submit(tasks.square, 4).result(timeout=120) == 16  # the cluster goes on


def test_run_scope_decides_it_traces_where_it_went_and_is_measured():
    seen = []
    unirun.add_listener(seen.append)
    try:
        with Run("distributed", max_workers=2, name="on-a-cluster") as ex:
            assert sum(ex.map(tasks.square, range(10), chunksize=3)) == 285
    finally:
        unirun.remove_listener(seen.append)
    trace = seen[0]
    assert trace.resolved_flavor == "distributed" and trace.reason_code == "explicit"
    assert "LocalCluster(2 worker processes)" in trace.backend
    entry = [e for e in unirun.metrics()["executors"] if e["executor"] == "on-a-cluster"][-1]
    assert entry["flavor"] == "distributed" and entry["executor.completed"] == 4  # 4 chunks
    assert entry["executor.pool.max"] == 2


def test_the_config_names_a_scheduler():
    from distributed import LocalCluster

    with cluster_config(), LocalCluster(n_workers=1, processes=False, dashboard_address=None) as cluster:
        config = RuntimeConfig(flavor="distributed", distributed_address=cluster.scheduler_address)
        with Run(config=config) as ex:
            assert ex.submit(tasks.square, 9).result(timeout=120) == 81
            assert ex.address == cluster.scheduler_address
    env = RuntimeConfig.from_env({"UNIRUN_DASK_ADDRESS": "tcp://scheduler:8786", "UNIRUN_FLAVOR": "distributed"})
    assert env.distributed_address == "tcp://scheduler:8786" and env.flavor == "distributed"
    with pytest.raises(ValueError, match="distributed_address"):
        RuntimeConfig(distributed_address="  ")


def test_without_distributed_the_flavor_is_a_clear_error():
    import dataclasses

    caps = dataclasses.replace(capabilities(), distributed=False)
    with pytest.raises(DecisionError, match=r"pip install 'dask\[distributed\]'") as info:
        decide(Request(flavor="distributed"), RuntimeConfig(), caps)
    assert info.value.trace.reason_code == "distributed-unavailable"
    # auto never picks it
    assert decide(Request(cpu_bound=True), RuntimeConfig(), capabilities()).resolved_flavor != "distributed"


def test_compat_serves_unmodified_process_pools_from_the_cluster(tmp_path):
    if not unirun.capabilities().under_launcher:
        pytest.skip("compat runs only under unirun-python")
    program = tmp_path / "program.py"
    program.write_text(textwrap.dedent("""
        import concurrent.futures as cf, os
        def init(tag):
            os.environ["TAG"] = tag
        def tag(n):
            return os.environ.get("TAG"), n * n
        if __name__ == "__main__":
            with cf.ProcessPoolExecutor(2, initializer=init, initargs=("ok",)) as ex:
                print(isinstance(ex, cf.ProcessPoolExecutor), list(ex.map(tag, range(5), chunksize=2)))
                f = ex.submit(divmod, 7, 0)
                print(type(f.exception()).__name__)
    """))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    expected = subprocess.run([sys.executable, "--process-pool=stdlib", str(program)], capture_output=True,
                              text=True, env=env, timeout=300)
    got = subprocess.run([sys.executable, "--process-pool=dask", str(program)], capture_output=True, text=True,
                         env=env, timeout=300)
    assert got.returncode == 0 == expected.returncode, got.stderr
    assert got.stdout == expected.stdout


def unpicklable_lock():
    import threading

    return threading.Lock()


def failing_initializer():
    raise RuntimeError("no init")


def test_what_cannot_be_sent_fails_its_future_not_the_submit():
    import threading

    with DistributedExecutor(1, processes=False) as ex:
        future = ex.submit(tasks.identity, threading.Lock())
        assert isinstance(future.exception(timeout=60), Exception)
        assert ex.submit(tasks.square, 2).result(timeout=60) == 4
        fields = ex._metrics_fields()
        assert fields["executor.submitted"] == 2 and fields["executor.failed"] == 1
        assert fields["executor.completed"] == 1 and fields["executor.queued"] == 0


def test_a_failed_initializer_breaks_the_executor():
    ex = DistributedExecutor(1, processes=False, initializer=failing_initializer)
    try:
        with pytest.raises(cf.BrokenExecutor, match="initializer failed"):
            ex.submit(tasks.square, 2)
    finally:
        ex.shutdown()


def test_callbacks_may_wait_on_other_futures_and_cancel_notifies_before_callbacks():
    with DistributedExecutor(2, processes=False) as ex:
        first, second = ex.submit(tasks.nap, 0.2), ex.submit(tasks.nap, 0.4)
        seen = []
        first.add_done_callback(lambda f: seen.append(second.result(timeout=60)))
        assert first.result(timeout=60) == 0.2
        deadline = time.monotonic() + 60
        while not seen and time.monotonic() < deadline:
            time.sleep(0.01)
        assert seen == [0.4]
        blockers = [ex.submit(tasks.nap, 0.5) for _ in range(2)]
        queued = ex.submit(tasks.square, 3)
        waited = []
        queued.add_done_callback(lambda f: waited.append(len(cf.wait([f], timeout=5).done)))
        assert queued.cancel()
        assert waited == [1]
        cf.wait(blockers)


def test_a_closed_client_fails_its_futures_rather_than_cancel_them():
    from distributed import Client, LocalCluster

    with cluster_config(), LocalCluster(n_workers=1, processes=False, dashboard_address=None) as cluster:
        client = Client(cluster, set_as_default=False)
        ex = DistributedExecutor(client=client)
        future = ex.submit(tasks.nap, 5)
        client.close()
        error = future.exception(timeout=60)
        assert isinstance(error, cf.BrokenExecutor) and not future.cancelled()
        ex.shutdown()


def test_an_executor_dropped_without_shutdown_closes_its_cluster():
    import gc

    ex = DistributedExecutor(1, processes=False)
    assert ex.submit(tasks.square, 3).result(timeout=60) == 9
    cluster = ex._cluster
    import threading

    deadline = time.monotonic() + 30
    # The settler thread leaves once nothing is awaited (until it has, it holds the executor).
    while any(t.name == "unirun-distributed-settler" for t in threading.enumerate()) and \
            time.monotonic() < deadline:
        time.sleep(0.01)
    del ex
    gc.collect()
    assert cluster.status.name in ("closed", "closing")


EXIT_PROGRAM = """
import os, sys, time
sys.path[:0] = {path!r}
from unirun._distributed import DistributedExecutor
def mark(path):
    time.sleep(0.3)
    open(path, "w").close()
ex = DistributedExecutor(2, processes=False)
for i in range(4):
    ex.submit(mark, os.path.join({out!r}, str(i)))
{ending}
"""


@pytest.mark.parametrize("ending", ["ex.shutdown(wait=False)", "pass  # no shutdown at all"])
def test_work_submitted_before_exit_finishes_and_exit_does_not_hang(tmp_path, ending):
    out = tmp_path / "marks"
    out.mkdir()
    source = EXIT_PROGRAM.format(path=sys.path, out=str(out), ending=ending)
    proc = subprocess.run([sys.executable, "-c", source], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert sorted(p.name for p in out.iterdir()) == ["0", "1", "2", "3"]


def test_dask_profiler_is_off_on_a_free_threaded_python():
    """Dask's profiler thread reads other threads' frames while they run; on a free-threaded
    CPython that crashed the process (SEGV in PyFrame_GetCode). Clusters the executor starts
    run without it there, and with Dask's default elsewhere."""
    import sysconfig
    import threading

    free_threaded = bool(sysconfig.get_config_var("Py_GIL_DISABLED"))
    with DistributedExecutor(max_workers=1, processes=False) as ex:
        assert ex.submit(tasks.square, 5).result(timeout=120) == 25
        profilers = [t for t in threading.enumerate() if t.name == "Profile"]
    # elsewhere Dask's own default: on, except on 3.11, where Dask itself keeps it off
    assert bool(profilers) == (not free_threaded and sys.version_info[:2] != (3, 11)), profilers


ORDER_PROGRAM = """
import sys, threading
sys.path[:0] = {path!r}
from unirun._distributed import DistributedExecutor, _wait_for_all
ex = DistributedExecutor(2, processes=False)
def target(hook):  # threading wraps each hook: a lambda over it (3.12+) or a partial (3.11)
    if hasattr(hook, "func"):
        return hook.func
    cells = [c.cell_contents for c in hook.__closure__ or ()]
    return next((c for c in cells if callable(c)), hook)
hooks = [target(h) for h in threading._threading_atexits]  # run last-registered first at exit
import concurrent.futures.thread as cft
stoppers = [cft._python_exit]
try:
    from unirun import _native
    stoppers.append(_native._stop_all_pools)
except ImportError:
    pass
print(all(s in hooks and hooks.index(s) < hooks.index(_wait_for_all) for s in stoppers))
ex.shutdown()
"""


def test_the_exit_wait_runs_before_thread_pools_stop(tmp_path):
    """The work submitted before exit needs the in-process scheduler's thread pools (its offload
    pool, say), so the exit wait must run before the hooks that stop every pool: it was 1 in 12
    runs that lost the last tasks ("cannot schedule new futures after shutdown")."""
    source = ORDER_PROGRAM.format(path=sys.path)
    proc = subprocess.run([sys.executable, "-c", source], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.split()[-1] == "True", proc.stdout
