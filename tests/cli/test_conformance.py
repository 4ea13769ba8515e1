"""CLI conformance: unirun-python must behave exactly as the runtime's own python.

Each invocation runs under the runtime's python3.13 (or python3.13t) and under
`unirun-python --thread-mode=MODE`; stdout, stderr and the exit status must be identical once
the executable's path is normalised. Nothing else is normalised.
"""

import os
import subprocess
import sys
import textwrap

import pytest

from conftest import clean_env

SCRIPT = textwrap.dedent(
    """\
    import sys
    print("script", sys.argv)
    print("main", __name__, __file__)
    """
)
FAILING_SCRIPT = textwrap.dedent(
    """\
    def inner():
        raise ValueError("from a script")

    def outer():
        inner()

    outer()
    """
)

# (id, python arguments, stdin text, extra environment)
CASES = [
    ("c-print", ["-c", "print('hello')"], None, {}),
    ("c-argv", ["-c", "import sys; print(sys.argv)", "a", "-b", "--c"], None, {}),
    ("c-orig-argv-tail", ["-c", "import sys; print(sys.orig_argv[1:])", "x"], None, {}),
    ("c-exit-int", ["-c", "raise SystemExit(3)"], None, {}),
    ("c-exit-str", ["-c", "raise SystemExit('goodbye')"], None, {}),
    ("c-exit-none", ["-c", "raise SystemExit(None)"], None, {}),
    ("c-exit-256", ["-c", "import sys; sys.exit(256)"], None, {}),
    ("c-exit-object", ["-c", "raise SystemExit([1, 2])"], None, {}),
    ("c-traceback", ["-c", "def f():\n    1/0\nf()"], None, {}),
    ("c-syntax-error", ["-c", "def (:"], None, {}),
    ("c-keyboard-interrupt", ["-c", "raise KeyboardInterrupt"], None, {}),
    ("c-exception-group", ["-c", "raise ExceptionGroup('eg', [ValueError(1), TypeError(2)])"], None, {}),
    ("c-missing-argument", ["-c"], None, {}),
    ("c-stdin-read", ["-c", "import sys; print(sys.stdin.read().upper())"], "shout\n", {}),
    ("c-name-main", ["-c", "print(__name__, __spec__)"], None, {}),
    ("script", ["script.py", "one", "two"], None, {}),
    ("script-traceback", ["failing.py"], None, {}),
    ("script-missing", ["no_such_script.py"], None, {}),
    ("directory-with-main", ["appdir", "arg"], None, {}),
    ("directory-without-main", ["emptydir"], None, {}),
    ("stdin-dash", ["-", "x", "y"], "import sys\nprint('stdin', sys.argv)\n", {}),
    ("stdin-implicit", [], "print('from stdin', __name__)\n", {}),
    ("stdin-empty", ["-"], "", {}),
    ("stdin-traceback", ["-"], "x = 1\nraise RuntimeError(x)\n", {}),
    ("dashdash-script-named-like-an-option", ["--", "--weird.py", "a", "--b"], None, {}),
    ("dashdash-then-c-is-a-file-name", ["--", "-c", "print('not run')"], None, {}),
    ("m-json-tool", ["-m", "json.tool"], '{"b": 1, "a": [1, 2]}', {}),
    ("m-calendar", ["-m", "calendar", "2024", "2"], None, {}),
    ("m-missing", ["-m", "no_such_module_anywhere"], None, {}),
    ("m-package-main", ["-m", "pkg", "arg"], None, {}),
    ("m-argv", ["-m", "modargv", "p", "q"], None, {}),
    ("version-short", ["-V"], None, {}),
    ("version-long", ["--version"], None, {}),
    ("version-verbose", ["-VV"], None, {}),
    ("help", ["-h"], None, {}),
    ("help-long", ["--help"], None, {}),
    ("help-env", ["--help-env"], None, {}),
    ("help-xoptions", ["--help-xoptions"], None, {}),
    ("unknown-option", ["-Z"], None, {}),
    ("x-dev", ["-X", "dev", "-c", "import sys; print(sys.flags.dev_mode)"], None, {}),
    ("x-utf8", ["-X", "utf8", "-c", "import sys; print(sys.flags.utf8_mode)"], None, {}),
    ("x-int-max-str-digits", ["-X", "int_max_str_digits=640", "-c", "print(str(10**700))"], None, {}),
    ("x-frozen-modules", ["-X", "frozen_modules=off", "-c", "import os; print(os.sep)"], None, {}),
    ("E-ignores-env", ["-E", "-c", "import sys; print(sys.flags.ignore_environment, sys.flags.optimize)"],
     None, {"PYTHONOPTIMIZE": "1"}),
    ("env-honoured", ["-c", "import sys; print(sys.flags.optimize)"], None, {"PYTHONOPTIMIZE": "2"}),
    ("I-isolated", ["-I", "-c", "import sys; print(sys.flags.isolated, sys.flags.no_user_site)"], None, {}),
    ("P-safe-path", ["-P", "-c", "import sys; print(sys.flags.safe_path, sys.path[0] != '')"], None, {}),
    ("u-unbuffered", ["-u", "-c", "import sys; print(sys.stdout.line_buffering, 'u')"], None, {}),
    ("W-error", ["-W", "error", "-c", "import warnings; warnings.warn('loud')"], None, {}),
    ("W-ignore", ["-W", "ignore", "-c", "import warnings; warnings.warn('quiet'); print('ok')"], None, {}),
    ("W-default", ["-c", "import warnings; warnings.warn('shown')"], None, {}),
    ("PYTHONWARNINGS", ["-c", "import warnings; warnings.warn('env')"], None, {"PYTHONWARNINGS": "error"}),
    ("O-asserts", ["-O", "-c", "assert False, 'kept'; print('stripped', __debug__)"], None, {}),
    ("OO-docstrings", ["-OO", "-c", "def f():\n    'doc'\nprint(f.__doc__)"], None, {}),
    ("B-no-bytecode", ["-B", "-c", "import sys; print(sys.dont_write_bytecode)"], None, {}),
    ("q-quiet", ["-q", "-c", "import sys; print(sys.flags.quiet)"], None, {}),
    ("S-no-site", ["-S", "-c", "import sys; print('site' in sys.modules)"], None, {}),
    ("s-no-user-site", ["-s", "-c", "import sys; print(sys.flags.no_user_site)"], None, {}),
    ("b-bytes-warning", ["-b", "-c", "print(b'' == '')"], None, {}),
    ("bb-bytes-error", ["-bb", "-c", "print(b'' == '')"], None, {}),
    ("x-skip-first-line", ["-x", "skipline.py"], None, {}),
    ("check-hash-based-pycs", ["--check-hash-based-pycs", "always", "-c", "print('pycs')"], None, {}),
    ("flags", ["-c", "import sys; print(sys.flags)"], None, {}),
    ("gil-state", ["-c", "import sys; print(sys._is_gil_enabled())"], None, {}),
    ("gil-config", ["-c", "import sysconfig; print(sysconfig.get_config_var('Py_GIL_DISABLED'))"], None, {}),
    ("version-info", ["-c", "import sys; print(sys.version_info, sys.implementation.cache_tag)"], None, {}),
    ("executable-is-argv0", ["-c", "import sys; print(sys.executable == sys.orig_argv[0])"], None, {}),
    ("stdlib-prefix", ["-c", "import sys, os; print(os.__file__.startswith(sys.prefix))"], None, {}),
    ("interactive-after-c", ["-i", "-c", "x = 41"], "print(x + 1)\n", {}),
    ("subprocess-same-build", ["-c", (
        "import subprocess, sys\n"
        "out = subprocess.run([sys.executable, '-c', 'import sys; print(sys._is_gil_enabled())'],"
        " capture_output=True, text=True)\n"
        "print(out.returncode, out.stdout.strip(), out.stderr)")], None, {}),
    ("sys-exit-in-finally", ["-c", "try:\n    raise SystemExit(4)\nfinally:\n    print('finally')"], None, {}),
    ("atexit-runs", ["-c", "import atexit; atexit.register(print, 'bye'); print('hi')"], None, {}),
    ("unraisable-at-exit", ["-c", (
        "import sys\n"
        "sys.unraisablehook = lambda u: print('unraisable', repr(u.exc_value))\n"
        "class A:\n    def __del__(self): raise ValueError('del')\na = A()")], None, {}),
]


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    d = tmp_path_factory.mktemp("conformance")
    (d / "script.py").write_text(SCRIPT)
    (d / "failing.py").write_text(FAILING_SCRIPT)
    (d / "--weird.py").write_text(SCRIPT)
    (d / "skipline.py").write_text("this line is not python\nprint('skipped the first line')\n")
    (d / "appdir").mkdir()
    (d / "appdir" / "__main__.py").write_text("import sys\nprint('dir main', sys.argv)\n")
    (d / "emptydir").mkdir()
    (d / "pkg").mkdir()
    (d / "pkg" / "__init__.py").write_text("")
    (d / "pkg" / "__main__.py").write_text("import sys\nprint('pkg main', __name__, sys.argv)\n")
    (d / "modargv.py").write_text("import sys\nprint('module', __name__, sys.argv)\n")
    return d


def run(argv, workdir, stdin, env, executable):
    proc = subprocess.run(
        argv,
        cwd=workdir,
        input=stdin if stdin is not None else "",
        capture_output=True,
        text=True,
        env=clean_env(**env),
        timeout=120,
    )
    normalise = lambda text: text.replace(executable, "<python>")
    return proc.returncode, normalise(proc.stdout), normalise(proc.stderr)


# What the CLI contract (DESIGN.md) promises behaves as python: each needs cases in the corpus.
CONTRACT = ["-c", "-m", "-", "-X", "-E", "-I", "-u", "-W", "-O", "--"]


def _uses(case, option):
    _, args, stdin, _ = case
    if option == "-":  # the program read from standard input
        return "-" in args or (stdin is not None and not any(a in ("-c", "-m") for a in args))
    return any(a == option or (option != "--" and a.startswith(option) and len(option) == 2
                               and not a.startswith("--")) for a in args)


@pytest.mark.parametrize("option", CONTRACT)
def test_corpus_covers_the_cli_contract(option):
    assert any(_uses(case, option) for case in CASES), f"no conformance case uses {option}"


def test_case_ids_are_unique():
    assert len({case[0] for case in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_same_as_python(case, thread_mode, launcher, workdir):
    _, args, stdin, env = case
    mode, runtime = thread_mode
    expected = run([runtime["python"], *args], workdir, stdin, env, runtime["python"])
    actual = run([launcher, f"--thread-mode={mode}", *args], workdir, stdin, env, launcher)
    assert actual == expected
