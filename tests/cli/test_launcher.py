"""unirun-python's own options, runtime choice, and the behaviours python users rely on."""

import json
import os
import pty
import select
import signal
import subprocess
import sys
import sysconfig
import textwrap
import time

import pytest

from conftest import BUILD, RUNTIMES, clean_env


def run(argv, env=None, **kwargs):
    return subprocess.run(argv, capture_output=True, text=True, timeout=120,
                          env=env if env is not None else clean_env(), **kwargs)


# --- unirun's own options -----------------------------------------------------------------

@pytest.mark.parametrize("args, named", [
    (["--bogus"], "--bogus"),
    (["--thread-mode=fast", "-c", "pass"], "--thread-mode=fast"),
    (["--thread-mode"], "--thread-mode"),
    (["--runtime="], "--runtime"),
    (["--json"], "--list-runtimes"),
    (["--not-an-option", "-c", "pass"], "--not-an-option"),
])
def test_unknown_or_malformed_option_prints_usage_and_exits_2(launcher, args, named):
    proc = run([launcher, *args])
    assert proc.returncode == 2
    assert proc.stdout == ""
    assert named in proc.stderr
    assert "usage: unirun-python" in proc.stderr


def test_invalid_thread_mode_env_is_an_error(launcher):
    proc = run([launcher, "-c", "print('ran')"], env=clean_env(UNIRUN_THREAD_MODE="fastest"))
    assert proc.returncode == 2
    assert "ran" not in proc.stdout
    assert "UNIRUN_THREAD_MODE=fastest" in proc.stderr
    assert "auto, gil or nogil" in proc.stderr


def test_unknown_runtime_tag_is_an_error(launcher):
    for argv, env, named in [
        ([launcher, "--runtime=cp299", "-c", "pass"], clean_env(), "--runtime=cp299"),
        ([launcher, "-c", "pass"], clean_env(UNIRUN_RUNTIME="cp299"), "UNIRUN_RUNTIME=cp299"),
    ]:
        proc = run(argv, env=env)
        assert proc.returncode == 2
        assert named in proc.stderr
        assert "--list-runtimes" in proc.stderr


def test_dashdash_first_runs_a_script_named_like_an_option_as_python_does(launcher, tmp_path):
    (tmp_path / "--weird.py").write_text("import sys; print('weird', sys.argv, sys.orig_argv[1:])\n")
    python = RUNTIMES[0]["python"]
    expected = run([python, "--", "--weird.py", "x"], cwd=tmp_path)
    actual = run([launcher, "--", "--weird.py", "x"], cwd=tmp_path)
    assert expected.stdout == "weird ['--weird.py', 'x'] ['--', '--weird.py', 'x']\n"
    assert (actual.returncode, actual.stdout, actual.stderr) == (0, expected.stdout, "")


def test_version_and_help(launcher):
    proc = run([launcher, "--unirun-version"])
    assert proc.returncode == 0 and proc.stdout.startswith("unirun ")
    proc = run([launcher, "--unirun-help"])
    assert proc.returncode == 0
    for option in ("--thread-mode", "--runtime", "--list-runtimes", "--json"):
        assert option in proc.stdout


def test_list_runtimes_json_matches_the_manifest(launcher):
    proc = run([launcher, "--list-runtimes", "--json"])
    assert proc.returncode == 0
    listed = json.loads(proc.stdout)
    assert [r["tag"] for r in listed] == [r["tag"] for r in RUNTIMES]
    for entry, runtime in zip(listed, RUNTIMES):
        assert set(entry) == {"tag", "version", "free_threaded", "path"}
        assert entry["path"] == runtime["python"]
        assert entry["free_threaded"] == runtime["free_threaded"]
        real = run([entry["path"], "-c", "import sys; print('%d.%d.%d' % sys.version_info[:3])"])
        assert real.stdout.strip() == entry["version"]


def test_list_runtimes_table_marks_the_auto_choice(launcher):
    proc = run([launcher, "--list-runtimes"])
    assert proc.returncode == 0
    lines = proc.stdout.splitlines()
    assert lines[0].split()[:3] == ["TAG", "VERSION", "BUILD"]
    marked = [line.split()[0] for line in lines[1:] if " * " in line]
    chosen = run([launcher, "-c", "import _unirun; print(_unirun.runtime_info()['tag'])"])
    assert marked == [chosen.stdout.strip()]


def one_runtime_manifest(tmp_path, free_threaded):
    data = json.loads((BUILD / "runtimes.json").read_text())
    kept = [r for r in data["runtimes"] if r["free_threaded"] == free_threaded]
    if not kept:
        pytest.skip("needs a registered runtime of that build")
    for r in kept:
        r["library"] = str(BUILD / r["library"])
    data["runtimes"] = kept
    path = tmp_path / "runtimes.json"
    path.write_text(json.dumps(data))
    return str(path)


def test_nogil_without_a_free_threaded_runtime_names_what_is_missing(launcher, tmp_path):
    env = clean_env(UNIRUN_MANIFEST=one_runtime_manifest(tmp_path, free_threaded=False))
    proc = run([launcher, "--thread-mode=nogil", "-c", "print('ran')"], env=env)
    assert proc.returncode == 2
    assert proc.stdout == ""
    assert "free-threaded" in proc.stderr and "none is registered" in proc.stderr
    assert "scripts/bootstrap" in proc.stderr
    # auto still runs, on what there is
    assert run([launcher, "-c", "print('ran')"], env=env).stdout == "ran\n"


def test_gil_without_a_gil_runtime_is_as_clear(launcher, tmp_path):
    env = clean_env(UNIRUN_MANIFEST=one_runtime_manifest(tmp_path, free_threaded=True),
                    UNIRUN_THREAD_MODE="gil")
    proc = run([launcher, "-c", "print('ran')"], env=env)
    assert proc.returncode == 2
    assert "UNIRUN_THREAD_MODE=gil" in proc.stderr and "GIL" in proc.stderr


def test_missing_or_broken_manifest(launcher, tmp_path):
    proc = run([launcher, "-c", "pass"], env=clean_env(UNIRUN_MANIFEST=str(tmp_path / "none.json")))
    assert proc.returncode == 2 and "make build" in proc.stderr
    broken = tmp_path / "broken.json"
    broken.write_text("{")
    proc = run([launcher, "-c", "pass"], env=clean_env(UNIRUN_MANIFEST=str(broken)))
    assert proc.returncode == 2 and "malformed runtime manifest" in proc.stderr


def test_trace_option_records_the_runtime_and_every_scope(launcher, tmp_path):
    trace = tmp_path / "trace.jsonl"
    program = "from unirun import Run\nwith Run('threads', name='demo') as ex:\n    ex.submit(print, 'ran').result()"
    proc = run([launcher, f"--trace={trace}", "--thread-mode=gil", "-c", program])
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "ran\n"
    lines = [json.loads(line) for line in trace.read_text().splitlines()]
    events = [e for e in lines if "trace" in e]  # the decisions; the rest are lifecycle events
    assert [e["event"] for e in events] == ["runtime", "decided", "ended"]
    assert events[0]["trace"]["reason_code"] == "thread-mode"
    assert events[1]["trace"]["name"] == "demo" and events[1]["trace"]["resolved_flavor"] == "threads"
    lifecycle = [e["event"] for e in lines if "fields" in e and e["fields"].get("executor") == "demo"]
    assert sorted(lifecycle) == ["pool.shutdown", "pool.start", "worker.start", "worker.stop"]
    assert lifecycle[0] == "pool.start"
    # UNIRUN_TRACE does the same, and an unwritable path is a clear error
    proc = run([launcher, "-c", "pass"], env=clean_env(UNIRUN_TRACE=str(tmp_path / "no" / "dir" / "t")))
    assert proc.returncode == 2 and "cannot write the trace file" in proc.stderr


@pytest.mark.parametrize("args, env, message", [
    (["--metrics-interval=0"], {}, "--metrics-interval=0 is not a number of seconds"),
    (["--metrics-interval=soon"], {}, "--metrics-interval=soon is not a number of seconds"),
    (["--metrics-interval=5"], {}, "--metrics-interval needs a metrics file"),
    ([], {"UNIRUN_METRICS_INTERVAL": "-1", "UNIRUN_METRICS": "m.json"}, "UNIRUN_METRICS_INTERVAL=-1 is not a number"),
    (["--metrics=/no/such/dir/m.prom"], {}, "cannot write --metrics file /no/such/dir/m.prom"),
    (["--timeline=/"], {}, "cannot write --timeline file /"),
    ([], {"UNIRUN_TIMELINE": "/no/such/dir/t.json"}, "cannot write --timeline file"),
    (["--metrics="], {}, "error: --metrics"),
    (["--metrics", "app.py"], {}, "app.py names a Python script"),
])
def test_observability_options_refuse_bad_input_before_the_program_runs(launcher, tmp_path, args, env, message):
    marker = tmp_path / "ran"
    (tmp_path / "app.py").write_text(f"open({str(marker)!r}, 'w')")
    proc = run([launcher, *args, "-c", f"open({str(marker)!r}, 'w')"], env=clean_env(**env), cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    assert message in proc.stderr
    assert not marker.exists()


def test_metrics_and_timeline_files_are_written_at_exit(launcher, tmp_path):
    program = "import concurrent.futures as cf\nwith cf.ThreadPoolExecutor(1) as ex: ex.submit(abs, -1).result()"
    proc = run([launcher, "--metrics=m.prom", "--timeline=t.json", "-c", program], env=clean_env(), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    text = (tmp_path / "m.prom").read_text()
    assert 'unirun_executor_completed_tasks_total{executor="ThreadPoolExecutor"' in text
    spans = [e for e in json.loads((tmp_path / "t.json").read_text())["traceEvents"] if e["ph"] == "X"]
    assert [e["name"] for e in spans] == ["abs"]
    # off is off: no file named "off", and the program's own work is untouched.
    proc = run([launcher, "--timeline=off", "--metrics=off", "-c", program], env=clean_env(), cwd=tmp_path)
    assert proc.returncode == 0 and not (tmp_path / "off").exists(), proc.stderr
    # The exit code is the program's, metrics or not.
    proc = run([launcher, "--metrics=m.json", "-c", "raise SystemExit(3)"], env=clean_env(), cwd=tmp_path)
    assert proc.returncode == 3 and json.loads((tmp_path / "m.json").read_text())["executors"] == []


# --- per thread mode ------------------------------------------------------------------------

FACTS = "import sys, sysconfig; print(sys._is_gil_enabled(), sysconfig.get_config_var('Py_GIL_DISABLED'))"


def test_thread_mode_facts(launcher, thread_mode):
    mode, runtime = thread_mode
    for argv, env in [
        ([launcher, f"--thread-mode={mode}", "-c", FACTS], clean_env()),
        ([launcher, "-c", FACTS], clean_env(UNIRUN_THREAD_MODE=mode)),
        ([launcher, f"--runtime={runtime['tag']}", "-c", FACTS], clean_env()),
    ]:
        proc = run(argv, env=env)
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout.split() == (["False", "1"] if mode == "nogil" else ["True", "0"])


def test_command_line_beats_the_environment(launcher, thread_mode):
    mode, _ = thread_mode
    other = "gil" if mode == "nogil" else "nogil"
    proc = run([launcher, f"--thread-mode={mode}", "-c", FACTS],
               env=clean_env(UNIRUN_THREAD_MODE=other, UNIRUN_RUNTIME="no-such-tag"))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split()[1] == ("1" if mode == "nogil" else "0")


def test_runtime_and_thread_mode_that_disagree_are_an_error(launcher):
    gil = [r for r in RUNTIMES if not r["free_threaded"]]
    if not gil:
        pytest.skip("needs a GIL runtime")
    proc = run([launcher, f"--runtime={gil[0]['tag']}", "--thread-mode=nogil", "-c", "pass"])
    assert proc.returncode == 2 and "contradicts" in proc.stderr


CHILD_REPORT = "import sys; print(sys.executable, sys._is_gil_enabled())"
POOL_PROGRAM = textwrap.dedent(
    """\
    import concurrent.futures, multiprocessing, sys

    def report(n):
        return sys.executable, sys._is_gil_enabled(), n * n

    if __name__ == "__main__":
        context = multiprocessing.get_context(sys.argv[1])
        with concurrent.futures.ProcessPoolExecutor(2, mp_context=context) as pool:
            results = list(pool.map(report, range(4)))
        assert {r[0] for r in results} == {sys.executable}, results
        assert {r[1] for r in results} == {sys._is_gil_enabled()}, results
        print(sys.executable, sys._is_gil_enabled(), [r[2] for r in results])
    """
)


@pytest.mark.parametrize("method", ["spawn", "forkserver"])
def test_process_pool_children_come_back_through_the_launcher(launcher, thread_mode, tmp_path, method):
    mode, _ = thread_mode
    script = tmp_path / "pool.py"
    script.write_text(POOL_PROGRAM)
    proc = run([launcher, f"--thread-mode={mode}", str(script), method])
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == [launcher, str(mode == "gil"), "[0,", "1,", "4,", "9]"]


def test_subprocess_child_keeps_the_thread_mode(launcher, thread_mode):
    mode, runtime = thread_mode
    program = ("import subprocess, sys; "
               f"print(subprocess.check_output([sys.executable, '-c', {CHILD_REPORT!r}], text=True))")
    proc = run([launcher, f"--thread-mode={mode}", "-c", program])
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == [launcher, str(mode == "gil")]


# --- virtual environments -------------------------------------------------------------------

def make_venv(python, path):
    subprocess.run([python, "-m", "venv", "--without-pip", str(path)], check=True, timeout=120,
                   env=clean_env())
    site = subprocess.run([str(path / "bin" / "python"), "-c",
                           "import sysconfig; print(sysconfig.get_path('purelib'))"],
                          capture_output=True, text=True, check=True, env=clean_env()).stdout.strip()
    with open(os.path.join(site, "venv_only_module.py"), "w") as module:
        module.write("WHERE = 'venv'\n")
    return path


def test_activated_venv_packages_are_importable(launcher, thread_mode, tmp_path):
    mode, runtime = thread_mode
    venv = make_venv(runtime["python"], tmp_path / "env")
    env = clean_env(VIRTUAL_ENV=str(venv), PATH=f"{venv}/bin:{os.environ['PATH']}")
    program = "import sys, venv_only_module; print(venv_only_module.WHERE, sys.prefix, sys.executable)"
    proc = run([launcher, "-c", program], env=env)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["venv", str(venv), launcher]
    # auto follows the environment's runtime
    proc = run([launcher, "-c", "import sys; print(sys._is_gil_enabled())"], env=env)
    assert proc.stdout.strip() == str(mode == "gil")


def test_venv_made_by_the_launcher_works_too(launcher, thread_mode, tmp_path):
    mode, _ = thread_mode
    venv = tmp_path / "env2"
    proc = run([launcher, f"--thread-mode={mode}", "-m", "venv", "--without-pip", str(venv)])
    assert proc.returncode == 0, proc.stderr
    proc = run([launcher, "-c", "import sys; print(sys.prefix, sys._is_gil_enabled())"],
               env=clean_env(VIRTUAL_ENV=str(venv)))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == [str(venv), str(mode == "gil")]


def test_venv_of_another_runtime_is_reported_not_hidden(launcher, tmp_path):
    gil = [r for r in RUNTIMES if not r["free_threaded"]]
    free = [r for r in RUNTIMES if r["free_threaded"]]
    if not gil or not free:
        pytest.skip("needs both builds")
    venv = make_venv(gil[0]["python"], tmp_path / "env")
    proc = run([launcher, "--thread-mode=nogil", "-c", "import sys; print(sys.prefix)"],
               env=clean_env(VIRTUAL_ENV=str(venv)))
    assert proc.returncode == 0
    assert proc.stdout.strip() != str(venv)
    assert "not made from runtime" in proc.stderr


# --- signals, terminals, extensions ---------------------------------------------------------

def interrupted_outcomes(script, launcher, mode, runtime):
    """Run script under python and under the launcher; Ctrl-C each once it printed "ready".
    Returns (exit status, last stderr line, traceback printed) for each."""
    outcomes = []
    for argv in ([runtime["python"], str(script)], [launcher, f"--thread-mode={mode}", str(script)]):
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                env=clean_env())
        assert proc.stdout.readline() == "ready\n"
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
        outcomes.append((proc.returncode, err.splitlines()[-1], "Traceback" in err))
    return outcomes


def test_ctrl_c_exits_like_python(launcher, thread_mode, tmp_path):
    mode, runtime = thread_mode
    script = tmp_path / "sleeper.py"
    script.write_text("import sys, time\nprint('ready', flush=True)\ntime.sleep(60)\n")
    python, unirun = interrupted_outcomes(script, launcher, mode, runtime)
    assert python == unirun == (-signal.SIGINT, "KeyboardInterrupt", True)


WAITING_PROGRAM = textwrap.dedent(
    """\
    import concurrent.futures, time
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        future = pool.submit(time.sleep, 1)
        print("ready", flush=True)
        future.result()
    """
)


def test_ctrl_c_while_waiting_on_a_future_exits_like_python(launcher, thread_mode, tmp_path):
    # The future is unirun's under the launcher (compat) and the stdlib's under python: Ctrl-C
    # must interrupt result() the same way, and exit must still wait for the running task.
    mode, runtime = thread_mode
    script = tmp_path / "waiter.py"
    script.write_text(WAITING_PROGRAM)
    python, unirun = interrupted_outcomes(script, launcher, mode, runtime)
    assert python == unirun == (-signal.SIGINT, "KeyboardInterrupt", True)


def read_until(fd, marker, timeout=60):
    seen = b""
    deadline = time.monotonic() + timeout
    while marker not in seen:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise AssertionError(f"no {marker!r} in {seen!r}")
        ready, _, _ = select.select([fd], [], [], remaining)
        if ready:
            try:
                chunk = os.read(fd, 4096)
            except OSError:
                break
            if not chunk:
                break
            seen += chunk
    return seen


def test_repl_when_stdin_is_a_terminal(launcher, thread_mode):
    mode, _ = thread_mode
    pid, fd = pty.fork()
    if pid == 0:  # child: the REPL on the pty
        env = clean_env(TERM="dumb", PYTHON_BASIC_REPL="1")
        os.execve(launcher, [launcher, f"--thread-mode={mode}", "-q"], env)
    try:
        read_until(fd, b">>> ")
        os.write(fd, b"import sys; print(6 * 7, sys._is_gil_enabled())\n")
        assert f"42 {mode == 'gil'}".encode() in read_until(fd, b">>> ")
        os.write(fd, b"raise SystemExit(5)\n")
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 5
    finally:
        os.close(fd)


EXTENSION = textwrap.dedent(
    """\
    #include <Python.h>
    static struct PyModuleDef def = {PyModuleDef_HEAD_INIT, "gil_needing_ext", NULL, 0, NULL};
    PyMODINIT_FUNC PyInit_gil_needing_ext(void) { return PyModuleDef_Init(&def); }
    """
)


def test_extension_that_reenables_the_gil_is_reported(launcher, tmp_path):
    free = [r for r in RUNTIMES if r["free_threaded"]]
    if not free:
        pytest.skip("needs a free-threaded runtime")
    python = free[0]["python"]
    config = json.loads(run([python, "-c", "import json, sysconfig; print(json.dumps("
                                           "[sysconfig.get_path('include'), sysconfig.get_config_var('EXT_SUFFIX')]))"]).stdout)
    source = tmp_path / "ext.c"
    source.write_text(EXTENSION)
    # No Py_mod_gil slot: CPython must turn the GIL on when it loads the module, and say so.
    subprocess.run(["cc", "-shared", "-fPIC", "-I", config[0], str(source), "-o",
                    str(tmp_path / ("gil_needing_ext" + config[1]))], check=True, timeout=120)
    program = "import sys; print(sys._is_gil_enabled()); import gil_needing_ext; print(sys._is_gil_enabled())"
    proc = run([launcher, "--thread-mode=nogil", "-c", program], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["False", "True"]
    assert "GIL" in proc.stderr and "gil_needing_ext" in proc.stderr
