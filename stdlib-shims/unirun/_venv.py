"""Virtual environments made under unirun-python carry the launcher.

`unirun-python -m venv v` (or venv.create, EnvBuilder) makes the venv python would, plus
v/bin/unirun-python: the launcher, linked (copied with --copies). Started from there, the launcher
finds the venv by python's own rule (pyvenv.cfg beside its directory) and runs the runtime the
venv was made from, so sys.executable is v/bin/unirun-python and pip's console scripts point at
it: they run under unirun, in that thread mode, activated or not. pip itself is installed and
upgraded through it for the same reason.

bin/python stays the runtime's own python unless UNIRUN_VENV_PYTHON=launcher
(unirun-python --venv-python=launcher): then python, python3 and python3.X are the launcher too.
See docs/launcher.md. unirun._onimport.start() registers adjust() for when venv is imported.
"""

import os
import sys

LAUNCHER = "unirun-python"


def base_launcher():
    """The launcher a new venv links to: the one whose runtimes this process runs on."""
    import _unirun

    return _unirun.runtime_info().get("base_launcher") or os.path.realpath(sys.executable)


def adjust(module):
    try:
        _adjust(module)
    except Exception as error:  # a venv module unlike the ones known: leave it as it is
        import warnings

        warnings.warn(f"unirun: venvs made here get no bin/{LAUNCHER} ({error!r})", RuntimeWarning)


def _adjust(module):
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
        place_launcher(self, context.bin_path, context.env_exe)

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


def place_launcher(builder, bin_path, env_exe):
    """bin/unirun-python (replacing one an --upgrade finds), and with UNIRUN_VENV_PYTHON=launcher
    the python names as well. Linked or copied by the builder's own symlink_or_copy, so it
    falls back to a copy where symlinks fail and copies exactly as venv copies python."""
    target = os.path.join(bin_path, LAUNCHER)
    names = [LAUNCHER]
    if os.environ.get("UNIRUN_VENV_PYTHON", "runtime") == "launcher":
        names += sorted({"python", "python3", f"python3.{sys.version_info[1]}", os.path.basename(env_exe)})
    for name in names:
        path = os.path.join(bin_path, name)
        if os.path.lexists(path):
            os.unlink(path)
        if name == LAUNCHER:
            builder.symlink_or_copy(base_launcher(), path)
        else:  # relative to bin/unirun-python, as venv links python3 to python3.X
            builder.symlink_or_copy(target, path, relative_symlinks_ok=True)
        if not os.path.islink(path):
            os.chmod(path, 0o755)
