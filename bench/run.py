"""make bench: every benchmark case side by side, as ratios; writes build/bench.json.

Each case runs in its own unirun-python process on the runtime it is about; inside a case the
contenders alternate, repeat by repeat (see cases.py). A ratio is the median of one contender
over the median of the other, from the same run. Absolute times are kept under "raw" only.
"""

import argparse
import json
import os
import pathlib
import statistics
import subprocess
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parent.parent
LAUNCHER = ROOT / "build" / "unirun-python"

# name: (case, thread mode, numerator, denominator, target, better)
RATIOS = {
    "threads_tiny_vs_threadpool": ("threads_tiny", "gil", "unirun.threads", "ThreadPoolExecutor", 0.25, "<="),
    "threads_tiny_vs_threadpool_nogil": ("threads_tiny", "nogil", "unirun.threads", "ThreadPoolExecutor", 0.25, "<="),
    "interp_tiny_vs_processpool": ("interp_tiny", "gil", "unirun.interpreters", "ProcessPoolExecutor", 0.10, "<="),
    "interp_tiny_vs_interpreterpool": ("interp_tiny", "gil", "unirun.interpreters",
                                       "InterpreterPoolExecutor(backport)", 0.10, "<="),
    "process_tiny_vs_processpool": ("process_tiny", "gil", "unirun.processes", "ProcessPoolExecutor", 0.25, "<="),
    "interp_payload_vs_copy": ("payload", "gil", "unirun.interpreters", "two copies", 2.0, "<="),
    "process_payload_vs_processpool": ("payload", "gil", "unirun.processes", "ProcessPoolExecutor", 0.5, "<="),
    "cpu_scaling_interpreters_gil": ("cpu_interpreters", "gil", "sequential", "unirun", 1.85, ">="),
    "cpu_scaling_threads_nogil": ("cpu_threads", "nogil", "sequential", "unirun", 1.85, ">="),
    "interp_worker_rss_vs_stdlib": ("interp_rss", "gil", "unirun", "stdlib", 1.10, "<="),
    "startup_vs_python": ("startup", "gil", "unirun-python", "python", 1.25, "<="),
    "metrics_overhead": ("observability", "gil", "metrics on", "metrics off", 1.05, "<="),
    "metrics_overhead_nogil": ("observability", "nogil", "metrics on", "metrics off", 1.05, "<="),
    "timeline_overhead": ("observability", "gil", "timeline on", "metrics off", 1.5, "<="),
}
# Reported as values, not ratios: (case, mode, contender, scale, unit)
VALUES = {
    "interp_worker_start_ms": ("interp_start", "gil", "unirun", 1000, "ms"),
    "stdlib_subinterpreter_start_ms": ("interp_start", "gil", "stdlib", 1000, "ms"),
}


def run_case(case, mode, repeats):
    env = dict(os.environ, PYTHONPATH=str(ROOT / "bench"), UNIRUN_BENCH_LAUNCHER=str(LAUNCHER))
    # --compat=off: the stdlib contenders must be the standard library's own executors (compat
    # would serve ThreadPoolExecutor from unirun); unirun's side uses its executors directly.
    proc = subprocess.run([str(LAUNCHER), f"--thread-mode={mode}", "--compat=off", str(ROOT / "bench" / "cases.py"),
                           case, str(repeats)], capture_output=True, text=True, env=env, timeout=900)
    if proc.returncode != 0:
        sys.exit(f"bench case {case} ({mode}) failed:\n{proc.stderr}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--output", default=str(ROOT / "build" / "bench.json"))
    args = parser.parse_args()
    if args.repeats < 5:
        parser.error("--repeats must be at least 5: medians need them")

    started = time.monotonic()
    raw = {}
    for case, mode in sorted({(spec[0], spec[1]) for spec in [*RATIOS.values(), *VALUES.values()]}):
        print(f"bench: {case} ({mode}) ...", file=sys.stderr, flush=True)
        # Scaling needs both cores at once, which these shared machines grant least reliably:
        # more pairs for those cases (each pair is ~0.5 s).
        repeats = max(args.repeats, 15) if case.startswith("cpu_") else args.repeats
        raw[f"{case}/{mode}"] = run_case(case, mode, repeats)

    def median(case, mode, contender):
        return statistics.median(raw[f"{case}/{mode}"]["samples"][contender])

    def paired_ratio(case, mode, top, bottom):
        # Contenders ran back to back in each repeat: the median of the per-repeat ratios
        # cancels slow drifts of the machine (other load, frequency) that hit both alike.
        samples = raw[f"{case}/{mode}"]["samples"]
        return statistics.median(a / b for a, b in zip(samples[top], samples[bottom]))

    ratios, rows = {}, []
    for name, (case, mode, top, bottom, target, better) in RATIOS.items():
        value = paired_ratio(case, mode, top, bottom)
        ratios[name] = round(value, 4)
        met = value <= target if better == "<=" else value >= target
        rows.append((name, f"{value:.3f}", f"{better} {target}", "yes" if met else "NO"))
    for name, (case, mode, contender, scale, unit) in VALUES.items():
        value = median(case, mode, contender) * scale
        ratios[name] = round(value, 2)
        rows.append((name, f"{value:.1f} {unit}", "", ""))

    runtimes = json.loads(subprocess.run([str(LAUNCHER), "--list-runtimes", "--json"],
                                         capture_output=True, text=True, check=True).stdout)
    result = {
        "runtime": {r["tag"]: {"version": r["version"], "free_threaded": r["free_threaded"]} for r in runtimes},
        "ratios": ratios,
        "raw": raw,
        "repeats": args.repeats,
        "machine": {"cpus": os.cpu_count()},
    }
    pathlib.Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    pathlib.Path(args.output).write_text(json.dumps(result, indent=2) + "\n")

    widths = [max(len(row[i]) for row in rows + [("metric", "value", "target", "met")]) for i in range(4)]
    header = ("metric", "value", "target", "met")
    for row in [header] + rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths)))
    print(f"medians of {args.repeats} paired repeats (15 for cpu_*); wrote {args.output} in {time.monotonic() - started:.0f} s")


if __name__ == "__main__":
    main()
