"""The launcher's own files: the runtime manifest checked against what it loads, a launcher
symlinked or copied elsewhere, a ._pth file beside it, and files this user may not read.

python is the oracle wherever python has the same situation (a symlink, a ._pth file)."""

import json
import os
import shutil
import subprocess
import tempfile
import textwrap

import pytest

from conftest import BUILD, RUNTIMES, clean_env


def run(argv, env=None, **kwargs):
    return subprocess.run(argv, capture_output=True, text=True, timeout=120,
                          env=env if env is not None else clean_env(), **kwargs)


def by_build(free_threaded):
    return next((r for r in RUNTIMES if r["free_threaded"] == free_threaded), None)


def both_builds():
    gil, free = by_build(False), by_build(True)
    if not gil or not free:
        pytest.skip("needs a GIL and a free-threaded runtime")
    return gil, free


def write_manifest(path, entries):
    """A manifest like the build's, with the given entries (libraries made absolute)."""
    data = json.loads((BUILD / "runtimes.json").read_text())
    data["runtimes"] = [dict(e, library=str(BUILD / e["library"])) for e in entries]
    path.write_text(json.dumps(data))
    return str(path)


FACTS = "import sys; print('ran', sys._is_gil_enabled())"


# --- the manifest is checked against the library it loads --------------------------------------

def wrong_entries(case):
    gil, free = both_builds()
    if case == "free-threaded-flipped":
        # both entries claim the other build: --thread-mode=gil picks the free-threaded library
        return [dict(gil, free_threaded=True), dict(free, free_threaded=False)], "free-threaded"
    if case == "library-of-the-other-build":
        return [dict(gil, library=free["library"]), free], "free-threaded"
    if case == "python-of-the-other-build":
        return [dict(gil, python=free["python"]), free], free["python"]
    raise AssertionError(case)


@pytest.mark.parametrize("case", ["free-threaded-flipped", "library-of-the-other-build",
                                  "python-of-the-other-build"])
def test_gil_mode_refuses_an_entry_that_is_not_what_it_loads(launcher, tmp_path, case):
    entries, named = wrong_entries(case)
    env = clean_env(UNIRUN_MANIFEST=write_manifest(tmp_path / "runtimes.json", entries))
    proc = run([launcher, "--thread-mode=gil", "-c", FACTS], env=env)
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    assert "ran" not in proc.stdout
    assert "manifest entry" in proc.stderr and named in proc.stderr
    assert "make build" in proc.stderr  # the way out: write the manifest from the runtimes again


def test_wrong_version_in_an_entry_is_refused(launcher, tmp_path):
    runtime = RUNTIMES[0]
    entry = dict(runtime, version="3.13.0" if runtime["version"] != "3.13.0" else "3.13.1")
    env = clean_env(UNIRUN_MANIFEST=write_manifest(tmp_path / "runtimes.json", [entry]))
    proc = run([launcher, "-c", FACTS], env=env)
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    assert "ran" not in proc.stdout
    assert entry["version"] in proc.stderr and runtime["version"] in proc.stderr


def test_a_correct_manifest_elsewhere_still_runs(launcher, tmp_path):
    env = clean_env(UNIRUN_MANIFEST=write_manifest(tmp_path / "runtimes.json", RUNTIMES))
    for runtime in RUNTIMES:
        proc = run([launcher, f"--runtime={runtime['tag']}", "-c", FACTS], env=env)
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout.split() == ["ran", str(not runtime["free_threaded"])]


# --- a launcher symlinked or copied elsewhere -----------------------------------------------------

EXECUTABLE = "import sys; print(sys.executable)"


def test_symlinked_launcher_runs_and_is_sys_executable_as_python_is(launcher, tmp_path):
    runtime = RUNTIMES[0]
    (tmp_path / "upy").symlink_to(launcher)
    (tmp_path / "py").symlink_to(runtime["python"])
    for name in ("upy", "py"):
        # by path, and by name through PATH
        proc = run([str(tmp_path / name), "-c", EXECUTABLE])
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout.strip() == str(tmp_path / name)
        proc = run([name, "-c", EXECUTABLE],
                   env=clean_env(PATH=f"{tmp_path}:{os.environ['PATH']}"))
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout.strip() == str(tmp_path / name)


def test_copied_launcher_runs_on_the_runtimes_of_its_build(launcher, tmp_path):
    copy = tmp_path / "unirun-python"
    shutil.copy2(launcher, copy)
    proc = run([str(copy), "-c", EXECUTABLE + "; " + FACTS])
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split()[:2] == [str(copy), "ran"]


def test_copied_launcher_with_a_copied_manifest_says_what_is_missing(launcher, tmp_path):
    copy = tmp_path / "unirun-python"
    shutil.copy2(launcher, copy)
    shutil.copy2(BUILD / "runtimes.json", tmp_path / "runtimes.json")  # names libraries relatively
    proc = run([str(copy), "-c", FACTS])
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    library = tmp_path / json.loads((BUILD / "runtimes.json").read_text())["runtimes"][0]["library"]
    assert f"{library}, does not exist" in proc.stderr
    assert str(tmp_path) in proc.stderr
    assert "UNIRUN_MANIFEST" in proc.stderr


def test_manifest_named_by_the_environment_that_is_missing_is_named(launcher, tmp_path):
    missing = tmp_path / "nowhere" / "runtimes.json"
    proc = run([launcher, "-c", FACTS], env=clean_env(UNIRUN_MANIFEST=str(missing)))
    assert proc.returncode == 2
    assert str(missing) in proc.stderr and "UNIRUN_MANIFEST" in proc.stderr
    assert "No such file or directory" in proc.stderr


# --- a ._pth file beside the launcher acts as one beside python ---------------------------------

PTH_PROBE = textwrap.dedent(
    """\
    import os, subprocess, sys
    print(sys.path)
    f = sys.flags
    print(f.isolated, f.ignore_environment, f.no_site, f.safe_path, f.no_user_site)
    print('site' in sys.modules, sys.prefix, sys.exec_prefix)
    print(sys.executable == os.path.abspath(sys.orig_argv[0]))
    import beside_pth
    print(beside_pth.WHERE)
    child = subprocess.run(
        [sys.executable, '-c', 'import sys; print(sys.flags.isolated, "site" in sys.modules)'],
        capture_output=True, text=True)
    print('child', child.returncode, child.stdout.strip(), child.stderr)
    """
)


def stdlib_dirs(python):
    out = run([python, "-I", "-c",
               "import os, sysconfig; print(sysconfig.get_path('stdlib')); "
               "print(os.path.join(sysconfig.get_path('platstdlib'), 'lib-dynload'))"])
    return out.stdout.split()


@pytest.mark.parametrize("how", ["symlink", "copy"])
@pytest.mark.parametrize("site_line", [False, True], ids=["no-site", "import-site"])
def test_pth_beside_the_launcher_acts_as_beside_python(launcher, thread_mode, tmp_path, how,
                                                       site_line):
    mode, runtime = thread_mode
    (tmp_path / "extra").mkdir()
    (tmp_path / "extra" / "beside_pth.py").write_text("WHERE = 'extra'\n")
    lines = [*stdlib_dirs(runtime["python"]), "extra", "# a comment", ""]
    if site_line:
        lines.append("import site")
    (tmp_path / "py").symlink_to(runtime["python"])
    if how == "symlink":
        (tmp_path / "upy").symlink_to(launcher)
    else:
        shutil.copy2(launcher, tmp_path / "upy")
        write_manifest(tmp_path / "runtimes.json", RUNTIMES)
    for name in ("py", "upy"):
        (tmp_path / f"{name}._pth").write_text("\n".join(lines) + "\n")
    # the environment is ignored under a ._pth file, as -I would
    env = clean_env(PYTHONPATH=str(tmp_path / "nowhere"), PYTHONSAFEPATH="")
    expected = run([str(tmp_path / "py"), "-c", PTH_PROBE], env=env, cwd=tmp_path)
    actual = run([str(tmp_path / "upy"), f"--thread-mode={mode}", "-c", PTH_PROBE], env=env,
                 cwd=tmp_path)
    assert expected.returncode == 0, expected.stderr
    assert expected.stdout.splitlines()[1].startswith("1 1 ")  # isolated under python
    assert (actual.returncode, actual.stdout, actual.stderr) == (
        expected.returncode, expected.stdout, expected.stderr)


def test_pth_beside_the_real_launcher_applies_through_a_symlink(launcher, thread_mode, tmp_path):
    """python checks beside the path it was started by, then beside the resolved one."""
    mode, runtime = thread_mode
    real = tmp_path / "real"
    real.mkdir()
    shutil.copy2(launcher, real / "upy")
    write_manifest(real / "runtimes.json", RUNTIMES)
    (real / "upy._pth").write_text("\n".join(stdlib_dirs(runtime["python"])) + "\n")
    (tmp_path / "link").symlink_to(real / "upy")
    proc = run([str(tmp_path / "link"), f"--thread-mode={mode}", "-c",
                "import sys; print(sys.flags.isolated, sys.prefix)"],
               env=clean_env(PYTHONPATH=str(tmp_path)))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["1", str(real)]


def test_unirun_works_under_a_pth_without_changing_sys_path(launcher, thread_mode, tmp_path):
    """sys.path is exactly the file's; unirun's package comes from a finder after every other,
    in the main interpreter and in interpreter workers, so compat and Run still work."""
    mode, runtime = thread_mode
    (tmp_path / "upy").symlink_to(launcher)
    lines = stdlib_dirs(runtime["python"])
    (tmp_path / "upy._pth").write_text("\n".join(lines) + "\n")
    program = textwrap.dedent("""\
        import sys
        from concurrent.futures import ThreadPoolExecutor
        from unirun import Run
        print(sys.path)
        with Run("interpreters") as pool:
            print(pool.submit(pow, 2, 10).result())
        with ThreadPoolExecutor(2) as pool:
            print(type(pool).__module__.startswith("unirun"), pool.submit(pow, 3, 3).result())
        """)
    proc = run([str(tmp_path / "upy"), f"--thread-mode={mode}", "-c", program], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == [str(lines), "1024", "True 27"]


# --- files this user may not read: say so, and never "rebuild" ----------------------------------

def as_nobody():
    os.setgroups([])
    os.setgid(65534)
    os.setuid(65534)


def nobody_can_read(path):
    return run(["test", "-r", str(path)], preexec_fn=as_nobody).returncode == 0


@pytest.fixture
def world_readable_dir():
    path = tempfile.mkdtemp(prefix="unirun-perm-")
    os.chmod(path, 0o755)
    yield path
    shutil.rmtree(path)


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to run the launcher as another user")
@pytest.mark.parametrize("where", ["runtime-library", "cpython-runtime"])
def test_permission_denied_names_the_path_and_does_not_say_rebuild(launcher, world_readable_dir,
                                                                   where):
    if not nobody_can_read(launcher) or not nobody_can_read(BUILD / "runtimes.json"):
        pytest.skip("the build directory is not readable by nobody")
    runtime = RUNTIMES[0]
    entry = dict(runtime, library=str(BUILD / runtime["library"]))
    if where == "runtime-library":
        private = os.path.join(world_readable_dir, "private")
        os.mkdir(private, 0o700)
        shutil.copy2(entry["library"], private)
        entry["library"] = os.path.join(private, os.path.basename(entry["library"]))
        denied = private
    else:
        if nobody_can_read(runtime["python"]):
            pytest.skip("the CPython runtime is readable by nobody here")
        denied = None
    manifest = os.path.join(world_readable_dir, "runtimes.json")
    data = json.loads((BUILD / "runtimes.json").read_text())
    data["runtimes"] = [entry]
    with open(manifest, "w") as out:
        json.dump(data, out)
    os.chmod(manifest, 0o644)
    proc = run([launcher, "-c", FACTS], env=clean_env(UNIRUN_MANIFEST=manifest),
               preexec_fn=as_nobody, cwd="/")
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    assert "permission denied" in proc.stderr.lower()
    assert "uid 65534" in proc.stderr
    if denied:
        assert denied in proc.stderr
    else:
        assert runtime["python"] in proc.stderr
    assert "rebuild" not in proc.stderr.lower() and "make build" not in proc.stderr
