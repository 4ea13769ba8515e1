"""unirun-python where users keep Python: an installed launcher (make install), venvs made with
`unirun-python -m venv`, console scripts pip installs there, and the files python reads beside
itself (pyvenv.cfg, PYTHONHOME).

The oracle is the runtime's own python doing the same thing: its venv layout, its sys.prefix
under PYTHONHOME, its console scripts running on their venv without activation.
"""

import base64
import hashlib
import os
import pathlib
import shutil
import subprocess
import zipfile

import pytest

from conftest import BUILD, ROOT, clean_env, runtime_for

WHEEL_NAME, WHEEL_VERSION = "hello_unirun", "1.0"
# What the console script reports: where it runs, on which runtime, whether under the launcher.
SCRIPT_BODY = """\
import sys, sysconfig

def main():
    try:
        import _unirun
        tag = _unirun.runtime_info()["tag"]
    except ImportError:
        tag = "plain-python"
    print(sys.executable, sys.prefix, tag, bool(sysconfig.get_config_var("Py_GIL_DISABLED")))
"""


def run(argv, env=None, **kwargs):
    return subprocess.run([str(a) for a in argv], capture_output=True, text=True, timeout=300,
                          env=env if env is not None else clean_env(), **kwargs)


def ok(proc):
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


def write_wheel(directory):
    """A wheel with one console script, built by hand so pip installs it with --no-index."""
    dist = f"{WHEEL_NAME}-{WHEEL_VERSION}.dist-info"
    files = {
        f"{WHEEL_NAME}/__init__.py": SCRIPT_BODY,
        f"{dist}/METADATA": f"Metadata-Version: 2.1\nName: {WHEEL_NAME}\nVersion: {WHEEL_VERSION}\n",
        f"{dist}/WHEEL": "Wheel-Version: 1.0\nGenerator: unirun-tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
        f"{dist}/entry_points.txt": f"[console_scripts]\nhello-unirun = {WHEEL_NAME}:main\n",
    }

    def digest(data):
        return "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()

    record = "".join(f"{p},{digest(c.encode())},{len(c.encode())}\n" for p, c in files.items())
    path = directory / f"{WHEEL_NAME}-{WHEEL_VERSION}-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as wheel:
        for name, text in files.items():
            wheel.writestr(name, text)
        wheel.writestr(f"{dist}/RECORD", record + f"{dist}/RECORD,,\n")
    return path


def needs(mode):
    runtime = runtime_for(mode)
    if runtime is None:
        pytest.skip(f"no {mode} runtime is registered")
    return runtime


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """make install PREFIX=<tmp>: the README's install step, into a fresh prefix."""
    prefix = tmp_path_factory.mktemp("prefix")
    proc = run(["make", "-C", ROOT, "install", f"PREFIX={prefix}", f"BUILD={BUILD}"],
               env=clean_env(PATH=os.environ["PATH"]))
    ok(proc)
    launcher = prefix / "bin" / "unirun-python"
    assert launcher.is_file() and os.access(launcher, os.X_OK), proc.stdout
    return prefix


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    return write_wheel(tmp_path_factory.mktemp("wheel"))


# --- make install -----------------------------------------------------------------------------

def test_installed_launcher_runs_on_its_own_files(installed):
    out = ok(run([installed / "bin" / "unirun-python", "-c",
                  "import sys, unirun, _unirun; print(sys.executable); print(unirun.__file__); "
                  "print(_unirun.runtime_info()['shims'])"])).split()
    assert out[0] == str(installed / "bin" / "unirun-python")
    # its package and runtimes are the installed ones, not the checkout's
    assert out[1].startswith(str(installed / "lib" / "unirun" / "shims")), out
    assert (installed / "lib" / "unirun" / "shims" / "unirun" / "__pycache__").is_dir()


def test_installed_tree_can_move(installed, tmp_path):
    """The manifest names its libraries and shims relative to itself: a moved prefix runs."""
    moved = tmp_path / "moved"
    shutil.copytree(installed, moved, symlinks=True)
    out = ok(run([moved / "bin" / "unirun-python", "-c", "import unirun; print(unirun.__file__)"]))
    assert out.startswith(str(moved / "lib" / "unirun")), out


def test_destdir_stages_the_prefix(tmp_path):
    stage = tmp_path / "stage"
    ok(run(["make", "-C", ROOT, "install", "PREFIX=/opt/unirun-test", f"BUILD={BUILD}",
            f"DESTDIR={stage}"], env=clean_env(PATH=os.environ["PATH"])))
    launcher = stage / "opt" / "unirun-test" / "bin" / "unirun-python"
    assert not pathlib.Path("/opt/unirun-test").exists()
    out = ok(run([launcher, "-c", "import unirun; print(unirun.__file__)"]))
    assert out.startswith(str(stage / "opt" / "unirun-test" / "lib" / "unirun")), out


def test_install_refuses_a_relative_prefix():
    proc = run(["make", "-C", ROOT, "install", "PREFIX=relative/dir", f"BUILD={BUILD}"],
               env=clean_env(PATH=os.environ["PATH"]))
    assert proc.returncode != 0
    assert "PREFIX must be an absolute path" in proc.stderr


# --- venvs: the path, from an installed launcher ----------------------------------------

@pytest.mark.parametrize("mode", ["gil", "nogil"])
def test_console_script_runs_under_unirun_without_activation(installed, wheel, tmp_path, mode):
    runtime = needs(mode)
    launcher = installed / "bin" / "unirun-python"
    venv = tmp_path / "v"
    ok(run([launcher, f"--thread-mode={mode}", "-m", "venv", venv]))
    assert os.path.realpath(venv / "bin" / "unirun-python") == str(launcher)
    ok(run([venv / "bin" / "unirun-python", "-m", "pip", "install", "-q", "--no-index",
            "--disable-pip-version-check", wheel]))
    script = venv / "bin" / "hello-unirun"
    assert script.read_text().splitlines()[0] == f"#!{venv}/bin/unirun-python"
    expected = [str(venv / "bin" / "unirun-python"), str(venv), runtime["tag"], str(mode == "nogil")]
    # not activated: no VIRTUAL_ENV, the venv's bin not on PATH
    assert ok(run([script])).split() == expected
    # a parent's inherited runtime choice gives way to the venv's own (as a venv's python would)
    other = "cp313t" if mode == "gil" else "cp313"
    assert ok(run([script], env=clean_env(UNIRUN_RUNTIME=other, UNIRUN_THREAD_MODE="auto"))).split() == expected
    # activated: the same
    activated = clean_env(VIRTUAL_ENV=str(venv), PATH=f"{venv}/bin:{os.environ['PATH']}")
    assert ok(run(["hello-unirun"], env=activated)).split() == expected
    # pip itself was installed through the launcher, so its scripts run under unirun too
    assert (venv / "bin" / "pip").read_text().splitlines()[0] == f"#!{venv}/bin/unirun-python"


def test_console_script_of_a_plain_python_venv_is_the_oracle(wheel, tmp_path):
    """python's own behaviour, for the test above: the script runs on its venv, unactivated."""
    runtime = needs("gil")
    venv = tmp_path / "v"
    ok(run([runtime["python"], "-m", "venv", venv]))
    ok(run([venv / "bin" / "python", "-m", "pip", "install", "-q", "--no-index",
            "--disable-pip-version-check", wheel]))
    executable, prefix, tag, _ = ok(run([venv / "bin" / "hello-unirun"])).split()
    assert (prefix, tag) == (str(venv), "plain-python")
    assert executable.startswith(str(venv / "bin" / "python"))


def test_venv_layout_is_pythons_plus_the_launcher(launcher, tmp_path):
    runtime = needs("gil")
    ours, theirs = tmp_path / "ours", tmp_path / "theirs"
    ok(run([launcher, "--thread-mode=gil", "-m", "venv", "--without-pip", ours]))
    ok(run([runtime["python"], "-m", "venv", "--without-pip", theirs]))
    assert sorted(os.listdir(ours / "bin")) == sorted(os.listdir(theirs / "bin") + ["unirun-python"])
    for name in os.listdir(theirs / "bin"):
        if name.startswith("python"):  # bin/python stays the runtime's own python by default
            assert os.path.realpath(ours / "bin" / name) == os.path.realpath(theirs / "bin" / name)

    def config(venv):
        lines = (venv / "pyvenv.cfg").read_text().splitlines()
        return dict(line.split(" = ", 1) for line in lines if " = " in line)

    assert config(ours)["home"] == config(theirs)["home"]
    assert config(ours).keys() == config(theirs).keys()
    # the plain python of a launcher-made venv is plain python: no unirun there
    out = ok(run([ours / "bin" / "python", "-c", "import sys; print('_unirun' in sys.builtin_module_names)"]))
    assert out.strip() == "False"


def test_venv_python_option_makes_bin_python_the_launcher(launcher, tmp_path):
    needs("gil")
    venv = tmp_path / "v"
    ok(run([launcher, "--venv-python=launcher", "-m", "venv", "--without-pip", venv]))
    out = ok(run([venv / "bin" / "python", "-c",
                  "import sys, _unirun; print(sys.executable, sys.prefix)"])).split()
    assert out == [str(venv / "bin" / "python"), str(venv)]
    # the same through the environment twin
    venv2 = tmp_path / "v2"
    ok(run([launcher, "-m", "venv", "--without-pip", venv2], env=clean_env(UNIRUN_VENV_PYTHON="launcher")))
    assert os.path.realpath(venv2 / "bin" / "python3") == os.path.realpath(launcher)


@pytest.mark.parametrize("args, env, named", [
    (["--venv-python=both"], {}, "--venv-python=both"),
    ([], {"UNIRUN_VENV_PYTHON": "both"}, "UNIRUN_VENV_PYTHON=both"),
])
def test_venv_python_refuses_other_values(launcher, tmp_path, args, env, named):
    proc = run([launcher, *args, "-m", "venv", tmp_path / "v"], env=clean_env(**env))
    assert proc.returncode == 2
    assert named in proc.stderr and "runtime" in proc.stderr and "launcher" in proc.stderr
    assert not (tmp_path / "v").exists()


def test_copied_launcher_in_a_venv_finds_its_runtimes_through_pyvenv_cfg(installed, tmp_path):
    """--copies: the copy has no manifest beside it; pyvenv.cfg's executable names the launcher
    that made the venv, whose runtimes (and package) it then uses."""
    needs("gil")
    venv = tmp_path / "v"
    ok(run([installed / "bin" / "unirun-python", "-m", "venv", "--copies", "--without-pip", venv]))
    copy = venv / "bin" / "unirun-python"
    assert not copy.is_symlink()
    out = ok(run([copy, "-c", "import sys, unirun; print(sys.executable, sys.prefix, unirun.__file__)"])).split()
    assert out[:2] == [str(copy), str(venv)]
    assert out[2].startswith(str(installed / "lib" / "unirun")), out


def test_launcher_in_a_venv_refuses_a_contradicting_thread_mode(launcher, tmp_path):
    needs("gil"), needs("nogil")
    venv = tmp_path / "v"
    ok(run([launcher, "--thread-mode=gil", "-m", "venv", "--without-pip", venv]))
    proc = run([venv / "bin" / "unirun-python", "--thread-mode=nogil", "-c", "print('ran')"])
    assert proc.returncode == 2 and "ran" not in proc.stdout
    assert str(venv) in proc.stderr and "--thread-mode=nogil" in proc.stderr and "-m venv" in proc.stderr


def test_launcher_in_a_venv_of_an_unregistered_python_says_so(launcher, tmp_path):
    venv = tmp_path / "v"
    (venv / "bin").mkdir(parents=True)
    (venv / "pyvenv.cfg").write_text(f"home = {tmp_path / 'elsewhere' / 'bin'}\n")
    os.symlink(launcher, venv / "bin" / "unirun-python")
    proc = run([venv / "bin" / "unirun-python", "-c", "print('ran')"])
    assert proc.returncode == 2 and "ran" not in proc.stdout
    assert "no registered runtime" in proc.stderr and str(venv) in proc.stderr


@pytest.mark.parametrize("mode", ["gil", "nogil"])
@pytest.mark.parametrize("flags", [[], ["-E"], ["-S"], ["-X", "dev", "-E"], ["-W", "ignore", "-IS"]])
def test_pythonhome_in_a_venv_acts_as_for_python(launcher, tmp_path, mode, flags):
    """PYTHONHOME set in a venv: getpath skips pyvenv.cfg (site may still find it); -E and -I
    ignore PYTHONHOME (also after an option whose value is the next argument). The venv's own
    python is the oracle; the launcher runs the venv's runtime either way, as that python is."""
    runtime = needs(mode)
    venv = tmp_path / "v"
    ok(run([launcher, f"--thread-mode={mode}", "-m", "venv", "--without-pip", venv]))
    home = ok(run([runtime["python"], "-c", "import sys; print(sys.prefix)"])).strip()
    env = clean_env(PYTHONHOME=home)
    probe = ("import sys, sysconfig; print(sys.prefix, sys.base_prefix, sys.exec_prefix, "
             "sysconfig.get_config_var('Py_GIL_DISABLED')); "
             "print([p for p in sys.path if 'stdlib-shims' not in p and '/lib/unirun/' not in p])")
    python = ok(run([venv / "bin" / "python", *flags, "-c", probe], env=env))
    ours = ok(run([venv / "bin" / "unirun-python", *flags, "-c", probe], env=env))
    assert ours == python


def test_venv_made_inside_a_venv_links_to_the_base(launcher, tmp_path):
    """As python's sys._base_executable: a venv made from a venv links to the runtime and to the
    launcher itself, not to the first venv."""
    needs("gil")
    first, second = tmp_path / "first", tmp_path / "second"
    ok(run([launcher, "-m", "venv", "--without-pip", first]))
    ok(run([first / "bin" / "unirun-python", "-m", "venv", "--without-pip", second]))
    shutil.rmtree(first)
    out = ok(run([second / "bin" / "unirun-python", "-c", "import sys, _unirun; print(sys.prefix)"]))
    assert out.strip() == str(second)


@pytest.mark.parametrize("mode", ["gil", "nogil"])
def test_runtimes_sharing_a_directory_are_told_apart_by_the_venv(launcher, tmp_path, mode):
    """python3.13 and python3.13t in one bin/ (a distribution's layout): a venv's launcher runs
    the build the venv was made from, not whichever the manifest lists last."""
    gil, free = needs("gil"), needs("nogil")
    shared = tmp_path / "both" / "bin"
    shared.mkdir(parents=True)
    entries = []
    for runtime in (gil, free):
        link = shared / os.path.basename(runtime["python"])
        link.symlink_to(runtime["python"])
        entries.append(dict(runtime, python=str(link), library=str(BUILD / runtime["library"])))
    tools = tmp_path / "tools"
    tools.mkdir()
    shutil.copy2(launcher, tools / "unirun-python")
    import json
    data = json.loads((BUILD / "runtimes.json").read_text())
    (tools / "runtimes.json").write_text(json.dumps(dict(data, runtimes=entries)))
    venv = tmp_path / "v"
    ok(run([tools / "unirun-python", f"--thread-mode={mode}", "-m", "venv", "--without-pip", venv]))
    out = ok(run([venv / "bin" / "unirun-python", "-c", "import _unirun; print(_unirun.runtime_info()['tag'])"]))
    assert out.strip() == (free if mode == "nogil" else gil)["tag"]
