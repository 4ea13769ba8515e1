"""make parity: CPython's own test_concurrent_futures and test_asyncio under unirun-python.

For each thread mode (GIL and free-threaded runtime) and each suite, runs the runtime's own
`-m test SUITE` under the launcher with compat managed, applying cpython-parity/waivers.toml
through regrtest's --ignorefile. Then it runs the waived tests alone to find any that pass now,
lists the suite's test cases to find waivers that match nothing, and writes
build/parity/summary.json. Exit status 1 if any test failed.
"""

import argparse
import json
import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))
from conformance import (LAUNCHER, clean_env, junit_outcomes, load_waivers as load_waiver_file,  # noqa: E402
                         runtimes as list_runtimes, stale_waivers, waiver_matches)

OUT = ROOT / "build" / "parity"
SUITES = ("test_concurrent_futures", "test_asyncio")
MODES = ("gil", "nogil")


def load_waivers():
    return load_waiver_file(ROOT / "cpython-parity" / "waivers.toml", ("test", "suite", "runtime", "reason"),
                            ("any", "gil", "nogil"), "runtime")


def regrtest(mode, args, junit=None):
    command = [str(LAUNCHER), f"--thread-mode={mode}", "--compat=managed", "-m", "test", *args]
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


def run_suite(mode, suite, waivers, jobs):
    mine = [w for w in waivers if w["suite"] == suite and w["runtime"] in ("any", mode)]
    ignore = OUT / f"{mode}-{suite}-ignore.txt"
    ignore.write_text("".join(w["test"] + "\n" for w in mine))
    junit = OUT / f"{mode}-{suite}.xml"
    junit.unlink(missing_ok=True)
    args = [suite, f"-j{jobs}", "--timeout=600"]
    if mine:
        args += ["--ignorefile", str(ignore)]
    proc = regrtest(mode, args, junit)
    (OUT / f"{mode}-{suite}.log").write_text(proc.stdout + proc.stderr)
    run, failed, skipped = junit_counts(junit)
    if proc.returncode not in (0,) and not failed:
        failed = [f"{suite} (regrtest exited {proc.returncode}; see build/parity/{mode}-{suite}.log)"]

    # Waivers that match no test case of this suite.
    listed = regrtest(mode, [suite, "--list-cases"]).stdout.split()
    stale = [w["test"] for w in stale_waivers(mine, listed)]
    # Waived tests that pass now.
    unexpected = []
    live = [w for w in mine if w["test"] not in stale]
    if live:
        match = OUT / f"{mode}-{suite}-waived.txt"
        match.write_text("".join(w["test"] + "\n" for w in live))
        waived_junit = OUT / f"{mode}-{suite}-waived.xml"
        waived_junit.unlink(missing_ok=True)
        regrtest(mode, [suite, "--matchfile", str(match)], waived_junit)
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
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--modes", nargs="+", default=list(MODES), choices=MODES)
    parser.add_argument("--suites", nargs="+", default=list(SUITES), choices=SUITES)
    parser.add_argument("-j", "--jobs", type=int, default=2)
    args = parser.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    waivers = load_waivers()
    summary = {}
    runtimes = {r["free_threaded"]: r["tag"] for r in list_runtimes()}
    for mode in args.modes:
        runtime = runtimes.get(mode == "nogil")
        if runtime is None:
            print(f"parity: no {'free-threaded' if mode == 'nogil' else 'GIL'} runtime: skipped")
            continue
        for suite in args.suites:
            print(f"parity: {suite} on {runtime} ({mode}) ...", flush=True)
            result = run_suite(mode, suite, waivers, args.jobs)
            summary.setdefault(runtime, {})[suite] = result
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
