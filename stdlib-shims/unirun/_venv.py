"""Virtual environments made under unirun-python carry the launcher.

`unirun-python -m venv v` (or venv.create, EnvBuilder) makes the venv python would, plus
v/bin/unirun-python: the launcher, linked (copied with --copies). Started from there, the launcher
finds the venv by python's own rule (pyvenv.cfg beside its directory) and runs the runtime the
venv was made from, so sys.executable is v/bin/unirun-python and pip's console scripts point at
it: they run under unirun, in that thread mode, activated or not. pip itself is installed and
upgraded through it for the same reason.

bin/python stays the runtime's own python unless UNIRUN_VENV_PYTHON=launcher
(unirun-python --venv-python=launcher): then python, python3 and python3.X are the launcher too.
See docs/launcher.md.
"""

import os
import sys

LAUNCHER = "unirun-python"


def install():
    """Called by unirun-python at start-up: adjust venv when (if ever) it is imported."""
    from . import _onimport

    _onimport.register("venv", adjust)


def base_launcher():
    """The launcher a new venv links to: the one whose runtimes this process runs on."""
    import _unirun

    return _unirun.runtime_info().get("base_launcher") or os.path.realpath(sys.executable)


def adjust(module):
    builder = module.EnvBuilder
    if "_unirun_setup_python" in vars(builder):
        return
    ensure_directories = builder.ensure_directories
    setup_python = builder.setup_python
    call_new_python = builder._call_new_python

    def _unirun_ensure_directories(self, env_dir):
        context = ensure_directories(self, env_dir)
        # The venv's own sys.executable, as pip will see it: ensurepip and --upgrade-deps run
        # through it, so pip's scripts run under unirun too.
        context.env_exec_cmd = os.path.join(context.bin_path, LAUNCHER)
        return context

    def _unirun_setup_python(self, context):
        setup_python(self, context)
        place_launcher(context.bin_path, self.symlinks, context.env_exe)

    def _unirun_call_new_python(self, context, *py_args, **kwargs):
        # A subclass whose setup_python does not call ours made no launcher: use its python.
        if (not os.path.lexists(context.env_exec_cmd) and context.env_exec_cmd.endswith(LAUNCHER)
                and os.path.exists(context.env_exe)):
            context.env_exec_cmd = context.env_exe
        return call_new_python(self, context, *py_args, **kwargs)

    builder.ensure_directories = _unirun_ensure_directories
    builder.setup_python = _unirun_setup_python
    builder._call_new_python = _unirun_call_new_python
    builder._unirun_setup_python = _unirun_setup_python


def place_launcher(bin_path, symlinks, env_exe):
    """bin/unirun-python (replacing one an --upgrade finds), and with UNIRUN_VENV_PYTHON=launcher
    the python names as well."""
    import shutil

    source = base_launcher()
    target = os.path.join(bin_path, LAUNCHER)
    _replace(target, source, symlinks, shutil)
    if os.environ.get("UNIRUN_VENV_PYTHON", "runtime") != "launcher":
        return
    names = {"python", "python3", f"python3.{sys.version_info[1]}", os.path.basename(env_exe)}
    for name in sorted(names):
        if symlinks:
            _replace(os.path.join(bin_path, name), LAUNCHER, True, shutil)  # relative, as venv's
        else:
            _replace(os.path.join(bin_path, name), source, False, shutil)


def _replace(target, source, symlink, shutil):
    if os.path.lexists(target):
        os.unlink(target)
    if symlink:
        os.symlink(source, target)
    else:
        shutil.copy2(source, target)
        os.chmod(target, 0o755)
