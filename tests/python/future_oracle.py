"""The standard library as oracle for unirun's futures (issue 8, "Verification").

Hypothesis state machines drive a standard `concurrent.futures.Future` and a unirun future
through the same random operations and compare everything either shows after every step:
done()/cancelled()/running()/_state, what result()/exception() return or raise (and that they
hand back the very object that was published), which callbacks ran, how often, in which state
and on which thread, and what wait()/as_completed() running on other threads returned.

- ManualMachine: `_unirun.Future()` against `concurrent.futures.Future()`.
- races (run_races, an exhaustive loop: races do not replay): two threads doing two of
  set_result/set_exception/cancel/set_running_or_notify_cancel on one future at once must
  leave what one of the two serial orders leaves on a standard future.
- reads (run_reads, a loop for the same reason): several threads reading an executor future's
  outcome at once all get one object.
- ExecutorMachine (flavors threads, compat, interpreters): futures of ThreadExecutor,
  unirun.compat's ThreadPoolExecutor and InterpreterExecutor against the standard
  ThreadPoolExecutor running the same program: gated tasks, cancels, done-callbacks (some
  submitting follow-up work), reads, wait()/as_completed() from other threads, shutdowns
  (also from another thread, with cancel_futures), futures made inside interpreter tasks.

Run one machine per process (a crash must not take the other machines with it):
    unirun-python -c "import future_oracle; future_oracle.main()" MACHINE
where MACHINE is manual, races, reads, threads, compat or interpreters.
tests/python/test_future_oracle.py does that for every machine.

Nothing asserts timing. Executor calls are held by pipes until the test releases them, so
which call runs when is decided by the test; after every step the test waits until the
standard pool has done what a model of it predicts (which calls run, which cancelled ones a
worker has skipped, which callbacks ran), then gives unirun up to UNIRUN_ORACLE_HANG seconds
(default 10; 3 once a failure was seen, so that shrinking a hang is not slow) to show the
same; not showing it is reported as a hang. Waiters are compared deterministically: the
waiter objects that wait()/as_completed() install are wrapped to record what each future
told them, read once the futures' conditions are free.

Not driven, because the standard pool itself breaks on them (its worker thread dies): an
executor's future given set_result()/set_exception() by the caller, and
set_running_or_notify_cancel() on a queued call that was not cancelled. A cancelled queued
call may get it only when nothing is queued after it (notify_cancelled_queued).

Where the standard library and unirun's contract disagree, the comparison follows the
contract, and says so here:
- futures cancelled by shutdown(cancel_futures=True): the standard pool leaves them CANCELLED
  and never notifies waiters (a wait() without timeout on one never returns); unirun's
  contract is that every future ends, as it would had a worker reached it. The oracle applies
  that to the standard side (set_running_or_notify_cancel(), which is exactly what its
  worker would do) right after the shutdown.

Environment: UNIRUN_ORACLE_PROFILE (ci: derandomized and bounded, the default; dev: random
and longer), UNIRUN_ORACLE_EXAMPLES (override max_examples), UNIRUN_ORACLE_HANG (seconds),
UNIRUN_ORACLE_STEPS (a file that gets each step before it runs: what to read after a crash),
UNIRUN_ORACLE_SELF_TEST=1 (the standard library on both sides: shows the test itself is sound),
UNIRUN_ORACLE_WITHOUT (comma-separated operation kinds to leave out, to look past a known
failure: inner (interpreter-side futures in a task), raise_base (callbacks raising a
BaseException), notify_cancelled, followup, huge (timeouts past threading.TIMEOUT_MAX), any
callback or task kind, and any rule by name, e.g. as_completed_on_other_thread),
UNIRUN_ORACLE_ROUNDS (races per pair of operations).
"""

import concurrent.futures as cf
import faulthandler
import functools
import itertools
import logging
import os
import select
import sys
import threading
import time
import traceback
from collections import Counter
from concurrent.futures import _base

from hypothesis import HealthCheck, settings, strategies as st
from hypothesis.internal.conjecture import engine as _engine
from hypothesis.stateful import Bundle, RuleBasedStateMachine, initialize, precondition, rule, run_state_machine_as_test

import _unirun
import oracle_tasks
from unirun._executors import InterpreterExecutor, ThreadExecutor
from unirun.compat.thread_pool import ThreadPoolExecutor as CompatThreadPoolExecutor

HANG = float(os.environ.get("UNIRUN_ORACLE_HANG", "10"))
TASK_HANG = 120  # a gated task nobody releases fails after this long instead of holding a worker
WAIT_TIMEOUT = 120  # wait()/as_completed() in waiter threads: never forever, but far past HANG
WITHOUT = set(filter(None, os.environ.get("UNIRUN_ORACLE_WITHOUT", "").split(",")))
MAIN = threading.main_thread()
StdThreadPool = oracle_tasks.stdlib_thread_pool()

PENDING, RUNNING, FINISHED = _base.PENDING, _base.RUNNING, _base.FINISHED
CANCELLED, NOTIFIED = _base.CANCELLED, _base.CANCELLED_AND_NOTIFIED
ENDED = (NOTIFIED, FINISHED)  # what wait() and as_completed() count as done
SIDES = ("std", "uni")
FREE_THREADED = not getattr(sys, "_is_gil_enabled", lambda: True)()
# The self-test: the standard library on both sides. Any failure then is the test's own fault.
SELF_TEST = os.environ.get("UNIRUN_ORACLE_SELF_TEST") == "1"
UniFuture = cf.Future if SELF_TEST else _unirun.Future


def allowed(*kinds):
    return [k for k in kinds if k not in WITHOUT]


# --- what failed ------------------------------------------------------------------------------
# One class per property: Hypothesis reports distinct failures separately.


class Mismatch(AssertionError):
    """unirun shows something the standard library does not."""


class StateMismatch(Mismatch):
    pass


class OutcomeMismatch(Mismatch):
    pass


class IdentityMismatch(Mismatch):
    pass


class CallbackMismatch(Mismatch):
    pass


class WaiterMismatch(Mismatch):
    pass


class RaceMismatch(Mismatch):
    pass


class ExecutorMismatch(Mismatch):
    pass


class Hang(AssertionError):
    """unirun did not do, within UNIRUN_ORACLE_HANG seconds, what the standard library did."""


class HarnessError(Exception):
    """The standard library did not do what this test's model of it predicts: the test is wrong."""


# --- values and how they are compared ----------------------------------------------------------


class Token:
    """A published value: equal only to itself, so identity shows which write won."""

    __slots__ = ("tag",)

    def __init__(self, tag):
        self.tag = tag

    def __repr__(self):
        return f"Token({self.tag!r})"


class OracleError(Exception):
    pass


class OracleBaseError(BaseException):
    pass


def attempt(fn, *args, **kwargs):
    try:
        return ("returned", fn(*args, **kwargs))
    except BaseException as exc:  # noqa: BLE001 - the outcome is what is compared
        return ("raised", exc)


def exception_shape(exc):
    kind = type(exc)
    name = f"{kind.__module__}.{kind.__qualname__}"
    if isinstance(exc, (OracleError, OracleBaseError, oracle_tasks.OracleTaskError)):
        return (name, exc.args)
    return (name,)  # messages name the future (its id): only the type is comparable


def value_shape(value):
    if isinstance(value, Token):
        return ("token", value.tag)
    if isinstance(value, BaseException):
        return ("exception",) + exception_shape(value)
    if isinstance(value, (tuple, list)):  # a task's value: compared by what it holds
        return ("value", repr(value))
    return value


def describe(outcome):
    how, value = outcome
    return (how,) + (exception_shape(value) if how == "raised" else (value_shape(value),))


def snapshot(future):
    return (future.done(), future.cancelled(), future.running(), future._state)


def wait_until(predicate, limit, on_timeout):
    """Poll predicate() -> (ok, why) until ok; after `limit` seconds call on_timeout(why)."""
    deadline = time.monotonic() + limit
    while True:
        ok, why = predicate()
        if ok:
            return
        if time.monotonic() > deadline:
            on_timeout(why)
            return
        time.sleep(0.0005)


_failed = False


def guard():
    """How long unirun may take to do what the standard library did: HANG, or 3 s once a
    failure was seen (Hypothesis then replays and shrinks it, and every replay of a hang would
    otherwise cost the full HANG)."""
    return min(HANG, 3.0) if _failed else HANG


def note_failure():
    global _failed
    _failed = True


def raise_hang(what):
    def fail(why):
        raise Hang(f"{what} within {guard():g} s: {why}")
    return fail


def raise_harness(what):
    def fail(why):
        raise HarnessError(f"the standard library did not {what}: {why}")
    return fail


def join(thread, limit, error):
    thread.join(limit)
    if thread.is_alive():
        raise error


def in_thread(fn, *args):
    thread = threading.Thread(target=fn, args=args, daemon=True)
    thread.start()
    return thread


def run_together(functions, error):
    """Call each function on its own thread, released as close together as the runtime allows:
    spinning on a free-threaded build, a barrier and a 1 µs switch interval with the GIL (where
    threads interleave only when switched). Their return values, or `error` raised on a hang."""
    n = len(functions)
    arrived = [False] * n
    barrier = threading.Barrier(n, timeout=HANG)
    results = [None] * n
    deadline = time.monotonic() + HANG

    def run(i):
        if FREE_THREADED:
            arrived[i] = True
            spins = 0
            while not all(arrived):
                spins += 1
                if spins > 1000:
                    time.sleep(0)
                    if time.monotonic() > deadline:
                        return
        else:
            barrier.wait()
        results[i] = (functions[i](),)

    interval = sys.getswitchinterval()
    if not FREE_THREADED:
        sys.setswitchinterval(1e-6)
    try:
        threads = [in_thread(run, i) for i in range(n)]
        for thread in threads:
            join(thread, guard() * 2, error)
    finally:
        sys.setswitchinterval(interval)
    if None in results:
        raise error
    return [r[0] for r in results]


# --- step log (for crashes, which Hypothesis cannot report) ------------------------------------

_steps = None


def log_step(text):
    if _steps is not None:
        _steps.write(text + "\n")
        _steps.flush()


def new_example_log():
    if _steps is not None:
        _steps.seek(0)
        _steps.truncate()


def step(fn):
    """A rule: logged before it runs; the machine is compared after it; a failure marks the
    machine broken (teardown then only cleans up)."""

    @functools.wraps(fn)
    def wrapper(self, **kwargs):
        if fn.__name__ in WITHOUT:  # left out by UNIRUN_ORACLE_WITHOUT: a step that does nothing
            return None
        log_step(f"{fn.__name__}({', '.join(f'{k}={v!r}' for k, v in kwargs.items() if k != 'data')})")
        try:
            result = fn(self, **kwargs)
            self.check()
            return result
        except BaseException:
            self.broken = True
            note_failure()
            raise

    return wrapper


# --- waiters: wait() and as_completed() on other threads ----------------------------------------


class Waiter:
    """wait(fs, return_when) or as_completed(fs), once per side, each on its own thread.

    wait() and as_completed() are the standard library's own functions on both sides: they
    install a waiter object in each future's _waiters, and the future tells it add_result,
    add_exception or add_cancelled. The waiter objects are wrapped to record what they are told;
    after every step both sides must have told their waiter the same things (read once the
    futures' conditions are free, so nothing is half told). When a wait() must return follows
    from the standard futures' states; the threads are then joined and their results compared."""

    def __init__(self, name, kind, labels, futures, return_when=None):
        self.name, self.kind, self.labels, self.return_when = name, kind, labels, return_when
        self.futures = futures  # side -> list of futures
        self.label_of = {id(f): label for side in SIDES for f, label in zip(futures[side], labels)}
        self.out = {side: {"yielded": []} for side in SIDES}
        self.told = {side: [] for side in SIDES}  # (what, label) as the waiter object heard them
        self.threads = {}
        self.finished = False

    def __repr__(self):
        return self.name

    def _run(self, side):
        out, fs = self.out[side], self.futures[side]
        try:
            if self.kind == "wait":
                done, not_done = cf.wait(fs, timeout=WAIT_TIMEOUT, return_when=self.return_when)
                out["result"] = (sorted(self.label_of[id(f)] for f in done),
                                 sorted(self.label_of[id(f)] for f in not_done))
            else:
                for f in cf.as_completed(fs, timeout=WAIT_TIMEOUT):
                    out["yielded"].append(self.label_of[id(f)])
                out["result"] = "exhausted"
        except BaseException as exc:  # noqa: BLE001
            out["result"] = ("raised",) + exception_shape(exc)

    def _listen(self, side, waiter):
        told = self.told[side]
        for what in ("add_result", "add_exception", "add_cancelled"):
            def heard(future, what=what, original=getattr(waiter, what)):
                told.append((what, self.label_of.get(id(future), "?")))
                return original(future)
            setattr(waiter, what, heard)

    def start(self):
        self.initially_ended = {label for label, f in zip(self.labels, self.futures["std"]) if f._state in ENDED}
        for side in SIDES:
            fs = self.futures[side]
            before = {id(w) for f in fs for w in f._waiters}
            thread = self.threads[side] = in_thread(self._run, side)
            box = []

            def registered():
                # as_completed() takes its waiter off the futures it has yielded: look at all.
                new = [w for f in fs for w in f._waiters if id(w) not in before]
                if new:
                    box.append(new[0])
                return bool(new) or not thread.is_alive(), "not yet"

            fail = raise_harness(f"register {self}") if side == "std" else raise_hang(f"{self} did not register")
            wait_until(registered, guard(), fail)
            if box:
                # Nothing can finish these futures meanwhile: the test is between two steps.
                self._listen(side, box[0])

    def expected(self):
        """From the standard futures: whether it must have returned, and what it must have
        yielded (as_completed)."""
        fs = self.futures["std"]
        ended = [f._state in ENDED for f in fs]
        yielded = {label for label, e in zip(self.labels, ended) if e}
        if self.kind == "as_completed":
            return all(ended), yielded
        if self.return_when == cf.FIRST_COMPLETED:
            fires = any(ended)
        elif self.return_when == cf.FIRST_EXCEPTION:
            fires = all(ended) or any(f._state == FINISHED and f._exception is not None for f in fs)
        else:
            fires = all(ended)
        return fires, yielded

    def settle(self):
        if self.finished:
            return
        for side in SIDES:
            for future in self.futures[side]:
                condition = future._condition
                if not condition.acquire(timeout=guard()):
                    raise Hang(f"{self}: the condition of a future on {side} stayed locked")
                condition.release()
        told = {side: self.until_it_fires(self.told[side]) for side in SIDES}
        if told["std"] != told["uni"]:
            raise WaiterMismatch(f"{self}: the standard futures told their waiter {told['std']}, "
                                 f"unirun's told theirs {told['uni']}")
        fires, yielded = self.expected()
        if self.kind == "as_completed":
            for side in SIDES:
                out = self.out[side]

                def caught_up(out=out):
                    return set(out["yielded"]) == yielded, f"yielded {sorted(out['yielded'])}, expected {sorted(yielded)}"

                fail = raise_harness(f"yield from {self}") if side == "std" else raise_hang(f"{self} did not yield")
                wait_until(caught_up, guard(), fail)
                if len(out["yielded"]) != len(set(out["yielded"])):
                    raise WaiterMismatch(f"{self} on {side} yielded a future twice: {out['yielded']}")
        if not fires:
            if not self.threads["uni"].is_alive():
                raise WaiterMismatch(f"{self} returned on unirun while the standard one waits: "
                                     f"{self.out['uni'].get('result')}")
            return
        join(self.threads["std"], HANG, HarnessError(f"{self} did not return on the standard side"))
        join(self.threads["uni"], guard(), Hang(f"{self} did not return on unirun, the standard "
                                                f"one returned {self.out['std'].get('result')}"))
        self.finished = True
        results = {side: self.out[side]["result"] for side in SIDES}
        if self.kind == "as_completed" or any(r[0] == "raised" for r in results.values()):
            if results["std"] != results["uni"]:
                raise WaiterMismatch(f"{self}: stdlib returned {results['std']}, unirun {results['uni']}")
            return
        # What wait() returns as done: what had ended when it was called, what fired it, and
        # whatever else ended before its thread took its waiter off the futures: in this step
        # that is a race, in the standard library too.
        lower = self.initially_ended | {label for _, label in told["std"]}
        upper = {label for label, f in zip(self.labels, self.futures["std"]) if f._state in ENDED}
        for side in SIDES:
            done, not_done = map(set, results[side])
            if not lower <= done <= upper or not_done != set(self.labels) - done:
                error = HarnessError if side == "std" else WaiterMismatch
                raise error(f"{self} on {side} returned done={sorted(done)}, not_done={sorted(not_done)}; "
                            f"done must hold {sorted(lower)} and only futures that ended, {sorted(upper)}")

    def until_it_fires(self, told):
        """What the waiter was told up to the notification that makes a wait() return: after
        that its thread takes it off the futures, so whether it hears more is a race."""
        if self.kind != "wait":
            return told
        pending = len(self.labels) - len(self.initially_ended)
        for i, (what, _) in enumerate(told):
            if (self.return_when == cf.FIRST_COMPLETED or i + 1 >= pending
                    or self.return_when == cf.FIRST_EXCEPTION and what == "add_exception"):
                return told[:i + 1]
        return told


# --- shared machinery ------------------------------------------------------------------------------


class CallbackErrorLog(logging.Handler):
    """Counts 'exception calling callback for <future>' records, per future."""

    def __init__(self):
        super().__init__(logging.DEBUG)
        self.futures = Counter()

    def emit(self, record):
        if record.msg == "exception calling callback for %r" and record.args:
            self.futures[id(record.args[0])] += 1


class OracleMachine(RuleBasedStateMachine):
    """Callbacks, identity checks, waiters and the comparison shared by both machines."""

    def __init__(self):
        super().__init__()
        new_example_log()
        self.broken = False
        self.labels = itertools.count()
        self.records = {side: [] for side in SIDES}  # (callback id, label, kind, ...) as they ran
        self.registered = {side: {} for side in SIDES}  # callback id -> label
        self.first_read = {side: {} for side in SIDES}  # label -> the object result()/exception() gave
        self.waiters = []
        self.log = CallbackErrorLog()
        logger = logging.getLogger("concurrent.futures")
        logger.handlers = [self.log]
        logger.propagate = False
        logger.setLevel(logging.DEBUG)

    def future_of(self, item, side):
        raise NotImplementedError

    def all_items(self):
        raise NotImplementedError

    # The object a read gives must be the same every time (and, for manual futures, the very
    # object published): one future, one outcome object.
    def check_identity(self, side, item, value):
        if not isinstance(value, (Token, BaseException, tuple)):
            return
        published = getattr(item, "published", {}).get(side)
        if published is not None and isinstance(value, type(published)) and value is not published:
            raise IdentityMismatch(f"{item} on {side}: read {value!r}, not the object published "
                                   f"({published!r})")
        first = self.first_read[side].setdefault(item.label, value)
        if first is not value:
            raise IdentityMismatch(f"{item} on {side}: two reads gave two objects: {first!r} then {value!r}")

    def read(self, side, item, how, timeout=0):
        future = self.future_of(item, side)
        outcome = attempt(getattr(future, how), timeout=timeout)
        if outcome[0] == "returned" or isinstance(outcome[1], (OracleError, OracleBaseError,
                                                               oracle_tasks.OracleTaskError)):
            self.check_identity(side, item, outcome[1])
        return describe(outcome)

    def make_callback(self, side, cb_id, item, kind):
        records = self.records[side]
        self.registered[side][cb_id] = item.label

        def callback(future):
            entry = [cb_id, item.label, kind, future._state, future.done(), future.cancelled(),
                     threading.current_thread() is MAIN]
            if kind == "read":
                try:
                    entry.append(self.read(side, item, "result"))
                except IdentityMismatch as exc:  # raised in a callback it would only be logged
                    entry.append(("IdentityMismatch", str(exc)))
            elif kind == "followup":
                entry.append(self.followup(side, item))
            records.append(tuple(entry))
            if kind == "raise":
                raise OracleError(f"callback {cb_id}")
            if kind == "raise_base":
                raise OracleBaseError(f"callback {cb_id}")
            if kind == "add_more":
                future.add_done_callback(self.make_callback(side, cb_id + "+", item, "record"))

        return callback

    def followup(self, side, item):
        raise NotImplementedError

    def add_callback(self, item, kind):
        cb_id = f"cb{next(self.labels)}"
        outcomes = {}
        for side in SIDES:
            outcomes[side] = describe(attempt(self.future_of(item, side).add_done_callback,
                                              self.make_callback(side, cb_id, item, kind)))
        self.compare(f"add_done_callback({item}, {kind})", outcomes)

    def compare(self, what, outcomes, error=OutcomeMismatch):
        if outcomes["std"] != outcomes["uni"]:
            raise error(f"{what}: stdlib {outcomes['std']}, unirun {outcomes['uni']}")

    def start_waiter(self, kind, items, return_when=None):
        name = f"{kind}{next(self.labels)}({', '.join(map(repr, items))}" + \
            (f", {return_when})" if return_when else ")")
        waiter = Waiter(name, kind, [i.label for i in items],
                        {side: [self.future_of(i, side) for i in items] for side in SIDES}, return_when)
        self.waiters.append(waiter)
        waiter.start()

    def check(self):
        for waiter in self.waiters:
            waiter.settle()
        for item in self.all_items():
            states = {side: snapshot(self.future_of(item, side)) for side in SIDES}
            if states["std"] != states["uni"]:
                raise StateMismatch(f"{item} (done, cancelled, running, _state): stdlib {states['std']}, "
                                    f"unirun {states['uni']}")
        self.check_callbacks()

    def check_callbacks(self, final=False):
        for side in SIDES:
            counts = Counter(entry[0] for entry in self.records[side])
            twice = [cb for cb, n in counts.items() if n > 1]
            if twice:
                raise CallbackMismatch(f"on {side} callbacks ran more than once: {twice}")
        per_future = {side: {} for side in SIDES}
        for side in SIDES:
            for entry in self.records[side]:
                per_future[side].setdefault(entry[1], []).append(entry)
        if per_future["std"] != per_future["uni"]:
            labels = sorted(set(per_future["std"]) | set(per_future["uni"]))
            diff = [(label, per_future["std"].get(label), per_future["uni"].get(label)) for label in labels
                    if per_future["std"].get(label) != per_future["uni"].get(label)]
            raise CallbackMismatch(f"callbacks (id, future, kind, _state, done, cancelled, on main "
                                   f"thread, read): stdlib/unirun differ: {diff}")
        if final:
            # Every callback ran, except (on the standard side too) those after one that raised
            # a BaseException: that propagates to whoever finished the future.
            missing = {side: sorted(set(self.registered[side]) - {entry[0] for entry in self.records[side]})
                       for side in SIDES}
            if missing["std"] != missing["uni"]:
                raise CallbackMismatch(f"callbacks that never ran: stdlib {missing['std']}, unirun {missing['uni']}")
            logged = {side: sorted(Counter({item.label: self.log.futures[id(self.future_of(item, side))]
                                            for item in self.all_items()}).items()) for side in SIDES}
            if logged["std"] != logged["uni"]:
                raise CallbackMismatch(f"'exception calling callback' log records per future: "
                                       f"stdlib {logged['std']}, unirun {logged['uni']}")

    def final_check(self):
        self.check()
        self.check_callbacks(final=True)
        for waiter in self.waiters:
            if not waiter.finished:
                raise Hang(f"{waiter} never returned although every future ended")


# --- manual futures -----------------------------------------------------------------------------


class Pair:
    def __init__(self, label):
        self.label = label
        self.futures = {"std": cf.Future(), "uni": UniFuture()}
        self.published = {"std": None, "uni": None}

    def __repr__(self):
        return f"f{self.label}"


RACE_OPS = ("set_result", "set_exception", "cancel", "set_running_or_notify_cancel")


def race_apply(future, op, token):
    if op == "set_result":
        return future.set_result(token)
    if op == "set_exception":
        return future.set_exception(token)
    return getattr(future, op)()


def race_observe(future, returns, mine, calls):
    """What a race left: each side's outcome, the future's state, whose object was published
    (a, b or neither) and how often the callback ran."""
    owner = None
    if future.done() and not future.cancelled():
        value = future.exception(timeout=0)
        if value is None:
            value = future.result(timeout=0)
        owner = next((who for who, obj in mine.items() if obj is value), "someone else")
    return (describe(returns[0]), describe(returns[1]), snapshot(future), owner, calls[0])


def race_serial(ops, watched, order):
    """The standard library doing the two operations one after the other."""
    future = cf.Future()
    calls = [0]
    if watched:
        future.add_done_callback(lambda f: calls.__setitem__(0, calls[0] + 1))
    mine = {"a": Token("a") if ops[0] == "set_result" else OracleError("a"),
            "b": Token("b") if ops[1] == "set_result" else OracleError("b")}
    returns = [None, None]
    for i in order:
        returns[i] = attempt(race_apply, future, ops[i], mine["ab"[i]])
    return race_observe(future, returns, mine, calls)


class ManualMachine(OracleMachine):
    """`_unirun.Future()` against `concurrent.futures.Future()`, operation by operation."""

    pairs = Bundle("pairs")

    def __init__(self):
        super().__init__()
        self.all_pairs = []

    def future_of(self, item, side):
        return item.futures[side]

    def all_items(self):
        return self.all_pairs

    @rule(target=pairs)
    @step
    def new_future(self):
        pair = Pair(next(self.labels))
        self.all_pairs.append(pair)
        return pair

    @rule(pair=pairs)
    @step
    def cancel(self, pair):
        self.compare(f"cancel({pair})", {s: describe(attempt(pair.futures[s].cancel)) for s in SIDES})

    @rule(pair=pairs)
    @step
    def set_running_or_notify_cancel(self, pair):
        self.compare(f"set_running_or_notify_cancel({pair})",
                     {s: describe(attempt(pair.futures[s].set_running_or_notify_cancel)) for s in SIDES})

    def publish(self, pair, how, make):
        outcomes = {}
        for side in SIDES:
            value = make()
            outcomes[side] = describe(attempt(getattr(pair.futures[side], how), value))
            if outcomes[side] == ("returned", None) and pair.published[side] is None:
                pair.published[side] = value
        self.compare(f"{how}({pair})", outcomes)

    @rule(pair=pairs)
    @step
    def set_result(self, pair):
        tag = f"v{next(self.labels)}"
        self.publish(pair, "set_result", lambda: Token(tag))

    @rule(pair=pairs, base=st.sampled_from(allowed("error", "base")))
    @step
    def set_exception(self, pair, base):
        tag = f"e{next(self.labels)}"
        self.publish(pair, "set_exception", lambda: (OracleBaseError if base == "base" else OracleError)(tag))

    @rule(pair=pairs, kind=st.sampled_from(allowed("record", "read", "raise", "raise_base", "add_more")))
    @step
    def add_done_callback(self, pair, kind):
        self.add_callback(pair, kind)

    @rule(pair=pairs, how=st.sampled_from(["result", "exception"]),
          timeout=st.sampled_from(allowed(0, -1, "huge")))
    @step
    def read_outcome(self, pair, how, timeout):
        # A timeout past threading.TIMEOUT_MAX: the standard library raises OverflowError for a
        # future that is not done. Read on a helper thread, so that a read which blocks instead
        # shows up as a hang, not as a stuck test.
        if timeout == "huge":
            timeout = threading.TIMEOUT_MAX * 4
        outcomes = {}
        for side in SIDES:
            box = []
            thread = in_thread(lambda: box.append(self.read(side, pair, how, timeout)))
            join(thread, guard(), Hang(f"{pair}.{how}(timeout={timeout}) on {side} did not return"))
            outcomes[side] = box[0] if box else ("raised", "read failed")
        self.compare(f"{pair}.{how}(timeout={timeout})", outcomes)

    @rule(items=st.lists(pairs, min_size=1, max_size=3, unique_by=lambda p: p.label),
          return_when=st.sampled_from([cf.ALL_COMPLETED, cf.FIRST_COMPLETED, cf.FIRST_EXCEPTION]))
    @step
    def wait_on_other_thread(self, items, return_when):
        self.start_waiter("wait", items, return_when)

    @rule(items=st.lists(pairs, min_size=1, max_size=3, unique_by=lambda p: p.label))
    @step
    def as_completed_on_other_thread(self, items):
        self.start_waiter("as_completed", items)

    def teardown(self):
        if self.broken:
            return
        # End every future on both sides (compared as any step); then every waiter must have
        # returned and every callback have run exactly once.
        log_step("teardown")
        for pair in self.all_pairs:
            state = pair.futures["std"]._state
            if state in (PENDING, RUNNING):
                self.set_result(pair=pair)
            elif state == CANCELLED:
                self.set_running_or_notify_cancel(pair=pair)
        self.final_check()



# --- races: two threads, one future -----------------------------------------------------------


def race_side(make, ops, watched, rounds):
    """Two threads do ops[0] and ops[1] at once on `rounds` fresh futures; what each race left."""
    futures = [make() for _ in range(rounds)]
    calls = [[0] for _ in range(rounds)]
    mines = [{"a": Token("a") if ops[0] == "set_result" else OracleError("a"),
              "b": Token("b") if ops[1] == "set_result" else OracleError("b")} for _ in range(rounds)]
    if watched:
        for future, count in zip(futures, calls):
            future.add_done_callback(lambda f, count=count: count.__setitem__(0, count[0] + 1))
    returns = [[None, None] for _ in range(rounds)]
    barrier = threading.Barrier(2, timeout=HANG)
    ready = [[False, False] for _ in range(rounds)]
    deadline = time.monotonic() + HANG * 2

    def racer(i):
        for r in range(rounds):
            if FREE_THREADED:
                # Both threads spin until the other arrives: they leave within a few loop
                # iterations of each other, so the two operations really overlap.
                ready[r][i] = True
                spins = 0
                while not ready[r][1 - i]:
                    spins += 1
                    if spins > 1000:  # the other thread is not running: let it
                        time.sleep(0)
                        if time.monotonic() > deadline:
                            return
            else:
                barrier.wait()  # with the GIL a spinning thread would hold it for 5 ms
            returns[r][i] = attempt(race_apply, futures[r], ops[i], mines[r]["ab"[i]])

    threads = [in_thread(racer, 0), in_thread(racer, 1)]
    for thread in threads:
        join(thread, HANG * 2, Hang(f"racing {ops} did not finish"))
    if any(None in pair for pair in returns):
        raise Hang(f"racing {ops}: a racer did not finish (barrier broken)")
    return [race_observe(futures[r], returns[r], mines[r], calls[r]) for r in range(rounds)]


def run_races(rounds):
    """Every pair of set_result, set_exception, cancel and set_running_or_notify_cancel, with
    and without a callback, raced `rounds` times by two threads on fresh futures: what each
    thread saw and what the future shows must be what one of the two serial orders gives on a
    standard future (so the outcome read is the one published by the winner). Races are not
    reproducible, so this is an exhaustive loop rather than a Hypothesis search."""
    logger = logging.getLogger("concurrent.futures")
    logger.handlers = [logging.NullHandler()]  # the "unexpected state" lines of the serial runs
    logger.propagate = False
    if not FREE_THREADED:
        # With the GIL, two operations interleave only where the running thread is switched
        # out: switch far more often than every 5 ms, so that they do.
        sys.setswitchinterval(1e-6)
    failures = []
    for ops in itertools.product(RACE_OPS, repeat=2):
        for watched in (False, True):
            serial = {race_serial(ops, watched, (0, 1)), race_serial(ops, watched, (1, 0))}
            for side, make in (("std", cf.Future), ("uni", UniFuture)):
                seen = race_side(make, ops, watched, rounds)
                bad = Counter(s for s in seen if s not in serial)
                if bad:
                    who = "HARNESS ERROR: the standard library" if side == "std" else "unirun"
                    failures.append(f"{who}: {ops[0]} and {ops[1]} at once (callback: {watched}): "
                                    f"{sum(bad.values())} of {rounds} races gave what no serial order "
                                    f"gives: {dict(bad)}; serial orders give {sorted(serial, key=repr)}")
    if failures:
        raise RaceMismatch("\n".join(failures))


# --- reads: several threads read one outcome at once ---------------------------------------------


def run_reads(rounds):
    """For each executor (and the standard pool), `rounds` calls that return a value and as many
    that raise; once each has ended, 2-4 threads read it at once (its first read, which for an
    interpreter call decodes the outcome), then once more: every read gives one and the same
    object, as the standard library's do. Not reproducible, so a loop, not a Hypothesis search."""
    failures = []
    for name, make in (("std", StdThreadPool), *(() if SELF_TEST else tuple(FLAVORS.items()))):
        with make(2) as executor:
            futures = [executor.submit(oracle_tasks.finish, f"{kind}{i}", kind)
                       for i in range(rounds) for kind in ("value", "raise")]
            cf.wait(futures, timeout=WAIT_TIMEOUT)
            differ = Counter()
            for i, future in enumerate(futures):
                how = ("result", "exception")[i // 2 % 2]
                readers = 2 + i % 3
                outs = run_together([functools.partial(attempt, getattr(future, how), timeout=0)] * readers,
                                    Hang(f"{readers} threads reading a future of {name} did not finish"))
                outs.append(attempt(future.result, timeout=0))
                objects = [value for _, value in outs if value is not None]
                if any(obj is not objects[0] for obj in objects):
                    differ[(future.exception(timeout=0) is None and "value" or "exception", how)] += 1
            if differ:
                who = "HARNESS ERROR: the standard library" if name == "std" else name
                failures.append(f"{who}: after concurrent first reads, some futures gave several objects: "
                                f"{dict(differ)} (of {rounds} futures each)")
    if failures:
        raise IdentityMismatch("\n".join(failures))


# --- executor futures ------------------------------------------------------------------------------


class Task:
    """One submitted call, on both sides: its future and its pipes, and the model's view."""

    def __init__(self, label, kind):
        self.label, self.kind = label, kind
        self.futures, self.pipes, self.started = {}, {}, {"std": False, "uni": False}
        self.status = "queued"  # queued, running, finished or cancelled (the model)
        self.reached = False  # a worker took it off the queue (or a shutdown drained it)
        self.notified = False  # set_running_or_notify_cancel() was called on it by the test
        self.followups = 0

    def __repr__(self):
        return f"t{self.label}"


FLAVORS = {"threads": ThreadExecutor, "compat": CompatThreadPoolExecutor, "interpreters": InterpreterExecutor}


class ExecutorMachine(OracleMachine):
    """Futures of a unirun executor against the standard ThreadPoolExecutor's."""

    FLAVOR = None

    def __init__(self):
        super().__init__()
        self.executors = {}
        self.all_tasks, self.queue = [], []
        self.workers = 0
        self.dead_std_workers = 0
        self.shut = False
        self.sealed = False  # no more submits: a standard worker will die on a notified task
        self.shutdown_threads = []
        self.fds = []

    def future_of(self, item, side):
        return item.futures[side]

    def all_items(self):
        return self.all_tasks

    @initialize(workers=st.sampled_from([1, 2]))
    def start_executors(self, workers):
        log_step(f"start_executors(workers={workers}) flavor={self.FLAVOR}")
        self.workers = workers
        uni = StdThreadPool if SELF_TEST else FLAVORS[self.FLAVOR]
        self.executors = {"std": StdThreadPool(workers), "uni": uni(workers)}

    # --- the model of the standard pool -----------------------------------------------------

    def free_workers(self):
        return self.workers - self.dead_std_workers - sum(t.status == "running" for t in self.all_tasks)

    def advance_model(self):
        """Idle workers take queued calls, in order; a cancelled one is skipped (notified)."""
        free = self.free_workers()
        while free > 0 and self.queue:
            task = self.queue.pop(0)
            task.reached = True
            if task.status == "cancelled":
                if task.notified:  # the standard worker raises RuntimeError and dies
                    self.dead_std_workers += 1
                    free -= 1
                continue
            task.status = "running"
            free -= 1

    def expected_state(self, task):
        if task.status == "running":
            return RUNNING
        if task.status == "finished":
            return FINISHED
        if task.status == "cancelled":
            return NOTIFIED if task.reached or task.notified else CANCELLED
        return PENDING

    def poll_started(self, side):
        waiting = {t.pipes[side][0]: t for t in self.all_tasks if not t.started[side]}
        if not waiting:
            return
        ready, _, _ = select.select(list(waiting), [], [], 0)
        for fd in ready:
            os.read(fd, 1)
            waiting[fd].started[side] = True

    def settled(self, side):
        self.poll_started(side)
        ran = {entry[0] for entry in self.records[side]}
        for task in self.all_tasks:
            future = task.futures[side]
            want = self.expected_state(task)
            if want == RUNNING and not task.started[side]:
                return False, f"{task} has not started"
            if future._state != want:
                return False, f"{task} is {future._state}, expected {want}"
            if want in (FINISHED, CANCELLED, NOTIFIED):
                missing = [cb for cb, label in self.registered[side].items() if label == task.label and cb not in ran]
                if missing:
                    return False, f"callbacks {missing} of {task} have not run"
        return True, ""

    def settle(self):
        self.advance_model()
        wait_until(lambda: self.settled("std"), HANG * 2, raise_harness("reach the state the model predicts"))
        wait_until(lambda: self.settled("uni"), guard() * 2, raise_hang("unirun did not reach the standard library's state"))
        for task in self.all_tasks:
            for side in SIDES:
                if task.status == "queued" and task.started[side]:
                    error = HarnessError if side == "std" else ExecutorMismatch
                    raise error(f"{task} started on {side} while every worker was busy before it")
                if task.status == "cancelled" and task.started[side]:
                    error = HarnessError if side == "std" else ExecutorMismatch
                    raise error(f"{task} ran on {side} although it was cancelled")

    def check(self):
        self.settle()
        super().check()

    # --- rules ---------------------------------------------------------------------------------

    @rule(kind=st.sampled_from(allowed("value", "raise", "inner")))
    @step
    def submit(self, kind):
        if self.sealed:
            return
        task = Task(next(self.labels), kind)
        outcomes = {}
        for side in SIDES:
            started_r, started_w = os.pipe()
            release_r, release_w = os.pipe()
            self.fds += [started_r, started_w, release_r, release_w]
            task.pipes[side] = (started_r, release_w)
            task_kind = f"inner-{'std' if SELF_TEST else side}" if kind == "inner" else kind
            outcome = attempt(self.executors[side].submit, oracle_tasks.gated, started_w, release_r,
                              task.label, task_kind, TASK_HANG)
            if outcome[0] == "returned":
                task.futures[side] = outcome[1]
            outcomes[side] = describe(outcome) if outcome[0] == "raised" else "a future"
        self.compare(f"submit({kind})", outcomes, ExecutorMismatch)
        if outcomes["std"] != "a future":
            return
        log_step(f"  -> {task}")
        self.all_tasks.append(task)
        self.queue.append(task)

    # Rules draw the call they act on from the calls in the state that matters most first:
    # Hypothesis favours (and shrinks towards) the first of a sampled_from.

    def by_status(self, *order):
        rank = {status: i for i, status in enumerate(order)}
        return sorted(self.all_tasks, key=lambda t: rank.get(t.status, len(order)))

    def pick(self, data, candidates, what="task"):
        task = data.draw(st.sampled_from(candidates), label=what)
        log_step(f"  {what} = {task}")
        return task

    def pick_some(self, data, candidates):
        tasks = data.draw(st.lists(st.sampled_from(candidates), min_size=1, max_size=4, unique=True), label="tasks")
        log_step(f"  tasks = {tasks}")
        return tasks

    def running(self):
        return [t for t in self.all_tasks if t.status == "running"]

    @precondition(lambda self: self.running())
    @rule(data=st.data())
    @step
    def release(self, data):
        self.release_task(self.pick(data, self.running()))

    def followup_can_run(self):
        # The worker that finishes the task runs the callback and blocks in it: the follow-up
        # needs another worker that is free, or the standard pool deadlocks too.
        return self.free_workers() >= 1

    def release_task(self, task):
        if task.followups and not self.followup_can_run():
            return
        for side in SIDES:
            os.write(task.pipes[side][1], b"r")
        task.status = "finished"

    @precondition(lambda self: self.all_tasks)
    @rule(data=st.data())
    @step
    def cancel(self, data):
        task = self.pick(data, self.by_status("queued", "running", "cancelled", "finished"))
        outcomes = {s: describe(attempt(task.futures[s].cancel)) for s in SIDES}
        self.compare(f"cancel({task})", outcomes)
        if outcomes["std"] == ("returned", True) and task.status == "queued":
            task.status = "cancelled"

    @precondition(lambda self: self.all_tasks)
    @rule(data=st.data())
    @step
    def set_running_or_notify_cancel(self, data):
        task = self.pick(data, self.by_status("running", "finished", "cancelled", "queued"))
        # Only where the standard pool survives it: on a call that is running or has ended it
        # raises RuntimeError and changes nothing. (On a queued call the standard worker that
        # reaches it would die; a cancelled one has its own rule below.)
        if task.status == "queued" or task.status == "cancelled" and not task.reached:
            return
        self.compare(f"set_running_or_notify_cancel({task})",
                     {s: describe(attempt(task.futures[s].set_running_or_notify_cancel)) for s in SIDES})

    def notifiable(self):
        """A cancelled call still queued, last in the queue: set_running_or_notify_cancel() on it
        is allowed. In the standard pool the worker that later reaches it dies of RuntimeError,
        so nothing may be queued after it (no more submits), and no follow-up callback may need
        a worker."""
        if "notify_cancelled" in WITHOUT or not self.queue or any(t.followups for t in self.all_tasks):
            return None
        task = self.queue[-1]
        return task if task.status == "cancelled" and not task.notified else None

    @precondition(lambda self: self.notifiable() is not None)
    @rule()
    @step
    def notify_cancelled_queued(self):
        task = self.notifiable()
        task.notified = True
        self.sealed = True
        self.compare(f"set_running_or_notify_cancel({task})",
                     {s: describe(attempt(task.futures[s].set_running_or_notify_cancel)) for s in SIDES})

    @precondition(lambda self: self.all_tasks)
    @rule(data=st.data(), kind=st.sampled_from(allowed("record", "read", "raise")))
    @step
    def add_done_callback(self, data, kind):
        self.add_callback(self.pick(data, self.by_status("queued", "running", "cancelled", "finished")), kind)

    @precondition(lambda self: "followup" not in WITHOUT and self.workers >= 2 and not self.sealed
                  and not any(t.followups for t in self.all_tasks if t.status == "running"))
    @rule(data=st.data())
    @step
    def add_followup_callback(self, data):
        """A done-callback on a running call that submits follow-up work and waits for it."""
        if not self.running():
            return
        task = self.pick(data, self.running())
        task.followups += 1
        self.add_callback(task, "followup")

    def followup(self, side, task):
        outcome = attempt(self.executors[side].submit, oracle_tasks.plain, task.label)
        if outcome[0] == "returned":
            outcome = attempt(outcome[1].result, timeout=guard())
        return describe(outcome)

    @precondition(lambda self: self.all_tasks)
    @rule(data=st.data(), how=st.sampled_from(["result", "exception"]), timeout=st.sampled_from(allowed(0, -1, "huge")))
    @step
    def read_outcome(self, data, how, timeout):
        task = self.pick(data, self.by_status("finished", "running", "queued", "cancelled"))
        if timeout == "huge":
            timeout = threading.TIMEOUT_MAX * 4
        outcomes = {}
        for side in SIDES:
            box = []
            thread = in_thread(lambda: box.append(self.read(side, task, how, timeout)))
            join(thread, guard(), Hang(f"{task}.{how}(timeout={timeout}) on {side} did not return"))
            outcomes[side] = box[0] if box else ("raised", "read failed")
        self.compare(f"{task}.{how}(timeout={timeout})", outcomes)

    @precondition(lambda self: self.all_tasks)
    @rule(data=st.data(), return_when=st.sampled_from([cf.ALL_COMPLETED, cf.FIRST_COMPLETED, cf.FIRST_EXCEPTION]))
    @step
    def wait_on_other_thread(self, data, return_when):
        self.start_waiter("wait", self.pick_some(data, self.by_status("queued", "cancelled", "running", "finished")),
                          return_when)

    @precondition(lambda self: self.all_tasks)
    @rule(data=st.data())
    @step
    def as_completed_on_other_thread(self, data):
        self.start_waiter("as_completed", self.pick_some(data, self.by_status("queued", "cancelled", "running", "finished")))

    def shut_flag(self, side):
        executor = self.executors[side]
        if side == "std" or self.FLAVOR == "compat" or SELF_TEST:
            with executor._shutdown_lock:  # held by shutdown() while it drains the queue
                return executor._shutdown
        return executor._pool.is_shut_down

    @rule(cancel_futures=st.booleans(), wait=st.booleans())
    @step
    def shutdown(self, cancel_futures, wait):
        """shutdown(wait=False) here, or shutdown(wait=True) on another thread (it returns once
        every call has ended: at the latest when teardown releases them).

        Only the first shutdown goes to another thread: the test knows that the standard one has
        drained its queue when its shutdown flag is set (both happen under one lock); for a
        second shutdown the flag says nothing."""
        drained = [t for t in self.queue] if cancel_futures else []
        on_thread = wait and not self.shut
        for side in SIDES:
            executor = self.executors[side]
            if on_thread:
                self.shutdown_threads.append(
                    (side, in_thread(functools.partial(executor.shutdown, wait=True, cancel_futures=cancel_futures))))
                fail = raise_harness("shut down") if side == "std" else raise_hang("shutdown did not take effect")
                wait_until(lambda: (self.shut_flag(side), "not shut down"), HANG if side == "std" else guard(), fail)
            else:
                executor.shutdown(wait=False, cancel_futures=cancel_futures)
            if side == "std" or SELF_TEST:
                # The standard pool leaves what it drained CANCELLED and never tells waiters; a
                # worker reaching it would (see the module docstring).
                for task in drained:
                    if task.futures[side]._state == CANCELLED:
                        task.futures[side].set_running_or_notify_cancel()
        self.shut = True
        for task in drained:
            task.status, task.reached = "cancelled", True
        if cancel_futures:
            self.queue.clear()

    def teardown(self):
        try:
            if not self.broken:
                self.finish_everything()
        finally:
            for task in self.all_tasks:  # whatever happened, let no worker wait for its gate
                for side in SIDES:
                    if side in task.pipes:
                        try:
                            os.write(task.pipes[side][1], b"r")
                        except OSError:
                            pass
            threads = [in_thread(functools.partial(executor.shutdown, wait=True, cancel_futures=True))
                       for executor in self.executors.values()]
            for thread in threads:
                thread.join(HANG)
            if not any(thread.is_alive() for thread in threads):
                for fd in self.fds:
                    os.close(fd)
            # else the fds stay open: a stuck worker may still read one

    def finish_everything(self):
        # Release running calls one at a time (one with a follow-up callback last, when another
        # worker is free for its follow-up), comparing after each.
        while True:
            running = [t for t in self.all_tasks if t.status == "running"]
            if not running:
                break
            running.sort(key=lambda t: t.followups)
            task = running[0]
            if task.followups and not self.followup_can_run():
                raise HarnessError(f"{task} has a follow-up callback and no worker is free for it")
            log_step(f"teardown: release({task})")
            self.release_task(task)
            self.check()
        for side in SIDES:
            executor = self.executors[side]
            thread = in_thread(functools.partial(executor.shutdown, wait=True))
            error = HarnessError if side == "std" else Hang
            join(thread, HANG * 2 if side == "std" else guard() * 2, error(f"shutdown(wait=True) on {side} did not return"))
        for side, thread in self.shutdown_threads:
            error = HarnessError if side == "std" else Hang
            join(thread, HANG * 2 if side == "std" else guard() * 2,
                 error(f"shutdown(wait=True) on another thread on {side} did not return"))
        self.final_check()
        for task in self.all_tasks:
            for side in SIDES:
                if not task.futures[side].done():
                    raise Hang(f"{task} on {side} never ended")


def executor_machine(flavor):
    return type(f"ExecutorMachine_{flavor}", (ExecutorMachine,), {"FLAVOR": flavor})


MACHINES = {
    "manual": ManualMachine,
    "threads": executor_machine("threads"),
    "compat": executor_machine("compat"),
    "interpreters": executor_machine("interpreters"),
}

# Examples per machine for the ci profile: each machine well under the time the test allows it
# on 2 busy cores, in either thread mode.
CI_EXAMPLES = {"manual": 250, "threads": 150, "compat": 150, "interpreters": 60}

# Shrinking stops after this long (Hypothesis's own limit is 300 s; a pinned version, see
# scripts/bootstrap). The failure is reported either way, shrunk as far as it got.
_engine.MAX_SHRINKING_SECONDS = int(os.environ.get("UNIRUN_ORACLE_SHRINK_SECONDS", "60"))

settings.register_profile(
    "ci", derandomize=True, database=None, deadline=None, print_blob=False, stateful_step_count=25,
    suppress_health_check=list(HealthCheck))
settings.register_profile(
    "dev", derandomize=False, database=None, deadline=None, print_blob=True, stateful_step_count=50,
    max_examples=1000, suppress_health_check=list(HealthCheck))


def main(argv=None):
    """Run one machine; exit status 0 when unirun matched the standard library throughout."""
    global _steps
    argv = sys.argv[1:] if argv is None else argv
    name = argv[0]
    profile = os.environ.get("UNIRUN_ORACLE_PROFILE", "ci")
    overrides = {}
    if "UNIRUN_ORACLE_EXAMPLES" in os.environ:
        overrides["max_examples"] = int(os.environ["UNIRUN_ORACLE_EXAMPLES"])
    elif profile == "ci" and name in CI_EXAMPLES:
        overrides["max_examples"] = CI_EXAMPLES[name]
    if os.environ.get("UNIRUN_ORACLE_STEPS"):
        _steps = open(os.environ["UNIRUN_ORACLE_STEPS"], "w")
    faulthandler.enable()
    # The watchdog of last resort: a hang in the main thread (in C, where no join can time out)
    # dumps every thread and ends the process.
    faulthandler.dump_traceback_later(float(os.environ.get("UNIRUN_ORACLE_WATCHDOG", "900")), exit=True)
    started = time.monotonic()
    status = 0
    try:
        if name == "races":
            run_races(int(os.environ.get("UNIRUN_ORACLE_ROUNDS", "200" if profile == "ci" else "5000")))
        elif name == "reads":
            run_reads(int(os.environ.get("UNIRUN_ORACLE_ROUNDS", "100" if profile == "ci" else "2000")))
        else:
            run_state_machine_as_test(MACHINES[name], settings=settings(settings.get_profile(profile), **overrides))
        print(f"oracle {name}: unirun matched the standard library "
              f"({time.monotonic() - started:.1f} s)")
    except BaseException:  # noqa: BLE001 - report everything, then leave at once
        traceback.print_exc()
        print(f"oracle {name}: FAILED after {time.monotonic() - started:.1f} s")
        status = 1
    sys.stdout.flush()
    sys.stderr.flush()
    # Leave without joining threads: after a failure some may be stuck by design.
    os._exit(status)


if __name__ == "__main__":
    main()
