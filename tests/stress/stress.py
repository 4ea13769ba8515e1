"""make stress: unirun's futures under load (issue 8, "Verification").

    unirun-python [--thread-mode=gil|nogil] tests/stress/stress.py [--size small|medium|large]
                  [--scenario NAME ...] [--seed N] [--json PATH]

Scenarios, each in its own child process (a crash or a hang fails that scenario, not the run):

- threads, compat, interpreters: rounds in which many threads submit to one executor
  (ThreadExecutor, unirun.compat's ThreadPoolExecutor, InterpreterExecutor) while another
  thread cancels at random, another shuts the executor down with cancel_futures=True, and
  waiter threads call wait() and as_completed() on what was submitted so far, without a
  timeout. Done-callbacks count their calls, read the outcome, and some submit follow-up work
  and wait for it (without a timeout; at most max_workers - 1 wait at once, so the standard
  pool would never deadlock either).
- processes: the same rounds on ProcessExecutor (the processes flavor's process workers), where
  some tasks kill their worker process (os._exit): each such task must fail with
  BrokenProcessPool, the worker start a new child, and every other future end as it would.
- compat-processes: the same rounds (no dying tasks: a death breaks that pool, as the stdlib's)
  on unirun.compat's ProcessPoolExecutor, on process workers.
- interpreter-tasks: interpreter tasks that make futures inside their own interpreter (a
  ThreadExecutor, manual _unirun futures finished there or by other threads, a Run scope left
  by an exception) and check them there, beside ordinary tasks.

Checks: every future ends, every waiter returns, every callback ran exactly once, the outcome
read (by two threads at once, and by the callbacks) is the one the task published, and the
same object each time; a call whose cancel() returned True did not run. Nothing waits with a
timeout: a watchdog (faulthandler.dump_traceback_later) ends a stuck scenario with every
thread's stack, and the scenario fails. Nothing asserts timing.

Exit status 0 when every scenario passed; the last line says how many passed and failed.
"""

import argparse
import contextlib
import json
import os
import random
import subprocess
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))

# rounds: executor rounds per scenario; submitters x per_thread submissions per round;
# inner: interpreter tasks (each checks `inner_n` futures of its own) per round.
SIZES = {
    "small": dict(rounds=6, submitters=12, per_thread=60, inner=4, inner_n=16, watchdog=60),
    "medium": dict(rounds=8, submitters=16, per_thread=150, inner=12, inner_n=40, watchdog=300),
    "large": dict(rounds=25, submitters=32, per_thread=400, inner=40, inner_n=100, watchdog=1800),
}
SCENARIOS = ("threads", "compat", "interpreters", "processes", "compat-processes", "interpreter-tasks")


def make_executor(flavor, workers):
    if flavor == "threads":
        from unirun._executors import ThreadExecutor

        return ThreadExecutor(workers)
    if flavor == "compat":
        from unirun.compat.thread_pool import ThreadPoolExecutor

        return ThreadPoolExecutor(workers)
    if flavor == "processes":
        from unirun._executors import ProcessExecutor

        return ProcessExecutor(workers)
    if flavor == "compat-processes":
        from unirun.compat.process_pool import ProcessPoolExecutor

        return ProcessPoolExecutor(workers)
    from unirun._executors import InterpreterExecutor

    return InterpreterExecutor(workers)


class Record:
    """One submitted call: what it must publish and what was seen of it."""

    __slots__ = ("key", "kind", "future", "want", "callbacks", "reads", "followups", "cancel_won")

    def __init__(self, key, kind, future, want):
        self.key, self.kind, self.future, self.want = key, kind, future, want
        self.callbacks = []  # callback names registered
        self.reads = []  # (name, outcome object or exception) read by callbacks
        self.followups = []  # (callback's outcome, follow-up future or None)
        self.cancel_won = False


def read(future):
    """The outcome as ("value", obj) or ("raise", exception object)."""
    import concurrent.futures as cf

    try:
        return ("value", future.result())
    except cf.CancelledError as exc:
        return ("cancelled", exc)
    except BaseException as exc:  # noqa: BLE001
        return ("raise", exc)


class Round:
    def __init__(self, flavor, size, seed, number):
        import concurrent.futures as cf

        import stress_tasks

        self.cf, self.tasks = cf, stress_tasks
        self.flavor, self.size, self.number = flavor, size, number
        self.rng = random.Random(seed)
        self.workers = self.rng.choice([1, 2, 4])
        self.executor = make_executor(flavor, self.workers)
        self.lock = threading.Lock()
        self.records = []
        self.calls = {}  # (record key, callback name) -> times run
        self.problems = []
        self.shut = threading.Event()
        self.submitting = True
        # Follow-ups that wait hold one slot: at least one worker stays free to run them.
        self.followup_slots = threading.BoundedSemaphore(max(self.workers - 1, 1))
        self.stats = {}
        self.waiters_now = {}  # waits in progress: what each waits for
        self.can_wait_for_followups = self.workers >= 2
        self.waits = 0

    @contextlib.contextmanager
    def waiting(self, what):
        """Around a wait without timeout: report_if_stuck names the waits still going on."""
        token = object()
        with self.lock:
            self.waiters_now[token] = what
        try:
            yield
        finally:
            with self.lock:
                del self.waiters_now[token]
                self.waits += 1

    def problem(self, text):
        with self.lock:
            self.problems.append(f"[{self.flavor} round {self.number}, {self.workers} workers] {text}")

    # --- callbacks -------------------------------------------------------------------------------

    def callback(self, record, name, what):
        def run(future):
            with self.lock:
                self.calls[(record.key, name)] = self.calls.get((record.key, name), 0) + 1
            if not future.done():
                self.problem(f"callback {name} of {record.key} saw a future that is not done")
            if what == "read":
                record.reads.append((name, read(future)))
            elif what == "followup":
                self.followup(record)

        return run

    def followup(self, record):
        key = (record.key, "followup")
        try:
            g = self.executor.submit(self.tasks.value, key, 0)
        except RuntimeError as exc:  # shut down meanwhile
            record.followups.append((("rejected", exc), None))
            return
        if self.can_wait_for_followups and self.followup_slots.acquire(blocking=False):
            try:
                record.followups.append((read(g), g))  # no timeout: the watchdog guards it
            finally:
                self.followup_slots.release()
        else:
            record.followups.append((None, g))

    # --- the threads of a round ------------------------------------------------------------------

    def submitter(self, index, seed):
        rng = random.Random(seed)
        for j in range(self.size["per_thread"]):
            key = (self.number, index, j)
            nonce = rng.getrandbits(32)
            kinds, weights = ["value", "fail", "nap"], [6, 2, 2]
            if self.flavor == "processes":
                kinds, weights = kinds + ["die"], weights + [0.1]  # about 1 task in 100
            kind = rng.choices(kinds, weights=weights)[0]
            args = (key, nonce) if kind != "nap" else (key, nonce, rng.random() * 0.002)
            fn = getattr(self.tasks, kind)
            try:
                future = self.executor.submit(fn, *args)
            except RuntimeError:
                if not self.shut.is_set():
                    self.problem(f"submit raised RuntimeError before any shutdown ({key})")
                return
            record = Record(key, kind, future, self.tasks.expected(kind if kind in ("fail", "die") else "value", key, nonce))
            # Some futures get no callback: nothing observes them until a waiter comes.
            names = rng.sample(["count", "read", "followup", "count2"], k=rng.choice([0, 0, 1, 1, 2]))
            with self.lock:
                self.records.append(record)
            for name in names:
                record.callbacks.append(name)
                what = "read" if name == "read" else "followup" if name == "followup" else "count"
                future.add_done_callback(self.callback(record, name, what))
            if rng.random() < 0.05:
                time.sleep(0)

    def canceller(self, seed):
        rng = random.Random(seed)
        while self.submitting:
            with self.lock:
                # Mostly the newest calls: those are still queued.
                record = self.records[-rng.randint(1, min(20, len(self.records)))] if self.records else None
            if record is not None and record.future.cancel():
                record.cancel_won = True
                if rng.random() < 0.5:
                    # Waiting on a call cancelled while queued: it ends when a worker (or the
                    # shutdown) skips it. No timeout.
                    with self.waiting("canceller: wait() on a future it cancelled"):
                        self.cf.wait([record.future])
            time.sleep(rng.random() * 0.001)

    def shutdown_later(self, seed):
        rng = random.Random(seed)
        total = self.size["submitters"] * self.size["per_thread"]
        threshold = rng.randint(total // 2, total)
        while self.submitting and len(self.records) < threshold:
            time.sleep(0.0005)
        self.shut.set()  # first: a submit refused from now on is expected
        self.executor.shutdown(wait=True, cancel_futures=True)

    def snapshot(self, rng):
        """Everything submitted so far, or (mostly) only the newest calls."""
        with self.lock:
            futures = [r.future for r in self.records]
        if rng.random() < 0.7:
            futures = futures[-rng.randint(1, 50):]
        return futures

    def waiter(self, how, seed):
        cf = self.cf
        rng = random.Random(seed)
        while True:
            last = not self.submitting
            futures = self.snapshot(rng)
            if futures:
                if how == "wait":
                    with self.waiting(f"wait() on {len(futures)} futures"):
                        done, not_done = cf.wait(futures)  # no timeout
                    if not_done or len(done) != len(set(futures)):
                        self.problem(f"wait() returned {len(not_done)} futures not done")
                elif how == "first":
                    with self.waiting(f"wait(FIRST_COMPLETED) on {len(futures)} futures"):
                        done, _ = cf.wait(futures, return_when=cf.FIRST_COMPLETED)
                    if not done or not all(f.done() for f in done):
                        self.problem("wait(FIRST_COMPLETED) returned no done future")
                else:
                    with self.waiting(f"as_completed() on {len(futures)} futures"):
                        seen = list(cf.as_completed(futures))
                    if len(seen) != len(futures) or len({id(f) for f in seen}) != len(futures):
                        self.problem(f"as_completed() yielded {len(seen)} futures for {len(futures)}")
                    if not all(f.done() for f in seen):
                        self.problem("as_completed() yielded a future that is not done")
            if last:
                return
            time.sleep(rng.random() * 0.001)

    # --- the round ---------------------------------------------------------------------------------

    def run(self):
        rng = self.rng
        threads = [threading.Thread(target=self.submitter, args=(i, rng.getrandbits(32)))
                   for i in range(self.size["submitters"])]
        helpers = [threading.Thread(target=self.canceller, args=(rng.getrandbits(32),))]
        if rng.random() < 0.7:
            helpers.append(threading.Thread(target=self.shutdown_later, args=(rng.getrandbits(32),)))
        waiters = [threading.Thread(target=self.waiter, args=(how, rng.getrandbits(32)))
                   for how in ("wait", "wait", "first", "as_completed", "as_completed")]
        for thread in threads + helpers + waiters:
            thread.start()
        for thread in threads:
            thread.join()
        self.submitting = False
        for thread in helpers + waiters:
            thread.join()
        self.executor.shutdown(wait=True)
        self.check()
        futures = [r.future for r in self.records]
        self.stats = {"futures": len(futures), "cancel_won": sum(r.cancel_won for r in self.records),
                      "cancelled": sum(f.cancelled() for f in futures), "waits": self.waits,
                      "followups": sum(len(r.followups) for r in self.records), "shut": self.shut.is_set()}
        if self.flavor == "processes":  # children that died mid-task (and were replaced)
            self.stats["died"] = sum(r.kind == "die" and not r.future.cancelled() for r in self.records)
        return len(self.records)

    def check(self):
        cf = self.cf
        followups = [g for r in self.records for _, g in r.followups if g is not None]
        everything = [r.future for r in self.records] + followups
        _, not_done = cf.wait(everything)  # no timeout
        if not_done:
            self.problem(f"{len(not_done)} futures never ended")
        # Two threads read every outcome at once: same object, and the published one.
        reads = [[], []]
        barrier = threading.Barrier(2)

        def reader(out):
            barrier.wait()
            out.extend(read(r.future) for r in self.records)

        pair = [threading.Thread(target=reader, args=(out,)) for out in reads]
        for thread in pair:
            thread.start()
        for thread in pair:
            thread.join()
        thread_flavor = self.flavor not in ("interpreters", "processes", "compat-processes")
        for record, first, second in zip(self.records, *reads):
            key, future = record.key, record.future
            if first[0] != second[0] or first[1] is not second[1] and first[0] != "cancelled":
                self.problem(f"{key}: two threads read two outcomes: {first!r} / {second!r}")
            for name in record.callbacks:
                n = self.calls.get((key, name), 0)
                if n != 1:
                    self.problem(f"{key}: callback {name} ran {n} times")
            if record.cancel_won and not future.cancelled():
                self.problem(f"{key}: cancel() returned True but the future is {future._state}")
            if first[0] == "cancelled":
                if thread_flavor and key in self.tasks.RAN:
                    self.problem(f"{key}: cancelled, yet the call ran")
                if future._state != "CANCELLED_AND_NOTIFIED":
                    self.problem(f"{key}: cancelled and ended, yet its state is {future._state}")
            else:
                if thread_flavor and key not in self.tasks.RAN:
                    self.problem(f"{key}: finished without running")
                got = ("value", first[1]) if first[0] == "value" else ("raise", type(first[1]), first[1].args)
                if got != record.want:
                    self.problem(f"{key}: read {got!r}, the task published {record.want!r}")
            for name, outcome in record.reads:
                if outcome[0] != first[0] or outcome[0] != "cancelled" and outcome[1] is not first[1]:
                    self.problem(f"{key}: callback {name} read {outcome!r}, later reads give {first!r}")
            for seen, g in record.followups:
                if g is None:
                    if seen[0] != "rejected" or not self.shut.is_set():
                        self.problem(f"{key}: a follow-up submit was refused before shutdown")
                    continue
                final = read(g)
                if seen is not None and (seen[0] != final[0] or seen[0] == "value" and seen[1] is not final[1]):
                    self.problem(f"{key}: the follow-up's callback read {seen!r}, later {final!r}")
                if final[0] == "raise":
                    self.problem(f"{key}: the follow-up failed: {final[1]!r}")


def run_interpreter_tasks(size, seed, number):
    """Interpreter tasks that make and check futures in their own interpreter, beside others."""
    import concurrent.futures as cf

    import stress_tasks
    from unirun._executors import InterpreterExecutor

    rng = random.Random(seed)
    problems = []
    calls = {}
    lock = threading.Lock()

    def count(key):
        def callback(future):
            with lock:
                calls[key] = calls.get(key, 0) + 1
        return callback

    with InterpreterExecutor(rng.choice([1, 2, 3])) as executor:
        futures = []
        for i in range(size["inner"]):
            f = executor.submit(stress_tasks.futures_inside, rng.getrandbits(32), size["inner_n"])
            f.add_done_callback(count(("inside", i)))
            futures.append((("inside", i), f))
            g = executor.submit(stress_tasks.value, ("beside", i), i)
            g.add_done_callback(count(("beside", i)))
            futures.append((("beside", i), g))
        cf.wait([f for _, f in futures])  # no timeout
    checked = 0
    for key, f in futures:
        outcome = read(f)
        if outcome[0] != "value":
            problems.append(f"[round {number}] {key} failed: {outcome[1]!r}")
        elif key[0] == "inside":
            checked += outcome[1]["checked"]
            problems += [f"[round {number}] {key}: {p}" for p in outcome[1]["problems"]]
        if calls.get(key, 0) != 1:
            problems.append(f"[round {number}] the callback of {key} ran {calls.get(key, 0)} times")
    return checked + len(futures), problems


_current_round = None


def report_if_stuck(seconds):
    """Shortly before the watchdog fires: which futures of the round have not ended, and how."""
    time.sleep(seconds)
    round_ = _current_round
    if round_ is None:
        return
    with round_.lock:
        records = list(round_.records)
    stuck = [r for r in records if r.future._state not in ("FINISHED", "CANCELLED_AND_NOTIFIED")]
    states = {}
    for r in stuck:
        states[r.future._state] = states.get(r.future._state, 0) + 1
    print(f"stress: stuck in {round_.flavor} round {round_.number} ({round_.workers} workers, shut down: "
          f"{round_.shut.is_set()}): {len(stuck)} of {len(records)} futures have not ended: {states}",
          file=sys.stderr)
    for r in stuck[:10]:
        print(f"    {r.key}: {r.future._state}, cancel() returned True: {r.cancel_won}, "
              f"callbacks: {r.callbacks}", file=sys.stderr)
    with round_.lock:
        waits = list(round_.waiters_now.values())
    if waits:
        print(f"    still waiting without timeout: {waits}" +
              ("; every future has ended, so these waiters were never told" if not stuck else ""),
              file=sys.stderr)
    sys.stderr.flush()


def child(scenario, size_name, seed):
    """One scenario, in this process; prints one JSON line; exit status 1 on a problem."""
    import faulthandler

    global _current_round
    size = SIZES[size_name]
    faulthandler.enable()
    # No wait of the run has a timeout: this ends a stuck one, with every thread's stack.
    faulthandler.dump_traceback_later(size["watchdog"], exit=True)
    threading.Thread(target=report_if_stuck, args=(size["watchdog"] - 3,), daemon=True).start()
    sys.path.insert(0, HERE)
    started = time.monotonic()
    rng = random.Random(seed)
    futures, problems, stats = 0, [], {}
    for number in range(size["rounds"]):
        if scenario == "interpreter-tasks":
            n, found = run_interpreter_tasks(size, rng.getrandbits(32), number)
        else:
            round_ = _current_round = Round(scenario, size, rng.getrandbits(32), number)
            n = round_.run()
            found = round_.problems
            for name, value in round_.stats.items():
                stats[name] = stats.get(name, 0) + value
        futures += n
        problems += found
    print(json.dumps({"scenario": scenario, "futures": futures, "stats": stats, "problems": problems[:50],
                      "problem_count": len(problems), "seconds": round(time.monotonic() - started, 1)}))
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(1 if problems else 0)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", choices=sorted(SIZES), default="small")
    parser.add_argument("--scenario", action="append", choices=SCENARIOS)
    parser.add_argument("--seed", type=int, default=None, help="default: a new one, printed")
    parser.add_argument("--json", help="write {passed, failed, scenarios} here")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if "_unirun" not in sys.builtin_module_names:
        print("stress: run this under unirun-python (it stresses unirun's native scheduler)", file=sys.stderr)
        return 2
    seed = args.seed if args.seed is not None else random.SystemRandom().getrandbits(31)
    if args.child:
        child(args.child, args.size, seed)
    mode = "free-threaded" if not getattr(sys, "_is_gil_enabled", lambda: True)() else "GIL"
    print(f"stress: size {args.size}, seed {seed}, {mode} runtime {sys.version.split()[0]}", flush=True)
    results = {}
    limit = SIZES[args.size]["watchdog"] + 60
    for scenario in args.scenario or SCENARIOS:
        started = time.monotonic()
        command = [sys.executable, os.path.abspath(__file__), "--child", scenario, "--size", args.size,
                   "--seed", str(seed)]
        try:
            proc = subprocess.run(command, capture_output=True, text=True, timeout=limit)
            code, out, err = proc.returncode, proc.stdout, proc.stderr
        except subprocess.TimeoutExpired as exc:
            code, out, err = "timeout", exc.stdout or "", exc.stderr or ""
            out, err = (x.decode() if isinstance(x, bytes) else x for x in (out, err))
        elapsed = time.monotonic() - started
        report = None
        for line in out.splitlines():
            if line.startswith("{"):
                report = json.loads(line)
        ok = code == 0 and report is not None and not report["problem_count"]
        results[scenario] = {"passed": ok, "exit": code, "seconds": round(elapsed, 1),
                             "futures": report and report["futures"], "stats": report and report["stats"]}
        if ok:
            stats = ", ".join(f"{k} {v}" for k, v in report["stats"].items())
            print(f"stress: {scenario}: ok, {report['futures']} futures checked ({elapsed:.1f} s){'; ' + stats if stats else ''}",
                  flush=True)
            continue
        if report is not None:
            what = f"{report['problem_count']} problems"
        elif code == 1 and "Timeout (" in err:
            for line in err.splitlines():  # what report_if_stuck said
                if line.startswith("stress: stuck") or line.startswith(("    (", "    still waiting")):
                    print(f"    {line.strip()}")
            what = f"hung: the watchdog fired after {SIZES[args.size]['watchdog']} s (every thread's stack below)"
        elif isinstance(code, int) and (code < 0 or code in (134, 139)):
            what = f"crashed (exit status {code})"
        else:
            what = f"exit status {code}"
        print(f"stress: {scenario}: FAILED, {what} ({elapsed:.1f} s)", flush=True)
        for problem in (report or {}).get("problems", [])[:20]:
            print(f"    {problem}")
        if err.strip():
            print("    --- stderr (last 6000 characters)")
            print("\n".join("    " + line for line in err[-6000:].splitlines()))
        sys.stdout.flush()
    passed = sum(r["passed"] for r in results.values())
    failed = len(results) - passed
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"passed": passed, "failed": failed, "seed": seed, "size": args.size,
                       "scenarios": results}, f, indent=2)
    print(f"stress: {passed} passed, {failed} failed (seed {seed})")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
