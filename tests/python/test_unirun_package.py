"""The unirun package: Run scopes, RuntimeConfig, decide(), traces, helpers.

One suite for three places: under unirun-python (GIL and free-threaded runtimes) and under
plain python 3.11+, where the flavors fall back to the standard library.
"""

import asyncio
import concurrent.futures as cf
import dataclasses
import itertools
import json
import logging
import os
import pathlib
import subprocess
import sys
import textwrap
import threading
import time

import pytest

import package_tasks as tasks
import unirun
from unirun import REASONS, Capabilities, DecisionError, Request, Run, RuntimeConfig, decide

CAPS = unirun.capabilities()
UNDER_LAUNCHER = CAPS.under_launcher


# --- RuntimeConfig -----------------------------------------------------------------------------

def test_config_defaults_and_frozen():
    config = RuntimeConfig()
    assert (config.thread_mode, config.flavor, config.max_workers) == ("auto", "auto", None)
    assert config.interpreter_fallback == "processes"
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.flavor = "threads"


@pytest.mark.parametrize("field, value", [
    ("thread_mode", "fast"), ("flavor", "fibers"), ("max_workers", 0), ("max_workers", True),
    ("worker_policy", "many"), ("interpreter_fallback", "ignore"), ("trace_path", 3),
])
def test_config_rejects_bad_values(field, value):
    with pytest.raises(ValueError, match=field):
        RuntimeConfig(**{field: value})


def test_from_env_reads_every_variable():
    config = RuntimeConfig.from_env({
        "UNIRUN_THREAD_MODE": "nogil", "UNIRUN_FLAVOR": "interpreters", "UNIRUN_MAX_WORKERS": "3",
        "UNIRUN_WORKER_POLICY": "cpus", "UNIRUN_INTERPRETER_FALLBACK": "threads",
        "UNIRUN_TRACE": "/tmp/t.jsonl",
    })
    assert config == RuntimeConfig("nogil", "interpreters", 3, "cpus", "threads", "/tmp/t.jsonl")
    assert RuntimeConfig.from_env({"UNIRUN_FLAVOR": ""}) == RuntimeConfig()


@pytest.mark.parametrize("variable, value, allowed", [
    ("UNIRUN_THREAD_MODE", "turbo", "auto, gil, nogil"),
    ("UNIRUN_FLAVOR", "fibers", "auto, threads, processes, interpreters, none"),
    ("UNIRUN_MAX_WORKERS", "many", "positive integer"),
    ("UNIRUN_MAX_WORKERS", "0", "positive integer"),
    ("UNIRUN_MAX_WORKERS", "-2", "positive integer"),
    ("UNIRUN_WORKER_POLICY", "lots", "auto, cpus"),
    ("UNIRUN_INTERPRETER_FALLBACK", "skip", "error, threads, processes"),
])
def test_from_env_errors_name_the_variable_and_the_way_out(variable, value, allowed):
    with pytest.raises(ValueError) as info:
        RuntimeConfig.from_env({variable: value})
    assert variable in str(info.value) and repr(value) in str(info.value) and allowed in str(info.value)


# --- decide() over its whole input space ---------------------------------------------------------

def caps_variants():
    base = dict(python_version="3.13.5", under_launcher=True, runtime_tag="cp313", cpu_count=4)
    yield Capabilities(free_threaded_build=False, gil_enabled=True, own_gil_interpreters=True,
                       interpreter_backend="unirun", **base)
    yield Capabilities(free_threaded_build=True, gil_enabled=False, own_gil_interpreters=True,
                       interpreter_backend="unirun", **base)
    yield Capabilities(free_threaded_build=True, gil_enabled=True, own_gil_interpreters=True,
                       interpreter_backend="unirun", **base)  # an extension turned the GIL on
    base.update(under_launcher=False, runtime_tag="")
    yield Capabilities(free_threaded_build=False, gil_enabled=True, own_gil_interpreters=False,
                       interpreter_backend="none", **base)
    yield Capabilities(free_threaded_build=True, gil_enabled=False, own_gil_interpreters=False,
                       interpreter_backend="none", **base)


HINTS = [(None, None), (True, None), (None, True), (False, None), (None, False), (False, False),
         (True, False), (False, True)]


def all_inputs():
    for flavor, (cpu, io), inherited, provided, workers in itertools.product(
            ["auto", "threads", "processes", "interpreters", "none"], HINTS,
            [None, "threads", "interpreters", "none"], [None, "threads", "interpreters"], [None, 3]):
        request = Request(flavor=flavor, cpu_bound=cpu, io_bound=io, inherited_flavor=inherited,
                          executor_flavor=provided, max_workers=workers)
        for mode, default, fallback, policy in itertools.product(
                ["auto", "gil", "nogil"], ["auto", "threads", "interpreters"],
                ["error", "threads", "processes"], ["auto", "cpus"]):
            config = RuntimeConfig(thread_mode=mode, flavor=default, interpreter_fallback=fallback,
                                   worker_policy=policy)
            for caps in caps_variants():
                yield request, config, caps


def test_decide_over_the_whole_input_space():
    count = 0
    for request, config, caps in all_inputs():
        count += 1
        try:
            trace = decide(request, config, caps)
        except DecisionError as error:
            # only ever: interpreters needed, none here, and the config says error
            assert error.trace.reason_code == "interpreters-unavailable"
            assert config.interpreter_fallback == "error" and not caps.own_gil_interpreters
            assert "UNIRUN_INTERPRETER_FALLBACK" in str(error)
            continue
        again = decide(request, config, caps)
        assert dataclasses.replace(again, decided_at=0, timings={}) == \
            dataclasses.replace(trace, decided_at=0, timings={})  # deterministic
        assert trace.reason == REASONS[trace.reason_code]
        assert trace.resolved_flavor in ("threads", "processes", "interpreters", "none")
        assert trace.worker_count >= 1
        if trace.resolved_flavor == "none":
            assert trace.worker_count == 1
        elif request.max_workers:
            assert trace.worker_count == request.max_workers
        if trace.resolved_flavor == "interpreters" and not request.executor_provided:
            assert caps.own_gil_interpreters
        if request.executor_provided:
            assert trace.reason_code == "executor-provided"
            assert trace.resolved_flavor == request.executor_flavor
        elif request.flavor != "auto":
            expected = request.flavor
            if expected == "interpreters" and not caps.own_gil_interpreters:
                expected = config.interpreter_fallback
            assert trace.resolved_flavor == expected
        gil_off = caps.free_threaded_build and not caps.gil_enabled
        auto_path = request.flavor == "auto" and not request.executor_provided and config.flavor == "auto"
        if auto_path and trace.reason_code not in ("inherited",):
            # a thread mode the runtime cannot honour is never a silent no-op
            if config.thread_mode == "nogil" and not gil_off:
                assert trace.reason_code.startswith(("nogil-unavailable", "interpreters-fallback"))
            if config.thread_mode == "gil" and gil_off:
                assert trace.reason_code.startswith(("gil-unavailable", "interpreters-fallback"))
            if request.cpu_bound and not gil_off and config.thread_mode != "gil":
                assert trace.resolved_flavor != "threads" or trace.reason_code == "interpreters-fallback-threads"
    assert count > 10_000


@pytest.mark.parametrize("request_kwargs, config_kwargs, caps_index, flavor, code", [
    ({}, {}, 0, "threads", "no-hints"),
    ({"io_bound": True}, {}, 0, "threads", "io-bound"),
    ({"cpu_bound": True}, {}, 0, "interpreters", "cpu-gil-interpreters"),
    ({"cpu_bound": True}, {}, 1, "threads", "cpu-free-threaded"),
    ({"cpu_bound": True}, {}, 2, "interpreters", "cpu-gil-interpreters"),
    ({"cpu_bound": True}, {}, 3, "processes", "cpu-gil-processes"),
    ({"cpu_bound": True}, {"thread_mode": "nogil"}, 0, "interpreters", "nogil-unavailable-interpreters"),
    ({"cpu_bound": True}, {"thread_mode": "nogil"}, 3, "processes", "nogil-unavailable-processes"),
    ({}, {"thread_mode": "nogil"}, 0, "threads", "nogil-unavailable-threads"),
    ({"cpu_bound": True}, {"thread_mode": "gil"}, 1, "interpreters", "gil-unavailable-interpreters"),
    ({}, {"thread_mode": "gil"}, 1, "threads", "gil-unavailable-threads"),
    ({"flavor": "interpreters"}, {"interpreter_fallback": "threads"}, 3, "threads", "interpreters-fallback-threads"),
    ({"flavor": "interpreters"}, {}, 3, "processes", "interpreters-fallback-processes"),
    ({}, {"flavor": "processes"}, 0, "processes", "config-default"),
    ({"inherited_flavor": "interpreters"}, {}, 0, "interpreters", "inherited"),
    ({"inherited_flavor": "interpreters", "io_bound": True}, {}, 0, "threads", "io-bound"),
    ({"flavor": "none"}, {}, 0, "none", "explicit"),
])
def test_decide_documented_cases(request_kwargs, config_kwargs, caps_index, flavor, code):
    caps = list(caps_variants())[caps_index]
    trace = decide(Request(**request_kwargs), RuntimeConfig(**config_kwargs), caps)
    assert (trace.resolved_flavor, trace.reason_code) == (flavor, code)


def test_worker_counts_follow_the_policy():
    caps = list(caps_variants())[0]  # 4 CPUs
    assert decide(Request("threads"), RuntimeConfig(), caps).worker_count == 8
    assert decide(Request("interpreters"), RuntimeConfig(), caps).worker_count == 4
    assert decide(Request("threads"), RuntimeConfig(worker_policy="cpus"), caps).worker_count == 4
    assert decide(Request("threads"), RuntimeConfig(max_workers=6), caps).worker_count == 6
    assert decide(Request("threads", max_workers=2), RuntimeConfig(max_workers=6), caps).worker_count == 2


def test_bad_requests():
    with pytest.raises(ValueError, match="flavor='fibers'"):
        Request(flavor="fibers")
    with pytest.raises(ValueError, match="both"):
        Request(cpu_bound=True, io_bound=True)


# --- capabilities ----------------------------------------------------------------------------

def test_capabilities_describe_this_process():
    caps = unirun.capabilities()
    assert caps.python_version == "%d.%d.%d" % sys.version_info[:3]
    assert caps.gil_enabled == getattr(sys, "_is_gil_enabled", lambda: True)()
    assert caps.under_launcher == ("_unirun" in sys.builtin_module_names)
    assert caps.cpu_count >= 1
    # unirun's interpreter workers need usable own-GIL subinterpreters (3.13+, 3.12.4+)
    native = caps.under_launcher and getattr(sys.modules.get("_unirun"), "OWN_GIL_INTERPRETERS", True)
    assert caps.own_gil_interpreters == (native or sys.version_info >= (3, 14))
    json.dumps(caps.as_dict())


# --- Run scopes ------------------------------------------------------------------------------

CONFIG = RuntimeConfig(interpreter_fallback="processes")


@pytest.mark.parametrize("flavor", ["threads", "processes", "interpreters", "none"])
def test_each_flavor_runs_work(flavor):
    with Run(flavor, max_workers=2, config=CONFIG) as executor:
        assert list(executor.map(tasks.square, range(5))) == [0, 1, 4, 9, 16]
        future = executor.submit(tasks.fail, "oops")
        with pytest.raises(RuntimeError, match="oops"):
            future.result()
    with pytest.raises(RuntimeError):
        executor.submit(tasks.square, 1)  # the scope shut it down


def test_none_flavor_runs_inline_in_order():
    order = []
    with Run("none") as executor:
        futures = [executor.submit(order.append, i) for i in range(3)]
        assert all(f.done() for f in futures) and order == [0, 1, 2]
        assert executor.submit(tasks.thread_ident).result() == threading.get_ident()


def test_threads_flavor_uses_the_native_scheduler_under_the_launcher():
    with Run("threads") as executor:
        pass
    backend = Run.__dict__ and executor.__class__.__name__
    assert backend == ("ThreadExecutor" if UNDER_LAUNCHER else "ThreadPoolExecutor")


def test_exception_in_scope_cancels_queued_work_and_propagates():
    release = threading.Event()
    with pytest.raises(KeyError):
        with Run("threads", max_workers=1) as executor:
            running = executor.submit(tasks.wait_for, release)
            # Started before the scope fails (a slow machine may not have yet: then the exit
            # would rightly cancel it too).
            deadline = time.monotonic() + 60
            while not running.running() and time.monotonic() < deadline:
                time.sleep(0.001)
            queued = [executor.submit(tasks.square, i) for i in range(20)]
            # The only worker waits for `release`, so nothing queued can start until the
            # scope's exit cancels it; the last cancellation releases the worker.
            # (wait_for gives up after 30 s: a hang guard, and then this test fails.)
            queued[-1].add_done_callback(lambda f: release.set())
            raise KeyError("inside the scope")
    assert running.result() is True
    assert all(f.cancelled() for f in queued)


def test_normal_exit_waits_for_all_work():
    with Run("threads", max_workers=2) as executor:
        futures = [executor.submit(tasks.square, i) for i in range(100)]
    assert all(f.done() and not f.cancelled() for f in futures)


def test_a_run_is_entered_once():
    scope = Run("threads")
    with scope:
        pass
    with pytest.raises(RuntimeError, match="entered already"):
        with scope:
            pass
    inner = Run("threads")
    with inner:
        with pytest.raises(RuntimeError, match="entered already"):
            inner.__enter__()


def test_bad_scope_arguments_fail_at_construction():
    with pytest.raises(ValueError, match="flavor='gpu'.*auto, threads"):
        Run("gpu")
    with pytest.raises(ValueError, match="max_workers"):
        Run("threads", max_workers=0)
    with pytest.raises(ValueError, match="both"):
        Run(cpu_bound=True, io_bound=True)
    with pytest.raises(TypeError, match="RuntimeConfig"):
        Run(config={"flavor": "threads"})
    with pytest.raises(TypeError, match="Executor"):
        Run(executor=object())


def test_executor_passed_in_is_used_and_not_shut_down():
    with cf.ThreadPoolExecutor(1) as pool:
        with Run(executor=pool, name="given") as executor:
            assert executor is pool
            assert executor.submit(tasks.square, 3).result() == 9
        assert pool.submit(tasks.square, 4).result() == 16  # still open
        assert unirun.last_decision().reason_code == "executor-provided"
        assert unirun.last_decision().resolved_flavor == "threads"


def test_nested_scopes_inherit_unless_told_otherwise():
    with Run("threads", name="outer") as outer:
        assert unirun.current_scope().name == "outer"
        with Run(name="inner") as inner:
            scope = unirun.current_scope()
            assert scope.trace.reason_code == "inherited"
            assert scope.trace.resolved_flavor == "threads"
            assert inner is not outer
        with Run(io_bound=True, name="hinted"):
            assert unirun.current_scope().trace.reason_code == "io-bound"
        assert unirun.current_scope().name == "outer"
    assert unirun.current_scope() is None


def test_interpreters_unavailable_with_error_fallback_is_a_clear_error():
    if CAPS.own_gil_interpreters:
        pytest.skip("this process has subinterpreter workers")
    with pytest.raises(DecisionError, match="interpreter_fallback"):
        with Run("interpreters", config=RuntimeConfig(interpreter_fallback="error")):
            pass
    assert unirun.current_scope() is None


def test_async_scope_does_not_block_the_loop_on_exit():
    async def main():
        release = threading.Event()
        async def releaser():
            await asyncio.sleep(0)
            release.set()
        async with Run("threads", max_workers=1) as executor:
            future = executor.submit(tasks.wait_for, release)
            asyncio.get_running_loop().create_task(releaser())
        # exit waited for `future`, which needed the loop to run releaser(): no deadlock
        return future.result()

    assert asyncio.run(main()) is True


def test_async_scope_with_exception_and_nested_tasks():
    async def work(i):
        async with Run(io_bound=True, name=f"task-{i}") as executor:
            return await asyncio.wrap_future(executor.submit(tasks.square, i))

    async def main():
        results = await asyncio.gather(*(work(i) for i in range(5)))
        with pytest.raises(ValueError):
            async with Run("threads"):
                raise ValueError("async")
        return results

    assert asyncio.run(main()) == [0, 1, 4, 9, 16]


# --- traces ----------------------------------------------------------------------------------

def test_trace_is_everywhere(tmp_path, caplog):
    seen = []
    unirun.add_listener(seen.append)
    try:
        path = tmp_path / "trace.jsonl"
        with caplog.at_level(logging.INFO, logger="unirun"):
            with Run("threads", name="traced", trace=str(path)) as executor:
                executor.submit(tasks.square, 2).result()
    finally:
        unirun.remove_listener(seen.append)
    scope_trace = seen[0]
    assert unirun.last_decision() is scope_trace
    assert [t.name for t in seen] == ["traced", "traced"]  # decided, then ended
    assert scope_trace.timings["scope"] >= 0 and "decide" in scope_trace.timings
    assert scope_trace.capabilities["gil_enabled"] == CAPS.gil_enabled
    if UNDER_LAUNCHER:
        assert scope_trace.workers["completed"] == 1
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert [line["event"] for line in lines] == ["decided", "ended"]
    assert lines[0]["trace"]["reason_code"] == "explicit"
    assert "traced" in caplog.text


def test_trace_callable_and_env_path(tmp_path, monkeypatch):
    calls = []
    with Run("threads", trace=calls.append):
        pass
    assert len(calls) == 2
    path = tmp_path / "env.jsonl"
    monkeypatch.setenv("UNIRUN_TRACE", str(path))
    with Run("none"):
        pass
    with Run("none", trace=False):
        pass
    assert len(path.read_text().splitlines()) == 2  # the second scope opted out


def test_a_broken_listener_does_not_break_work(caplog):
    def broken(trace):
        raise RuntimeError("listener")
    unirun.add_listener(broken)
    try:
        with Run("none") as executor:
            assert executor.submit(tasks.square, 3).result() == 9
    finally:
        unirun.remove_listener(broken)
    assert "listener" in caplog.text


# --- helpers ---------------------------------------------------------------------------------

def test_shared_executors_are_shared_per_size():
    a = unirun.thread_executor()
    assert unirun.thread_executor() is a
    release = threading.Event()
    pending = unirun.thread_executor(2).submit(tasks.wait_for, release)
    other = unirun.thread_executor(3)
    assert other is not unirun.thread_executor(2)
    release.set()
    assert pending.result() is True  # asking for another size cancelled nothing
    assert unirun.last_decision().kind == "helper"


def test_a_shared_executor_shut_down_by_someone_is_replaced():
    first = unirun.thread_executor(5)
    first.shutdown()
    second = unirun.thread_executor(5)
    assert second is not first
    assert second.submit(tasks.square, 5).result() == 25


def test_process_and_interpreter_helpers():
    assert unirun.process_executor(1).submit(tasks.square, 7).result() == 49
    executor = unirun.interpreter_executor(1, config=CONFIG)
    assert executor.submit(tasks.square, 8).result() == 64
    expected = "explicit" if CAPS.own_gil_interpreters else "interpreters-fallback-processes"
    assert unirun.last_decision().reason_code == expected


def test_to_thread_copies_contextvars():
    async def main():
        tasks.REQUEST_ID.set("abc-123")
        return await unirun.to_thread(tasks.read_request_id)

    assert asyncio.run(main()) == "abc-123"


def test_to_interpreter_and_to_process():
    async def main():
        return (await unirun.to_interpreter(tasks.square, 5), await unirun.to_process(tasks.square, 6))

    assert asyncio.run(main()) == (25, 36)


MAIN_PROGRAM = """
    from unirun import Run, last_decision

    def cube(x):
        return x ** 3

    if __name__ == "__main__":
        with Run("interpreters", max_workers=2) as executor:
            print(list(executor.map(cube, range(4))))
        print(last_decision().resolved_flavor)
"""


def test_functions_defined_in_main_under_the_interpreters_flavor(tmp_path):
    script = tmp_path / "main_program.py"
    script.write_text(textwrap.dedent(MAIN_PROGRAM))
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST")}
    env["PYTHONPATH"] = str(pathlib.Path(unirun.__file__).parent.parent)
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, env=env,
                          timeout=300, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    flavor = "interpreters" if CAPS.own_gil_interpreters else "processes"
    assert proc.stdout.splitlines() == ["[0, 1, 8, 27]", flavor]
