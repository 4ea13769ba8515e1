"""fork() after unirun made subinterpreters: programs must not break because of them.

CPython cannot carry subinterpreters into a forked child (its after-fork code crashed the
child: SIGSEGV/SIGABRT). With interpreter workers alive, multiprocessing's default start
method becomes forkserver, an explicit fork still gives working children, and os.fork()
warns beforehand and gives a child that lives and can use the pools.
"""

import os
import pathlib
import subprocess
import sys
import textwrap

import pytest

pytest.importorskip("_unirun", reason="interpreter workers need unirun-python")

from runtime_support import needs_native_interpreters  # noqa: E402

pytestmark = needs_native_interpreters

SCENARIO = """
import concurrent.futures as cf, multiprocessing as mp, os, sys, warnings
import native_tasks as tasks
from unirun._executors import InterpreterExecutor

if __name__ == "__main__":
    with InterpreterExecutor(2) as executor:
        assert executor.submit(tasks.square, 3).result() == 9
        print("default start method:", mp.get_start_method())
        with cf.ProcessPoolExecutor(2) as pool:
            print("default pool:", list(pool.map(tasks.square, range(4))))
        with cf.ProcessPoolExecutor(2, mp_context=mp.get_context("fork")) as pool:
            print("fork pool:", list(pool.map(tasks.square, range(4))))
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            sys.stdout.flush()  # else the child's flush writes the parent's buffered lines again
            pid = os.fork()
            if pid == 0:
                try:
                    print("child:", executor.submit(tasks.square, 5).result(timeout=60), flush=True)
                finally:
                    os._exit(0)
        _, status = os.waitpid(pid, 0)
        print("child exit:", os.waitstatus_to_exitcode(status))
        ours = [w for w in caught if w.category is RuntimeWarning and "unirun" in str(w.message)]
        print("warned:", len(ours), "at", os.path.basename(ours[0].filename) if ours else None)
        assert executor.submit(tasks.square, 4).result() == 16
    print("parent done")
"""


def test_fork_with_interpreter_workers_alive(tmp_path):
    script = tmp_path / "forking.py"
    script.write_text(textwrap.dedent(SCENARIO))
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST")}
    env["PYTHONPATH"] = str(pathlib.Path(__file__).parent)
    result = subprocess.run([sys.executable, "-W", "ignore::DeprecationWarning", str(script)],
                            capture_output=True, text=True, timeout=300, cwd=tmp_path, env=env)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines == [
        "default start method: forkserver",
        "default pool: [0, 1, 4, 9]",
        "fork pool: [0, 1, 4, 9]",
        "child: 25",
        "child exit: 0",
        "warned: 1 at forking.py",
        "parent done",
    ], result.stderr


def test_an_explicit_start_method_is_kept(tmp_path):
    script = tmp_path / "explicit.py"
    script.write_text(textwrap.dedent("""
        import multiprocessing as mp
        import native_tasks as tasks
        from unirun._executors import InterpreterExecutor
        if __name__ == "__main__":
            mp.set_start_method("spawn")
            with InterpreterExecutor(1) as executor:
                executor.submit(tasks.square, 2).result()
            print(mp.get_start_method())
    """))
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST")}
    env["PYTHONPATH"] = str(pathlib.Path(__file__).parent)
    result = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                            timeout=300, cwd=tmp_path, env=env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "spawn"
