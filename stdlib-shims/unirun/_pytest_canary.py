"""The canary's pytest plugin: each test's outcome, for unirun-python --canary to compare.

Loaded by the canary (-p unirun._pytest_canary) into every run of a pytest suite; active only
when UNIRUN_CANARY_TESTS names the file to write: {node id: outcome}, the outcome being
passed, failed, skipped, error (setup or teardown failed), xfailed or xpassed.
"""

import json
import os

_outcomes = {}


def pytest_runtest_logreport(report):
    if not os.environ.get("UNIRUN_CANARY_TESTS"):
        return
    node = report.nodeid
    if report.when == "call":
        if hasattr(report, "wasxfail"):
            _outcomes[node] = "xpassed" if report.passed else "xfailed"
        else:
            _outcomes[node] = report.outcome
    elif report.failed:
        _outcomes[node] = "error"  # setup or teardown: the test did not get to run, or broke after
    elif report.skipped and node not in _outcomes:
        _outcomes[node] = "xfailed" if hasattr(report, "wasxfail") else "skipped"


def pytest_sessionfinish(session, exitstatus):
    path = os.environ.get("UNIRUN_CANARY_TESTS")
    if not path:
        return
    with open(path, "w", encoding="utf-8") as out:
        json.dump(_outcomes, out)
