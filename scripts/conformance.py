"""Shared by the harnesses that run other people's test suites under unirun-python and compare
(cpython-parity/run.py, realworld/run.py): the launcher's runtimes, a clean environment, JUnit
XML outcomes, and waivers (test id, mode, reason) with their staleness checks."""

import fnmatch
import json
import os
import pathlib
import re
import subprocess
import tomllib
import xml.etree.ElementTree as ET

ROOT = pathlib.Path(__file__).resolve().parent.parent
LAUNCHER = ROOT / "build" / "unirun-python"

# Worst first: a test reported twice (a failing teardown after a passing call) keeps the worst.
OUTCOME_RANK = {"failed": 0, "passed": 1, "xfailed": 2, "skipped": 3}


def runtimes(launcher=LAUNCHER):
    """The launcher's registered runtimes: [{tag, version, free_threaded, path}, ...]."""
    listing = subprocess.run([str(launcher), "--list-runtimes", "--json"], capture_output=True,
                             text=True, check=True).stdout
    return json.loads(listing)


def newest(registered, free_threaded):
    """The runtime --thread-mode would pick from `registered`: the newest of that build, the first
    in the manifest among equals (docs/launcher.md); None if there is none."""
    def key(runtime):
        return tuple(int(part) for part in re.findall(r"\d+", runtime["version"])[:3])

    candidates = [r for r in registered if r["free_threaded"] == free_threaded]
    return max(candidates, key=key, default=None)


def runtime_for(mode, launcher=LAUNCHER):
    """The runtime --thread-mode=MODE (gil | nogil) picks, or None."""
    return newest(runtimes(launcher), mode == "nogil")


def clean_env(**extra):
    """The caller's environment without unirun's and python's own variables, plus extra."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("UNIRUN_", "PYTHON"))}
    env.update(extra)
    return env


def junit_outcomes(path, test_id=None):
    """{test id: "passed" | "failed" | "skipped" | "xfailed"} from a JUnit XML report; {} if
    there is none. test_id(testcase element) names a case; by default "classname.name", or the
    name alone where there is no classname (regrtest writes the whole test id as the name)."""
    outcomes = {}
    if not path.exists():
        return outcomes
    try:
        root = ET.parse(path).getroot()
    except ET.ParseError:
        return outcomes
    for case in root.iter("testcase"):
        if test_id is not None:
            key = test_id(case)
        else:
            classname = case.get("classname")
            key = f"{classname}.{case.get('name')}" if classname else case.get("name")
        if key is None:
            continue  # regrtest writes nameless cases for subtests; their test has its own case
        if case.find("failure") is not None or case.find("error") is not None:
            outcome = "failed"
        elif (skipped := case.find("skipped")) is not None:
            outcome = "xfailed" if skipped.get("type") == "pytest.xfail" else "skipped"
        else:
            outcome = "passed"
        if key not in outcomes or OUTCOME_RANK[outcome] < OUTCOME_RANK[outcomes[key]]:
            outcomes[key] = outcome
    return outcomes


def waiver_matches(pattern, test_id):
    """A waiver names one test id exactly, or many with fnmatch wildcards."""
    return test_id == pattern or fnmatch.fnmatchcase(test_id, pattern)


def load_waivers(path, keys, modes, mode_key):
    """The [[waiver]] tables of a TOML file; each must have every key in keys, a non-empty
    reason, and waiver[mode_key] in modes. Raises SystemExit naming a malformed waiver."""
    waivers = tomllib.loads(pathlib.Path(path).read_text()).get("waiver", [])
    for waiver in waivers:
        missing = set(keys) - set(waiver)
        if missing or waiver[mode_key] not in modes or not str(waiver["reason"]).strip():
            raise SystemExit(f"{path}: malformed waiver {waiver}: needs {', '.join(keys)} "
                             f"({mode_key} one of {'|'.join(modes)}) and a reason")
    return waivers


def stale_waivers(waivers, test_ids):
    """The waivers that match none of test_ids."""
    return [w for w in waivers if not any(waiver_matches(w["test"], t) for t in test_ids)]
