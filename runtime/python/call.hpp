// A submitted call: the scheduler task, its outcome, and the future waiting on it.
//
// Threading rules. A Call belongs to the interpreter that submitted it (its owner). Python
// objects held by a Call are owner objects and are only touched attached to the owner; calls
// that run on interpreter workers hold no Python objects at all (only bytes), so their last
// reference may drop anywhere. The outcome, the final state and `observed` change under `mutex`.
#pragma once

#include "python/ref.hpp"
#include "scheduler/scheduler.hpp"

#include <Python.h>

#include <chrono>
#include <condition_variable>
#include <mutex>
#include <string>

namespace unirun::python {

// What a worker thread is, for the task it runs: set by the worker loop.
struct WorkerContext {
    PyThreadState *home = nullptr;  // thread state in the owner interpreter
    bool in_subinterpreter = false;
    PyObject *run_call = nullptr;   // unirun._native.run_call in the worker's subinterpreter
    std::string broken;             // set when the worker could not start: every task fails with it
};

extern thread_local WorkerContext *current_worker;

class Call : public scheduler::Task {
   public:
    enum class Kind { Thread, Interpreter, Manual };
    enum class Outcome { None, Value, Exception, RemoteValue, RemoteException, Broken };

    explicit Call(Kind kind) : kind_(kind) {}
    ~Call() override;

    Kind kind() const { return kind_; }

    // Thread kind: the call itself (owner objects, released as soon as it has run).
    void set_call(PyObject *fn, PyObject *args, PyObject *kwargs);
    // Interpreter kind: the pickled (fn, args, kwargs).
    void set_payload(std::string payload) { payload_ = std::move(payload); }

    bool run() override;
    void skip() override;

    // Completion from Python (set_result / set_exception on a future), attached to the owner.
    bool finish_local(PyObject *value, bool is_exception);

    // Waits, detached, until the call is done or the timeout passes; false on timeout, and
    // -1 with an exception set when a signal handler raised.
    int wait_done(double timeout_seconds);

    bool is_done() const;

    // cancel() of the future: true if cancelled (now or before). Attached to the owner.
    bool cancel(PyObject *future);

    // The future registers a Python observer (condition, waiter list or callback): from now on
    // completion must notify it in the owner interpreter, and the call keeps the future alive.
    // Runs `append` (which must not call back into this Call) under the lock; returns false if
    // the call is already done (the observer must then act at once).
    template <class Append>
    bool observe(PyObject *future, Append append) {
        std::lock_guard lock(mutex_);
        if (done_locked()) return false;
        if (!observed_) {
            observed_ = true;
            future_ = Py_NewRef(future);
        }
        append();
        return true;
    }

    // The outcome for the owner (attached): returns a new reference to the value or the
    // exception, with is_exception set; remote outcomes are decoded by the caller.
    Outcome outcome() const { return outcome_; }
    PyObject *local_value() const { return value_; }
    const std::string &remote_data() const { return remote_; }
    const std::string &broken_message() const { return remote_; }

    // Leaves a pending call finished with a "broken" outcome (pool could not start a worker).
    void fail_broken(const std::string &message);

   private:
    bool done_locked() const {
        auto s = state();
        return s == Cancelled || s == CancelledNotified || s == Finished;
    }
    // Sets the final state and returns the future to notify (or null if nobody observes).
    PyObject *complete_locked(State state);
    void notify(PyObject *future_or_null, const char *event, bool consume);
    bool run_local();
    bool run_remote();

    const Kind kind_;
    mutable std::mutex mutex_;
    std::condition_variable done_cv_;
    bool observed_ = false;
    bool cancel_announced_ = false;  // cancel() already ran the callbacks
    PyObject *future_ = nullptr;     // strong ref while observed and not yet finally notified

    PyObject *fn_ = nullptr, *args_ = nullptr, *kwargs_ = nullptr;
    std::string payload_;

    Outcome outcome_ = Outcome::None;
    PyObject *value_ = nullptr;  // Value or Exception (owner object)
    std::string remote_;         // RemoteValue / RemoteException bytes, or the Broken message
};

using CallPtr = std::shared_ptr<Call>;

// Calls unirun._native.NAME(*args) in the current interpreter.
Ref call_native(const char *name, PyObject *args);

}  // namespace unirun::python
