"""unirun-python --canary (issue 13): each verdict on the examples, the pytest comparison, the
report's fields, stdin replay, and bad input (exit 2 before anything runs)."""

import json
import pathlib
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
        assert data["runs"][-1]["signal"] == "SIGABRT"
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
