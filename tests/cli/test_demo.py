"""The README's main job, `make demo` (examples/run-demo), runs to its end and explains each
decision: a change to what the launcher writes (the --trace file, say) must not break it."""

import subprocess

from conftest import ROOT, clean_env


def test_the_demo_runs_and_explains_its_decisions():
    proc = subprocess.run([str(ROOT / "examples" / "run-demo")], capture_output=True, text=True,
                          env=clean_env(), timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert proc.stdout.count("scope cpu_demo:") == 2  # one decision per thread mode
    assert "runtime: cp313 [thread-mode]" in proc.stdout
