"""The standard library as oracle (issue 8): each state machine of future_oracle.py runs in a
child unirun-python (same runtime and thread mode), so that a crash or a hang in one is
reported as that machine's failure, with the steps that led to it, and the others still run.

Runs under unirun-python (make test does, in both thread modes); under plain python the
_unirun module does not exist and these tests are skipped.
"""

import os
import pathlib
import subprocess
import sys

import pytest

pytest.importorskip("_unirun", reason="needs unirun-python (the _unirun built-in module)")
pytest.importorskip("hypothesis", reason="needs Hypothesis (scripts/bootstrap installs it)")

HERE = pathlib.Path(__file__).resolve().parent
# Each machine runs well under a minute at the ci profile; this only ends a stuck child whose
# own watchdog (faulthandler) did not.
CHILD_TIMEOUT = 600


def run_machine(machine, tmp_path, **extra_env):
    steps = tmp_path / "steps.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST")}
    env.update(extra_env)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(HERE), env.get("PYTHONPATH")]))
    env["UNIRUN_ORACLE_STEPS"] = str(steps)
    env.setdefault("UNIRUN_ORACLE_WATCHDOG", str(CHILD_TIMEOUT - 60))
    code = "import sys, future_oracle; future_oracle.main(sys.argv[1:])"
    try:
        proc = subprocess.run([sys.executable, "-c", code, machine], capture_output=True, text=True,
                              cwd=tmp_path, env=env, timeout=CHILD_TIMEOUT)
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"the {machine} oracle did not finish in {CHILD_TIMEOUT} s\n{exc.stdout}\n{exc.stderr}")
    if proc.returncode != 0:
        how = f"exit status {proc.returncode}"
        if proc.returncode < 0 or proc.returncode in (134, 139):
            how += " (killed by a signal: a crash, so Hypothesis could not shrink; the steps of the example that crashed are below)"
        last_steps = steps.read_text()[-6000:] if steps.exists() else "(none recorded)"
        pytest.fail(f"unirun differs from the standard library ({machine}; {how}):\n"
                    f"--- stdout\n{proc.stdout[-20000:]}\n--- stderr\n{proc.stderr[-20000:]}\n"
                    f"--- steps of the last example\n{last_steps}", pytrace=False)
    print(proc.stdout)


def test_manual_futures_match_the_stdlib(tmp_path):
    """_unirun.Future() against concurrent.futures.Future(): every operation, waiters on other
    threads, and two-thread races checked against both serial orders."""
    run_machine("manual", tmp_path)


def test_thread_executor_futures_match_the_stdlib(tmp_path):
    """unirun._executors.ThreadExecutor against the standard ThreadPoolExecutor."""
    run_machine("threads", tmp_path)


def test_compat_thread_pool_futures_match_the_stdlib(tmp_path):
    """unirun.compat's ThreadPoolExecutor against the standard one."""
    run_machine("compat", tmp_path)


def test_interpreter_executor_futures_match_the_stdlib(tmp_path):
    """unirun._executors.InterpreterExecutor against the standard ThreadPoolExecutor."""
    run_machine("interpreters", tmp_path)


def test_two_thread_races_match_a_serial_order(tmp_path):
    """Two threads racing two operations on one future leave what one serial order leaves."""
    run_machine("races", tmp_path)


def test_threads_reading_one_outcome_at_once_get_one_object(tmp_path):
    """Several threads reading a finished executor future at once all get the same object."""
    run_machine("reads", tmp_path)


@pytest.mark.parametrize("machine", ["manual", "threads", "races", "reads"])
def test_the_oracle_finds_nothing_when_both_sides_are_the_stdlib(machine, tmp_path):
    """The same machines with the standard library on both sides: they must pass, or the
    failures above could be the test's own."""
    run_machine(machine, tmp_path, UNIRUN_ORACLE_SELF_TEST="1", UNIRUN_ORACLE_EXAMPLES="40",
                UNIRUN_ORACLE_ROUNDS="50")
