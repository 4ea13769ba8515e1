"""unirun-python --canary (issue 13): each verdict on the examples, the pytest comparison, the
report's fields, stdin replay, and bad input (exit 2 before anything runs)."""

import json
import subprocess

import pytest

from conftest import ROOT, clean_env, runtime_for

EXAMPLES = ROOT / "examples" / "canary"
needs_both = pytest.mark.skipif(runtime_for("gil") is None or runtime_for("nogil") is None,
                                reason="needs a GIL and a free-threaded runtime registered")


def canary(launcher, *args, cwd=None, input=None):
    proc = subprocess.run([launcher, *args], capture_output=True, text=True, env=clean_env(), cwd=cwd,
                          input=input, timeout=600)
    return proc


@needs_both
@pytest.mark.parametrize("example, verdict, status", [
    ("same.py", "same", 0),
    ("timing_noise.py", "same", 0),
    ("differs.py", "differs", 1),
    ("crashes.py", "candidate failed", 1),
])
def test_each_verdict(launcher, tmp_path, example, verdict, status):
    report = tmp_path / "report.json"
    proc = canary(launcher, "--canary=gil:nogil", f"--canary-report={report}", str(EXAMPLES / example))
    assert proc.returncode == status, proc.stdout + proc.stderr
    assert proc.stdout.startswith(f"canary: {verdict} ")
    data = json.loads(report.read_text())
    assert data["verdict"] == verdict
    assert data["control"] == {"spec": "gil", "options": ["--thread-mode=gil"], "runs": 2}
    assert data["candidate"]["options"] == ["--thread-mode=nogil"]
    assert sorted(data["order"]) == ["candidate", "control", "control"]
    assert [r["side"] for r in data["runs"]] == ["control", "control", "candidate"]
    for run in data["runs"]:
        assert run["wall"] > 0 and run["cpu"] >= 0 and run["options"]
    assert data["runs"][-1]["ledger"] is not None or verdict == "candidate failed"
    if example == "timing_noise.py":
        assert "number" in data["noise"]["stdout"]["shapes"]  # learned from the control pair
        assert not data["noise"]["stdout"]["exact_between_controls"]
    if example == "differs.py":
        (difference,) = [d for d in data["differences"] if d["what"] == "stdout"]
        assert "-gil enabled: True" in difference["first_lines"]
        assert "+gil enabled: False" in difference["first_lines"]
    if example == "crashes.py":
        assert data["runs"][-1]["signal"] == "SIGKILL"
        assert any(d["what"] == "exit" for d in data["differences"])


@needs_both
def test_a_pytest_suite_is_compared_test_by_test(launcher, tmp_path):
    report = tmp_path / "report.json"
    proc = canary(launcher, "--canary=gil:nogil", "--canary-runs=2", f"--canary-report={report}",
                  "-m", "pytest", "-q", "-p", "no:cacheprovider", str(EXAMPLES / "suite"), cwd=tmp_path)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    data = json.loads(report.read_text())
    assert data["pytest"] and data["verdict"] == "differs"
    tests = data["tests"]
    assert [t["test"].rsplit("::", 1)[1] for t in tests["pass_in_control_fail_in_candidate"]] == ["test_assumes_the_gil"]
    assert tests["fail_in_control_pass_in_candidate"] == [] and tests["flaky"] == []
    assert tests["compared"] == 4
    outcomes = data["runs"][0]["tests"]
    assert sorted(outcomes.values()) == ["passed", "passed", "passed", "skipped"]
    assert "test_assumes_the_gil" in proc.stdout


def test_stdin_is_read_once_and_replayed_to_every_run(launcher, tmp_path):
    report = tmp_path / "report.json"
    program = "import sys; data = sys.stdin.read(); print(len(data), data.count('x'))"
    proc = canary(launcher, "--canary=managed:compat-off", f"--canary-report={report}", "-c", program,
                  input="x" * 1000)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    data = json.loads(report.read_text())
    assert data["stdin_bytes"] == 1000
    assert {r["stdout"] for r in data["runs"]} == {"1000 1000\n"}


@pytest.mark.parametrize("args, message", [
    (["--canary=gil", "-c", "pass"], "needs CONTROL:CANDIDATE"),
    (["--canary=gil:turbo", "-c", "pass"], "'turbo' in --canary=gil:turbo is not a configuration"),
    (["--canary=gil:gil", "-c", "pass"], "both sides are the same configuration"),
    (["--canary=gil:gil+nogil", "-c", "pass"], "asks for two thread-modes"),
    (["--canary=compat-off+interpreters:gil", "-c", "pass"], "needs compat managed"),
    (["--canary=gil:nogil", "--canary-runs=0", "-c", "pass"], "--canary-runs=0 is not a number of runs"),
    (["--canary-runs=2", "-c", "pass"], "--canary-runs goes with --canary"),
    (["--canary=gil:nogil"], "--canary needs a program"),
    (["--canary=gil:nogil", "--canary-report=/no/such/dir/r.json", "-c", "pass"], "cannot write --canary-report"),
])
def test_bad_input_is_its_own_error(launcher, tmp_path, args, message):
    marker = tmp_path / "ran"
    args = [a.replace("pass", f"open({str(marker)!r}, 'w')") for a in args]
    proc = canary(launcher, *args)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert message in proc.stderr
    assert not marker.exists()


def test_set_orders_agree_between_runs_through_one_hash_seed(launcher, tmp_path):
    report = tmp_path / "report.json"
    program = "print({str(i) * 3 for i in range(40)})"
    proc = canary(launcher, "--canary=managed:compat-off", f"--canary-report={report}", "-c", program)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    data = json.loads(report.read_text())
    assert data["noise"]["stdout"]["exact_between_controls"] and data["hash_seed"]


@needs_both
def test_a_nameless_signal_is_still_a_failed_candidate(launcher, tmp_path):
    report = tmp_path / "report.json"
    program = ("import os, signal, sys\n"
               "if not sys._is_gil_enabled(): os.kill(os.getpid(), signal.SIGRTMIN + 3)\n"
               "print('alive')")
    proc = canary(launcher, "--canary=gil:nogil", f"--canary-report={report}", "-c", program)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    data = json.loads(report.read_text())
    assert data["verdict"] == "candidate failed"
    assert data["runs"][-1]["signal"].startswith("signal ") or data["runs"][-1]["signal"].startswith("SIGRT")
    assert not list(tmp_path.glob("unirun-canary-*"))


@needs_both
def test_python_options_before_m_pytest_keep_the_per_test_comparison(launcher, tmp_path):
    report = tmp_path / "report.json"
    proc = canary(launcher, "--canary=gil:nogil", f"--canary-report={report}", "-X", "dev", "-m", "pytest",
                  "-q", "-p", "no:cacheprovider", str(EXAMPLES / "suite"), cwd=tmp_path)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    data = json.loads(report.read_text())
    assert data["pytest"] and data["tests"]["compared"] == 4


def test_output_that_vanishes_differs_even_without_a_floor(launcher, tmp_path):
    report = tmp_path / "report.json"
    # Each control run prints one line more than the last (no floor); the candidate (compat
    # off) prints none.
    counter = tmp_path / "runs"
    program = ("import unirun.compat\n"
               f"with open({str(counter)!r}, 'a+') as f:\n"
               "    f.write('.'); f.seek(0); n = len(f.read())\n"
               "if unirun.compat.status()['mode'] == 'managed':\n"
               "    print('\\n'.join('x' for _ in range(n)))")
    proc = canary(launcher, "--canary=managed:compat-off", f"--canary-report={report}", "-c", program)
    data = json.loads(report.read_text())
    assert data["noise"]["stdout"]["unstable"]
    assert proc.returncode == 1 and data["verdict"] == "differs"
    assert "not compared line by line" in proc.stdout
