"""Shared fixtures: where the launcher and the registered runtimes are.

The build leaves the launcher at build/unirun-python and the runtime manifest beside it;
UNIRUN_TEST_BUILD points the tests at another build directory.
"""

import json
import os
import pathlib
import signal

import pytest

# A shell's background job (CI runners, `make test &`) starts with SIGINT ignored, and every
# child inherits that: the tests that interrupt python and unirun-python side by side would see
# neither interrupted. Children get the default disposition again from a Python-level handler.
if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)

ROOT = pathlib.Path(__file__).resolve().parent.parent
BUILD = pathlib.Path(os.environ.get("UNIRUN_TEST_BUILD", ROOT / "build"))
LAUNCHER = BUILD / "unirun-python"


def load_runtimes():
    manifest = BUILD / "runtimes.json"
    if not manifest.exists():
        return []
    return json.loads(manifest.read_text())["runtimes"]


RUNTIMES = load_runtimes()


def runtime_for(mode):
    """The runtime that --thread-mode=MODE picks: the newest of its build (manifest order)."""
    wanted = mode == "nogil"
    matches = [r for r in RUNTIMES if r["free_threaded"] == wanted]
    matches.sort(key=lambda r: tuple(int(p) for p in r["version"].split(".")), reverse=True)
    return matches[0] if matches else None


def clean_env(**extra):
    """The caller's environment without anything that would steer python or unirun."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("PYTHON", "UNIRUN_", "PYTEST_")) and k not in ("VIRTUAL_ENV",)
    }
    env.update(extra)
    return env


@pytest.fixture(scope="session")
def launcher():
    if not LAUNCHER.exists():
        pytest.fail(f"{LAUNCHER} is missing: run make build")
    return str(LAUNCHER)


@pytest.fixture(params=["gil", "nogil"])
def thread_mode(request):
    """Each thread mode, with the runtime it must pick."""
    runtime = runtime_for(request.param)
    if runtime is None:
        pytest.skip(f"no {'free-threaded' if request.param == 'nogil' else 'GIL'} runtime is registered")
    return request.param, runtime
