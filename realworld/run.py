"""make realworld: third-party packages' own test suites under python and under unirun-python.

For each package in realworld/packages.toml and each runtime it runs on (cp313 for gil, cp313t
for nogil), runs the suite with pytest under the runtime's own python (the baseline) and under
the launcher in that thread mode with compat managed (and again with --process-pool=interpreters
where the suite uses process pools), all in one virtual environment per runtime. Outcomes are
compared test by test from pytest's JUnit XML. A test whose outcome differs is run again, alone,
under both; a difference that does not reproduce is reported as flaky, one that does is a failure
unless realworld/waivers.toml explains it. Waivers that match nothing, or whose tests no longer
differ, are reported. Writes build/realworld/summary.json; exit status 1 on any unexplained
difference or a suite that could not run under python.

The packages, their sdists (sha256-checked) and one virtual environment per runtime, made by the
launcher and filled with the pinned test dependencies, live in $UNIRUN_CACHE/realworld and are
made again only when packages.toml changes.
"""

import argparse
import hashlib
import json
import os
import pathlib
import shutil
import signal
import subprocess
import sys
import tarfile
import time
import tomllib

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))
from conformance import (LAUNCHER, OUTCOME_RANK, clean_env, junit_outcomes, load_waivers,  # noqa: E402
                         runtime_for, stale_waivers, waiver_matches)

HERE = ROOT / "realworld"
OUT = ROOT / "build" / "realworld"
CACHE = pathlib.Path(os.environ.get("UNIRUN_CACHE") or
                     pathlib.Path(os.environ.get("XDG_CACHE_HOME") or pathlib.Path.home() / ".cache") / "unirun")
STORE = CACHE / "realworld"
THREAD_MODES = ("gil", "nogil")
WAIVER_MODES = ("any", "gil", "nogil", "gil-interpreters", "nogil-interpreters", "interpreters")
RUN_TIMEOUT = 900         # one pytest run (anyio, the longest, takes about 100 s); then it is resumed
RERUN_LIMIT = 200         # more differences than this is one systemic failure: not rerun


def log(message):
    print(f"realworld: {message}", flush=True)


def load_packages():
    config = tomllib.loads((HERE / "packages.toml").read_text())
    for package in config["package"]:
        missing = {"name", "version", "sha256", "runtimes", "tests", "pytest_args", "process_pools",
                   "requires"} - set(package)
        if missing:
            sys.exit(f"realworld: package {package.get('name')} lacks {', '.join(sorted(missing))}")
    return config


def requirements_for(config, mode):
    """The pinned requirements of every package that runs in this thread mode; one pin a name."""
    pins = {}
    for requirement in [*config["requires"], *(r for p in config["package"] if mode in p["runtimes"]
                                               for r in p["requires"])]:
        name, _, version = requirement.partition("==")
        key = name.lower().replace("_", "-")
        if not version:
            sys.exit(f"realworld: {requirement} is not pinned (NAME==VERSION)")
        if pins.setdefault(key, requirement) != requirement:
            sys.exit(f"realworld: two pins for {name}: {pins[key]} and {requirement}")
    return sorted(pins.values(), key=str.lower)


def sha256(path):
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def fetch_sdist(package, python):
    """The package's source distribution from the package index, checked against its sha256."""
    dest = STORE / "sdists"
    dest.mkdir(parents=True, exist_ok=True)
    stem = f"{package['name']}-{package['version']}"
    found = [p for p in dest.glob(f"{stem}.tar.gz") if sha256(p) == package["sha256"]]
    if found:
        return found[0]
    log(f"downloading the {stem} sdist")
    subprocess.run([str(python), "-m", "pip", "download", "--quiet", "--disable-pip-version-check",
                    "--no-binary", ":all:", "--no-deps", "--dest", str(dest),
                    f"{package['name']}=={package['version']}"], check=True, env=clean_env())
    path = dest / f"{stem}.tar.gz"
    if not path.exists() or sha256(path) != package["sha256"]:
        sys.exit(f"realworld: {path} is not the {stem} sdist of packages.toml (sha256 {package['sha256']})")
    return path


def prepare_venv(config, mode, runtime, sdists):
    """$UNIRUN_CACHE/realworld/venvs/TAG: made by the launcher from the runtime, with the pinned
    requirements and the packages built from their sdists. Reused while nothing changed."""
    venv = STORE / "venvs" / runtime["tag"]
    packages = [p for p in config["package"] if mode in p["runtimes"]]
    wanted = json.dumps({"runtime": runtime, "requires": requirements_for(config, mode),
                         "sdists": [p["sha256"] for p in packages]}, sort_keys=True)
    stamp = venv / ".unirun-realworld"
    python = venv / "bin" / "python"
    if stamp.exists() and stamp.read_text() == wanted and python.exists():
        return venv
    log(f"making {venv} with the launcher from {runtime['tag']} and installing the pinned packages")
    shutil.rmtree(venv, ignore_errors=True)
    venv.parent.mkdir(parents=True, exist_ok=True)
    env = clean_env()
    env.pop("VIRTUAL_ENV", None)
    subprocess.run([str(LAUNCHER), f"--runtime={runtime['tag']}", "-m", "venv", str(venv)], check=True, env=env)
    pip = [str(python), "-m", "pip", "--disable-pip-version-check", "--quiet"]
    requirements = venv / "requirements.txt"
    requirements.write_text("".join(r + "\n" for r in requirements_for(config, mode)))
    subprocess.run([*pip, "install", "--no-deps", "-r", str(requirements),
                    *(str(sdists[p["name"]]) for p in packages)], check=True, env=clean_env())
    subprocess.run([*pip, "check"], check=True, env=clean_env())
    stamp.write_text(wanted)
    return venv


def unpack(sdist, dest):
    """A fresh copy of the sdist's tree, so no run sees what an earlier one left."""
    shutil.rmtree(dest, ignore_errors=True)
    dest.mkdir(parents=True)
    with tarfile.open(sdist) as tar:
        tar.extractall(dest, filter="data")
    (tree,) = dest.iterdir()
    return tree


def node_id(case):
    """pytest's node id of a JUnit (xunit1) testcase: its file, classes and name."""
    file, classname, name = case.get("file") or "", case.get("classname") or "", case.get("name")
    module = file[:-3].replace("/", ".") if file.endswith(".py") else None
    if module and (classname == module or classname.startswith(module + ".")):
        classes = classname[len(module) + 1:]
        return "::".join([file, *(classes.split(".") if classes else []), name])
    return f"{classname}::{name}" if classname else name


def failure_text(junit, test):
    """The failure or error text (traceback) JUnit recorded for a test, shortened."""
    import xml.etree.ElementTree as ET

    try:
        for case in ET.parse(junit).getroot().iter("testcase"):
            if node_id(case) == test:
                for tag in ("failure", "error"):
                    element = case.find(tag)
                    if element is not None:
                        text = (element.get("message") or "") + "\n" + (element.text or "")
                        return text.strip()[-3000:]
    except (OSError, ET.ParseError):
        pass
    return ""


def pytest_once(interpreter, tree, venv, args, junit, log_file):
    """One pytest run; its exit status, None if it overran RUN_TIMEOUT."""
    junit.unlink(missing_ok=True)
    report_log = junit.with_suffix(".jsonl")
    report_log.unlink(missing_ok=True)
    command = [*map(str, interpreter), "-m", "pytest", "-p", "no:cacheprovider", "-o", "junit_family=xunit1",
               f"--junitxml={junit}", f"--report-log={report_log}", *args]
    env = clean_env(VIRTUAL_ENV=str(venv), PATH=f"{venv / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}")
    log_file.write(f"realworld: {' '.join(command)}\n")
    log_file.flush()
    proc = subprocess.Popen(command, cwd=tree, env=env, stdout=log_file, stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL, start_new_session=True)
    try:
        return proc.wait(timeout=RUN_TIMEOUT)
    except subprocess.TimeoutExpired:
        log_file.write(f"\nrealworld: killed after {RUN_TIMEOUT} s\n")
        return None
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # a hung run, and any run's leftover children
        except ProcessLookupError:
            pass
        proc.wait()


def report_log_outcomes(path):
    """(outcomes of the tests that finished, the tests that started and never finished) from a
    pytest-reportlog file, which pytest writes as it goes: what is left of a run that died."""
    outcomes, unfinished = {}, []
    if not path.exists():
        return outcomes, unfinished
    for line in path.read_text(errors="replace").splitlines():
        try:
            report = json.loads(line)
        except ValueError:
            continue  # the last line of a killed run may be cut
        if report.get("$report_type") != "TestReport":
            continue
        test, when, outcome = report["nodeid"], report["when"], report["outcome"]
        if when == "setup":
            unfinished.append(test)
        if outcome == "skipped" and "wasxfail" in report:
            outcome = "xfailed"
        if outcome != "passed" or when == "call":
            if test not in outcomes or OUTCOME_RANK[outcome] < OUTCOME_RANK[outcomes[test]]:
                outcomes[test] = outcome
        if when == "teardown":
            outcomes.setdefault(test, "passed")
            if test in unfinished:
                unfinished.remove(test)
    return outcomes, unfinished


def pytest_run(interpreter, tree, venv, args, junit):
    """Run pytest in tree under interpreter: the outcomes by node id ({} if it reported none),
    its exit status, and the seconds it took.

    A run that dies before writing its JUnit report (pytest-timeout's thread method ends the whole
    process on a hang, as dask configures it; or the run overruns RUN_TIMEOUT) is resumed without
    the test that never finished, whose outcome is "hung" (counted as failed), up to three times."""
    started = time.monotonic()
    hung, status = [], None
    with open(junit.with_suffix(".log"), "w") as log_file:
        for _ in range(4):
            status = pytest_once(interpreter, tree, venv, [*args, *(f"--deselect={t}" for t in hung)],
                                        junit, log_file)
            outcomes = junit_outcomes(junit, node_id)
            if junit.exists():  # pytest writes it when its session ends, whatever the outcomes
                break
            finished, unfinished = report_log_outcomes(junit.with_suffix(".jsonl"))
            if not unfinished:
                outcomes = finished
                break
            log_file.write(f"\nrealworld: the run died in {', '.join(unfinished)}; resuming without it\n")
            hung += unfinished
    for test in hung:
        outcomes[test] = "hung"
    return outcomes, status, time.monotonic() - started


def counts(outcomes):
    values = list(outcomes.values())
    return {"passed": values.count("passed"), "failed": values.count("failed") + values.count("hung"),
            "skipped": values.count("skipped") + values.count("xfailed")}


def run_package(package, mode, runtime, venv, sdist, waivers, out):
    """Baseline and launcher runs of one package in one thread mode: {run name: result}."""
    tree = unpack(sdist, OUT / "src" / runtime["tag"] / package["name"])
    args = [*package["pytest_args"], *package["tests"]]
    python = [venv / "bin" / "python"]
    baseline_name = f"python-{runtime['tag']}"
    log(f"{package['name']} under {runtime['tag']}'s python ...")
    baseline, status, seconds = pytest_run(python, tree, venv, args, out / f"{baseline_name}.xml")
    results = {baseline_name: {**counts(baseline), "differs": 0, "waived": 0, "flaky": 0, "exit_status": status,
                               "seconds": round(seconds)}}
    log(f"{package['name']} {baseline_name}: {fmt(results[baseline_name])} ({seconds:.0f} s)")
    if not baseline:
        results[baseline_name]["error"] = f"no results (pytest exited {status}); see {out / baseline_name}.log"
        return results
    variants = [(mode, [])]
    if package["process_pools"]:
        variants.append((f"{mode}-interpreters", ["--process-pool=interpreters"]))
    for run_name, extra in variants:
        launcher = [LAUNCHER, f"--thread-mode={mode}", "--compat=managed", *extra]
        log(f"{package['name']} under unirun-python {' '.join(map(str, launcher[1:]))} ...")
        outcomes, status, seconds = pytest_run(launcher, tree, venv, args, out / f"{run_name}.xml")
        mine = [w for w in waivers if w["package"] == package["name"] and
                (w["mode"] in ("any", run_name) or (w["mode"] == "interpreters" and extra))]
        results[run_name] = compare(package, run_name, baseline_name, baseline, outcomes, python, launcher, tree,
                                    venv, mine, out)
        results[run_name].update(exit_status=status, seconds=round(seconds))
        log(f"{package['name']} {run_name}: {fmt(results[run_name])} ({seconds:.0f} s)")
    return results


def compare(package, run_name, baseline_name, baseline, outcomes, python, launcher, tree, venv, waivers, out):
    differing = sorted(t for t in baseline.keys() | outcomes.keys()
                       if baseline.get(t, "missing") != outcomes.get(t, "missing"))
    confirmed, flaky = differing, []
    if differing and len(differing) <= RERUN_LIMIT:
        # Run the test files of the differing tests again under both (whole files: a test may
        # depend on what ran before it in its file): a difference must reproduce. A test the
        # rerun does not report on either side stays a difference.
        files = sorted({t.split("::")[0] for t in differing if t.split("::")[0].endswith(".py")})
        rerun_args = [*package["pytest_args"], *files]
        again_python, _, _ = pytest_run(python, tree, venv, rerun_args, out / f"{run_name}-rerun-python.xml")
        again, _, _ = pytest_run(launcher, tree, venv, rerun_args, out / f"{run_name}-rerun.xml")
        confirmed = [t for t in differing if again_python.get(t, "missing") != again.get(t, "missing")
                     or t not in again_python.keys() | again.keys()]
        flaky = [t for t in differing if t not in confirmed]
    differences, waived = [], []
    for test in confirmed:
        entry = {"test": test, "python": baseline.get(test, "missing"), "unirun": outcomes.get(test, "missing")}
        if entry["unirun"] == "failed":
            entry["traceback"] = failure_text(out / f"{run_name}.xml", test)
        elif entry["unirun"] == "hung":
            entry["traceback"] = f"the run hung in this test; pytest-timeout's stacks are in {out / run_name}.log"
        if entry["python"] == "failed":
            entry["python_traceback"] = failure_text(out / f"{baseline_name}.xml", test)
        reasons = [w["reason"] for w in waivers if waiver_matches(w["test"], test)]
        if reasons:
            waived.append({**entry, "reason": reasons[0]})
        else:
            differences.append(entry)
    ran = baseline.keys() | outcomes.keys()
    stale = [w["test"] for w in stale_waivers(waivers, ran)]
    # An intermittent waiver (a race in the package itself) is not reported when it did not hit.
    unneeded = [w["test"] for w in waivers if w["test"] not in stale and not w.get("intermittent") and
                not any(waiver_matches(w["test"], t) for t in confirmed)]
    same_passed = sum(1 for t, o in outcomes.items() if o == "passed" and baseline.get(t) == "passed")
    return {**counts(outcomes), "differs": len(differences), "waived": len(waived), "flaky": len(flaky),
            "same_passed": same_passed, "differences": differences, "waived_differences": waived,
            "flaky_differences": [{"test": t, "python": baseline.get(t, "missing"),
                                   "unirun": outcomes.get(t, "missing")} for t in flaky],
            "stale_waivers": stale, "waived_but_same": unneeded}


def fmt(result):
    text = f"passed {result['passed']}, failed {result['failed']}, skipped {result['skipped']}"
    if "same_passed" in result:
        text += f", differs {result['differs']}, waived {result['waived']}, flaky {result['flaky']}"
    return text


def main():
    # Started as a shell's background job, this process and every child would have SIGINT
    # ignored, and the suites that interrupt python and unirun-python (or dask's own) would
    # see no interrupt at all: children get the default disposition from a Python handler.
    if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--modes", nargs="+", default=list(THREAD_MODES), choices=THREAD_MODES)
    parser.add_argument("--packages", nargs="+", help="package names (default: all of packages.toml)")
    args = parser.parse_args()
    # Ended from outside: the running suite's process group goes too (pytest_once's finally).
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    config = load_packages()
    names = [p["name"] for p in config["package"]]
    for name in args.packages or []:
        if name not in names:
            parser.error(f"unknown package {name} (packages.toml has {', '.join(names)})")
    packages = [p for p in config["package"] if not args.packages or p["name"] in args.packages]
    waivers = load_waivers(HERE / "waivers.toml", ("package", "test", "mode", "reason"), WAIVER_MODES, "mode")
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "summary.json").unlink(missing_ok=True)  # never leave an earlier run's verdict behind
    started = time.monotonic()
    summary, failures = {}, []
    for mode in args.modes:
        runtime = runtime_for(mode)
        if runtime is None:
            log(f"no {'free-threaded' if mode == 'nogil' else 'GIL'} runtime registered: {mode} skipped")
            continue
        mine = [p for p in packages if mode in p["runtimes"]]
        for package in packages:
            if package not in mine:
                log(f"{package['name']} does not run on {runtime['tag']} (see realworld/packages.toml)")
        if not mine:
            continue
        # The environment holds every package of this mode, whichever are run now.
        sdists = {p["name"]: fetch_sdist(p, runtime["path"]) for p in config["package"] if mode in p["runtimes"]}
        venv = prepare_venv(config, mode, runtime, sdists)
        for package in mine:
            out = OUT / package["name"]
            out.mkdir(parents=True, exist_ok=True)
            results = run_package(package, mode, runtime, venv, sdists[package["name"]], waivers, out)
            summary.setdefault(package["name"], {}).update(results)
            for run_name, result in results.items():
                if "error" in result:
                    failures.append(f"{package['name']} {run_name}: {result['error']}")
                for d in result.get("differences", []):
                    failures.append(f"{package['name']} {run_name}: {d['test']}: python {d['python']}, "
                                    f"unirun {d['unirun']}")
                for d in result.get("flaky_differences", []):
                    log(f"  flaky (did not reproduce when its file ran again): {package['name']} {run_name}: {d['test']}: "
                        f"python {d['python']}, unirun {d['unirun']}")
                for test in result.get("stale_waivers", []):
                    log(f"  stale waiver (matches no test): {package['name']} {run_name}: {test}")
                for test in result.get("waived_but_same", []):
                    log(f"  waived but behaves as under python now: {package['name']} {run_name}: {test}")
    (OUT / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    for failure in failures:
        log(f"  DIFFERS {failure}")
    log(f"wrote {OUT / 'summary.json'} in {time.monotonic() - started:.0f} s; "
        f"{len(failures)} unexplained difference(s)")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
