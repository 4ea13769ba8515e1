"""unirun.compat: the import hook that serves unmodified programs.

Each case runs a small program in its own unirun-python process, since the hook is
process-wide; under plain python only the refusal is checked.
"""

import json
import os
import subprocess
import sys
import textwrap

import pytest

import unirun.compat
from runtime_support import NATIVE_INTERPRETERS, needs_native_interpreters

UNDER_LAUNCHER = unirun.capabilities().under_launcher
needs_launcher = pytest.mark.skipif(not UNDER_LAUNCHER, reason="compat runs only under unirun-python")


def run(source, *launcher_args, env=None):
    environment = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST", "UNIRUN_"))}
    environment.update(env or {})
    proc = subprocess.run([sys.executable, *launcher_args, "-c", textwrap.dedent(source)],
                          capture_output=True, text=True, timeout=300, env=environment)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


@needs_launcher
def test_thread_pool_is_substituted_and_still_a_thread_pool():
    out = run("""
        import concurrent.futures as cf
        import concurrent.futures.thread as t
        from unirun.compat.thread_pool import ThreadPoolExecutor as Native
        with cf.ThreadPoolExecutor(2, thread_name_prefix="app", initializer=print, initargs=("init",)) as ex:
            assert ex.submit(pow, 2, 8).result() == 256
            names = {ex.submit(__import__("threading").current_thread).result().name for _ in range(4)}
        print(cf.ThreadPoolExecutor is Native, t.ThreadPoolExecutor is Native,
              isinstance(ex, Native.__mro__[1]), sorted(n.split("_")[0] for n in names)[0])
    """)
    words = out.split()
    assert words[-4:] == ["True", "True", "True", "app"]
    assert 1 <= words.count("init") <= 2  # the initializer ran once in each worker started


@needs_launcher
def test_asyncio_default_executor_is_served():
    out = run("""
        import asyncio
        async def main():
            await asyncio.to_thread(int)
            loop = asyncio.get_running_loop()
            await loop.run_in_executor(None, int)
            return type(loop._default_executor).__module__
        print(asyncio.run(main()))
    """)
    assert out.strip() == "unirun.compat.thread_pool"


@needs_launcher
def test_imported_before_the_hook_is_adjusted_once():
    # sitecustomize-like: the stdlib modules were imported before compat was installed.
    out = run("""
        import unirun.compat as compat
        compat.uninstall()
        import concurrent.futures as cf
        stdlib_class = cf.ThreadPoolExecutor
        compat.install()
        import concurrent.futures.thread as t
        print(cf.ThreadPoolExecutor is t.ThreadPoolExecutor, cf.ThreadPoolExecutor is not stdlib_class,
              issubclass(cf.ThreadPoolExecutor, stdlib_class),
              compat.status()["modules_adjusted"]["concurrent.futures.thread"])
    """)
    assert out.split() == ["True", "True", "True", "at-install"]


@needs_launcher
def test_reload_keeps_the_substitution_consistent():
    out = run("""
        import importlib, concurrent.futures.thread as t
        import unirun.compat.thread_pool as native
        old_stdlib = native._STDLIB_THREAD_POOL
        t = importlib.reload(t)
        import unirun.compat.thread_pool as native
        ex = t.ThreadPoolExecutor(1)
        print(type(ex).__module__, native._STDLIB_THREAD_POOL is not old_stdlib,
              isinstance(ex, native._STDLIB_THREAD_POOL), ex.submit(abs, -3).result())
        ex.shutdown()
    """)
    assert out.split() == ["unirun.compat.thread_pool", "True", "True", "3"]


@needs_launcher
@needs_native_interpreters
def test_interpreter_pool_executor_on_313(tmp_path):
    out = run("""
        import concurrent.futures as cf, operator
        with cf.InterpreterPoolExecutor(2) as ex:
            print(list(ex.map(operator.neg, range(3))), isinstance(ex, cf.ThreadPoolExecutor))
    """)
    assert out.strip() == "[0, -1, -2] True"


@needs_launcher
@needs_native_interpreters
def test_interpreter_pool_reports_like_the_stdlib_on_every_version():
    # 3.14's contract, which compat's class keeps on 3.13 too: what cannot cross fails the
    # future (NotShareableError), an initializer that fails, even with SystemExit, or cannot
    # cross is logged and breaks the pool, and the caller goes on.
    out = run("""
        import concurrent.futures as cf, logging, operator, sys
        class Show(logging.Handler):
            def emit(self, record):
                print("logged:", record.getMessage(), type(record.exc_info[1]).__name__)
        logging.getLogger("concurrent.futures").addHandler(Show())
        import _interpreters
        captured = 1
        with cf.InterpreterPoolExecutor(1) as ex:
            f = ex.submit(lambda: captured)
            print(type(f.exception()).__name__, isinstance(f.exception(), _interpreters.NotShareableError))
            print(ex.submit(operator.add, 1, 2).result())
        for init in (sys.exit, lambda: captured):
            ex = cf.InterpreterPoolExecutor(1, initializer=init)
            f = ex.submit(operator.add, 1, 2)
            print(type(f.exception(timeout=60)).__name__, end=" ")
            try:
                ex.submit(operator.add, 1, 2)
            except Exception as exc:
                print(type(exc).__name__)
            ex.shutdown()
    """)
    assert out.splitlines() == [
        "NotShareableError True",
        "3",
        "logged: Exception in initializer: SystemExit",
        "BrokenInterpreterPool BrokenInterpreterPool",
        "logged: Exception in initializer: NotShareableError",
        "BrokenInterpreterPool BrokenInterpreterPool",
    ], out


@needs_launcher
def test_compat_off_is_the_pure_standard_library():
    source = """
        import concurrent.futures as cf, unirun.compat as compat
        print(cf.ThreadPoolExecutor.__module__, hasattr(cf, "InterpreterPoolExecutor"), compat.status()["mode"])
    """
    stdlib_has_it = str(sys.version_info >= (3, 14))  # 3.14's stdlib has InterpreterPoolExecutor
    assert run(source, "--compat=off").split() == ["concurrent.futures.thread", stdlib_has_it, "off"]
    assert run(source, env={"UNIRUN_COMPAT": "off"}).split() == ["concurrent.futures.thread", stdlib_has_it, "off"]
    # InterpreterPoolExecutor where unirun's interpreter workers serve it (or 3.14's stdlib has one)
    offered = str(NATIVE_INTERPRETERS or sys.version_info >= (3, 14))
    assert run(source).split() == ["unirun.compat.thread_pool", offered, "managed"]


@needs_launcher
def test_bad_compat_values_are_usage_errors():
    for args, env, named in [(["--compat=on"], {}, "--compat=on"),
                             ([], {"UNIRUN_COMPAT": "yes"}, "UNIRUN_COMPAT=yes"),
                             (["--process-pool=threads"], {}, "--process-pool=threads"),
                             ([], {"UNIRUN_PROCESS_POOL": "x"}, "UNIRUN_PROCESS_POOL=x")]:
        environment = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST", "UNIRUN_"))}
        environment.update(env)
        proc = subprocess.run([sys.executable, *args, "-c", "pass"], capture_output=True, text=True,
                              env=environment, timeout=60)
        assert proc.returncode == 2 and named in proc.stderr


@needs_launcher
def test_process_pool_on_interpreters_with_per_task_fallback():
    pytest.importorskip("_testsinglephase", reason="the runtime was built without test modules")
    tests_dir = os.path.dirname(os.path.abspath(__file__))
    out = run("""
        import concurrent.futures as cf, operator, warnings
        import native_tasks, unirun.compat as compat
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            with cf.ProcessPoolExecutor(2) as ex:
                plain = ex.submit(operator.neg, 5).result()
                refused = [ex.submit(native_tasks.import_module, "_testsinglephase").result()
                           for _ in range(2)]
        print(type(ex).__module__, isinstance(ex, cf.process.ProcessPoolExecutor.__mro__[1]), plain,
              refused[0], refused[1], len([w for w in caught if "subinterpreter" in str(w.message)]),
              compat.status()["process_pool"])
    """, "--process-pool=interpreters", env={"PYTHONPATH": tests_dir})
    # plain work ran on interpreters; the refused import fell back to a real process, warned once
    assert out.split() == ["unirun.compat.process_pool", "True", "-5", "_testsinglephase",
                           "_testsinglephase", "1", "interpreters"]


def test_install_refuses_outside_the_launcher():
    if UNDER_LAUNCHER:
        pytest.skip("the refusal is for plain python")
    with pytest.raises(RuntimeError, match="unirun-python"):
        unirun.compat.install()
    assert unirun.compat.status()["mode"] == "off"


def plain_python():
    """The runtime's own python: the oracle for a program's output."""
    name = f"python{sys.version_info.major}.{sys.version_info.minor}{getattr(sys, 'abiflags', '')}"
    return os.path.join(sys.base_prefix, "bin", name)


def run_both(program, *launcher_args, oracle_attempts=1):
    """(python's result, unirun-python's result) for tests/python/programs/PROGRAM.

    oracle_attempts > 1 for programs where python itself is not robust every time (a Ctrl-C
    that lands inside threading's own code can leave the stdlib hanging at exit): python's
    first clean run is the oracle."""
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "programs", program)
    environment = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST", "UNIRUN_"))}
    for attempt in range(oracle_attempts):
        try:
            expected = subprocess.run([plain_python(), path], capture_output=True, text=True,
                                      timeout=120 if oracle_attempts > 1 else 300, env=environment)
        except subprocess.TimeoutExpired:
            if attempt + 1 == oracle_attempts:
                raise
            continue
        if expected.returncode == 0:
            break
    got = subprocess.run([sys.executable, *launcher_args, path], capture_output=True, text=True,
                         timeout=300, env=environment)
    assert expected.returncode == 0, expected.stderr
    return expected, got


@needs_launcher
@pytest.mark.parametrize("mode", ["processes", "interpreters", "stdlib"])
def test_process_pool_running_cancel_and_dying_worker_as_stdlib(mode):
    expected, got = run_both("process_pool_semantics.py", f"--process-pool={mode}", oracle_attempts=3)
    assert (got.returncode, got.stdout) == (0, expected.stdout), got.stderr
    assert "running True cancel False" in got.stdout  # the scenario ran, not just matched


@needs_launcher
@pytest.mark.parametrize("mode", ["processes", "stdlib"])
def test_process_pool_workers_as_stdlib(mode):
    """Errors either way, initializers, max_tasks_per_child, a child killed by a signal, a
    failing initializer: as python's own pool shows them (interpreters mode differs by design:
    docs/compat.md)."""
    expected, got = run_both("process_pool_workers.py", f"--process-pool={mode}")
    assert (got.returncode, got.stdout) == (0, expected.stdout), got.stderr
    assert "killed BrokenProcessPool" in got.stdout and "end" in got.stdout
    assert got.stderr.count("Exception in initializer:") == 1, got.stderr


@needs_launcher
@needs_native_interpreters
def test_interpreter_process_pool_falls_back_where_only_processes_serve():
    pytest.importorskip("_testsinglephase", reason="the runtime was built without test modules")
    expected, got = run_both("process_pool_fallbacks.py", "--process-pool=interpreters",
                             "-W", "always::RuntimeWarning")
    assert (got.returncode, got.stdout) == (0, expected.stdout), got.stderr
    assert "caught refusal: imported in a child: True" in got.stdout
    # each fallback is announced, once per reason
    for code_words in ("worker processes started that way", "initializer or initargs cannot",
                       "cannot run in a subinterpreter"):
        assert got.stderr.count(code_words) == 1, got.stderr


@needs_launcher
def test_ctrl_c_during_submit_is_seen_as_often_as_python_sees_it():
    # python itself loses an interrupt now and then (one that lands in a finalizer is only
    # reported), so the count is compared, and unirun-python gets a second run.
    expected, got = run_both("interrupt_during_submit.py", oracle_attempts=3)
    python_seen = int(expected.stdout.split(":")[1])
    for attempt in range(2):
        assert got.returncode == 0, got.stderr
        unirun_seen = int(got.stdout.split(":")[1])
        if unirun_seen >= python_seen:
            break
        _, got = run_both("interrupt_during_submit.py", oracle_attempts=3)
    assert unirun_seen >= python_seen >= 15, (unirun_seen, python_seen)


def _plain_python_has_interpreter_pool():
    probe = subprocess.run([plain_python(), "-c", "import concurrent.futures as cf; cf.InterpreterPoolExecutor"],
                           capture_output=True)
    return probe.returncode == 0


needs_stdlib_interpreter_pool = pytest.mark.skipif(
    not os.path.exists(plain_python()) or not _plain_python_has_interpreter_pool(),
    reason="the oracle is python's own InterpreterPoolExecutor, which exists from 3.14 on")


@needs_launcher
@needs_native_interpreters
@needs_stdlib_interpreter_pool
@pytest.mark.parametrize("program, ran", [
    # what crosses and what is refused, and how failures are reported
    ("interpreter_pool_semantics.py", ["local function: ['x', 'x', 'x']", "closure: NotShareableError"]),
    # a main script importing a module subinterpreters refuse: loaded only when needed
    ("interpreter_pool_lazy_main.py", ["[0, 1, 4, 9, 16]", "end"]),
])
def test_interpreter_pool_does_what_the_stdlib_does(program, ran):
    expected, got = run_both(program)
    assert (got.returncode, got.stdout) == (0, expected.stdout), got.stderr
    for line in ran:  # the scenario ran, not just matched
        assert line in got.stdout.splitlines()
