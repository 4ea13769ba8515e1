"""make parity: CPython's own suites under unirun-python: test_concurrent_futures and
test_asyncio (the executors), test_venv, test_sysconfig and test_site (the launcher as python).

For each runtime (by default the newest GIL and the newest free-threaded one the launcher has;
--runtimes names others by tag) and each suite, runs the runtime's own `-m test SUITE` under
the launcher with compat managed, applying cpython-parity/waivers.toml through regrtest's
--ignorefile. Then it runs the waived tests alone to find any that pass now, lists the suite's
test cases to find waivers that match nothing, and writes OUT/summary.json (build/parity by
default; make matrix runs it once per runtime with its own --launcher and --out). A suite the
runtime does not ship (its Lib/test lacks it) is reported as missing, not as run. Exit status 1
if any test failed.
"""

import argparse
import json
import pathlib
import re
import signal
import subprocess
import sys
import tomllib

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))
from conformance import (clean_env, junit_outcomes, newest, runtimes as list_runtimes,  # noqa: E402
                         stale_waivers, waiver_matches)

LAUNCHER = ROOT / "build" / "unirun-python"
OUT = ROOT / "build" / "parity"
SUITES = ("test_concurrent_futures", "test_asyncio", "test_venv", "test_sysconfig", "test_site")
# regrtest resources a suite needs to run all of its tests (test_venv's pip install is "cpu").
RESOURCES = {"test_venv": ["-ucpu"]}
MODES = ("gil", "nogil")


def load_waivers():
    """A waiver's runtime is any, gil, nogil (every runtime of that build), or one or more
    runtime tags separated by spaces (e.g. "cp313 cp313t cp314 cp315": the runtimes whose suite
    has the test)."""
    data = tomllib.loads((ROOT / "cpython-parity" / "waivers.toml").read_text())
    waivers = data.get("waiver", [])
    for waiver in waivers:
        missing = {"test", "suite", "runtime", "reason"} - set(waiver)
        if (missing or not re.fullmatch(r"any|gil|nogil|cp\d+t?( cp\d+t?)*", str(waiver["runtime"]))
                or not waiver["reason"].strip()):
            sys.exit(f"parity: malformed waiver {waiver}: needs test, suite, runtime "
                     "(any|gil|nogil|runtime tags such as cp314 cp315), reason")
    return waivers


def applies(waiver, runtime):
    """runtime: an entry of `unirun-python --list-runtimes --json`."""
    wanted = waiver["runtime"]
    return (wanted == "any" or runtime["tag"] in wanted.split()
            or wanted == ("nogil" if runtime["free_threaded"] else "gil"))


def regrtest(tag, args, junit=None):
    command = [str(LAUNCHER), f"--runtime={tag}", "--compat=managed", "-m", "test", *args]
    if junit is not None:
        command += ["--junit-xml", str(junit)]
    return subprocess.run(command, capture_output=True, text=True, env=clean_env(), cwd=OUT, timeout=3600)


def junit_cases(path):
    """{test id: "passed" | "failed" | "skipped"} from regrtest's JUnit XML."""
    return junit_outcomes(path)


def junit_counts(path):
    """(run, failed ids, skipped) from regrtest's JUnit XML."""
    cases = junit_cases(path)
    failed = [test for test, outcome in cases.items() if outcome == "failed"]
    return len(cases), failed, sum(1 for outcome in cases.values() if outcome == "skipped")


def suite_missing(tag, suite):
    """Why the runtime cannot run `suite` (its Lib/test does not ship it), or None."""
    probe = subprocess.run([str(LAUNCHER), f"--runtime={tag}", "--compat=off", "-c",
                            f"import test.{suite}"], capture_output=True, text=True, env=clean_env(),
                           cwd=OUT, timeout=300)
    if probe.returncode == 0:
        return None
    lines = (probe.stderr.strip() or f"exit status {probe.returncode}").splitlines()
    return f"test.{suite} cannot be imported on {tag}: {lines[-1]}"


def run_suite(runtime, suite, waivers, jobs):
    tag = runtime["tag"]
    mine = [w for w in waivers if w["suite"] == suite and applies(w, runtime)]
    missing = suite_missing(tag, suite)
    if missing is not None:
        return {"run": 0, "passed": 0, "failed": 0, "failed_tests": [], "skipped": 0,
                "waived": len(mine), "stale_waivers": [], "unexpected_passes": [], "missing": missing}
    ignore = OUT / f"{tag}-{suite}-ignore.txt"
    ignore.write_text("".join(w["test"] + "\n" for w in mine))
    junit = OUT / f"{tag}-{suite}.xml"
    junit.unlink(missing_ok=True)
    args = [suite, f"-j{jobs}", "--timeout=600", *RESOURCES.get(suite, [])]
    if mine:
        args += ["--ignorefile", str(ignore)]
    proc = regrtest(tag, args, junit)
    log = OUT / f"{tag}-{suite}.log"
    log.write_text(proc.stdout + proc.stderr)
    run, failed, skipped = junit_counts(junit)
    if proc.returncode not in (0,) and not failed:
        failed = [f"{suite} (regrtest exited {proc.returncode}; see {log})"]

    # Waivers that match no test case of this suite.
    listed = regrtest(tag, [suite, "--list-cases"]).stdout.split()
    stale = [w["test"] for w in stale_waivers(mine, listed)]
    # Waived tests that pass now.
    unexpected = []
    live = [w for w in mine if w["test"] not in stale]
    if live:
        match = OUT / f"{tag}-{suite}-waived.txt"
        match.write_text("".join(w["test"] + "\n" for w in live))
        waived_junit = OUT / f"{tag}-{suite}-waived.xml"
        waived_junit.unlink(missing_ok=True)
        regrtest(tag, [suite, "--matchfile", str(match)], waived_junit)
        outcomes = junit_cases(waived_junit)
        for waiver in live:
            matched = [o for test, o in outcomes.items() if waiver_matches(waiver["test"], test)]
            if matched and all(o == "passed" for o in matched):
                unexpected.append(waiver["test"])
    return {
        "run": run,
        "passed": run - len(failed) - skipped,
        "failed": len(failed),
        "failed_tests": failed,
        "skipped": skipped,
        "waived": len(mine),
        "stale_waivers": stale,
        "unexpected_passes": unexpected,
    }


def main():
    global LAUNCHER, OUT
    # Started as a shell's background job, this process and every child would have SIGINT
    # ignored, and the suites that interrupt python and unirun-python (or dask's own) would
    # see no interrupt at all: children get the default disposition from a Python handler.
    if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--modes", nargs="+", default=list(MODES), choices=MODES,
                        help="the newest runtime of each build (default: both)")
    parser.add_argument("--runtimes", nargs="+", metavar="TAG", help="these runtimes instead")
    parser.add_argument("--suites", nargs="+", default=list(SUITES), choices=SUITES)
    parser.add_argument("--launcher", type=pathlib.Path, default=LAUNCHER)
    parser.add_argument("--out", type=pathlib.Path, default=OUT)
    parser.add_argument("-j", "--jobs", type=int, default=2)
    args = parser.parse_args()
    LAUNCHER, OUT = args.launcher.resolve(), args.out.resolve()
    OUT.mkdir(parents=True, exist_ok=True)
    waivers = load_waivers()
    summary = {}
    registered = list_runtimes(LAUNCHER)
    chosen = []
    if args.runtimes:
        by_tag = {r["tag"]: r for r in registered}
        for tag in args.runtimes:
            if tag not in by_tag:
                sys.exit(f"parity: {LAUNCHER} has no runtime {tag} "
                         f"(it has: {', '.join(by_tag) or 'none'})")
            chosen.append(by_tag[tag])
    else:
        for mode in args.modes:
            runtime = newest(registered, mode == "nogil")
            if runtime is None:
                print(f"parity: no {'free-threaded' if mode == 'nogil' else 'GIL'} runtime: skipped")
            else:
                chosen.append(runtime)
    for entry in chosen:
        runtime = entry["tag"]
        build = "free-threaded" if entry["free_threaded"] else "GIL"
        for suite in args.suites:
            print(f"parity: {suite} on {runtime} ({build}) ...", flush=True)
            result = run_suite(entry, suite, waivers, args.jobs)
            summary.setdefault(runtime, {})[suite] = result
            if "missing" in result:
                print(f"parity: {suite} on {runtime}: not run, {result['missing']}", flush=True)
                continue
            print(f"parity: {suite} on {runtime}: run {result['run']}, passed {result['passed']}, "
                  f"failed {result['failed']}, skipped {result['skipped']}, waived {result['waived']}, "
                  f"stale waivers {len(result['stale_waivers'])}, unexpected passes "
                  f"{len(result['unexpected_passes'])}", flush=True)
            for test in result["failed_tests"]:
                print(f"parity:   FAILED {test}")
            for test in result["stale_waivers"]:
                print(f"parity:   stale waiver (matches no test): {test}")
            for test in result["unexpected_passes"]:
                print(f"parity:   waived but passes now: {test}")
    (OUT / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    failed = sum(s["failed"] for suites in summary.values() for s in suites.values())
    print(f"parity: wrote {OUT / 'summary.json'}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
