// A submitted call: the scheduler task, its outcome, and the future waiting on it.
//
// Ownership. A Call belongs to the interpreter that made it (its owner, recorded at creation).
// Python objects held by a Call are owner objects and are only touched attached to the owner.
// Every state change that Python code can observe (waiters, the future's condition, done
// callbacks) is delivered attached to the owner, from whatever thread makes the change: a
// subinterpreter worker switches to its home thread state there, any other thread borrows a
// temporary one.
//
// Publication. A state change and its outcome are published together, by the one transition
// that wins (under `mutex_`): a loser's outcome is never visible. The outcome, the final state
// and `observed_` change under `mutex_`.
#pragma once

#include "python/ref.hpp"
#include "scheduler/scheduler.hpp"

#include <Python.h>

#include <chrono>
#include <condition_variable>
#include <mutex>
#include <string>
#include <vector>

namespace unirun::python {

class ProcessChild;

// What a worker thread is, for the task it runs: set by the worker loop.
struct WorkerContext {
    PyThreadState *home = nullptr;  // thread state in the interpreter that owns the pool
    bool in_subinterpreter = false;
    // In the worker's subinterpreter (owned by the worker loop):
    PyObject *loads = nullptr;       // pickle.loads
    PyObject *dumps = nullptr;       // pickle.dumps
    PyObject *by_code = nullptr;     // marshalled code -> the function rebuilt from it (a dict)
    PyObject *native = nullptr;      // unirun._native, for the slow paths
    PyObject *name = nullptr;        // the worker thread's name, as its creator sees it
    bool thread_adopted = false;     // threading, in the subinterpreter, knows this thread by name
    std::string broken;              // set when the worker could not start: every task fails with it
    ProcessChild *process = nullptr; // a process worker's child (attached to home, the owner)
};

// How a value crossed between interpreters: by marshal (exact for the simple built-in types,
// and cheaper) or by pickle protocol 5.
enum class Encoding : char { Marshal = 'M', Pickle = 'P' };

// Encodes `value` for another interpreter; false with an exception set if it cannot.
bool encode_value(PyObject *value, PyObject *dumps, std::string *out, Encoding *encoding);
// Decodes in the current interpreter; a new reference, or null with an exception set.
PyObject *decode_value(const std::string &data, Encoding encoding, PyObject *loads);

extern thread_local WorkerContext *current_worker;

// In a worker's subinterpreter: once threading is imported there, name this thread for it
// (unirun._native.adopt_worker_thread). Cheap until then: one dict lookup.
void adopt_worker_thread(WorkerContext *worker);

class Call : public scheduler::Task {
   public:
    enum class Kind { Thread, Interpreter, Process, Manual };
    enum class Outcome { None, Value, Exception, RemoteValue, RemoteException, Broken };
    // What happens to a call, as concurrent.futures names it to waiters.
    enum class Event { Result, Exception, Cancel, Cancelled };
    enum Commit { Refused = 0, Changed = 1, Already = 2 };
    // concurrent.futures' CANCELLED_AND_NOTIFIED: the waiters have been told of the cancel.
    static constexpr State CancelledNotified = FirstOwnState;
    // concurrent.futures' index of a state: PENDING, RUNNING, CANCELLED, CANCELLED_AND_NOTIFIED,
    // FINISHED (ModuleState::state_names).
    static int futures_state_index(State s) {
        switch (s) {
            case Pending: return 0;
            case Running: return 1;
            case Cancelled: return 2;
            case Finished: return 4;
            default: return 3;
        }
    }

    // An outcome on its way to being published: moved into the Call only by the transition
    // that wins. `value` is a strong reference to an owner object (Value, Exception).
    struct Delivery {
        Outcome kind = Outcome::None;
        PyObject *value = nullptr;
        std::string data;  // remote bytes, or the Broken message
        Encoding encoding = Encoding::Pickle;
    };

    // `owner`: the interpreter the caller is attached to.
    Call(Kind kind, PyInterpreterState *owner) : kind_(kind), owner_(owner) {}
    ~Call() override;

    Kind kind() const { return kind_; }
    PyInterpreterState *owner() const { return owner_; }

    // Thread kind: the call itself (owner objects, released as soon as it has run).
    void set_call(PyObject *fn, PyObject *args, PyObject *kwargs);
    // Interpreter and process kinds: the pickled (fn, args, kwargs), and for process calls the
    // pickle's out-of-band buffers (owner memoryviews, C-contiguous), sent raw beside it.
    void set_payload(std::string payload) { payload_ = std::move(payload); }
    void set_buffers(std::vector<PyObject *> buffers) { buffers_ = std::move(buffers); }
    const std::string &payload() const { return payload_; }
    const std::vector<PyObject *> &buffers() const { return buffers_; }
    // Once sent: attached to the owner (the buffers are owner objects).
    void drop_payload();

    // An outcome encoded by a worker elsewhere (value or exception bytes): delivered as is,
    // decoded by the owner when read.
    void finish_remote(bool ok, std::string data, Encoding encoding);

    bool start() override;
    bool run() override;
    // The scheduler's skip, on a worker: an error raised by a callback is reported there.
    void skip() override;
    // The same for a caller attached to the owner (shutdown, a broken pool): a callback's
    // BaseException (Ctrl-C) stays raised for the caller to propagate.
    void notify_skipped();

    // Starts `other` together with this call: the worker runs this call only if it can also
    // move `other` from pending to running (a future that stands for this call, e.g. one
    // whose outcome may come from elsewhere). Only the atomic state of `other` is touched.
    void start_with(std::shared_ptr<Call> other) { start_with_ = std::move(other); }

    // set_result / set_exception, attached to the owner: true if this call won. A notification
    // may leave a Python exception set (a signal handler raised): the caller checks.
    bool finish_local(PyObject *future, PyObject *value, bool is_exception);

    // Waits, detached, until the call is done or the timeout passes: 1 done, 0 timed out,
    // -1 with an exception set when a signal handler raised. `timeout_seconds` < 0: forever.
    int wait_done(double timeout_seconds);

    // done() as concurrent.futures means it: finished or cancelled (notified or not).
    bool is_done() const;

    // cancel() of the future: true if cancelled (now or before). Attached to the owner.
    bool cancel(PyObject *future);
    // set_running_or_notify_cancel() for a call that did not start: the Cancelled event.
    Commit notify_cancelled(PyObject *future);

    // The future registers a Python observer: from now on every state change happens under
    // the future's condition, attached to the owner, and the call keeps the future alive until
    // its final change. Runs `append` (which must not call back into this Call) under the lock.
    //
    // Waiters (wait(), as_completed(), the condition) need every event still to come, so they
    // observe until the final state; a cancelled call that has not yet notified its waiters
    // still has one. Callbacks run once the call is done (finished or cancelled): for those
    // `until_done` is true. Returns false if there is nothing left to observe.
    template <class Append>
    bool observe(PyObject *future, bool until_done, Append append) {
        auto lock = lock_attached();
        if (until_done ? done_locked() : final_locked()) return false;
        if (!observed_) {
            observed_ = true;
            future_ = Py_NewRef(future);
        }
        append();
        return true;
    }

    // Makes the state change for `event` (publishing `delivery` if it wins). Used by the
    // notification protocol of future.cpp, which holds the future's condition around it.
    Commit commit(Event event, Delivery *delivery, PyObject **release);

    // The future, while observed and not final (a new reference; attached to the owner).
    PyObject *observed_future();

    Outcome outcome() const { return outcome_; }
    PyObject *local_value() const { return value_; }
    const std::string &remote_data() const { return remote_; }
    Encoding remote_encoding() const { return encoding_; }
    const std::string &broken_message() const { return remote_; }

    // Finishes a pending call with a "broken" outcome (its worker could not start).
    void fail_broken(const std::string &message);

   private:
    // Locks mutex_ from an attached thread. observe() runs Python (a list append) under it, which
    // may wait on a free-threaded critical section: a thread that blocked on mutex_ while
    // attached could then hold up a stop-the-world forever. So a contended lock is waited for
    // detached.
    std::unique_lock<std::mutex> lock_attached() const;
    bool done_locked() const {
        auto s = state();
        return s == Cancelled || s == CancelledNotified || s == Finished;
    }
    bool final_locked() const {
        auto s = state();
        return s == CancelledNotified || s == Finished;
    }
    Commit commit_locked(Event event, Delivery *delivery, PyObject **release);
    // The state change for `event`: natively when nobody observes, else delivered to the
    // observers attached to the owner.
    Commit change(Event event, Delivery *delivery, PyObject *future_hint);
    bool run_local();
    bool run_remote();
    bool finish_with_owner_copy(WorkerContext *worker, PyObject *result);

    const Kind kind_;
    PyInterpreterState *const owner_;
    mutable std::mutex mutex_;
    std::condition_variable done_cv_;
    bool observed_ = false;
    bool cancel_announced_ = false;  // the Cancel event already happened
    PyObject *future_ = nullptr;     // strong ref while observed and not yet in a final state

    PyObject *fn_ = nullptr, *args_ = nullptr, *kwargs_ = nullptr;
    std::string payload_;
    std::vector<PyObject *> buffers_;
    std::shared_ptr<Call> start_with_;

    Outcome outcome_ = Outcome::None;
    PyObject *value_ = nullptr;  // Value or Exception (owner object)
    std::string remote_;         // RemoteValue / RemoteException bytes, or the Broken message
    Encoding encoding_ = Encoding::Pickle;
};

using CallPtr = std::shared_ptr<Call>;

// Defined by future.cpp: delivers `event` to the observers of `future` (its condition, waiters
// and callbacks) exactly as concurrent.futures.Future does, committing the change while it
// holds the future's condition. Attached to the call's owner.
Call::Commit deliver_observed(PyObject *future, Call &call, Call::Event event,
                              Call::Delivery *delivery);

// Calls unirun._native.NAME(*args) in the current interpreter.
Ref call_native(const char *name, PyObject *args);

// The thread state this thread has attached, or null (never fails).
PyThreadState *attached_thread_state();

}  // namespace unirun::python
