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
    // In the worker's subinterpreter (owned by the worker loop):
    PyObject *loads = nullptr;       // pickle.loads
    PyObject *dumps = nullptr;       // pickle.dumps
    PyObject *native = nullptr;      // unirun._native, for the slow paths
    PyObject *name = nullptr;        // the worker thread's name, as its creator sees it
    bool thread_adopted = false;     // threading, in the subinterpreter, knows this thread by name
    std::string broken;              // set when the worker could not start: every task fails with it
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
    enum class Kind { Thread, Interpreter, Manual };
    enum class Outcome { None, Value, Exception, RemoteValue, RemoteException, Broken };
    // What happens to a call, as concurrent.futures names it to waiters.
    enum class Event { Result, Exception, Cancel, Cancelled };
    enum Commit { Refused = 0, Changed = 1, Already = 2 };

    explicit Call(Kind kind) : kind_(kind) {}
    ~Call() override;

    Kind kind() const { return kind_; }

    // Thread kind: the call itself (owner objects, released as soon as it has run).
    void set_call(PyObject *fn, PyObject *args, PyObject *kwargs);
    // Interpreter kind: the pickled (fn, args, kwargs).
    void set_payload(std::string payload) { payload_ = std::move(payload); }

    bool run() override;
    void skip() override;

    // set_result / set_exception of the future, attached to the owner. False if already done.
    bool finish_local(PyObject *future, PyObject *value, bool is_exception);

    // Waits, detached, until the call is done or the timeout passes: 1 done, 0 timed out,
    // -1 with an exception set when a signal handler raised.
    int wait_done(double timeout_seconds);

    bool is_done() const;

    // cancel() of the future: true if cancelled (now or before). Attached to the owner.
    bool cancel(PyObject *future);

    // The future registers a Python observer (condition, waiter list or callback): from now on
    // every state change happens under the future's condition, in the owner interpreter, and
    // the call keeps the future alive until its final change. Runs `append` (which must not call
    // back into this Call) under the lock; false if the call is already done.
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

    // Called by unirun._native._complete with the future's condition held.
    Commit commit_from_python(Event event);

    Outcome outcome() const { return outcome_; }
    PyObject *local_value() const { return value_; }
    const std::string &remote_data() const { return remote_; }
    Encoding remote_encoding() const { return encoding_; }
    const std::string &broken_message() const { return remote_; }

    // Finishes a pending call with a "broken" outcome (its worker could not start).
    void fail_broken(const std::string &message);

   private:
    bool done_locked() const {
        auto s = state();
        return s == Cancelled || s == CancelledNotified || s == Finished;
    }
    Commit commit_locked(Event event, PyObject **release);
    // The state change for `event`: natively when nobody observes, else under the future's
    // condition in the owner interpreter (switching there from a subinterpreter worker).
    Commit change(Event event, PyObject *future_hint);
    Commit change_observed(Event event, PyObject *future);
    bool run_local();
    bool run_remote();

    const Kind kind_;
    mutable std::mutex mutex_;
    std::condition_variable done_cv_;
    bool observed_ = false;
    bool cancel_announced_ = false;  // the Cancel event already happened
    PyObject *future_ = nullptr;     // strong ref while observed and not yet in a final state

    PyObject *fn_ = nullptr, *args_ = nullptr, *kwargs_ = nullptr;
    std::string payload_;

    Outcome outcome_ = Outcome::None;
    PyObject *value_ = nullptr;  // Value or Exception (owner object)
    std::string remote_;         // RemoteValue / RemoteException bytes, or the Broken message
    Encoding encoding_ = Encoding::Pickle;
};

using CallPtr = std::shared_ptr<Call>;

// Calls unirun._native.NAME(*args) in the current interpreter.
Ref call_native(const char *name, PyObject *args);

}  // namespace unirun::python
