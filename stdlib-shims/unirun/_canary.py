"""unirun-python --canary=CONTROL:CANDIDATE: run one program under two configurations and say
what changes (docs/canary.md).

The launcher runs this module with the program's python arguments; the configuration comes in
UNIRUN_CANARY, UNIRUN_CANARY_RUNS and UNIRUN_CANARY_REPORT. The control runs twice and the
candidate N times, in a random order, each as its own launcher process with the same argv,
stdin (read once here and replayed), environment and working directory. What two control runs
disagree on is the noise floor: the token shapes (numbers, hex addresses, names with digits)
that varied between them are masked before the candidate is compared, and a stream whose lines
only moved is compared as a multiset. Exit status 0: same; 1: the candidate differs or failed;
2: the canary's own error (a bad spec, an unwritable report).
"""

from __future__ import annotations

import difflib
import json
import os
import random
import re
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time

__all__ = ["main", "parse_side", "learn_noise", "normalize"]

USAGE_EXIT, DIFFERS_EXIT = 2, 1

# Each word of a side and the launcher option it stands for.
_THREAD_MODES = ("gil", "nogil", "auto")
_COMPAT = {"compat-off": "off", "managed": "managed"}
_PROCESS_POOLS = ("processes", "interpreters", "stdlib", "dask")


class CanaryError(Exception):
    """The canary's own error: exit status 2, with this message."""


def parse_side(text: str, spec: str = "") -> list[str]:
    """The launcher options for one side ("nogil+interpreters" -> [--thread-mode=nogil,
    --process-pool=interpreters]); "" (or "default") is the configuration the canary runs in."""
    options: dict[str, str] = {}
    words = [w for w in text.split("+") if w] if text not in ("", "default") else []
    for word in words:
        if word in _THREAD_MODES:
            key, value = "--thread-mode", word
        elif word in _COMPAT:
            key, value = "--compat", _COMPAT[word]
        elif word in _PROCESS_POOLS:
            key, value = "--process-pool", word
        else:
            raise CanaryError(f"{word!r} in --canary={spec or text} is not a "
                              "configuration; use gil, nogil, auto, compat-off, managed, processes, "
                              "interpreters or stdlib, joined by '+'")
        if key in options and options[key] != value:
            raise CanaryError(f"{text!r} asks for two {key[2:]}s ({options[key]} and {value}); give one")
        options[key] = value
    if options.get("--compat") == "off" and "--process-pool" in options:
        raise CanaryError(f"{text!r}: a process pool choice needs compat managed; drop one of them")
    return [f"{key}={value}" for key, value in options.items()]


def parse_spec(spec: str) -> tuple[tuple[str, list[str]], tuple[str, list[str]]]:
    if spec.count(":") != 1:
        raise CanaryError(f"--canary={spec} needs CONTROL:CANDIDATE, e.g. --canary=gil:nogil")
    control, candidate = spec.split(":")
    sides = (control, parse_side(control, spec)), (candidate, parse_side(candidate, spec))
    if sides[0][1] == sides[1][1]:
        raise CanaryError(f"--canary={spec}: both sides are the same configuration; name two that differ")
    return sides


# --- the noise floor ------------------------------------------------------------------------

_TOKEN = re.compile(r"0x[0-9a-fA-F]+|\d+(?:\.\d+)?(?:[eE][-+]?\d+)?|\w+|\s+|.", re.S)


def _shape(token: str) -> str:
    if token.startswith("0x"):
        return "hex"
    if token[0].isdigit():
        return "number"
    if token[0].isalpha() or token[0] == "_":
        return "name-with-digits" if any(c.isdigit() for c in token) else "word"
    return "other"


def _tokens(line: str) -> list[str]:
    return _TOKEN.findall(line)


_MASKABLE = {"hex", "number", "name-with-digits"}  # what may vary run to run: ids, times, addresses


def _pairwise(a: list[str], b: list[str]) -> tuple[set, bool, dict]:
    """(shapes that vary, unstable, {line: token positions that vary}) over lines paired in
    order: a pair whose tokens differ in anything but maskable shapes leaves no finer floor."""
    shapes, unstable, positions = set(), False, {}
    for index, (left, right) in enumerate(zip(a, b)):
        if left == right:
            continue
        tokens = difflib.SequenceMatcher(None, _tokens(left), _tokens(right), autojunk=False)
        for op, t1, t2, u1, u2 in tokens.get_opcodes():
            if op == "equal":
                continue
            varied = {_shape(t) for t in tokens.a[t1:t2] + tokens.b[u1:u2] if not t.isspace()}
            unstable |= bool(varied - _MASKABLE)  # words or punctuation varied
            shapes |= varied & _MASKABLE
            positions.setdefault(index, set()).update(range(t1, max(t2, t1 + 1)))
    return shapes, unstable, positions


def learn_noise(first: str, second: str) -> dict:
    """What differs between two control runs' output: {"shapes": token shapes that varied,
    "positions": {line: token indexes} where they varied, "order": lines moved (threads
    finishing in another order), "unstable": lines came and went or words changed, so nothing
    finer is known}."""
    a, b = first.splitlines(), second.splitlines()
    noise = {"shapes": set(), "positions": {}, "order": False, "unstable": False}
    if a == b:
        return noise
    if len(a) != len(b):
        noise["unstable"] = True
        return noise
    shapes, unstable, positions = _pairwise(a, b)
    if unstable:
        # Perhaps the lines only moved: pair them again in the order of their masked text.
        def key(line):
            return _mask([line], _MASKABLE)[0]

        moved_shapes, moved_unstable, _ = _pairwise(sorted(a, key=key), sorted(b, key=key))
        if not moved_unstable:
            shapes, unstable, positions, noise["order"] = moved_shapes, False, {}, True
    noise["shapes"], noise["unstable"], noise["positions"] = shapes, unstable, positions
    return noise


def _placeholder(token: str) -> str:
    return f"<{_shape(token)}>"


def _mask(lines: list[str], shapes: set) -> list[str]:
    if not shapes:
        return list(lines)
    return ["".join(_placeholder(t) if not t.isspace() and _shape(t) in shapes else t
                    for t in _tokens(line)) for line in lines]


def normalize(text: str, noise: dict) -> list[str]:
    """text's lines with the noise floor masked. Where the lines kept their order, only the
    tokens at the positions that varied between the control runs are masked (a result that
    did not vary is still compared exactly); where they moved, every token of a varying shape
    is masked and the lines are compared sorted."""
    lines = text.splitlines()
    if noise["order"]:
        return sorted(_mask(lines, noise["shapes"]))
    positions = noise.get("positions") or {}
    if not positions:
        return lines
    masked = []
    for index, line in enumerate(lines):
        where = positions.get(index)
        if not where:
            masked.append(line)
            continue
        tokens = _tokens(line)
        masked.append("".join(_placeholder(t) if k in where and not t.isspace() and _shape(t) in _MASKABLE
                              else t for k, t in enumerate(tokens)))
    return masked


# --- one run --------------------------------------------------------------------------------

def _run_once(launcher: str, options: list[str], argv: list[str], stdin: bytes | None, env: dict,
              workdir: str, tests: bool) -> dict:
    scratch = tempfile.mkdtemp(prefix="unirun-canary-")
    files = {name: os.path.join(scratch, name) for name in ("trace.jsonl", "metrics.json", "ledger.json",
                                                             "tests.json")}
    child_env = dict(env, UNIRUN_TRACE=files["trace.jsonl"], UNIRUN_METRICS=files["metrics.json"],
                     UNIRUN_LEDGER=files["ledger.json"])
    if tests:
        child_env["UNIRUN_CANARY_TESTS"] = files["tests.json"]
    try:
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        start = time.monotonic()
        try:
            proc = subprocess.Popen([launcher, *options, *argv], stdin=subprocess.PIPE if stdin is not None
                                    else subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                    env=child_env, cwd=workdir)
        except OSError as exc:
            raise CanaryError(f"cannot start {launcher}: {exc}") from exc
        try:
            out, err = proc.communicate(stdin)
        except BaseException:
            proc.kill()
            proc.wait()
            raise
        wall = time.monotonic() - start
        _reap_orphans()  # the run's own children (a forkserver, say): their CPU time counts too
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        return {
            "options": options,
            "exit": proc.returncode,
            "signal": _signal_name(-proc.returncode) if proc.returncode < 0 else None,
            "wall": wall,
            "cpu": (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime),
            "stdout": out.decode("utf-8", "replace"),
            "stderr": err.decode("utf-8", "replace"),
            "decisions": _decisions(files["trace.jsonl"]),
            "ledger": _read_json(files["ledger.json"]),
            "unfinished_futures": _unfinished(_read_json(files["metrics.json"])),
            "tests": _read_json(files["tests.json"]) if tests else None,
        }
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:  # a real-time signal has no name
        return f"signal {number}"


def _become_subreaper() -> bool:
    """Linux: orphaned descendants of a run (its forkserver, its workers' children) are
    re-parented to this process, so they are reaped here and their CPU time is counted."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(36, 1, 0, 0, 0) == 0  # PR_SET_CHILD_SUBREAPER
    except (OSError, AttributeError, ImportError):
        return False


def _reap_orphans(grace: float = 1.0) -> None:
    """Reap what a run left behind (re-parented here), waiting up to grace seconds for it."""
    deadline = time.monotonic() + grace
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return  # nothing left
        if pid == 0:
            if time.monotonic() >= deadline:
                return  # something the program meant to outlive it: leave it be
            time.sleep(0.02)


def _read_json(path: str):
    try:
        with open(path, encoding="utf-8") as source:
            return json.load(source)
    except (OSError, ValueError):
        return None  # the run ended before writing it (a crash, os._exit)


def _decisions(path: str) -> list:
    decided = []
    try:
        with open(path, encoding="utf-8") as source:
            for line in source:
                try:
                    event = json.loads(line)
                except ValueError:
                    continue
                trace = event.get("trace")
                if event.get("event") == "decided" and trace:
                    decided.append([trace.get("kind"), trace.get("name"), trace.get("resolved_flavor"),
                                    trace.get("reason_code")])
    except OSError:
        pass
    return decided


def _unfinished(snapshot) -> int | None:
    """Futures submitted to native executors that never ended, or None if nothing was measured."""
    if not snapshot or not snapshot.get("native"):
        return None
    total = 0
    for entry in snapshot["executors"]:
        ended = sum(entry.get(k) or 0 for k in ("executor.completed", "executor.failed", "executor.cancelled"))
        total += max((entry.get("executor.submitted") or 0) - ended, 0)
    return total


# --- comparing --------------------------------------------------------------------------------

def _first_lines_differing(control: list[str], candidate: list[str], limit: int = 12) -> list[str]:
    diff = difflib.unified_diff(control, candidate, "control", "candidate", lineterm="", n=1)
    return list(diff)[2:2 + limit]


def _compare_tests(controls: list, candidates: list) -> dict:
    outcomes = [r["tests"] or {} for r in controls], [r["tests"] or {} for r in candidates]
    names = sorted(set().union(*outcomes[0], *outcomes[1]))
    flaky, worse, better = [], [], []
    for name in names:
        seen = [o.get(name) for o in outcomes[0]]
        if len(set(seen)) > 1:
            flaky.append(name)
            continue
        control = seen[0]
        for candidate in (o.get(name) for o in outcomes[1]):
            if candidate == control:
                continue
            (worse if control == "passed" or candidate in ("failed", "error") else better).append(
                {"test": name, "control": control, "candidate": candidate})
            break
    return {"compared": len(names), "pass_in_control_fail_in_candidate": worse,
            "fail_in_control_pass_in_candidate": better, "flaky": flaky}


def _median(values: list[float]) -> float:
    values = sorted(values)
    middle = len(values) // 2
    return values[middle] if len(values) % 2 else (values[middle - 1] + values[middle]) / 2


def compare(controls: list[dict], candidates: list[dict], pytest_mode: bool) -> dict:
    differences = []
    first, second = controls
    control_ok = all(r["exit"] == 0 for r in controls)
    crashed = [r for r in candidates if r["signal"] or (r["exit"] != 0 and not (pytest_mode and r["tests"]))]
    verdict = "candidate failed" if control_ok and crashed else None
    exits = {r["exit"] for r in controls}
    for run in candidates:
        if run["exit"] not in exits:
            differences.append({"what": "exit", "control": sorted(exits), "candidate": run["exit"],
                                "signal": run["signal"]})
            break
    noise = {}
    for stream in ("stdout", "stderr"):
        floor = learn_noise(first[stream], second[stream])
        noise[stream] = {"shapes": sorted(floor["shapes"]), "order": floor["order"],
                         "unstable": floor["unstable"], "exact_between_controls": first[stream] == second[stream]}
        if pytest_mode:
            continue  # the tests are compared one by one
        if floor["unstable"]:
            # No floor to compare against; still, output that vanished (or appeared) is a
            # difference whatever the noise.
            if any(bool(run[stream].strip()) != bool(first[stream].strip()) for run in candidates):
                differences.append({"what": stream, "masked": [], "order_ignored": False,
                                    "first_lines": _first_lines_differing(first[stream].splitlines(),
                                                                          candidates[0][stream].splitlines())})
            continue
        expected = normalize(first[stream], floor)
        for run in candidates:
            got = normalize(run[stream], floor)
            if got != expected:
                differences.append({"what": stream, "masked": sorted(floor["shapes"]), "order_ignored": floor["order"],
                                    "first_lines": _first_lines_differing(expected, got)})
                break
    tests = _compare_tests(controls, candidates) if pytest_mode else None
    if tests and (tests["pass_in_control_fail_in_candidate"] or tests["fail_in_control_pass_in_candidate"]):
        differences.append({"what": "tests", "pass_in_control_fail_in_candidate":
                            [t["test"] for t in tests["pass_in_control_fail_in_candidate"]][:20],
                            "fail_in_control_pass_in_candidate":
                            [t["test"] for t in tests["fail_in_control_pass_in_candidate"]][:20]})
    unfinished = [r["unfinished_futures"] for r in candidates if r["unfinished_futures"] is not None]
    floor = [r["unfinished_futures"] or 0 for r in controls]
    if unfinished and max(unfinished) > max(floor):
        differences.append({"what": "unfinished_futures", "control": max(floor), "candidate": max(unfinished)})
    control_wall = [r["wall"] for r in controls]
    timing = {
        "wall_ratio": _median([r["wall"] for r in candidates]) / max(_median(control_wall), 1e-9),
        "cpu_ratio": _median([r["cpu"] for r in candidates]) / max(_median([r["cpu"] for r in controls]), 1e-9),
        "control_spread": abs(control_wall[0] - control_wall[1]) / max(_median(control_wall), 1e-9),
    }
    decisions = {"control": first["decisions"], "candidate": candidates[0]["decisions"]}
    decisions["same"] = decisions["control"] == decisions["candidate"]
    ledger = {side: _ledger_summary(runs[0]["ledger"]) for side, runs in (("control", controls), ("candidate", candidates))}
    if verdict is None:
        verdict = "differs" if differences else "same"
    return {"verdict": verdict, "differences": differences, "noise": noise, "timing": timing,
            "decisions": decisions, "ledger": ledger, "tests": tests}


def _ledger_summary(ledger) -> dict | None:
    if ledger is None:
        return None
    return {"gil_enabled_by": ledger.get("gil_enabled_by"),
            "refused_in_subinterpreter": [e["module"] for e in ledger.get("modules", [])
                                          if e.get("refused_in_subinterpreter")],
            "gil_used": [e["module"] for e in ledger.get("modules", []) if e.get("loaded") and not e.get("builtin")
                         and e.get("gil") == "used"]}


# --- the command ------------------------------------------------------------------------------

def _pytest_argv(argv: list[str]) -> list[str] | None:
    """argv with the canary's pytest plugin loaded, if argv runs pytest (-m pytest ...), after
    any of python's own options (-X dev, -W error, -u ...)."""
    i = 0
    while i < len(argv) - 1:
        arg = argv[i]
        if arg == "-m":
            if argv[i + 1] in ("pytest", "py.test"):
                return argv[:i + 2] + ["-p", "unirun._pytest_canary"] + argv[i + 2:]
            return None
        if arg in ("-X", "-W", "--check-hash-based-pycs"):
            i += 2  # an option with its value as the next argument
            continue
        if not arg.startswith("-") or arg in ("-c", "-", "--"):
            return None  # a script, -c code or stdin: not pytest
        i += 1
    return None


def _print_verdict(report: dict, out) -> None:
    control, candidate = report["control"]["spec"], report["candidate"]["spec"]
    timing = report["timing"]
    print(f"canary: {report['verdict']}  (control {control or 'default'} x2, candidate "
          f"{candidate or 'default'} x{report['candidate']['runs']})", file=out)
    print(f"  wall {timing['wall_ratio']:.2f}x, cpu {timing['cpu_ratio']:.2f}x of the control "
          f"(control runs differ by {timing['control_spread']:.0%})", file=out)
    if not report["pytest"]:
        for stream, floor in report["noise"].items():
            if floor["unstable"]:
                print(f"  {stream}: not compared line by line: the two control runs differ in more than "
                      "numbers and addresses (only output that vanished or appeared counts)", file=out)
    for difference in report["differences"][:5]:
        what = difference["what"]
        if what == "exit":
            print(f"  exit status: control {difference['control']}, candidate {difference['candidate']}"
                  + (f" ({difference['signal']})" if difference["signal"] else ""), file=out)
        elif what in ("stdout", "stderr"):
            masked = ", ".join(difference["masked"]) or "nothing"
            print(f"  {what} differs (masked as noise: {masked}):", file=out)
            for line in difference["first_lines"][:8]:
                print(f"    {line}", file=out)
        elif what == "tests":
            for name in difference["pass_in_control_fail_in_candidate"][:10]:
                print(f"  test passes in control, fails in candidate: {name}", file=out)
            for name in difference["fail_in_control_pass_in_candidate"][:10]:
                print(f"  test fails in control, passes in candidate: {name}", file=out)
        elif what == "unfinished_futures":
            print(f"  futures left unfinished: control {difference['control']}, candidate "
                  f"{difference['candidate']}", file=out)
    if report["tests"] and report["tests"]["flaky"]:
        print(f"  flaky (differ between the control runs): {', '.join(report['tests']['flaky'][:10])}", file=out)
    ledger = report["ledger"].get("candidate") or {}
    if ledger.get("gil_enabled_by"):
        print(f"  candidate: the GIL was enabled by importing {ledger['gil_enabled_by'][0]}", file=out)
    if ledger.get("refused_in_subinterpreter"):
        print(f"  candidate: refused by subinterpreters: {', '.join(ledger['refused_in_subinterpreter'])}", file=out)
    if not report["decisions"]["same"]:
        print("  decisions differ: see the report's decisions", file=out)
    if report.get("report_path"):
        print(f"  report: {report['report_path']}", file=out)


def _read_stdin(first_byte_wait: float = 2.0) -> bytes | None:
    """The canary's stdin, read once to give every run a copy; None for a terminal. A pipe on
    which nothing arrives for first_byte_wait seconds (one a parent left open and never
    writes to) counts as empty, with a warning, rather than holding the canary forever."""
    if sys.stdin is None or sys.stdin.isatty():
        return None
    try:
        import select

        ready, _, _ = select.select([sys.stdin.buffer], [], [], first_byte_wait)
    except (OSError, ValueError):
        ready = [sys.stdin.buffer]  # not selectable (a file): just read it
    if not ready:
        print(f"unirun-python: warning: --canary: nothing arrived on stdin within {first_byte_wait:g} s; "
              "the runs get an empty stdin (redirect it from /dev/null, or pipe the input in)", file=sys.stderr)
        return b""
    return sys.stdin.buffer.read()


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    spec = os.environ.pop("UNIRUN_CANARY", "")
    runs_text = os.environ.pop("UNIRUN_CANARY_RUNS", "") or "1"
    report_path = os.environ.pop("UNIRUN_CANARY_REPORT", "") or ""
    try:
        (control_spec, control), (candidate_spec, candidate) = parse_spec(spec)
        try:
            runs = int(runs_text)
        except ValueError:
            runs = 0
        if runs < 1:
            raise CanaryError(f"--canary-runs={runs_text} is not a number of runs; give 1 or more")
        if not argv:
            raise CanaryError("--canary needs a program: a script, -m module or -c code after the options")
        launcher = os.environ.get("UNIRUN_CANARY_LAUNCHER") or sys.executable
        stdin = _read_stdin()
        tested = _pytest_argv(argv)
        program = tested or argv
        env = {k: v for k, v in os.environ.items() if not k.startswith("UNIRUN_CANARY")}
        # One hash seed for every run (unless the program's environment names one): set and
        # dict-of-str orders then agree between runs, and are not mistaken for noise or change.
        env.setdefault("PYTHONHASHSEED", str(random.SystemRandom().randrange(1, 2**32)))
        _become_subreaper()
        seed = random.SystemRandom().randrange(2**32)
        order = ["control", "control"] + ["candidate"] * runs
        random.Random(seed).shuffle(order)
        results = {"control": [], "candidate": []}
        for side in order:
            options = control if side == "control" else candidate
            results[side].append(_run_once(launcher, options, program, stdin, env, os.getcwd(), tested is not None))
        comparison = compare(results["control"], results["candidate"], tested is not None)
        report = {
            "verdict": comparison.pop("verdict"),
            "control": {"spec": control_spec, "options": control, "runs": 2},
            "candidate": {"spec": candidate_spec, "options": candidate, "runs": runs},
            "argv": argv, "cwd": os.getcwd(), "stdin_bytes": None if stdin is None else len(stdin),
            "order": order, "seed": seed, "pytest": tested is not None, "hash_seed": env["PYTHONHASHSEED"],
            **comparison,
            "runs": [dict(run, side=side) for side in ("control", "candidate") for run in results[side]],
        }
        if report_path:
            try:
                with open(report_path, "w", encoding="utf-8") as out:
                    json.dump(report, out, indent=1)
            except OSError as exc:
                raise CanaryError(f"cannot write the canary report {report_path}: {exc}") from exc
            report["report_path"] = report_path
        _print_verdict(report, sys.stdout)
        return 0 if report["verdict"] == "same" else DIFFERS_EXIT
    except CanaryError as exc:
        print(f"unirun-python: error: {exc}", file=sys.stderr)
        return USAGE_EXIT


if __name__ == "__main__":
    sys.exit(main())
